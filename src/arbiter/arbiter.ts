/** Owns the master's life: keeping the configured number of workers alive, respawning with backoff,
 *  heartbeat and boot deadlines, and the signal table. It never serves a request: the workers
 *  accept on the sockets it bound. All state lives in the closure createArbiter builds. */

import type { Config } from '../config/settings';
import { resolveWorkerCount } from '../config/values';
import { ExitCode } from '../exit-codes';
import { assertNever, isFromWorker } from '../ipc/messages';
import type { Logger } from '../log/logger';
import type { Listener } from '../net/listeners';
import type { Command, Loop, ManagedSignal } from './loop';
import { captureStack } from './stack-capture';
import {
  beginStop, sendSignal, spawnWorker, stopPlans, WORKER_SCRIPT, type SpawnWorker, type StopPlan, type WorkerHandle,
} from './worker-handle';

export interface Clock { now(): number }
export const monotonicClock: Clock = { now: () => performance.now() };

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
const BACKOFF_BASE_MS = 100;
const BACKOFF_MAX_MS = 10_000;
const TICK_MS = 100;
const STACK_CAPTURE_MS = 2000;

type Phase = 'starting' | 'running' | 'stopping';

export function createArbiter(deps: ArbiterDeps): { start(): void } {
  const { config, log, loop } = deps;
  const clock = deps.clock ?? monotonicClock;
  const spawnOne = deps.spawn ?? spawnWorker;
  const timeoutMs = config.timeout * 1000;
  const gracefulMs = config.gracefulTimeout * 1000;
  const bootMs = config.bootTimeout * 1000;
  const beatIntervalMs = timeoutMs > 0 ? Math.min(1000, Math.max(50, timeoutMs / 4)) : 1000;
  const workers = new Set<WorkerHandle>();
  const generation = 1;
  const startedAtMs = clock.now();
  let phase: Phase = 'starting';
  let exitCode: ExitCode = ExitCode.Ok;
  let extra = 0;
  let bootFailures = 0;
  let nextSpawnAtMs = 0;
  let respawnTimer: NodeJS.Timeout | null = null;
  let reconcileQueued = false;
  let ticker: NodeJS.Timeout | null = null;
  let finished = false;
  let listenersClosed = false;

  const target = () => Math.max(1, resolveWorkerCount(config.workers) + extra);
  const occupied = (nr: number) => [...workers].some((h) => h.nr === nr && (h.state === 'booting' || h.state === 'serving'));
  const serving = () => [...workers].filter((h) => h.state === 'serving').length;

  function requestReconcile(): void {
    if (reconcileQueued) return;
    reconcileQueued = true;
    loop.push(() => { reconcileQueued = false; reconcile(); });
  }

  function reconcile(): void {
    if (phase === 'stopping') { if (workers.size === 0) finish(); return; }
    const n = target();
    const now = clock.now();
    for (const h of workers) {
      if (h.nr > n && h.state !== 'stopping' && h.state !== 'exited') {
        beginStop(h, stopPlans.graceful(gracefulMs), 'retired', now);
      }
    }
    for (let nr = 1; nr <= n; nr++) {
      if (occupied(nr)) continue;
      if (now < nextSpawnAtMs) { scheduleRespawn(nextSpawnAtMs - now); return; }
      spawn(nr);
    }
  }

  function scheduleRespawn(delayMs: number): void {
    if (respawnTimer) return;
    respawnTimer = setTimeout(() => { respawnTimer = null; requestReconcile(); }, delayMs);
  }

  function spawn(nr: number): void {
    const h = spawnOne({
      nr, generation, config, name: deps.name, fds: deps.listeners.map((l) => l.fd), beatIntervalMs, nowMs: clock.now(),
    });
    workers.add(h);
    h.child.on('message', (msg) => onMessage(h, msg));
    h.child.once('exit', (code, signal) => onExit(h, code, signal));
    h.child.on('error', (err) => {
      log.error(`cannot start worker ${nr}: ${err.message}`, { event: 'worker.spawnFailed', nr });
      if (h.pid <= 0) onExit(h, null, null);
    });
  }

  function onMessage(h: WorkerHandle, msg: unknown): void {
    if (!isFromWorker(msg)) return;
    switch (msg.type) {
      case 'beat': h.lastBeatAtMs = clock.now(); h.inFlight = msg.inFlight; h.requests = msg.requests; break;
      case 'ready': onReady(h, msg.inspectPort); break;
      case 'bootFailed': h.bootFailure = msg.reason; break;
      case 'recycle':
        if (h.state !== 'serving') break;
        log.info(`Worker (pid:${h.pid}) served ${msg.requests} requests: starting its replacement`,
          { event: 'worker.recycle', nr: h.nr });
        h.state = 'replacing';
        requestReconcile();
        break;
      default: assertNever(msg);
    }
  }

  function onReady(h: WorkerHandle, inspectPort: number | null): void {
    if (h.state !== 'booting') return;
    const now = clock.now();
    h.state = 'serving';
    h.readyAtMs = now;
    h.lastBeatAtMs = now;
    h.inspectPort = inspectPort;
    bootFailures = 0;
    nextSpawnAtMs = 0;
    log.debug(`Worker ${h.nr} ready (pid:${h.pid})`, { event: 'worker.ready', bootMs: Math.round(now - h.spawnedAtMs) });
    for (const old of workers) {
      if (old !== h && old.nr === h.nr && old.state === 'replacing') beginStop(old, stopPlans.graceful(gracefulMs), 'replaced', now);
    }
    if (phase === 'starting' && serving() >= target()) {
      phase = 'running';
      log.info(`Ready: ${serving()} workers serving`, { event: 'master.ready', startupMs: Math.round(now - startedAtMs) });
    }
  }

  function onExit(h: WorkerHandle, code: number | null, signal: NodeJS.Signals | null): void {
    if (h.state === 'exited') return;
    const failedBoot = h.readyAtMs === null && (h.endReason === null || h.bootFailure !== null);
    h.state = 'exited';
    workers.delete(h);
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
    if (h.endReason) log.info(`Worker (pid:${h.pid}) ${how}`, { event: 'worker.exit', nr: h.nr, reason: h.endReason });
    else if (!failedBoot) log.error(`Worker (pid:${h.pid}) ${how}`, { event: 'worker.died', nr: h.nr });
    if (failedBoot && phase !== 'stopping') bootFailed(h, code, how);
    requestReconcile();
  }

  function bootFailed(h: WorkerHandle, code: number | null, how: string): void {
    bootFailures++;
    const reason = h.bootFailure ?? `worker ${how} before it was ready`;
    if (phase === 'starting' && code === ExitCode.AppLoadFailed) {
      fatal(ExitCode.AppLoadFailed, `App failed to load: ${reason}`);
      return;
    }
    if (phase === 'starting' && bootFailures >= MAX_START_FAILURES) {
      fatal(ExitCode.BootFailed, `Workers failed to boot ${bootFailures} times in a row; the last: ${reason}`);
      return;
    }
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (bootFailures - 1));
    nextSpawnAtMs = clock.now() + delay;
    log.error(`Worker ${h.nr} failed to boot: ${reason}; retrying in ${delay} ms`,
      { event: 'worker.bootFailed', nr: h.nr, failures: bootFailures });
  }

  function fatal(code: ExitCode, message: string): void {
    log.critical(message, { event: 'master.fatal', exitCode: code });
    exitCode = code;
    stopAll(stopPlans.quick(gracefulMs), 'master giving up');
  }

  function closeListeners(): void {
    if (listenersClosed) return;
    listenersClosed = true;
    for (const l of deps.listeners) l.close();
  }

  /** Stopping closes the master's sockets first, so that new connections are refused at once
   *  instead of waiting in a backlog no worker will accept from again. */
  function stopAll(plan: StopPlan, reason: string): void {
    phase = 'stopping';
    closeListeners();
    if (respawnTimer) { clearTimeout(respawnTimer); respawnTimer = null; }
    const now = clock.now();
    for (const h of workers) beginStop(h, plan, reason, now);
    requestReconcile();
  }

  function finish(): void {
    if (finished) return;
    finished = true;
    if (ticker) clearInterval(ticker);
    closeListeners();
    deps.onExit(exitCode);
  }

  function onTimeout(h: WorkerHandle, now: number): void {
    h.endReason = 'timeout';
    const silentForMs = Math.round(now - h.lastBeatAtMs);
    const kill = (stack: string) => {
      log.critical(`WORKER TIMEOUT (pid:${h.pid})`, { event: 'worker.timeout', nr: h.nr, silentForMs, stack });
      sendSignal(h, 'SIGKILL');
    };
    if (!config.timeoutStack || h.inspectPort === null) { kill('not captured (timeoutStack is off)'); return; }
    captureStack(h.pid, h.inspectPort, WORKER_SCRIPT, STACK_CAPTURE_MS).then(
      (frames) => kill(frames.join(' | ')),
      (err: Error) => kill(`unavailable: ${err.message}`),
    );
  }

  function tick(): void {
    const now = clock.now();
    for (const h of workers) {
      if (h.state === 'booting' && h.endReason === null && now - h.spawnedAtMs > bootMs) {
        h.bootFailure = `it did not boot within ${config.bootTimeout}s (bootTimeout)`;
        h.endReason = 'boot timeout';
        sendSignal(h, 'SIGKILL');
      } else if ((h.state === 'serving' || h.state === 'replacing') && timeoutMs > 0 && h.endReason === null
        && now - h.lastBeatAtMs > timeoutMs) {
        onTimeout(h, now);
      } else if (h.state === 'stopping' && h.killAtMs !== null && now >= h.killAtMs) {
        log.warning(`Worker (pid:${h.pid}) did not stop in time: killing it`, { event: 'worker.kill', nr: h.nr });
        h.killAtMs = null;
        sendSignal(h, 'SIGKILL');
      }
    }
  }

  function resize(delta: number): void {
    if (phase === 'stopping') return;
    if (target() + delta < 1) { log.info('TTOU ignored: forkd keeps at least 1 worker', { event: 'master.resize' }); return; }
    extra += delta;
    log.info(`Number of workers: ${target()}`, { event: 'master.resize', workers: target() });
    reconcile();
  }

  const notYet = (what: string): Command => () => log.warning(`${what} is not supported by this version of forkd; ignored`);
  const onSignal: Record<ManagedSignal, Command> = {
    SIGTERM: () => { if (phase !== 'stopping') stopAll(stopPlans.graceful(gracefulMs), 'TERM'); },
    SIGINT: () => stopAll(stopPlans.quick(gracefulMs), 'INT'),
    SIGQUIT: () => stopAll(stopPlans.quick(gracefulMs), 'QUIT'),
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
      ticker = setInterval(tick, TICK_MS);
      loop.start(
        (item) => {
          if (typeof item !== 'string') return item();
          log.info(`Handling signal: ${item.slice(3)}`, { event: 'master.signal' });
          return onSignal[item]();
        },
        (err) => log.error('master command failed', { event: 'master.error', error: err }),
      );
      requestReconcile();
    },
  };
}
