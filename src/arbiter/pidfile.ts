/** Owns the pidfile: written once the sockets are bound, removed at exit only if it still holds
 *  this master's pid (a successor may have replaced it). Never follows a planted symlink. */

import { constants, openSync, readFileSync, renameSync, unlinkSync, writeSync, closeSync } from 'node:fs';
import { dirname, basename, join, resolve } from 'node:path';

export interface Pidfile {
  readonly path: string;
  remove(): void;
}

/** A pidfile this process may not have written, removed at exit only if it holds this pid
 *  (PIDFILE.oldbin, after an upgrade renamed ours). */
export function pidfileAt(path: string, pid = process.pid): Pidfile {
  const target = resolve(path);
  return {
    path: target,
    remove() {
      try {
        if (readFileSync(target, 'utf8').trim() === String(pid)) unlinkSync(target);
      } catch { /* not there */ }
    },
  };
}

export function writePidfile(path: string, pid = process.pid): Pidfile {
  const target = resolve(path);
  // Write beside it and rename over it: readers never see a half-written file, and O_EXCL|O_NOFOLLOW
  // means an attacker's symlink at the temporary name is refused rather than followed.
  const tmp = join(dirname(target), `.${basename(target)}.${pid}.tmp`);
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  try { writeSync(fd, `${pid}\n`); } finally { closeSync(fd); }
  renameSync(tmp, target);
  return pidfileAt(target, pid);
}
