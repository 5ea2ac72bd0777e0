/** Owns reading a listening TCP socket's accept queue from the kernel (Linux): for a socket in the
 *  LISTEN state, /proc/net/tcp and /proc/net/tcp6 show the connections waiting to be accepted as
 *  its rx_queue. Found by the socket's inode (readlink /proc/self/fd/N), so a listener is read as
 *  itself whatever its address. Not a Unix socket's: /proc shows none. The queue's limit is not
 *  in /proc (only netlink has it): it is the backlog the workers listen with, capped by
 *  net.core.somaxconn (queueLimit). */

import { closeSync, openSync, readFileSync, readlinkSync, readSync } from 'node:fs';


/** The inode of the socket behind `fd`, or null when it is not a socket. */
function socketInode(fd: number): string | null {
  try {
    const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
    return m ? m[1]! : null;
  } catch {
    return null;
  }
}

/** Every LISTEN socket's queue length, by inode. The kernel lists listening sockets before any
 *  other, so the file is read in chunks only until the first line of another state: a host with
 *  tens of thousands of connections (26,000 lines, 4 MB, here) costs no more than one without. */
function listening(): Map<string, number> {
  const out = new Map<string, number>();
  const chunk = Buffer.allocUnsafe(64 * 1024);
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let fd: number;
    try { fd = openSync(file, 'r'); } catch { continue; }
    try {
      let rest = '';
      let header = true;
      for (let n = readSync(fd, chunk, 0, chunk.length, null); n > 0; n = readSync(fd, chunk, 0, chunk.length, null)) {
        const lines = (rest + chunk.toString('latin1', 0, n)).split('\n');
        rest = lines.pop()!;
        if (header) { lines.shift(); header = false; }
        if (!lines.every((line) => readLine(line, out))) break;
      }
    } finally {
      closeSync(fd);
    }
  }
  return out;
}

/** Takes one line of /proc/net/tcp: false once it is not a listening socket's (the rest are not). */
function readLine(line: string, out: Map<string, number>): boolean {
  // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
  const f = line.trim().split(/\s+/);
  if (f.length < 10) return true;
  if (f[3] !== '0A') return false;
  out.set(f[9]!, parseInt(f[4]!.split(':')[1]!, 16));
  return true;
}

/** The accept queue's length of each of `fds` that is a listening TCP socket (others are left out). */
export function listenQueues(fds: readonly number[]): Map<number, number> {
  const out = new Map<number, number>();
  const inodes = fds.map((fd) => [fd, socketInode(fd)] as const).filter(([, ino]) => ino !== null);
  if (inodes.length === 0) return out;
  const queues = listening();
  for (const [fd, ino] of inodes) {
    const q = queues.get(ino!);
    if (q !== undefined) out.set(fd, q);
  }
  return out;
}

/** The longest accept queue a listen(fd, `backlog`) gets: the kernel caps it at somaxconn. */
export function queueLimit(backlog: number): number {
  try {
    return Math.min(backlog, Number(readFileSync('/proc/sys/net/core/somaxconn', 'latin1').trim()) || backlog);
  } catch {
    return backlog;
  }
}
