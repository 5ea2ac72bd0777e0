/** Owns writing whole log lines to stderr, stdout or a file. Writes are synchronous appends
 *  (O_APPEND), so lines from the master and every worker never interleave mid-line and none is lost
 *  when a process exits right after logging. `reopen()` is what logrotate's USR1 needs. */

import { closeSync, openSync, writeSync } from 'node:fs';

export interface LineSink {
  write(line: string): void;
  /** Opens the file again under its name (after logrotate moved it); a no-op for stdout/stderr. */
  reopen(): void;
  close(): void;
  readonly target: string;
}

/** How long one line may wait for a full pipe before it is dropped. */
const MAX_STALL_MS = 1000;

/** `target` is a path, or "-" for the given standard stream. */
export function openLineSink(target: string, std: 1 | 2): LineSink {
  const isStd = target === '-';
  const open = () => (isStd ? std : openSync(target, 'a', 0o644));
  let fd = open();
  const pause = new Int32Array(new SharedArrayBuffer(4));
  return {
    target,
    write(line) {
      const buf = Buffer.from(line.endsWith('\n') ? line : `${line}\n`);
      let off = 0;
      let waitedMs = 0;
      while (off < buf.length) {
        try { off += writeSync(fd, buf, off); } catch (err) {
          // A non-blocking pipe whose reader stalls: wait a little, but never hang the process on it.
          if ((err as NodeJS.ErrnoException).code === 'EAGAIN' && waitedMs < MAX_STALL_MS) {
            Atomics.wait(pause, 0, 0, 1);
            waitedMs++;
            continue;
          }
          return; // a log that cannot be written must never take the process down
        }
      }
    },
    reopen() {
      if (isStd) return;
      const old = fd;
      fd = open();
      closeSync(old);
    },
    close() {
      if (!isStd) closeSync(fd);
    },
  };
}
