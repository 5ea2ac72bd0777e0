/** Owns reading a listening TCP socket's accept queue from the kernel (Linux): for a socket in the
 *  LISTEN state, /proc/net/tcp and /proc/net/tcp6 show the connections waiting to be accepted as
 *  its rx_queue. Found by the socket's inode (readlink /proc/self/fd/N), so a listener is read as
 *  itself whatever its address. Not a Unix socket's: /proc shows none. The queue's limit is not
 *  in /proc (only netlink has it): it is the backlog the workers listen with, capped by
 *  net.core.somaxconn (queueLimit). */

import { readFileSync, readlinkSync } from 'node:fs';


/** The inode of the socket behind `fd`, or null when it is not a socket. */
function socketInode(fd: number): string | null {
  try {
    const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
    return m ? m[1]! : null;
  } catch {
    return null;
  }
}

/** Every LISTEN socket's queue, by inode. */
function listening(): Map<string, number> {
  const out = new Map<string, number>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try { text = readFileSync(file, 'latin1'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== '0A') continue;
      out.set(f[9]!, parseInt(f[4]!.split(':')[1]!, 16));
    }
  }
  return out;
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
