/** The container CPU quota behind `workers: auto`, read from cgroup files this test writes: v2's
 *  cpu.max, v1's cfs quota and period, nested limits (the smallest wins), and none. */

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cgroupCpuLimit } from '../../src/config/cpu-limit';
import { autoWorkers } from '../../src/config/values';

/** A fake /proc and /sys/fs/cgroup: `files` maps paths under it to their text. */
function tree(files: Record<string, string>): { paths: { proc: string; root: string }; remove(): void } {
  const base = mkdtempSync(join(tmpdir(), 'forkd-cgroup-'));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(base, path)), { recursive: true });
    writeFileSync(join(base, path), text);
  }
  return { paths: { proc: join(base, 'proc'), root: join(base, 'sys') }, remove: () => rmSync(base, { recursive: true, force: true }) };
}

test('cgroup v2: cpu.max of the process\'s cgroup, rounded up; "max" is no limit', () => {
  const t = tree({ 'proc/self/cgroup': '0::/kubepods/pod1/c1\n', 'sys/cgroup.controllers': 'cpu memory', 'sys/cpu.max': 'max 100000',
    'sys/kubepods/pod1/c1/cpu.max': '150000 100000' });
  try {
    const limit = cgroupCpuLimit(t.paths);
    assert.is(limit?.cpus, 2);
    assert.match(limit!.source, /cgroup v2 cpu.max "150000 100000" in .*\/kubepods\/pod1\/c1$/);
  } finally { t.remove(); }
});

test('cgroup v2: the smallest quota on the way up wins (a pod\'s limit above its container\'s)', () => {
  const t = tree({ 'proc/self/cgroup': '0::/pod/c\n', 'sys/cgroup.controllers': '', 'sys/pod/cpu.max': '50000 100000', 'sys/pod/c/cpu.max': 'max 100000' });
  try {
    assert.is(cgroupCpuLimit(t.paths)?.cpus, 1, 'half a CPU is one worker');
  } finally { t.remove(); }
});

test('cgroup v2 in a namespace: the path is not under the mount, whose root is the container\'s cgroup', () => {
  const t = tree({ 'proc/self/cgroup': '0::/docker/abc\n', 'sys/cgroup.controllers': '', 'sys/cpu.max': '400000 100000' });
  try {
    assert.is(cgroupCpuLimit(t.paths)?.cpus, 4);
  } finally { t.remove(); }
});

test('cgroup v1: cpu.cfs_quota_us over cpu.cfs_period_us, -1 is no limit; hybrid trees read both', () => {
  const t = tree({ 'proc/self/cgroup': '4:cpu,cpuacct:/job\n0::/\n', 'sys/cpu,cpuacct/job/cpu.cfs_quota_us': '250000',
    'sys/cpu,cpuacct/job/cpu.cfs_period_us': '100000', 'sys/cpu,cpuacct/cpu.cfs_quota_us': '-1', 'sys/cpu,cpuacct/cpu.cfs_period_us': '100000',
    'sys/unified/cgroup.controllers': '' });
  try {
    const limit = cgroupCpuLimit(t.paths);
    assert.is(limit?.cpus, 3);
    assert.match(limit!.source, /cgroup v1 cpu.cfs_quota_us 250000 \/ cpu.cfs_period_us 100000/);
  } finally { t.remove(); }
  const none = tree({ 'proc/self/cgroup': '1:cpu:/\n', 'sys/cpu/cpu.cfs_quota_us': '-1', 'sys/cpu/cpu.cfs_period_us': '100000' });
  try {
    assert.is(cgroupCpuLimit(none.paths), null);
  } finally { none.remove(); }
});

test('workers auto: the quota when it is below the CPUs, else os.availableParallelism(), and says which', () => {
  const one = autoWorkers({ cpus: 1, source: 'cgroup v2 cpu.max "100000 100000" in /x' });
  assert.equal(one, { count: 1, source: 'cgroup v2 cpu.max "100000 100000" in /x, rounded up' });
  const many = autoWorkers({ cpus: 512, source: 'cgroup v2 cpu.max "51200000 100000" in /x' });
  assert.ok(many.count >= 1 && many.count < 512);
  assert.match(many.source, /^os\.availableParallelism\(\); the cgroup's quota allows 512$/);
  assert.match(autoWorkers(null).source, /^os\.availableParallelism\(\)$/);
});

test.run();
