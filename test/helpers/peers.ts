/** The real peers a user puts in front of forkd, run by a test in its temp folder: nginx (as
 *  Debian ships it, its workers as www-data) and HAProxy. Each runs in the foreground as a child of
 *  the test and is stopped by pid. */

import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { waitFor } from './forkd';

export interface Peer {
  readonly pid: number;
  /** What it wrote to stdout and stderr, and its error log when it has one. */
  output(): string;
  stop(): Promise<void>;
}

/** Resolves once something accepts on 127.0.0.1:`port`. */
function accepting(port: number): Promise<boolean> {
  return new Promise((ok) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => { s.destroy(); ok(true); });
    s.once('error', () => ok(false));
  });
}

function run(cmd: string, args: string[], ports: readonly number[], logFile: string | null): Promise<Peer> {
  const child: ChildProcess = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => { out += c; });
  child.stderr!.setEncoding('utf8').on('data', (c: string) => { out += c; });
  child.once('error', (err) => { out += `spawn failed: ${err.message}\n`; });
  const exited = new Promise<void>((ok) => child.once('exit', () => ok()));
  const output = () => {
    let log = '';
    try { if (logFile) log = readFileSync(logFile, 'utf8'); } catch { /* not yet */ }
    return out + log;
  };
  const peer: Peer = {
    pid: child.pid!,
    output,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const gone = await Promise.race([exited.then(() => true), new Promise<boolean>((ok) => setTimeout(() => ok(false), 5000))]);
      if (!gone) { child.kill('SIGKILL'); await exited; }
    },
  };
  return waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`${cmd} exited with ${child.exitCode}:\n${output()}`);
    for (const p of ports) if (!await accepting(p)) return null;
    return true;
  }, `${cmd} to listen`, 10_000).then(() => peer, async (err: Error) => { await peer.stop(); throw new Error(`${err.message}\n${output()}`); });
}

/** nginx with `conf` as the inside of its http and stream blocks, its workers as www-data, every
 *  file in `dir` (made traversable, so that the workers reach what is there); ready once it
 *  accepts on each of `ports`. */
export function startNginx(dir: string, conf: { http?: string; stream?: string }, ports: readonly number[]): Promise<Peer> {
  chmodSync(dir, 0o755);
  const temp = (name: string) => `${name}_temp_path ${join(dir, `nginx-${name}`)};`;
  const file = join(dir, 'nginx.conf');
  writeFileSync(file, [
    conf.stream ? 'load_module /usr/lib/nginx/modules/ngx_stream_module.so;' : '',
    'user www-data;', 'worker_processes 1;', 'daemon off;', `pid ${join(dir, 'nginx.pid')};`,
    `error_log ${join(dir, 'nginx-error.log')} info;`, 'events { worker_connections 512; }',
    conf.http ? `http { access_log off; ${['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map(temp).join(' ')}\n${conf.http}\n}` : '',
    conf.stream ? `stream {\n${conf.stream}\n}` : '',
  ].join('\n'));
  return run('nginx', ['-c', file, '-p', dir], ports, join(dir, 'nginx-error.log'));
}

/** HAProxy with `conf` after its global and defaults sections (mode tcp); ready once it accepts on each of `ports`. */
export function startHaproxy(dir: string, conf: string, ports: readonly number[]): Promise<Peer> {
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(file, `global\n  maxconn 512\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n${conf}\n`);
  return run('haproxy', ['-db', '-f', file], ports, null);
}

/** The pids of `pid`'s children, and the user each runs as. */
export function childUsers(pid: number): { pid: number; user: string }[] {
  const { execFileSync } = require('node:child_process') as typeof import('node:child_process');
  const out = execFileSync('ps', ['-o', 'pid=,user=', '--ppid', String(pid)], { encoding: 'utf8' });
  return out.trim().split('\n').filter(Boolean).map((l) => { const [p, u] = l.trim().split(/\s+/); return { pid: Number(p), user: u! }; });
}
