/** Owns `forkd ctl`: the operator's side of the control socket (arbiter/control.ts). It finds the
 *  socket from -s, or from the same config layers as the server (config file, FORKD_* environment),
 *  so `forkd ctl status` in the app's directory just works; sends one command; prints the answer
 *  (status as a table, or JSON with --json; `top` redraws it every second until Ctrl-C); and exits
 *  non-zero with one line on stderr when something is wrong. */

import net from 'node:net';
import { resolve } from 'node:path';
import { CONTROL_COMMANDS } from '../arbiter/control';
import type { WorkerRow } from '../arbiter/observe';
import type { ServiceRow } from '../arbiter/services';
import { suggestion } from '../config/errors';

const COMMANDS = [...CONTROL_COMMANDS, 'top'] as const;

export const CTL_USAGE = `usage: forkd ctl [-s PATH] [-c CONFIG] [-t SECONDS] COMMAND [ARG]

Speaks to a running forkd master over its control socket (the controlSocket setting).

commands:
  status [--json]    the master, its listeners and one row per worker
  top                status, redrawn every second until Ctrl-C
  reload             reload config and code; answers with the outcome
  scale N|+N|-N      keep N workers, or N more or fewer
  kill NR            replace worker NR gracefully
  reopen             reopen the log files
  stop [--quick]     stop the master (gracefully, or at once)
  upgrade            start a new master from the installed release (USR2)
  stacks [NR]        the JavaScript stack each (or one) worker is in now

options:
  -s, --socket PATH  the control socket (else controlSocket from the config)
  -c, --config FILE  the config file to read controlSocket from
  -t, --timeout S    give up waiting for the answer after S seconds (default: 10 for
                     status, top, reopen, stop and stacks; 600 for the others)
  -h, --help         this text
`;

/** The reply of the master to one command. */
interface Reply { readonly ok: boolean; readonly text?: string; readonly data?: unknown; readonly error?: string }

interface StatusData {
  readonly master: { pid: number; name: string; phase: string; uptimeS: number; generation: number; workers: number; requests: number };
  readonly listeners: readonly string[];
  readonly lastReload: { ok: boolean; reason?: string } | null;
  readonly workers: readonly WorkerRow[];
  readonly services?: readonly ServiceRow[];
}

class CtlError extends Error {}

interface CtlArgs { socket: string | null; config: string | null; command: string; args: string[]; json: boolean; timeoutS: number | null }

/** How long a command's answer is waited for, unless --timeout says: a reload, a scale, a kill or
 *  an upgrade answers once workers have booted (and drained). */
function defaultTimeoutS(command: string): number {
  return ['reload', 'scale', 'kill', 'upgrade'].includes(command) ? 600 : 10;
}

function parse(argv: readonly string[]): CtlArgs | 'help' {
  const out: CtlArgs = { socket: null, config: null, command: '', args: [], json: false, timeoutS: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => { const v = argv[++i]; if (v === undefined) throw new CtlError(`${a} needs a value`); return v; };
    if (a === '-h' || a === '--help') return 'help';
    else if (a === '-s' || a === '--socket') out.socket = value();
    else if (a.startsWith('--socket=')) out.socket = a.slice(9);
    else if (a === '-c' || a === '--config') out.config = value();
    else if (a.startsWith('--config=')) out.config = a.slice(9);
    else if (a === '--json') out.json = true;
    else if (a === '-t' || a === '--timeout' || a.startsWith('--timeout=')) {
      const v = a.startsWith('--timeout=') ? a.slice(10) : value();
      if (!/^\d+(\.\d+)?$/.test(v) || Number(v) <= 0) throw new CtlError(`--timeout takes seconds (a number above 0), not ${JSON.stringify(v)}`);
      out.timeoutS = Number(v);
    }
    else if (!out.command && a.startsWith('-')) throw new CtlError(`unknown option ${a} (forkd ctl --help lists them)`);
    else if (!out.command) out.command = a;
    else out.args.push(a);
  }
  if (!out.command) throw new CtlError('no command given (forkd ctl --help lists them)');
  if (!(COMMANDS as readonly string[]).includes(out.command)) {
    throw new CtlError(`unknown command ${JSON.stringify(out.command)}${suggestion(out.command, COMMANDS)} (one of ${COMMANDS.join(', ')})`);
  }
  return out;
}

/** The socket path: -s, else controlSocket as the server would read it from here. */
async function socketPath(args: CtlArgs): Promise<string> {
  if (args.socket) return resolve(args.socket);
  const { loadConfig } = require('../config/load') as typeof import('../config/load');
  const cwd = process.cwd();
  let loaded;
  try {
    loaded = await loadConfig({ cli: args.config ? { config: { value: args.config, flag: '--config' } } : {}, env: process.env, cwd });
  } catch (err) {
    // A config broken since the master read it is when an operator runs `forkd ctl reload` most.
    throw new CtlError(`cannot read controlSocket from the config (give -s PATH): ${(err as Error).message}`);
  }
  const path = loaded.config.controlSocket;
  if (!path) {
    throw new CtlError(`no control socket: give -s PATH, or set controlSocket${loaded.file ? ` in ${loaded.file}` : ' (no config file was found here)'}`);
  }
  return resolve(loaded.config.chdir ? resolve(cwd, loaded.config.chdir) : cwd, path);
}

function ask(path: string, cmd: string, args: readonly string[], timeoutS: number): Promise<Reply> {
  return new Promise((done, fail) => {
    const c = net.connect(path);
    let buf = '';
    c.setEncoding('utf8');
    c.setTimeout(timeoutS * 1000, () => {
      c.destroy();
      fail(new CtlError(`no answer from ${path} within ${timeoutS}s (is the master stopped or hung? --timeout waits longer)`));
    });
    c.on('connect', () => c.write(`${JSON.stringify({ cmd, args })}\n`));
    c.on('data', (d: string) => { buf += d; });
    c.on('end', () => {
      try { done(JSON.parse(buf) as Reply); } catch { fail(new CtlError(`the master at ${path} gave no answer`)); }
    });
    c.on('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'ENOENT' ? 'no such socket (is forkd running with controlSocket set?)'
        : err.code === 'ECONNREFUSED' ? 'nothing answers on it (a stale socket: is forkd running?)'
          : err.code === 'EACCES' ? 'permission denied (the socket is its owner\'s only, mode 0600)' : err.code ?? err.message;
      fail(new CtlError(`cannot reach ${path}: ${why}`));
    });
  });
}

const dur = (s: number | null) => (s === null ? '-' : s < 1 ? `${Math.round(s * 1000)}ms` : s < 120 ? `${s.toFixed(1)}s`
  : s < 7200 ? `${Math.floor(s / 60)}m` : s < 172800 ? `${Math.floor(s / 3600)}h` : `${Math.floor(s / 86400)}d`);
const mib = (b: number | null) => (b === null ? '-' : `${(b / 2 ** 20).toFixed(1)}M`);

/** The status as a person reads it: the master, then a row per worker. */
function renderStatus(d: StatusData): string {
  const m = d.master;
  const reload = d.lastReload === null ? 'none' : d.lastReload.ok ? 'ok' : `failed: ${d.lastReload.reason ?? '?'}`;
  const head = [
    `master   pid ${m.pid}  ${m.phase}  up ${dur(m.uptimeS)}  generation ${m.generation}  workers ${d.workers.filter((w) => w.state === 'serving' || w.state === 'replacing').length}/${m.workers}  requests ${m.requests}`,
    `listen   ${d.listeners.join('  ') || '-'}`,
    `reload   ${reload}`,
    '',
  ];
  const cols = ['NR', 'PID', 'GEN', 'STATE', 'AGE', 'REQS', 'INFL', 'OLDEST', 'CONNS', 'RSS', 'LAG99', 'BEAT'];
  const rows = d.workers.map((w) => [String(w.nr), String(w.pid), String(w.generation), w.state, dur(w.ageS), String(w.requests),
    String(w.inFlight), dur(w.oldestS), String(w.connections), mib(w.rssBytes), dur(w.lagP99S), `${dur(w.lastBeatS)} ago`]);
  const widths = cols.map((c, i) => Math.max(c.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: readonly string[]) => r.map((v, i) => (i === r.length - 1 ? v : v.padEnd(widths[i]!))).join('  ');
  const services = d.services ?? [];
  if (services.length === 0) return [...head, line(cols), ...rows.map(line)].join('\n');
  const sCols = ['SERVICE', 'PID', 'GEN', 'STATE', 'UP', 'RESTARTS', 'MODULE'];
  const sRows = services.map((s) => [s.name, s.pid === null ? '-' : String(s.pid), s.generation === null ? '-' : String(s.generation), s.state, dur(s.upS), String(s.restarts), s.module]);
  const sWidths = sCols.map((c, i) => Math.max(c.length, ...sRows.map((r) => r[i]!.length)));
  const sLine = (r: readonly string[]) => r.map((v, i) => (i === r.length - 1 ? v : v.padEnd(sWidths[i]!))).join('  ');
  return [...head, line(cols), ...rows.map(line), '', sLine(sCols), ...sRows.map(sLine)].join('\n');
}

async function top(path: string, timeoutS: number): Promise<number> {
  const tty = process.stdout.isTTY;
  for (;;) {
    const reply = await ask(path, 'status', [], timeoutS);
    if (!reply.ok) throw new CtlError(reply.error ?? 'no status');
    process.stdout.write(`${tty ? '\x1b[H\x1b[2J' : ''}${renderStatus(reply.data as StatusData)}\n${tty ? '' : '\n'}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** Waits (bounded) for the master `pid` to exit, after a stop. */
async function waitGone(pid: number, withinMs: number): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  while (Date.now() < deadline) {
    try { process.kill(pid, 0); } catch { return true; }
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

async function main(argv: readonly string[]): Promise<number> {
  const args = parse(argv);
  if (args === 'help') { process.stdout.write(CTL_USAGE); return 0; }
  const path = await socketPath(args);
  const timeoutS = args.timeoutS ?? defaultTimeoutS(args.command);
  if (args.command === 'top') return top(path, timeoutS);
  const reply = await ask(path, args.command, args.args, timeoutS);
  if (!reply.ok) throw new CtlError(reply.error ?? 'failed');
  if (args.command === 'status') {
    process.stdout.write(args.json ? `${JSON.stringify(reply.data, null, 2)}\n` : `${renderStatus(reply.data as StatusData)}\n`);
    return 0;
  }
  if (reply.text) process.stdout.write(`${reply.text}\n`);
  if (args.command === 'stop') {
    const pid = (reply.data as { pid: number }).pid;
    if (!(await waitGone(pid, 5 * 60_000))) throw new CtlError(`master pid ${pid} is still running`);
  }
  return 0;
}

export function run(argv: readonly string[]): void {
  main(argv).then((code) => process.exit(code), (err: Error) => {
    // One line: a config error (the master's reason for a failed reload, too) may quote the file.
    process.stderr.write(`forkd ctl: ${err instanceof CtlError ? err.message.replace(/\s*\n\s*/g, ' ') : err.stack ?? err.message}\n`);
    process.exit(err instanceof CtlError ? 1 : 70);
  });
}
