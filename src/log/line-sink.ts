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

/** `target` is a path, or "-" for the given standard stream. */
export function openLineSink(target: string, std: 1 | 2): LineSink {
  const isStd = target === '-';
  const open = () => (isStd ? std : openSync(target, 'a', 0o644));
  let fd = open();
  return {
    target,
    write(line) {
      const buf = Buffer.from(line.endsWith('\n') ? line : `${line}\n`);
      let off = 0;
      while (off < buf.length) {
        try { off += writeSync(fd, buf, off); } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EAGAIN') continue;
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
