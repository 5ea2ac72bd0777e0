/** Runs `forkd ctl` as an operator would, from a shell in the app's directory, and a master for it
 *  to speak to: the probe app served from a temp directory whose forkd.config.js names the
 *  control socket ctl.sock beside it. */

import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as assert from 'uvu/assert';
import { APPS, BIN, cleanEnv, startForkd, tempDir, type Forkd } from './forkd';

export const probe = join(APPS, 'probe.js');

export interface Ran { readonly code: number | null; readonly stdout: string; readonly stderr: string }

/** `cd DIR && node forkd.js ctl ARGS` in a shell; the shell execs node, so the pid is node's. */
export function ctl(dir: string, args: readonly string[], opts: { uid?: number; node?: string; bin?: string; timeoutMs?: number } = {}): Promise<Ran> {
  return new Promise((ok, fail) => {
    const child = spawn('sh', ['-c', 'cd "$0" && exec "$@"', dir, opts.node ?? process.execPath, opts.bin ?? BIN, 'ctl', ...args], {
      env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'], ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.uid } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c; });
    child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
    const timer = setTimeout(() => {
      try { process.kill(child.pid!, 'SIGKILL'); } catch { /* gone */ }
      fail(new Error(`forkd ctl ${args.join(' ')} did not exit; stderr:\n${stderr}`));
    }, opts.timeoutMs ?? 30_000);
    child.once('close', (code) => { clearTimeout(timer); ok({ code, stdout, stderr }); });
  });
}

/** A `forkd.config.js` in `dir` serving the probe app, its control socket `ctl.sock` beside it. */
export function writeConfig(dir: string, extra: Record<string, unknown> = {}): void {
  writeFileSync(join(dir, 'forkd.config.js'), `module.exports = ${JSON.stringify({
    app: probe, bind: ['127.0.0.1:0'], workers: 2, controlSocket: 'ctl.sock', ...extra,
  }, null, 2)};\n`);
}

export interface Status { master: { pid: number; generation: number; workers: number }; workers: { nr: number; pid: number; generation: number; state: string; inFlight: number }[] }

export async function status(dir: string): Promise<Status> {
  const r = await ctl(dir, ['status', '--json']);
  assert.is(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Status;
}

/** A master serving the probe app from `dir` with its config there; `fn` runs while it does. */
export async function withMaster(extra: Record<string, unknown>, fn: (f: Forkd, dir: string) => Promise<void>): Promise<void> {
  const dir = tempDir();
  writeConfig(dir.path, extra);
  const logFile = typeof extra.errorLog === 'string' ? join(dir.path, extra.errorLog) : undefined;
  try {
    const f = await startForkd([], { cwd: dir.path, ...(logFile ? { logFile } : {}) });
    try {
      await f.waitForLog(/Control socket at: ctl\.sock/);
      await fn(f, dir.path);
    } finally {
      await f.kill();
    }
  } finally {
    dir.remove();
  }
}

export const sorted = (pids: number[]) => [...pids].sort((a, b) => a - b);
