/** Owns the CPU limit a container puts on this process: its cgroup's CPU quota, cgroup v2's
 *  `cpu.max` or v1's `cpu.cfs_quota_us` over `cpu.cfs_period_us`, the smallest on the way from
 *  its cgroup up to the hierarchy's root. A pod limited to 2 CPUs on a 64-core node sees 64 CPUs
 *  in `os.availableParallelism()` (affinity is not the quota): `workers: auto` reads both. */

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

export interface CpuLimit {
  /** The quota in whole CPUs, rounded up, at least 1. */
  readonly cpus: number;
  /** Where it came from, for --print-config: `cgroup v2 cpu.max "150000 100000" in /sys/fs/cgroup/…`. */
  readonly source: string;
}

/** Where to look: the real /proc and /sys/fs/cgroup, or a test's copies of them. */
export interface CgroupPaths { readonly proc: string; readonly root: string }

const REAL: CgroupPaths = { proc: '/proc', root: '/sys/fs/cgroup' };

function read(file: string): string | null {
  try { return readFileSync(file, 'utf8').trim(); } catch { return null; }
}

/** The directories from `mount` + `path` up to `mount`, leaf first; the mount alone when the path
 *  is not under it (a cgroup namespace shows a container its own cgroup at the root). */
function upFrom(mount: string, path: string): string[] {
  let dir = resolve(mount, `.${path}`);
  if (!existsSync(dir)) return [mount];
  const dirs: string[] = [];
  while (dir.startsWith(mount) && dir.length >= mount.length) {
    dirs.push(dir);
    if (dir === mount) break;
    dir = dirname(dir);
  }
  return dirs;
}

/** One quota found: CPUs as a fraction, and the text that says where. */
type Found = { ratio: number; source: string };

function smaller(a: Found | null, b: Found | null): Found | null {
  if (!a) return b;
  if (!b) return a;
  return b.ratio < a.ratio ? b : a;
}

function v2Limit(mount: string, path: string): Found | null {
  let best: Found | null = null;
  for (const dir of upFrom(mount, path)) {
    const max = read(join(dir, 'cpu.max'));
    const m = max ? /^(\d+)\s+(\d+)$/.exec(max) : null; // "max 100000" is no limit
    if (m && Number(m[2]) > 0) best = smaller(best, { ratio: Number(m[1]) / Number(m[2]), source: `cgroup v2 cpu.max "${max}" in ${dir}` });
  }
  return best;
}

function v1Limit(mount: string, path: string): Found | null {
  let best: Found | null = null;
  for (const dir of upFrom(mount, path)) {
    const quota = Number(read(join(dir, 'cpu.cfs_quota_us')) ?? -1); // -1: no limit
    const period = Number(read(join(dir, 'cpu.cfs_period_us')) ?? 0);
    if (quota > 0 && period > 0) best = smaller(best, { ratio: quota / period, source: `cgroup v1 cpu.cfs_quota_us ${quota} / cpu.cfs_period_us ${period} in ${dir}` });
  }
  return best;
}

/** This process's CPU quota, or null when no cgroup limits it (or none can be read). */
export function cgroupCpuLimit(paths: CgroupPaths = REAL): CpuLimit | null {
  const table = read(join(paths.proc, 'self', 'cgroup'));
  if (!table) return null;
  let best: Found | null = null;
  for (const line of table.split('\n')) {
    const [id, controllers, ...rest] = line.split(':');
    const path = rest.join(':');
    if (id === '0' && controllers === '') {
      // v2: mounted at the root (unified), or beside the v1 controllers (hybrid).
      const mount = existsSync(join(paths.root, 'cgroup.controllers')) ? paths.root : join(paths.root, 'unified');
      best = smaller(best, v2Limit(mount, path));
    } else if (controllers?.split(',').includes('cpu')) {
      const mount = [join(paths.root, controllers), join(paths.root, 'cpu'), join(paths.root, 'cpu,cpuacct')].find((d) => existsSync(d));
      if (mount) best = smaller(best, v1Limit(mount, path));
    }
  }
  return best ? { cpus: Math.max(1, Math.ceil(best.ratio)), source: best.source } : null;
}
