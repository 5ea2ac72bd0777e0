/** Owns the master's life: its phases (starting, running, stopping), how many workers there should
 *  be, the signal table, and when to give up. It never serves a request: the workers accept on the
 *  sockets it bound. The pool keeps the workers; deadlines.ts watches them. */

import type { Config } from '../config/settings';
import { resolveWorkerCount } from '../config/values';
import { ExitCode } from '../exit-codes';
import type { Logger } from '../log/logger';
import type { Listener } from '../net/listeners';
import { startDeadlines } from './deadlines';
import type { Command, Loop, ManagedSignal } from './loop';
import { createPool, monotonicClock, type Clock, type Generation } from './pool';
import { stopPlans, type SpawnWorker, type StopPlan } from './worker-handle';

export interface ArbiterDeps {
  readonly config: Config;
  readonly name: string;
  readonly listeners: readonly Listener[];
  readonly log: Logger;
  readonly loop: Loop;
  readonly onExit: (code: ExitCode) => void;
  readonly clock?: Clock;
  readonly spawn?: SpawnWorker;
}

/** Consecutive boot failures at first start after which forkd gives up with exit 3. */
const MAX_START_FAILURES = 5;

type Phase = 'starting' | 'running' | 'stopping';

export function createArbiter(deps: ArbiterDeps): { start(): void } {
  const { log, loop } = deps;
  const clock = deps.clock ?? monotonicClock;
  const gen: Generation = { id: 1, config: deps.config, listeners: deps.listeners };
  const cfg = () => gen.config;
  const gracefulMs = () => cfg().gracefulTimeout * 1000;
  const timeoutMs = cfg().timeout * 1000;
  const startedAtMs = clock.now();
  let phase: Phase = 'starting';
  let exitCode: ExitCode = ExitCode.Ok;
  let extra = 0;
  let fillQueued = false;
  let fillTimer: NodeJS.Timeout | null = null;
  let finished = false;
  let listenersClosed = false;

  const target = () => Math.max(1, resolveWorkerCount(cfg().workers) + extra);

  const pool = createPool({
    log, clock, name: deps.name, spawn: deps.spawn,
    beatIntervalMs: timeoutMs > 0 ? Math.min(1000, Math.max(50, timeoutMs / 4)) : 1000,
    later: (delayMs) => {
      if (fillTimer) return;
      fillTimer = setTimeout(() => { fillTimer = null; requestFill(); }, delayMs);
    },
    events: {
      changed: requestFill,
      // At first start (until some worker has run for a while) failing workers are fatal; later,
      // the ones still serving carry on while the others are retried with backoff.
      bootFailed: (_nr, failures, reason, code) => {
        if (phase === 'stopping' || pool.everStable) return;
        if (code === ExitCode.AppLoadFailed) fatal(ExitCode.AppLoadFailed, `App failed to load: ${reason}`);
        else if (failures >= MAX_START_FAILURES) {
          fatal(ExitCode.BootFailed, `Workers failed to boot ${failures} times in a row; the last: ${reason}`);
        }
      },
    },
  });
  const deadlines = startDeadlines({
    pool, log, clock,
    limits: () => ({ timeoutMs: cfg().timeout * 1000, bootTimeoutS: cfg().bootTimeout, timeoutStack: cfg().timeoutStack }),
  });

  /** Coalesces the many reasons to look at the pool into one command on the loop. */
  function requestFill(): void {
    if (fillQueued) return;
    fillQueued = true;
    loop.push(() => { fillQueued = false; fill(); });
  }

  function fill(): void {
    if (phase === 'stopping') { if (pool.size === 0) finish(); return; }
    pool.fill(target(), gen, gracefulMs());
    if (phase === 'starting' && pool.serving() >= target()) {
      phase = 'running';
      log.info(`Ready: ${pool.serving()} worker${pool.serving() === 1 ? '' : 's'} serving`,
        { event: 'master.ready', startupMs: Math.round(clock.now() - startedAtMs) });
    }
  }

  function fatal(code: ExitCode, message: string): void {
    log.critical(message, { event: 'master.fatal', exitCode: code });
    exitCode = code;
    stopAll(stopPlans.quick(gracefulMs()), 'master giving up');
  }

  function closeListeners(): void {
    if (listenersClosed) return;
    listenersClosed = true;
    for (const l of gen.listeners) l.close();
  }

  /** Stopping closes the master's sockets first, so that new connections are refused at once
   *  instead of waiting in a backlog no worker will accept from again. */
  function stopAll(plan: StopPlan, reason: string): void {
    phase = 'stopping';
    closeListeners();
    if (fillTimer) { clearTimeout(fillTimer); fillTimer = null; }
    pool.stopAll(plan, reason);
    requestFill();
  }

  function finish(): void {
    if (finished) return;
    finished = true;
    deadlines.stop();
    closeListeners();
    deps.onExit(exitCode);
  }

  function resize(delta: number): void {
    if (phase === 'stopping') return;
    if (target() + delta < 1) { log.info('TTOU ignored: forkd keeps at least 1 worker', { event: 'master.resize' }); return; }
    extra += delta;
    log.info(`Number of workers: ${target()}`, { event: 'master.resize', workers: target() });
    fill();
  }

  const notYet = (what: string): Command => () => log.warning(`${what} is not supported by this version of forkd; ignored`);
  const onSignal: Record<ManagedSignal, Command> = {
    SIGTERM: () => { if (phase !== 'stopping') stopAll(stopPlans.graceful(gracefulMs()), 'TERM'); },
    SIGINT: () => stopAll(stopPlans.quick(gracefulMs()), 'INT'),
    SIGQUIT: () => stopAll(stopPlans.quick(gracefulMs()), 'QUIT'),
    SIGTTIN: () => resize(+1),
    SIGTTOU: () => resize(-1),
    SIGHUP: notYet('HUP (reload)'),
    SIGUSR1: notYet('USR1 (reopen logs)'),
    SIGUSR2: notYet('USR2 (upgrade)'),
    SIGWINCH: notYet('WINCH'),
  };

  return {
    start() {
      log.info(`Using ${target()} worker${target() === 1 ? '' : 's'}`, { event: 'master.start', workers: target() });
      loop.start(
        (item) => {
          if (typeof item !== 'string') return item();
          log.info(`Handling signal: ${item.slice(3)}`, { event: 'master.signal' });
          return onSignal[item]();
        },
        (err) => log.error('master command failed', { event: 'master.error', error: err }),
      );
      requestFill();
    },
  };
}
