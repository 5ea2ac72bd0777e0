/** Owns USR2, the binary upgrade: start a successor master from the code installed now (the CLI
 *  path is looked up again, so a new release behind a symlink is what runs), with the same argv and
 *  working directory, handing it every listening socket as an inherited fd (FORKD_FDS, with what
 *  each is in FORKD_BINDS). The pidfile becomes PIDFILE.oldbin while the successor boots.
 *
 *  The handover, in order: the successor's workers all serve → it says so over IPC, naming the
 *  sockets it kept → this master takes it (no timeout can kill the successor from here on) and
 *  acks → only then does the successor tell systemd MAINPID= and READY=1. If the successor dies or
 *  is not ready in time, it is killed, the pidfile restored, and this master carries on. */

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { isFromSuccessor, isToSuccessor, type FromSuccessor, type ToSuccessor } from '../ipc/messages';
import type { Listener } from '../net/listeners';
import { HANDOVER_BINDS_ENV, HANDOVER_FDS_ENV, HANDOVER_STATUS_ENV, UPGRADE_FROM_ENV } from '../env-names';
import type { HandedOver } from '../net/inherited';
import { silentLifecycle, type Lifecycle } from '../systemd/lifecycle';
import type { MasterContext } from './context';
import type { EventStream } from './events';
import type { TotalsJSON } from './totals';

/** The successor master's own start, on top of its workers' bootTimeout. */
export const SUCCESSOR_START_ALLOWANCE_MS = 5000;

export interface UpgradeRequest {
  readonly events: EventStream;
  readonly listeners: readonly Listener[];
  readonly pidfile: string | null;
  readonly cwd: string;
  /** How long the successor has to report ready. */
  readonly readyWithinMs: number;
  /** Called as the handover is taken; what it returns goes to the successor. */
  readonly handover: () => TotalsJSON | null;
  /** The status listeners: each TCP one is handed to the successor as an fd after the listening
   *  sockets; a Unix one (fd null) the successor binds again once this master has let go of it. */
  readonly status: ReadonlyArray<{ bind: string; fd: number | null }>;
}

export type UpgradeOutcome =
  | { readonly ok: true; readonly pid: number; readonly kept: readonly string[] }
  | { readonly ok: false; readonly reason: string };

export interface Upgrade {
  readonly child: ChildProcess;
  readonly outcome: Promise<UpgradeOutcome>;
  /** A stop arrived first: kill the successor and put the pidfile back. */
  abort(): void;
}

function movePidfile(from: string, to: string): void {
  try { if (existsSync(from)) renameSync(from, to); } catch { /* the pidfile is a convenience */ }
}

/** Puts PIDFILE back for this master (PIDFILE.oldbin → PIDFILE), unless another live master holds it. */
function restorePidfile(pidfile: string | null): void {
  if (!pidfile || !existsSync(`${pidfile}.oldbin`)) return;
  let holder = NaN;
  try { holder = Number(readFileSync(pidfile, 'utf8').trim()); } catch { /* none */ }
  let alive = false;
  try { if (holder > 0 && holder !== process.pid) { process.kill(holder, 0); alive = true; } } catch { /* gone */ }
  if (!alive) movePidfile(`${pidfile}.oldbin`, pidfile);
}

function handedOver(l: Listener): HandedOver {
  return l.systemdName !== undefined ? { bind: l.bind, systemd: true, name: l.systemdName } : { bind: l.bind, systemd: false, name: null };
}

/** Starts the successor; its outcome resolves once it has taken over, or fails (after killing it). */
function startSuccessor(req: UpgradeRequest): Upgrade {
  const { listeners } = req;
  if (req.pidfile) movePidfile(req.pidfile, `${req.pidfile}.oldbin`);
  const passed = req.status.flatMap((s) => (s.fd === null ? [] : [s.fd]));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    [HANDOVER_FDS_ENV]: listeners.map((_, i) => 3 + i).join(','),
    [HANDOVER_BINDS_ENV]: JSON.stringify(listeners.map(handedOver)),
    [HANDOVER_STATUS_ENV]: JSON.stringify(req.status.map((s) => ({ bind: s.bind, fd: s.fd === null ? null : 3 + listeners.length + passed.indexOf(s.fd) }))),
    [UPGRADE_FROM_ENV]: String(process.pid),
  };
  // process.argv[1] is the CLI path as it was invoked (not resolved through symlinks): spawning it
  // again runs whatever release that path points to now.
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...process.argv.slice(2)], {
    cwd: req.cwd, env, stdio: ['ignore', 'inherit', 'inherit', ...listeners.map((l) => l.fd), ...passed, 'ipc'],
  });
  void req.events.emit({ type: 'upgrade.begun', successor: child.pid ?? -1 });
  let settled = false;
  let fail: (reason: string) => void = () => undefined;
  const outcome = new Promise<UpgradeOutcome>((done) => {
    const timer = setTimeout(() => fail(`the successor was not ready within ${req.readyWithinMs / 1000}s`), req.readyWithinMs);
    fail = (reason: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        setTimeout(() => { if (child.exitCode === null) child.kill('SIGKILL'); }, 2000).unref();
      }
      restorePidfile(req.pidfile);
      done({ ok: false, reason });
    };
    child.on('message', (msg) => {
      if (!isFromSuccessor(msg) || msg.type !== 'upgraded' || settled) return;
      settled = true;
      clearTimeout(timer);
      const ack: ToSuccessor = { type: 'handover', totals: req.handover() };
      child.send(ack, () => undefined);
      done({ ok: true, pid: msg.pid, kept: msg.kept });
    });
    child.once('exit', (code, signal) => fail(`the successor ${signal ? `was killed by ${signal}` : `exited with code ${code}`} before it was ready`));
    child.once('error', (err) => fail(`the successor could not start: ${err.message}`));
  });
  return { child, outcome, abort: () => fail('a stop arrived first') };
}

export interface UpgraderDeps {
  readonly pidfile: string | null;
  /** Where forkd was started: the successor starts there. */
  readonly startCwd: string;
  /** The successor serves (upgrade auto): this master stops, gracefully. */
  readonly retire: () => void;
  /** Right before the handover is acked: let go of what the successor opens next (the status
   *  listener, the control socket) and give the totals it goes on from. */
  readonly handover: () => TotalsJSON | null;
  /** The successor stopped while this master serves: open those again, and go on from what it
   *  counted (its totals, when it sent them as it exited). */
  readonly rolledBack: (successorTotals: TotalsJSON | null) => void;
  /** The status listeners now, for the successor to inherit. */
  readonly statusHandles: () => ReadonlyArray<{ bind: string; fd: number | null }>;
}

/** The old master's side of USR2: one upgrade at a time, the handover, and (upgrade manual) the
 *  rollback when the successor exits while this master still serves. */
export class Upgrader {
  readonly #ctx: MasterContext;
  readonly #deps: UpgraderDeps;
  #running: Upgrade | null = null;
  /** A successor master serves now, on `kept` of our sockets: leave those (and their files) open. */
  #handedOver: { pid: number; kept: ReadonlySet<string> } | null = null;
  /** From the handover until it exits: the successor, told what this master still counts. */
  #successor: ChildProcess | null = null;
  /** What the successor counted, as it said when it exited (upgrade manual). */
  #successorTotals: TotalsJSON | null = null;

  constructor(ctx: MasterContext, deps: UpgraderDeps) {
    this.#ctx = ctx;
    this.#deps = deps;
  }

  /** The binds a successor serves on now (the master's stop must leave them open). */
  get keptBinds(): ReadonlySet<string> | undefined { return this.#handedOver?.kept; }

  /** A stop arrived: a successor still booting is killed. */
  abort(): void { this.#running?.abort(); }

  /** After the handover: tells the successor what this master's draining workers still count, so
   *  that its counters have every response (nothing, when there is no successor). */
  forward(msg: ToSuccessor): void {
    const child = this.#successor;
    if (child?.connected) child.send(msg, () => undefined);
  }

  /** Resolves with the outcome: the successor's pid, or why there is none. */
  async run(): Promise<UpgradeOutcome> {
    const ctx = this.#ctx;
    const busy = ctx.phase() !== 'running' ? `the master is ${ctx.phase()}`
      : this.#running ? 'an upgrade is already under way' : this.#handedOver ? 'this master was upgraded already' : null;
    if (busy) { ctx.log.warning(`USR2 ignored: ${busy}`, { event: 'upgrade.ignored' }); return { ok: false, reason: busy }; }
    await ctx.events.emit({ type: 'upgrade.requested' });
    const { durationsMs } = ctx.generations.current;
    const current = startSuccessor({
      events: ctx.events, listeners: ctx.sockets.all(), pidfile: this.#deps.pidfile, cwd: this.#deps.startCwd,
      readyWithinMs: durationsMs.bootTimeout + SUCCESSOR_START_ALLOWANCE_MS, status: this.#deps.statusHandles(),
      // From the totals' snapshot on, every delta goes to the successor too (same tick: none is missed).
      handover: () => { this.#successor = current.child; return this.#deps.handover(); },
    });
    current.child.on('message', (msg) => { if (isFromSuccessor(msg) && msg.type === 'totals') this.#successorTotals = msg.totals; });
    current.child.once('exit', () => { this.#successor = null; });
    this.#running = current;
    const outcome = await current.outcome;
    this.#running = null;
    if (!outcome.ok) {
      if (ctx.phase() !== 'stopping') void ctx.events.emit({ type: 'upgrade.failed', reason: outcome.reason, pidfileRestored: this.#deps.pidfile !== null });
      return outcome;
    }
    this.#handedOver = { pid: outcome.pid, kept: new Set(outcome.kept) };
    // Read now, not at USR2: a reload may have finished while the successor booted.
    const manual = ctx.generations.config.upgrade === 'manual';
    void ctx.events.emit({ type: 'upgrade.handedOver', successor: outcome.pid, manual });
    if (manual) current.child.once('exit', () => this.#rolledBack(outcome.pid));
    else if (ctx.phase() !== 'stopping') this.#deps.retire();
    return outcome;
  }

  /** The successor stopped while this master serves: this one is the main one again. */
  #rolledBack(successor: number): void {
    if (this.#ctx.phase() === 'stopping' || !this.#handedOver) return;
    this.#handedOver = null;
    restorePidfile(this.#deps.pidfile);
    void this.#ctx.events.emit({ type: 'upgrade.rolledBack', successor, status: this.#ctx.status() });
    this.#deps.rolledBack(this.#successorTotals);
    this.#successorTotals = null;
  }
}

// ---- The successor's side: a master started by USR2 ----

/** The pid of the master that started this one by USR2, or null; taken out of `env` so that
 *  nothing this master starts inherits it. systemd's watchdog is addressed to the main process,
 *  which a successor is about to be. */
export function takeSuccessorOf(env: NodeJS.ProcessEnv): number | null {
  const of = env[UPGRADE_FROM_ENV];
  delete env[UPGRADE_FROM_ENV];
  if (!of) return null;
  if (env.WATCHDOG_PID === of) env.WATCHDOG_PID = String(process.pid);
  return Number(of);
}

/** A successor tells its predecessor it serves (naming the sockets it kept) and waits for the ack;
 *  only then does it tell systemd MAINPID= and READY=1 (after the ack, no timeout of the
 *  predecessor's can kill it any more). */
export function successorLifecycle(systemd: Lifecycle | null, listeners: readonly Listener[], onHandover: (totals: TotalsJSON | null) => void): Lifecycle {
  const base = systemd ?? silentLifecycle;
  const kept = listeners.flatMap((l) => (l.predecessorBind !== undefined ? [l.predecessorBind] : []));
  return {
    ...base,
    ready(status) {
      const taken = new Promise<void>((ok) => {
        if (!process.connected) { onHandover(null); ok(); return; }
        const onMessage = (msg: unknown) => {
          if (!isToSuccessor(msg) || msg.type !== 'handover') return;
          process.off('message', onMessage);
          onHandover(msg.totals ?? null);
          ok();
        };
        process.on('message', onMessage);
        process.once('disconnect', () => { onHandover(null); ok(); });
        process.send!({ type: 'upgraded', pid: process.pid, kept } satisfies FromSuccessor);
      });
      void taken.then(() => base.ready(status));
    },
  };
}
