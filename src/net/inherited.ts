/** Owns the listening sockets a master is given instead of binding them: by systemd (socket
 *  activation: LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES, from fd 3 on) or by the master it succeeds
 *  on USR2 (FORKD_FDS, FORKD_BINDS). The address of each is read from /proc (the socket's inode
 *  in /proc/self/fd, then its line in /proc/net/tcp, tcp6 or unix), so that no socket handle is
 *  opened on them here. The variables are removed once read: workers and successors never see them. */

import { readFileSync, readlinkSync } from 'node:fs';
import { HANDOVER_BINDS_ENV, HANDOVER_FDS_ENV } from '../env-names';
import type { InheritedSocket } from './listeners';

const SD_LISTEN_FDS_START = 3;

/** What a successor is told of each socket: the bind it served, and whether systemd passed it. */
export interface HandedOver { readonly bind: string; readonly systemd: boolean; readonly name: string | null }

function hexIPv4(hex: string): string {
  const n = parseInt(hex, 16);
  return [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, (n >>> 24) & 255].join('.');
}

function hexIPv6(hex: string): string {
  // Four 32-bit words, each in host (little-endian) order; the URL parser writes the short form.
  const groups: string[] = [];
  for (let w = 0; w < 4; w++) {
    const word = hex.slice(w * 8, w * 8 + 8).match(/../g)!.reverse().join('');
    groups.push(word.slice(0, 4), word.slice(4));
  }
  return new URL(`http://[${groups.join(':')}]/`).hostname.slice(1, -1);
}

function tcpAddress(inode: string): InheritedSocket['address'] {
  for (const [file, v6] of [['/proc/net/tcp', false], ['/proc/net/tcp6', true]] as const) {
    let text = '';
    try { text = readFileSync(file, 'utf8'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[9] !== inode) continue;
      const [host, port] = cols[1]!.split(':');
      return { kind: 'tcp', host: v6 ? hexIPv6(host!) : hexIPv4(host!), port: parseInt(port!, 16) };
    }
  }
  return null;
}

function unixAddress(inode: string): InheritedSocket['address'] {
  let text = '';
  try { text = readFileSync('/proc/net/unix', 'utf8'); } catch { return null; }
  for (const line of text.split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols[6] === inode && cols[7]) return { kind: 'unix', path: cols[7] };
  }
  return null;
}

function addressOf(fd: number): InheritedSocket['address'] {
  let link: string;
  try { link = readlinkSync(`/proc/self/fd/${fd}`); } catch { return null; }
  const inode = /^socket:\[(\d+)\]$/.exec(link)?.[1];
  return inode ? tcpAddress(inode) ?? unixAddress(inode) : null;
}

/** The sockets systemd passed to this process, if it did (LISTEN_PID is this pid). */
export function activatedSockets(env: Record<string, string | undefined>, pid = process.pid): InheritedSocket[] {
  const mine = Number(env.LISTEN_PID) === pid;
  const count = Number(env.LISTEN_FDS);
  const names = env.LISTEN_FDNAMES ? env.LISTEN_FDNAMES.split(':') : [];
  for (const name of ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES']) delete env[name];
  if (!mine || !Number.isInteger(count) || count <= 0) return [];
  return Array.from({ length: count }, (_, i) => {
    const fd = SD_LISTEN_FDS_START + i;
    const name = names[i] && names[i] !== 'unknown' ? names[i]! : null;
    return { fd, name, address: addressOf(fd), ownsFile: false, via: 'systemd' as const };
  });
}

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (err) { return (err as NodeJS.ErrnoException).code === 'EPERM'; }
}

/** The sockets the master this one succeeds handed over (USR2); `predecessor` is its pid. A socket
 *  systemd passed stays systemd's; one the predecessor bound becomes this master's, its file
 *  removed at this master's stop once the predecessor is gone. */
export function predecessorSockets(env: Record<string, string | undefined>, predecessor: number): InheritedSocket[] {
  const fds = (env[HANDOVER_FDS_ENV] ?? '').split(',').filter(Boolean).map(Number);
  let entries: HandedOver[] = [];
  try { entries = JSON.parse(env[HANDOVER_BINDS_ENV] ?? '[]') as HandedOver[]; } catch { /* none */ }
  delete env[HANDOVER_FDS_ENV];
  delete env[HANDOVER_BINDS_ENV];
  return fds.map((fd, i) => {
    const e = entries[i];
    return e?.systemd
      ? { fd, name: e.name, address: addressOf(fd), ownsFile: false, via: 'systemd' as const }
      : { fd, name: e?.bind ?? null, address: addressOf(fd), ownsFile: () => !alive(predecessor), via: 'predecessor' as const };
  });
}
