/** Owns writing whole log lines to stderr, stdout or a file, as O_APPEND writes of whole lines, so
 *  that lines from the master and every worker never interleave mid-line. `reopen()` is what
 *  logrotate's USR1 needs.
 *
 *  The error log writes each line at once (synchronously: none is lost when a process exits right
 *  after logging). The access log may be `buffered`: lines are gathered and written together every
 *  FLUSH_MS or BUFFER_BYTES, and before a reopen, a close and the process's exit. One write a line
 *  cost a quarter of a hello-world worker's throughput; a SIGKILL loses at most FLUSH_MS of lines. */

import { closeSync, openSync, writeSync } from 'node:fs';

export interface LineSink {
  write(line: string): void;
  /** Opens the file again under its name (after logrotate moved it); a no-op for stdout/stderr. */
  reopen(): void;
  close(): void;
  readonly target: string;
}

/** How long one write may wait for a full pipe before its lines are dropped. */
const MAX_STALL_MS = 1000;
const FLUSH_MS = 50;
const BUFFER_BYTES = 64 * 1024;

function writeAll(fd: number, text: string, pause: Int32Array): void {
  const buf = Buffer.from(text);
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
}

/** `target` is a path, or "-" for the given standard stream. */
export function openLineSink(target: string, std: 1 | 2, opts: { buffered?: boolean } = {}): LineSink {
  const isStd = target === '-';
  const open = () => (isStd ? std : openSync(target, 'a', 0o644));
  let fd = open();
  const pause = new Int32Array(new SharedArrayBuffer(4));
  let pending = '';
  let timer: NodeJS.Timeout | null = null;
  const flush = () => {
    if (timer) { clearTimeout(timer); timer = null; }
    if (!pending) return;
    const text = pending;
    pending = '';
    writeAll(fd, text, pause);
  };
  if (opts.buffered) process.on('exit', flush);
  return {
    target,
    write(line) {
      const text = line.endsWith('\n') ? line : `${line}\n`;
      if (!opts.buffered) { writeAll(fd, text, pause); return; }
      pending += text;
      if (pending.length >= BUFFER_BYTES) flush();
      else if (!timer) timer = setTimeout(flush, FLUSH_MS).unref();
    },
    reopen() {
      if (isStd) return;
      flush();
      const old = fd;
      fd = open();
      closeSync(old);
    },
    close() {
      flush();
      if (opts.buffered) process.off('exit', flush);
      if (!isStd) closeSync(fd);
    },
  };
}
