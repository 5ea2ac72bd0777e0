/** forkd as containers run it: `workers: auto` under a real CPU quota (a cgroup the test makes,
 *  where the machine lets it), and as PID 1 of its own PID namespace (`unshare --pid --fork
 *  --mount-proc`, what `docker run` without `--init` does), with and without Debian's tini in front:
 *  HUP and TERM reach forkd and behave as documented, and the exit code passes through. */

import { existsSync, mkdirSync, rmdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, childrenOf, runForkd, startForkd, waitFor, type Forkd } from '../helpers/forkd';
import { request } from '../helpers/http';

const probe = join(APPS, 'probe.js');

/** A cgroup of the machine's CPU controller with a quota of one CPU, or null where none can be made. */
function oneCpuCgroup(): { dir: string; remove(): Promise<void> } | null {
  const name = `forkd-test-${process.pid}`;
  const v2 = existsSync('/sys/fs/cgroup/cgroup.controllers');
  const dir = v2 ? join('/sys/fs/cgroup', name) : join('/sys/fs/cgroup/cpu', name);
  try {
    mkdirSync(dir);
  } catch {
    return null;
  }
  try {
    if (v2) writeFileSync(join(dir, 'cpu.max'), '100000 100000');
    else { writeFileSync(join(dir, 'cpu.cfs_period_us'), '100000'); writeFileSync(join(dir, 'cpu.cfs_quota_us'), '100000'); }
  } catch {
    rmdirSync(dir);
    return null;
  }
  // rmdir succeeds once the processes in it are gone (and reaped).
  return { dir, remove: () => waitFor(() => { try { rmdirSync(dir); return true; } catch { return null; } }, `cgroup ${dir} to empty`, 5000).then(() => undefined) };
}

test('workers auto under a CPU quota of one CPU: --print-config says so and where it came from, and one worker serves', async () => {
  const cg = oneCpuCgroup();
  if (!cg) { console.log('  (this machine lets no test make a cgroup: the quota parsing is covered by test/unit/cpu-limit.test.ts)'); return; }
  // The command joins the cgroup, then runs node: every process forkd starts is in it too.
  const join1 = ['sh', '-c', `echo $$ > ${cg.dir}/cgroup.procs && exec "$@"`, 'sh'];
  let f: Forkd | null = null;
  try {
    const printed = await runForkd(['--print-config', probe], { prefix: join1 });
    const line = printed.stdout.split('\n').find((l) => l.startsWith('workers ')) ?? '';
    assert.match(line, /"auto" \(= 1: cgroup v(1 cpu\.cfs_quota_us 100000 \/ cpu\.cfs_period_us 100000|2 cpu\.max "100000 100000") in \S+forkd-test-\d+, rounded up\)/);
    f = await startForkd(['-b', '127.0.0.1:0', probe], { prefix: join1 });
    assert.match(f.output(), /workers auto: 1, the container's CPU quota/);
    assert.is(f.workers().length, 1, `one worker on a ${os.availableParallelism()}-CPU machine`);
    assert.is((await request(`${f.url}/`)).status, 200);
  } finally {
    await f?.kill();
    await cg.remove();
  }
  // Outside the quota, the same machine's count.
  const outside = await runForkd(['--print-config', probe]);
  assert.match(outside.stdout, new RegExp(`"auto" \\(= ${os.availableParallelism()}: os\\.availableParallelism\\(\\)`));
});

/** forkd in a PID namespace of its own, behind `init` (tini) or as its PID 1; `ns1` is the host pid
 *  of the namespace's PID 1 (forkd, or tini), which `docker kill` would signal. */
async function inNamespace(init: readonly string[], args: readonly string[]): Promise<{ f: Forkd; ns1: number; master: number }> {
  const f = await startForkd(args, { prefix: ['unshare', '--pid', '--fork', '--mount-proc', ...init] });
  try {
    const ns1 = await waitFor(() => childrenOf(f.pid)[0], 'the namespace\'s PID 1');
    const master = init.length ? await waitFor(() => childrenOf(ns1)[0], 'forkd under tini') : ns1;
    return { f, ns1, master };
  } catch (err) {
    await f.kill();
    throw err;
  }
}

for (const [what, init] of [['as PID 1', []], ['under tini', ['tini', '--']]] as const) {
  test(`${what}: HUP reloads, TERM stops gracefully with exit 0, a failed boot's exit code passes through`, async () => {
    const { f, ns1, master } = await inNamespace(init, ['-w', '2', '-b', '127.0.0.1:0', probe]);
    try {
      if (init.length === 0) assert.match(f.output(), /\[WARNING\] forkd is PID 1: signals work as anywhere, but processes orphaned/);
      else assert.not.match(f.output(), /forkd is PID 1/, 'under tini forkd is not PID 1');
      process.kill(ns1, 'SIGHUP');
      await f.waitForLog(/Reload complete: generation 2/);
      assert.is((await request(`${f.url}/`)).status, 200);
      // The old generation's workers leave once the new ones serve: two are left.
      await waitFor(() => childrenOf(master).length === 2 || null, 'two workers of the new generation');
      process.kill(ns1, 'SIGTERM');
      assert.equal(await f.waitExit(), { code: 0, signal: null });
      assert.match(f.output(), /Shutting down: Master/);
    } finally {
      await f.kill();
    }
    // A worker that cannot boot: forkd gives up with 3 (BootFailed), and the namespace exits with it.
    const failing = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--max-boot-failures', '2', join(APPS, 'crash-at-boot.js')],
      { prefix: ['unshare', '--pid', '--fork', '--mount-proc', ...init], wait: 'none' });
    try {
      assert.equal(await failing.waitExit(20_000), { code: 3, signal: null });
    } finally {
      await failing.kill();
    }
  });
}

test.run();
