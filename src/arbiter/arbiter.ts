/** Owns the master's life: its phase (starting, running, stopping), the signal commands, filling the
 *  pool, and when to give up. It never serves a request: the workers accept on the sockets it
 *  bound. It builds the pieces the master is made of and the context they share (context.ts):
 *  pool.ts keeps the workers, deadlines.ts watches them, reload.ts switches generations,
 *  upgrade.ts hands over to a successor, watchers.ts turns file saves into reloads; what happens is
 *  emitted as lifecycle events (events.ts), which the log, the hooks and systemd follow. */

import { logCertificate, readTls } from '../config/tls';
import { resolve } from 'node:path';
import type { MasterInfo } from '../config/hooks';
import type { Identity } from '../config/identity';
import { ensureLogFile } from '../config/preflight';
import type { Loaded } from '../config/load';
import { resolveWorkerCount } from '../config/values';
import { ExitCode } from '../exit-codes';
import type { Logger } from '../log/logger';
import type { Listener } from '../net/listeners';
import type { Lifecycle, MasterStatus } from '../systemd/lifecycle';
import { OpenSockets, type MasterContext, type Phase } from './context';
import { startDeadlines } from './deadlines';
import type { Subscriber } from './events';
import { generationFrom, Generations } from './generations';
import type { Command, Loop, ManagedSignal } from './loop';
import { monotonicClock, Pool, type Clock } from './pool';
import { Reloader } from './reload';
import { Scale } from './scale';
import { Services } from './services';
import { rowOf, shortName } from './signal-table';
import type { SpawnWorker } from './spawn';
import { masterEventStream, type HookContext, type MasterEvents } from './subscribers';
import { Upgrader } from './upgrade';
import { createWatchers, type Watchers } from './watchers';
import { controlActions, type ControlDeps } from './control-actions';
import { Observability } from './observe';
import { exitReason, Totals, type TotalsJSON } from './totals';
import { isToSuccessor, type FromSuccessor } from '../ipc/messages';
import { readTally } from '../ipc/tally';
import { stopPlans, type StopPlan, type WorkerHandle } from './worker-handle';

export interface ArbiterDeps {
  /** The config as read at start. */
  readonly loaded: Loaded;
  readonly listeners: readonly Listener[];
  readonly log: Logger;
  readonly loop: Loop;
  /** Where forkd was started: chdir is relative to it, and a successor master starts there. */
  readonly startCwd: string;
  /** The pidfile, which an upgrade renames to PIDFILE.oldbin while the successor boots. */
  readonly pidfile: string | null;
  /** Who the workers run as (from preflight at start). */
  readonly identity: Identity | null;
  /** Reads the config again through every layer (a reload). */
  readonly readConfig: () => Promise<Loaded>;
  readonly onExit: (code: ExitCode) => void;
  /** What systemd hears, when forkd runs under it: it follows the lifecycle events. */
  readonly lifecycle?: Lifecycle;
  /** The event stream, when the entry point made it before the sockets were bound (for onStarting). */
  readonly events?: MasterEvents;
  /** More followers of the lifecycle events (after the log, the hooks and systemd). */
  readonly subscribers?: readonly Subscriber[];
  readonly clock?: Clock;
  readonly spawn?: SpawnWorker;
  /** A USR2 successor: resolves at the handover, with the predecessor's totals (null when it had
   *  none or went away first); the status listener and control socket open only then. */
  readonly handedOver?: Promise<TotalsJSON | null>;
}

const BALANCE_EVERY_MS = 100;
/** A certificate pair that does not hold together is read again after this long (one file of two written). */
const CERT_RETRY_MS = 1000;

export class Arbiter {
  readonly #deps: ArbiterDeps;
  readonly #ctx: MasterContext;
  readonly #events: MasterEvents;
  readonly #pool: Pool;
  readonly #generations: Generations;
  readonly #scale: Scale;
  readonly #sockets: OpenSockets;
  readonly #watchers: Watchers;
  readonly #reloader: Reloader;
  readonly #upgrader: Upgrader;
  readonly #deadlines: { stop(): void };
  readonly #services: Services;
  readonly #startedAtMs: number;
  #phase: Phase = 'starting';
  /** While a TERM waits out shutdownDelay: when the graceful stop begins (wall clock), and its timer. */
  #stopAtMs: number | null = null;
  #leaving: NodeJS.Timeout | null = null;
  #exitCode: ExitCode = ExitCode.Ok;
  #finished = false;
  #fillTimer: NodeJS.Timeout | null = null;
  #fillQueued = false;
  #balanceTimer: NodeJS.Timeout | null = null;
  #stopArrived!: () => void;
  readonly #totals = new Totals();
  readonly #observe: Observability;
  /** Checked after every lifecycle event: what a control command waits for. */
  readonly #waiters = new Set<() => void>();
  /** The status listener and control socket are open (or were refused): the master may say it is ready. */
  #observeOpened = false;

  constructor(deps: ArbiterDeps) {
    this.#deps = deps;
    const { log, loaded } = deps;
    const clock = deps.clock ?? monotonicClock;
    this.#startedAtMs = clock.now();
    this.#events = deps.events ?? masterEventStream(log, () => this.hookContext());
    this.#generations = new Generations(generationFrom(1, loaded, {
      listeners: deps.listeners, cwd: this.#cwdFor(loaded), identity: deps.identity, name: 'forkd',
    }));
    this.#scale = new Scale(resolveWorkerCount(loaded.config.workers), (e) => this.#events.emit(e));
    this.#sockets = new OpenSockets(deps.listeners);
    this.#services = new Services(log, () => this.#requestFill());
    this.#pool = new Pool({
      log, clock, spawn: deps.spawn, emit: (e) => this.#events.emit(e), control: this.#poolControl(),
      tally: (nr, t) => { this.#totals.add(nr, t); this.#upgrader.forward({ type: 'tally', nr, tally: t }); },
      appMetrics: (h, msg) => this.#observe.answer(h, msg),
    });
    this.#ctx = {
      log, clock, events: this.#events, pool: this.#pool, generations: this.#generations, scale: this.#scale,
      sockets: this.#sockets, services: this.#services, totals: this.#totals, phase: () => this.#phase, leaving: () => this.#leavingS(), status: () => this.#status(), fill: () => this.#fill(),
    };

    this.#subscribe();
    const stopping = new Promise<void>((ok) => { this.#stopArrived = ok; });
    this.#watchers = createWatchers(log, (why) => deps.loop.push(() => this.#reloader.run(why)),
      (why) => deps.loop.push(() => this.#rotateCertificates(why)));
    this.#reloader = new Reloader(this.#ctx, {
      readConfig: deps.readConfig, cwdFor: (l) => this.#cwdFor(l), watchers: this.#watchers, startPidfile: loaded.config.pid, stopping,
    });
    this.#upgrader = new Upgrader(this.#ctx, {
      pidfile: deps.pidfile, startCwd: deps.startCwd, retire: () => this.#stopAll(stopPlans.graceful(this.#generations.gracefulMs), 'upgraded'),
      handover: () => { this.#observe.release(); return this.#totals.toJSON(); },
      rolledBack: (theirs) => { if (theirs) this.#totals.raiseTo(theirs); void this.#openObserve(); },
      statusHandles: () => this.#observe.statusHandles(),
    });
    this.#observe = new Observability(this.#ctx, controlActions(this.#controlDeps()));
    this.#deadlines = startDeadlines({ pool: this.#pool, log, clock, emit: (e) => this.#events.emit(e), limits: () => this.#limits() });
  }

  /** The log, systemd and the hooks follow the stream in that order (subscribers.ts); the
   *  subscribers given follow them. */
  #subscribe(): void {
    if (this.#deps.lifecycle) this.#events.tellSystemd(this.#deps.lifecycle);
    this.#events.subscribe((e) => {
      this.#totals.follow(e);
      if (e.type === 'worker.exited') this.#upgrader.forward({ type: 'exit', reason: exitReason(e) });
      this.#observe.follow(e);
      if (e.type === 'reload.done') { void this.#observe.update(this.#generations.config); this.#services.reload(this.#generations.current); }
      for (const check of [...this.#waiters]) check();
    });
    for (const s of this.#deps.subscribers ?? []) this.#events.subscribe(s);
    if (this.#deps.handedOver) this.#followPredecessor();
  }

  /** A USR2 successor: what its predecessor's draining workers still count, after the handover. */
  #followPredecessor(): void {
    process.on('message', (msg: unknown) => {
      if (!isToSuccessor(msg)) return;
      if (msg.type === 'tally') { const t = readTally(msg.tally); if (t && Number.isInteger(msg.nr)) this.#totals.add(msg.nr, t); }
      else if (msg.type === 'exit' && typeof msg.reason === 'string') this.#totals.countExit(msg.reason);
    });
  }

  /** A USR2 successor exiting while its predecessor lives (upgrade manual: a rollback) gives it
   *  its totals, for the predecessor's counters to go on from. */
  #totalsBack(): Promise<void> {
    if (!this.#deps.handedOver || !process.connected) return Promise.resolve();
    return new Promise((done) => {
      const timer = setTimeout(done, 1000);
      process.send!({ type: 'totals', totals: this.#totals.toJSON() } satisfies FromSuccessor, undefined, {}, () => { clearTimeout(timer); done(); });
    });
  }

  /** The certificate or key file changed: read the pair again and give it to every serving unit
   *  (setSecureContext: new handshakes get it, no worker restarts, no connection drops). A pair
   *  that does not hold together (written one file at a time) is tried once more a moment later;
   *  then the old certificate serves on, and one line says why. */
  #rotateCertificates(why: string, retried = false): void {
    const { log } = this.#deps;
    let read;
    try {
      read = readTls(this.#generations.config);
    } catch (err) {
      if (!retried) { setTimeout(() => this.#deps.loop.push(() => this.#rotateCertificates(why, true)), CERT_RETRY_MS); return; }
      log.error(`TLS certificates not rotated (${why}): ${(err as Error).message}; serving on with the ones before`, { event: 'tls.rotateFailed' });
      return;
    }
    if (!read) return;
    this.#generations.setTls(read.material);
    this.#pool.send({ type: 'tls', material: read.material });
    logCertificate(log, `TLS certificate rotated (${why})`, read.facts, this.#generations.config.certfile!, 'tls.rotated');
  }

  /** What the control socket's commands need of the master (control-actions.ts). */
  #controlDeps(): ControlDeps {
    return {
      ctx: this.#ctx, loop: this.#deps.loop, observe: () => this.#observe, reloader: this.#reloader, upgrader: this.#upgrader,
      until: (cond, ms) => this.#until(cond, ms),
      resize: (n) => { if (this.#phase === 'stopping') return false; this.#scale.set(n, false, 'ctl'); this.#fill(); return true; },
      reopenLogs: () => this.#reopenLogs(),
      timeoutStack: () => this.#generations.config.timeoutStack,
    };
  }

  /** Resolves true once `cond` holds (checked now and after every lifecycle event), false after `ms`. */
  #until(cond: () => boolean, ms: number): Promise<boolean> {
    if (cond()) return Promise.resolve(true);
    return new Promise((done) => {
      const timer = setTimeout(() => { this.#waiters.delete(check); done(false); }, ms);
      const check = () => { if (cond()) { clearTimeout(timer); this.#waiters.delete(check); done(true); } };
      this.#waiters.add(check);
    });
  }

  /** What a master hook runs with now. */
  hookContext(): HookContext {
    const { config, durationsMs } = this.#generations.current;
    return { config, hookTimeoutMs: durationsMs.hookTimeout, master: this.#master() };
  }

  /** The workers now, each read-only but for its own methods. */
  workers(): readonly WorkerHandle[] { return this.#pool.live(); }

  #poolControl() {
    return {
      changed: () => { this.#generations.pending?.changed(); this.#requestFill(); this.#requestBalance(); },
      load: () => this.#requestBalance(),
      later: (delayMs: number) => {
        if (this.#fillTimer) return;
        this.#fillTimer = setTimeout(() => { this.#fillTimer = null; this.#requestFill(); }, delayMs);
      },
      bootFailed: (generation: number, failures: number, reason: string, code: number | null) => this.#bootFailed(generation, failures, reason, code),
    };
  }

  #cwdFor(loaded: Loaded): string { return resolve(this.#deps.startCwd, loaded.config.chdir ?? '.'); }
  #status(): MasterStatus {
    const g = this.#generations;
    return { serving: this.#pool.serving().length, wanted: this.#scale.target, generation: g.current.id, lastReload: g.lastReload, leavingS: this.#leavingS() };
  }
  #master(): MasterInfo {
    return { pid: process.pid, name: this.#generations.current.name, generation: this.#generations.current.id, workers: this.#scale.target };
  }
  #limits() {
    const { config, durationsMs } = this.#generations.current;
    return { timeoutMs: durationsMs.timeout, bootTimeoutMs: durationsMs.bootTimeout, timeoutStack: config.timeoutStack, maxMemory: config.maxMemory };
  }

  /** At first start (generation 1, until some worker has run for a while) failing workers are
   *  fatal; later, the ones still serving carry on while the others are retried with backoff. A
   *  reload's failures only end that reload. */
  #bootFailed(generation: number, failures: number, reason: string, code: number | null): void {
    this.#generations.pending?.failed(generation, reason);
    if (this.#phase === 'stopping' || this.#pool.everStable || generation !== 1 || this.#generations.current.id !== 1) return;
    if (code === ExitCode.AppLoadFailed) this.#fatal(ExitCode.AppLoadFailed, `App failed to load: ${reason}`);
    else if (failures >= this.#generations.config.maxBootFailures) {
      this.#fatal(ExitCode.BootFailed, `Workers failed to boot ${failures} times in a row; the last: ${reason}`);
    }
  }

  /** The balance is told to the workers at most every BALANCE_EVERY_MS. */
  #requestBalance(): void {
    if (this.#balanceTimer) return;
    this.#balanceTimer = setTimeout(() => {
      this.#balanceTimer = null;
      if (this.#phase !== 'stopping') this.#pool.balance(this.#generations.config.balance);
    }, BALANCE_EVERY_MS);
  }

  /** Filling the pool is housekeeping, not a command: it runs between commands and during a
   *  reload's wait (the reload's own steps are synchronous between its awaits). */
  #requestFill(): void {
    if (this.#fillQueued) return;
    this.#fillQueued = true;
    setImmediate(() => { this.#fillQueued = false; this.#fill(); });
  }

  #fill(): void {
    if (this.#phase === 'stopping') { if (this.#pool.size === 0 && this.#services.size === 0) void this.#finish(); return; }
    const g = this.#generations;
    const target = this.#scale.target;
    this.#pool.fill(target, g.current, g.gracefulMs, g.pending === null);
    if (this.#phase === 'starting' && this.#observeOpened && g.pending === null && target > 0 && this.#pool.serving().length >= target) {
      this.#phase = 'running';
      void this.#events.emit({ type: 'master.ready', status: this.#status(), startupMs: Math.round(this.#ctx.clock.now() - this.#startedAtMs) });
      const why = this.#reloader.takeDeferred();
      if (why) this.#deps.loop.push(() => this.#reloader.run(why));
    } else if (this.#phase === 'running' && g.pending === null) void this.#events.emit({ type: 'master.status', status: this.#status() });
  }

  #fatal(code: ExitCode, message: string): void {
    this.#deps.log.critical(message, { event: 'master.fatal', exitCode: code });
    this.#exitCode = code;
    this.#stopAll(stopPlans.quick(this.#generations.gracefulMs), 'master giving up');
  }

  /** TERM with shutdownDelay: /readyz answers 503 from now on (a load balancer stops sending here)
   *  while the workers serve on; the graceful stop begins when the delay is over, or at once on
   *  another TERM, INT or QUIT. */
  #leave(delayMs: number): void {
    this.#stopAtMs = Date.now() + delayMs;
    this.#leaving = setTimeout(() => { this.#leaving = null; this.#deps.loop.push('SIGTERM'); }, delayMs);
    this.#deps.log.info(`TERM: /readyz answers 503 from now; the workers serve on for ${delayMs / 1000} s (shutdownDelay), `
      + 'then stop gracefully (TERM again, INT or QUIT: now)', { event: 'master.leaving', shutdownDelayMs: delayMs });
    void this.#events.emit({ type: 'master.status', status: this.#status() });
  }

  #leavingS(): number | null {
    return this.#stopAtMs === null || this.#phase === 'stopping' ? null : Math.max(0, Math.ceil((this.#stopAtMs - Date.now()) / 1000));
  }

  /** Stopping closes the master's sockets first, so that new connections are refused at once
   *  instead of waiting in a backlog no worker will accept from again. */
  #stopAll(plan: StopPlan, reason: string): void {
    const already = this.#phase === 'stopping';
    // The phase first: whoever follows master.stopping (a control command waiting) sees it.
    this.#phase = 'stopping';
    if (this.#leaving) { clearTimeout(this.#leaving); this.#leaving = null; }
    if (!already) void this.#events.emit({ type: 'master.stopping', status: this.#status(), reason });
    this.#watchers.close();
    this.#upgrader.abort();
    const kept = this.#upgrader.keptBinds;
    this.#sockets.close(this.#sockets.all().filter((l) => !kept?.has(l.bind)));
    if (this.#fillTimer) { clearTimeout(this.#fillTimer); this.#fillTimer = null; }
    this.#pool.stopAll(plan, reason);
    void this.#services.stopAll(plan.killAfterMs);
    this.#requestFill();
  }

  async #finish(): Promise<void> {
    if (this.#finished) return;
    this.#finished = true;
    this.#deadlines.stop();
    this.#observe.close();
    await this.#totalsBack();
    await this.#events.emit({ type: 'master.exiting', code: this.#exitCode });
    this.#deps.onExit(this.#exitCode);
  }

  /** USR1: reopening is quick and can be repeated, so it is done as the signal arrives, even during
   *  a reload: logrotate may compress the moved file right after its postrotate kill -USR1. */
  #reopenLogs(): void {
    const { log } = this.#deps;
    try {
      log.reopen();
      // The workers reopen the access log under its name: make sure it is there and theirs.
      const { accessLog } = this.#generations.config;
      if (accessLog && accessLog !== '-') ensureLogFile('accessLog', accessLog, this.#generations.current.identity, { existing: false });
    } catch (err) {
      log.error(`cannot reopen the error log: ${(err as Error).message}; writing on to the file it had`, { event: 'master.reopenFailed' });
    } finally {
      this.#pool.send({ type: 'reopenLogs' });
      this.#services.reopenLogs();
    }
    void this.#events.emit({ type: 'logs.reopened' });
  }

  #resize(grow: boolean): void {
    if (this.#phase === 'stopping') return;
    if (grow) this.#scale.grow();
    else if (!this.#scale.shrink()) { this.#deps.log.info('TTOU ignored: forkd keeps at least 1 worker', { event: 'master.resize' }); return; }
    this.#fill();
  }

  #idle(): void {
    if (this.#phase === 'stopping') return;
    this.#scale.set(this.#scale.wanted, true, 'WINCH');
    this.#deps.log.info('WINCH: stopping every worker; the master keeps its sockets (HUP or TTIN brings workers back)', { event: 'master.idle' });
    this.#fill();
  }

  /** What each signal runs (signal-table.ts says what each is for, and when it runs). */
  readonly #commands: Record<ManagedSignal, Command> = {
    SIGTERM: () => {
      if (this.#phase === 'stopping') return;
      const delayMs = this.#generations.current.durationsMs.shutdownDelay;
      // The first TERM with a shutdownDelay: leave first; a second (or the delay's end) stops.
      if (delayMs > 0 && this.#stopAtMs === null) { this.#leave(delayMs); return; }
      this.#stopAll(stopPlans.graceful(this.#generations.gracefulMs), 'TERM');
    },
    SIGINT: () => this.#stopAll(stopPlans.quick(this.#generations.gracefulMs), 'INT'),
    SIGQUIT: () => this.#stopAll(stopPlans.quick(this.#generations.gracefulMs), 'QUIT'),
    SIGTTIN: () => this.#resize(true),
    SIGTTOU: () => this.#resize(false),
    SIGHUP: () => this.#reloader.run('HUP'),
    SIGUSR1: () => this.#reopenLogs(),
    SIGUSR2: () => { void this.#upgrader.run(); },
    SIGWINCH: () => this.#idle(),
  };

  start(): void {
    const { log, loop } = this.#deps;
    void this.#events.emit({ type: 'master.started', workers: this.#scale.target });
    loop.onInterrupt(() => this.#stopArrived());
    loop.start(
      (item) => {
        if (typeof item !== 'string') return item();
        // A signal acted on at once (USR1) says what it did in its own line.
        if (!rowOf(item).atOnce) log.info(`Handling signal: ${shortName(item)}`, { event: 'master.signal' });
        return this.#commands[item]();
      },
      (err) => log.error('master command failed', { event: 'master.error', error: err }),
    );
    this.#watchers.update(this.#generations.config, this.#generations.current.configFile, this.#generations.current.cwd);
    void this.#openObserve(true);
    this.#services.start(this.#generations.current);
    this.#requestFill();
  }

  /** The status listener, control socket and statsd, as the config names them, opened before the
 *  master says it is ready: one that cannot be opened at start ends the start (a USR2 successor's
 *  then fails the upgrade, and its predecessor serves on), as a bind of the app's would; later (a
 *  rollback) it is logged. A successor opens what its predecessor holds once that one hands over,
 *  and adopts its totals then. */
  async #openObserve(atStart = false): Promise<void> {
    const successor = atStart && this.#deps.handedOver !== undefined;
    try {
      await this.#observe.open(this.#generations.config, successor);
    } catch (err) {
      if (atStart) this.#fatal(ExitCode.Failure, (err as Error).message);
      else this.#deps.log.error((err as Error).message, { event: 'master.observeFailed' });
    }
    if (atStart) { this.#observeOpened = true; this.#requestFill(); }
    if (!successor || this.#phase === 'stopping') return;
    const totals = await this.#deps.handedOver;
    if (totals) this.#totals.adopt(totals);
    if ((this.#phase as Phase) !== 'stopping') await this.#observe.afterHandover();
  }

}
