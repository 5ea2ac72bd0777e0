/** Starts the real forkd CLI for integration tests and ends everything it started, by pid. */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, cpSync, linkSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(__dirname, '..', '..', '..');
export const BIN = join(ROOT, 'bin', 'forkd.js');
export const FIXTURES = join(ROOT, 'test', 'fixtures');
export const APPS = join(FIXTURES, 'apps');

/** Waits until `probe` returns a truthy value, or fails naming `what` once the deadline passes. */
export async function waitFor<T>(probe: () => T | Promise<T>, what: string, timeoutMs = 10_000, everyMs = 25): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v as NonNullable<T>;
    } catch (err) { last = err; }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch { return []; }
}

export function isAlive(pid: number): boolean {
  try {
    // A zombie still answers kill(0); its state in /proc says it is gone.
    return !/^\S+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch { return false; }
}

export function processTitle(pid: number): string {
  try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0+$/, '').replace(/\0/g, ' '); } catch { return ''; }
}

/** Environment for forkd with nothing of the test runner's that would change its config. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('FORKD_') && k !== 'PORT' && k !== 'WEB_CONCURRENCY' && k !== 'NOTIFY_SOCKET' && !k.startsWith('LISTEN_')) env[k] = v;
  }
  return { ...env, ...extra };
}

export interface Exit { readonly code: number | null; readonly signal: NodeJS.Signals | null }

export interface Forkd {
  readonly pid: number;
  readonly child: ChildProcess;
  /** Everything forkd wrote to stdout and stderr so far, and to its log file if it has one. */
  output(): string;
  /** Only what it wrote to stdout and stderr. */
  stdio(): string;
  /** Only what it wrote to stdout. */
  stdout(): string;
  waitForLog(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** The first `Listening at: http://…` address. */
  readonly url: string;
  readonly exited: Promise<Exit>;
  /** The master's exit, or a failure once `timeoutMs` has passed. */
  waitExit(timeoutMs?: number): Promise<Exit>;
  hasExited(): boolean;
  workers(): number[];
  signal(sig: NodeJS.Signals): void;
  /** Kills the master and every worker it has, by pid, and waits for the master to be gone. */
  kill(): Promise<void>;
}

const started = new Set<ChildProcess>();
/** Workers seen under each master this file started, so that a crash of the test still ends them. */
const workersOf = new Map<number, Set<number>>();
process.on('exit', () => {
  for (const c of started) if (c.pid && c.exitCode === null) { try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ } }
  for (const pids of workersOf.values()) for (const pid of pids) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
});

export interface StartOptions {
  /** Run forkd as this uid/gid (the CLI must be readable by it: see publicInstall). */
  readonly uid?: number;
  readonly gid?: number;
  readonly env?: Record<string, string>;
  readonly cwd?: string;
  /** What to wait for: "Ready: N workers serving" (default), "Listening at", or nothing. */
  readonly wait?: 'ready' | 'listening' | 'none';
  /** The --error-logfile it writes, read as part of output(). */
  readonly logFile?: string;
  /** Another CLI script to run (a release's, through a symlink). */
  readonly bin?: string;
  /** Another node binary to run it with (publicInstall's, for a test that runs as another user). */
  readonly node?: string;
  /** A command that runs node in its place (it must exec it, as `taskset -c 0` does). */
  readonly prefix?: readonly string[];
  readonly timeoutMs?: number;
}

/** The command and arguments that run the CLI `bin` with `args`. */
function command(opts: { node?: string; bin?: string; prefix?: readonly string[] }, args: readonly string[]): [string, string[]] {
  const argv = [...(opts.prefix ?? []), opts.node ?? process.execPath, opts.bin ?? BIN, ...args];
  return [argv[0]!, argv.slice(1)];
}

export async function startForkd(args: readonly string[], opts: StartOptions = {}): Promise<Forkd> {
  const child = spawn(...command(opts, args), {
    cwd: opts.cwd ?? ROOT, env: cleanEnv(opts.env), stdio: ['ignore', 'pipe', 'pipe'],
    ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.gid ?? opts.uid } : {}),
  });
  started.add(child);
  // A binary that cannot be run (EACCES, ENOENT) is reported by the exit below, not as a crash.
  child.once('error', (err) => { out += `spawn failed: ${err.message}\n`; });
  let out = '';
  let stdout = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => { out += c; stdout += c; });
  child.stderr!.setEncoding('utf8').on('data', (c: string) => { out += c; });
  let done = false;
  const exited = new Promise<Exit>((ok) => child.once('exit', (code, signal) => { done = true; started.delete(child); ok({ code, signal }); }));
  const pid = child.pid!;
  const seen = new Set<number>();
  workersOf.set(pid, seen);
  // A worker that has exited but is not reaped yet (a zombie for a moment) is not one of them.
  const workers = () => { const w = childrenOf(pid).filter(isAlive); for (const p of w) seen.add(p); return w; };
  const output = () => {
    if (!opts.logFile) return out;
    try { return out + readFileSync(opts.logFile, 'utf8'); } catch { return out; }
  };
  const waitForLog = (re: RegExp, timeoutMs = opts.timeoutMs ?? 15_000) =>
    waitFor(() => re.exec(output()) ?? (done ? Promise.reject(new Error(`forkd exited; output:\n${output()}`)) : null),
      `log ${re}`, timeoutMs).catch((err: Error) => { throw new Error(`${err.message}; output so far:\n${output()}`); });
  const f: Forkd = {
    pid, child, output, stdio: () => out, stdout: () => stdout, waitForLog, exited, hasExited: () => done, workers,
    waitExit: async (timeoutMs = 15_000) => { await waitFor(() => done, 'forkd to exit', timeoutMs); return exited; },
    signal: (sig) => { if (!done) process.kill(pid, sig); },
    get url() { return /Listening at: (http:\/\/\S+)/.exec(output())?.[1] ?? ''; },
    async kill() {
      // A successor master (USR2) is no child of this one once it retires: find it in the log.
      const successors = [...output().matchAll(/started successor master \(pid:(\d+)\)/g)].map((m) => Number(m[1]));
      const all = new Set([...workers(), ...seen, ...successors, ...successors.flatMap(childrenOf)]);
      if (!done) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
      for (const w of all) { try { process.kill(w, 'SIGKILL'); } catch { /* gone */ } }
      await exited;
      await waitFor(() => [...all].every((w) => !isAlive(w)), 'workers to be gone', 5000);
    },
  };
  try {
    const wait = opts.wait ?? 'ready';
    if (wait !== 'none') await f.waitForLog(/Listening at: /);
    if (wait === 'ready') await f.waitForLog(/Ready: \d+ workers? serving/);
  } catch (err) {
    await f.kill();
    throw err;
  }
  return f;
}

/** Runs forkd to completion (for commands that exit: --help, invalid config, …). */
export function runForkd(args: readonly string[], opts: { env?: Record<string, string>; cwd?: string; timeoutMs?: number; node?: string; bin?: string;
  prefix?: readonly string[] } = {}):
  Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((ok, fail) => {
    const child = spawn(...command(opts, args), { cwd: opts.cwd ?? ROOT, env: cleanEnv(opts.env), stdio: ['ignore', 'pipe', 'pipe'] });
    started.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c; });
    child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
    const timer = setTimeout(() => { child.kill('SIGKILL'); fail(new Error(`forkd ${args.join(' ')} did not exit; stderr:\n${stderr}`)); },
      opts.timeoutMs ?? 20_000);
    child.once('close', (code) => {
      clearTimeout(timer);
      started.delete(child);
      ok({ code, stdout, stderr });
    });
  });
}

/** A copy of the built CLI (dist, bin, node_modules) that any user can read, and a node binary any
 *  user can run: for tests that run forkd or its workers as another user, whatever the permissions
 *  of the tree this runs from (a clone under /root, a Node installed under ~/.cache or ~/.nvm). */
let publicCopy: { bin: string; node: string } | null = null;
export function publicInstall(): { bin: string; node: string; remove(): void } {
  if (!publicCopy) {
    const dir = mkdtempSync(join(tmpdir(), 'forkd-public-'));
    chmodSync(dir, 0o755);
    for (const part of ['dist', 'bin', 'node_modules', 'package.json']) cpSync(join(ROOT, part), join(dir, part), { recursive: true });
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
    publicCopy = { bin: join(dir, 'bin', 'forkd.js'), node: nobodyCanRun(process.execPath) ? process.execPath : publicNode(dir) };
  }
  // One copy per test file, removed when it exits.
  return { ...publicCopy, remove: () => undefined };
}

/** Whether uid 65534 (nobody) can execute `file`: asked of the kernel, by running it as nobody. */
function nobodyCanRun(file: string): boolean {
  return spawnSync(file, ['--version'], { uid: 65534, gid: 65534, stdio: 'ignore' }).status === 0;
}

/** `process.execPath` where any user can run it: hard-linked into `dir` (the same file, mode 0755),
 *  or copied when it is on another filesystem. */
function publicNode(dir: string): string {
  const node = join(dir, 'node');
  try { linkSync(process.execPath, node); } catch { copyFileSync(process.execPath, node); }
  chmodSync(node, 0o755);
  return node;
}

export function tempDir(): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), 'forkd-test-'));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}
