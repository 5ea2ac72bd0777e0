/** Owns the master's life: its phases (starting, running, stopping), how many workers there should
 *  be, the signal table, reloads, and when to give up. It never serves a request: the workers
 *  accept on the sockets it bound. pool.ts keeps the workers, deadlines.ts watches them, reload.ts
 *  switches generations, watchers.ts turns file saves into reloads. */

import { resolve } from 'node:path';
import { runHook, type HookName, type Hooks, type MasterInfo } from '../config/hooks';
import type { Identity } from '../config/identity';
import { ensureLogFile } from '../config/preflight';
import type { Loaded } from '../config/load';
import { resolveWorkerCount } from '../config/values';
import { ExitCode } from '../exit-codes';
import type { Logger } from '../log/logger';
import type { Listener } from '../net/listeners';
import { silentLifecycle, type Lifecycle, type MasterStatus } from '../systemd/lifecycle';
import { startDeadlines } from './deadlines';
import type { Command, Loop, ManagedSignal } from './loop';
import { createPool, monotonicClock, type Clock, type Generation } from './pool';
import { reload, type PendingGeneration } from './reload';
import { restorePidfile, startSuccessor, SUCCESSOR_START_ALLOWANCE_MS, type Upgrade } from './upgrade';
import { createWatchers } from './watchers';
import { workerSetupFor } from './worker-config';
import { stopPlans, type SpawnWorker, type StopPlan, type WorkerHandle } from './worker-handle';

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
  /** Told of readiness, reloads and stopping (systemd's sd_notify subscribes). */
  readonly lifecycle?: Lifecycle;
  readonly clock?: Clock;
  readonly spawn?: SpawnWorker;
}

type Phase = 'starting' | 'running' | 'stopping';
const BALANCE_EVERY_MS = 100;
const isStop = (item: unknown) => item === 'SIGTERM' || item === 'SIGINT' || item === 'SIGQUIT';
const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;

export function createArbiter(deps: ArbiterDeps): { start(): void } {
  const { log, loop } = deps;
  const clock = deps.clock ?? monotonicClock;
  const lifecycle = deps.lifecycle ?? silentLifecycle;
  const cwdFor = (loaded: Loaded) => resolve(deps.startCwd, loaded.config.chdir ?? '.');
  let gen: Generation = {
    id: 1, config: deps.loaded.config, listeners: deps.listeners, cwd: cwdFor(deps.loaded),
    configFile: deps.loaded.file, name: deps.loaded.config.name ?? deps.loaded.config.app ?? 'forkd', worker: workerSetupFor(deps.loaded),
    identity: deps.identity,
  };
  const cfg = () => gen.config;
  const gracefulMs = () => cfg().gracefulTimeout * 1000;
  const startedAtMs = clock.now();
  let phase: Phase = 'starting';
  let exitCode: ExitCode = ExitCode.Ok;
  let wanted = resolveWorkerCount(cfg().workers);
  let idle = false;
  let pending: PendingGeneration | null = null;
  let lastGenerationId = 1;
  let lastReload: MasterStatus['lastReload'] = null;
  let upgrading: Upgrade | null = null;
  /** A successor master serves now, on `kept` of our sockets: leave those (and their files) open. */
  let handedOver: { pid: number; kept: ReadonlySet<string> } | null = null;
  /** A HUP that came before the first workers served, run once they do. */
  let deferredReload: string | null = null;
  let fillTimer: NodeJS.Timeout | null = null;
  let fillQueued = false;
  let finished = false;
  const openListeners = new Set(deps.listeners);
  let stopArrived!: () => void;
  const stopping = new Promise<void>((ok) => { stopArrived = ok; });

  const target = () => (idle ? 0 : wanted);
  /** Read fresh: TypeScript would narrow `phase` across an await. */
  const isStopping = () => phase === 'stopping';
  const status = (): MasterStatus => ({ serving: pool.serving().length, wanted: target(), generation: gen.id, lastReload });
  const master = (): MasterInfo => ({ pid: process.pid, name: gen.name, generation: gen.id, workers: target() });
  const hook = <K extends HookName>(name: K, ...args: Parameters<Hooks[K]>) =>
    runHook(cfg()[name], name, args, { timeoutMs: cfg().hookTimeout * 1000, log });

  const pool = createPool({
    log, clock, spawn: deps.spawn,
    later: (delayMs) => {
      if (fillTimer) return;
      fillTimer = setTimeout(() => { fillTimer = null; requestFill(); }, delayMs);
    },
    events: {
      changed: () => { pending?.changed(); requestFill(); requestBalance(); },
      load: () => requestBalance(),
      spawning: (nr, generation) => void hook('preFork', master(), { nr, generation }),
      spawned: (h) => void hook('postFork', master(), { pid: h.pid, nr: h.nr, generation: h.generation }),
      exited: (h, code, signal) => void hook('childExit', master(), { pid: h.pid, nr: h.nr, generation: h.generation, code, signal }),
      // At first start (generation 1, until some worker has run for a while) failing workers are
      // fatal; later, the ones still serving carry on while the others are retried with backoff.
      // A reload's failures only end that reload.
      bootFailed: (_nr, generation, failures, reason, code) => {
        pending?.failed(generation, reason);
        if (phase === 'stopping' || pool.everStable || generation !== 1 || gen.id !== 1) return;
        if (code === ExitCode.AppLoadFailed) fatal(ExitCode.AppLoadFailed, `App failed to load: ${reason}`);
        else if (failures >= cfg().maxBootFailures) {
          fatal(ExitCode.BootFailed, `Workers failed to boot ${failures} times in a row; the last: ${reason}`);
        }
      },
    },
  });
  const deadlines = startDeadlines({
    pool, log, clock,
    limits: () => ({ timeoutMs: cfg().timeout * 1000, bootTimeoutS: cfg().bootTimeout, timeoutStack: cfg().timeoutStack, maxMemory: cfg().maxMemory }),
    beforeKill: (h, stack) => hook('workerAbort', master(), { pid: h.pid, nr: h.nr, generation: h.generation, stack }),
  });
  const watchers = createWatchers(log, (why) => loop.push(() => reloadCommand(why)));

  /** The balance is told to the workers at most every BALANCE_EVERY_MS. */
  let balanceTimer: NodeJS.Timeout | null = null;
  function requestBalance(): void {
    if (balanceTimer) return;
    balanceTimer = setTimeout(() => { balanceTimer = null; if (!isStopping()) pool.balance(cfg().balance); }, BALANCE_EVERY_MS);
  }

  /** Filling the pool is housekeeping, not a command: it runs between commands and during a
   *  reload's wait (the reload's own steps are synchronous between its awaits). */
  function requestFill(): void {
    if (fillQueued) return;
    fillQueued = true;
    setImmediate(() => { fillQueued = false; fill(); });
  }

  function fill(): void {
    if (phase === 'stopping') { if (pool.size === 0) void finish(); return; }
    pool.fill(target(), gen, gracefulMs(), pending === null);
    if (phase === 'starting' && pending === null && target() > 0 && pool.serving().length >= target()) {
      phase = 'running';
      log.info(`Ready: ${plural(pool.serving().length, 'worker')} serving`,
        { event: 'master.ready', startupMs: Math.round(clock.now() - startedAtMs) });
      lifecycle.ready(status());
      void hook('whenReady', master());
      if (deferredReload) { const why = deferredReload; deferredReload = null; loop.push(() => reloadCommand(why)); }
    } else if (phase === 'running' && pending === null) lifecycle.status(status());
  }

  function fatal(code: ExitCode, message: string): void {
    log.critical(message, { event: 'master.fatal', exitCode: code });
    exitCode = code;
    stopAll(stopPlans.quick(gracefulMs()), 'master giving up');
  }

  function closeListeners(which: Iterable<Listener>): void {
    for (const l of which) { l.close(); openListeners.delete(l); }
  }

  /** Stopping closes the master's sockets first, so that new connections are refused at once
   *  instead of waiting in a backlog no worker will accept from again. */
  function stopAll(plan: StopPlan, reason: string): void {
    if (phase !== 'stopping') lifecycle.stopping(status());
    phase = 'stopping';
    watchers.close();
    upgrading?.abort();
    const kept = handedOver?.kept;
    closeListeners([...openListeners].filter((l) => !kept?.has(l.bind)));
    if (fillTimer) { clearTimeout(fillTimer); fillTimer = null; }
    pool.stopAll(plan, reason);
    requestFill();
  }

  async function finish(): Promise<void> {
    if (finished) return;
    finished = true;
    deadlines.stop();
    lifecycle.close();
    await hook('onExit', master());
    deps.onExit(exitCode);
  }

  function setWanted(next: number, nextIdle: boolean): void {
    const before = target();
    wanted = next;
    idle = nextIdle;
    if (target() !== before) void hook('nworkersChanged', master(), target(), before);
  }

  function resize(delta: number): void {
    if (phase === 'stopping') return;
    if (delta > 0) setWanted(idle ? 1 : wanted + 1, false);
    else if (idle || wanted <= 1) { log.info('TTOU ignored: forkd keeps at least 1 worker', { event: 'master.resize' }); return; }
    else setWanted(wanted - 1, false);
    log.info(`Number of workers: ${target()}`, { event: 'master.resize', workers: target() });
    fill();
  }

  async function reloadCommand(why: string): Promise<void> {
    if (phase === 'stopping') return;
    if (phase === 'starting') {
      log.info(`${why} during start-up: reloading once the workers serve`, { event: 'reload.deferred' });
      deferredReload = why;
      return;
    }
    const before = { wanted, idle };
    lifecycle.reloading(status());
    await hook('onReload', master());
    const outcome = await reload({
      log, pool, stopping, cwdFor,
      serving: () => gen,
      nextGenerationId: () => ++lastGenerationId,
      readConfig: deps.readConfig,
      workersFor: (loaded) => (loaded.origins.workers.layer !== 'default' ? resolveWorkerCount(loaded.config.workers) : wanted),
      begin: (next, count, watch, opened) => {
        pending = watch;
        gen = next;
        for (const l of opened) openListeners.add(l);
        setWanted(count, false);
        pool.replaceOlderThan(next.id, gracefulMs());
        fill();
      },
      commit: (next, loaded, count, dropped) => {
        pending = null;
        closeListeners(dropped);
        pool.stopAll(stopPlans.graceful(gracefulMs()), 'reloaded', (h: WorkerHandle) => h.generation < next.id && h.state === 'replacing');
        try { log.reconfigure({ target: loaded.config.errorLog, level: loaded.config.logLevel }); } catch (err) {
          log.error(`cannot open errorLog ${loaded.config.errorLog}: ${(err as Error).message}; logging on where it was`);
        }
        if (loaded.config.pid !== deps.loaded.config.pid) log.warning('a changed pid takes effect at the next start', { event: 'reload.pid' });
        process.title = `forkd: master [${next.name}]`;
        watchers.update(next.config, next.configFile, next.cwd);
        log.info(`Reload complete: generation ${next.id}, ${plural(count, 'worker')}`, { event: 'reload.done', generation: next.id });
        fill();
      },
      abandon: (next, prev, opened) => {
        pending = null;
        pool.abandon(next.id, gracefulMs());
        gen = prev;
        setWanted(before.wanted, before.idle);
        closeListeners(opened);
        fill();
      },
    }, why);
    pending = null;
    if (outcome.ok || outcome.reason !== 'stopping') {
      lastReload = outcome.ok ? { ok: true } : { ok: false, reason: outcome.reason };
      lifecycle.reloaded(status());
    }
    if (!outcome.ok && outcome.reason !== 'stopping') {
      log.error(`Reload failed: ${outcome.reason}; still serving generation ${gen.id} as before`,
        { event: 'reload.failed', generation: gen.id });
    }
  }

  /** USR1 is acted on as it arrives, even during a reload: logrotate may compress the moved file
   *  right after its postrotate kill -USR1. Reopening is quick and can be repeated. */
  function reopenLogs(): void {
    try {
      log.reopen();
      // The workers reopen the access log under its name: make sure it is there and theirs.
      const { accessLog } = cfg();
      if (accessLog && accessLog !== '-') ensureLogFile('accessLog', accessLog, gen.identity, { existing: false });
    } catch (err) {
      log.error(`cannot reopen the error log: ${(err as Error).message}; writing on to the file it had`, { event: 'master.reopenFailed' });
    } finally {
      pool.send({ type: 'reopenLogs' });
    }
    log.info('Handling signal: USR1: log files reopened', { event: 'master.reopenLogs' });
  }

  async function upgrade(): Promise<void> {
    if (phase !== 'running' || upgrading || handedOver) {
      log.warning(`USR2 ignored: ${upgrading ? 'an upgrade is already under way' : handedOver ? 'this master was upgraded already' : `the master is ${phase}`}`,
        { event: 'upgrade.ignored' });
      return;
    }
    await hook('preExec', master());
    const current = startSuccessor({
      log, listeners: [...openListeners], pidfile: deps.pidfile, cwd: deps.startCwd,
      readyWithinMs: cfg().bootTimeout * 1000 + SUCCESSOR_START_ALLOWANCE_MS,
    });
    upgrading = current;
    const outcome = await current.outcome;
    upgrading = null;
    if (!outcome.ok) {
      if (!isStopping()) {
        log.error(`Upgrade failed: ${outcome.reason}; this master carries on${deps.pidfile ? ' (pidfile restored)' : ''}`, { event: 'upgrade.failed' });
      }
      return;
    }
    handedOver = { pid: outcome.pid, kept: new Set(outcome.kept) };
    lifecycle.handOver(outcome.pid);
    if (cfg().upgrade === 'manual') {
      log.info(`Upgrade: the successor master (pid:${outcome.pid}) serves. Send this master WINCH then TERM to finish, `
        + 'or HUP this master and TERM the successor to roll back', { event: 'upgrade.ready', successor: outcome.pid });
      // Rolled back (the successor stopped while this master serves): this one is the main one again.
      current.child.once('exit', () => {
        if (isStopping() || !handedOver) return;
        handedOver = null;
        restorePidfile(deps.pidfile);
        lifecycle.reclaim(status());
        log.info(`The successor master (pid:${outcome.pid}) exited: this master is the main one again`, { event: 'upgrade.rolledBack' });
      });
      return;
    }
    log.info(`Upgrade complete: the successor master (pid:${outcome.pid}) serves; retiring this one`, { event: 'upgrade.done', successor: outcome.pid });
    if (!isStopping()) stopAll(stopPlans.graceful(gracefulMs()), 'upgraded');
  }

  const onSignal: Record<ManagedSignal, Command> = {
    SIGTERM: () => { if (phase !== 'stopping') stopAll(stopPlans.graceful(gracefulMs()), 'TERM'); },
    SIGINT: () => stopAll(stopPlans.quick(gracefulMs()), 'INT'),
    SIGQUIT: () => stopAll(stopPlans.quick(gracefulMs()), 'QUIT'),
    SIGTTIN: () => resize(+1),
    SIGTTOU: () => resize(-1),
    SIGHUP: () => reloadCommand('HUP'),
    SIGUSR1: () => undefined, // acted on as it arrived: see reopenLogs
    SIGUSR2: () => { void upgrade(); },
    SIGWINCH: () => {
      if (phase === 'stopping') return;
      setWanted(wanted, true);
      log.info('WINCH: stopping every worker; the master keeps its sockets (HUP or TTIN brings workers back)',
        { event: 'master.idle' });
      fill();
    },
  };

  return {
    start() {
      log.info(`Using ${plural(target(), 'worker')}`, { event: 'master.start', workers: target() });
      loop.onArrival((item) => {
        if (isStop(item)) stopArrived();
        if (item === 'SIGUSR1') reopenLogs();
      });
      loop.start(
        (item) => {
          if (typeof item !== 'string') return item();
          if (item === 'SIGUSR1') return undefined;
          log.info(`Handling signal: ${item.slice(3)}`, { event: 'master.signal' });
          return onSignal[item]();
        },
        (err) => log.error('master command failed', { event: 'master.error', error: err }),
      );
      watchers.update(cfg(), gen.configFile, gen.cwd);
      requestFill();
    },
  };
}
