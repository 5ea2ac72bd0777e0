/** Owns the set of workers: starting them, hearing from them, noticing their exits, filling each
 *  numbered slot, and backing off when workers keep dying young. The arbiter decides how many
 *  workers there should be and when to stop; the pool makes it so. */

import type { Config } from '../config/settings';
import { assertNever, isFromWorker } from '../ipc/messages';
import type { Logger } from '../log/logger';
import type { Listener } from '../net/listeners';
import {
  beginStop, spawnWorker, stopPlans, type SpawnWorker, type StopPlan, type WorkerHandle,
} from './worker-handle';

export interface Clock { now(): number }
export const monotonicClock: Clock = { now: () => performance.now() };

/** What a worker is started with: the config and sockets of one generation. */
export interface Generation {
  readonly id: number;
  readonly config: Config;
  readonly listeners: readonly Listener[];
}

/** A worker that dies within this long of being ready counts as dying at boot: an app that crashes
 *  right after it starts must back off like one that cannot start at all. */
export const STABLE_AFTER_MS = 1000;
const BACKOFF_BASE_MS = 100;
const BACKOFF_MAX_MS = 10_000;

export interface PoolEvents {
  /** A worker died young (before ready or within STABLE_AFTER_MS of it). */
  bootFailed(nr: number, failures: number, reason: string, code: number | null): void;
  /** Something changed that may let the arbiter move on (a worker ready, one gone). */
  changed(): void;
}

export interface PoolDeps {
  readonly log: Logger;
  readonly clock: Clock;
  readonly name: string;
  readonly beatIntervalMs: number;
  readonly events: PoolEvents;
  /** Ask for `fill` to run again later (through the arbiter's loop). */
  readonly later: (delayMs: number) => void;
  readonly spawn?: SpawnWorker;
}

export function createPool(deps: PoolDeps) {
  const { log, clock } = deps;
  const spawnOne = deps.spawn ?? spawnWorker;
  const workers = new Set<WorkerHandle>();
  let failures = 0;
  let nextSpawnAtMs = 0;
  let everStable = false;

  const live = () => [...workers];
  /** A slot is taken by a worker that is booting or serving (one being replaced does not count). */
  const occupied = (nr: number) => live().some((h) => h.nr === nr && (h.state === 'booting' || h.state === 'serving'));

  function spawn(nr: number, gen: Generation): void {
    let h: WorkerHandle;
    try {
      h = spawnOne({
        nr, generation: gen.id, config: gen.config, name: deps.name, fds: gen.listeners.map((l) => l.fd),
        beatIntervalMs: deps.beatIntervalMs, nowMs: clock.now(),
      });
    } catch (err) {
      log.error(`cannot start worker ${nr}: ${(err as Error).message}`, { event: 'worker.spawnFailed', nr });
      failed(nr, `it could not be started: ${(err as Error).message}`, null);
      return;
    }
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
        deps.events.changed();
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
    log.debug(`Worker ${h.nr} ready (pid:${h.pid})`, { event: 'worker.ready', bootMs: Math.round(now - h.spawnedAtMs) });
    deps.events.changed();
  }

  function onExit(h: WorkerHandle, code: number | null, signal: NodeJS.Signals | null): void {
    if (h.state === 'exited') return;
    const now = clock.now();
    const young = h.readyAtMs === null || now - h.readyAtMs < STABLE_AFTER_MS;
    const expected = h.endReason !== null && h.bootFailure === null;
    h.state = 'exited';
    workers.delete(h);
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
    if (expected) log.info(`Worker (pid:${h.pid}) ${how}`, { event: 'worker.exit', nr: h.nr, reason: h.endReason });
    else log.error(`Worker (pid:${h.pid}) ${how}`, { event: 'worker.died', nr: h.nr, generation: h.generation });
    if (!expected && young) {
      const reason = h.bootFailure ?? (h.readyAtMs === null ? `it ${how} before it was ready`
        : `it ${how} ${Math.round(now - h.readyAtMs)} ms after it was ready`);
      failed(h.nr, reason, code);
    }
    deps.events.changed();
  }

  function failed(nr: number, reason: string, code: number | null): void {
    failures++;
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (failures - 1));
    nextSpawnAtMs = clock.now() + delay;
    deps.events.bootFailed(nr, failures, reason, code);
    log.error(`Worker ${nr} failed to boot: ${reason}; next start in ${delay} ms`,
      { event: 'worker.bootFailed', nr, failures });
  }

  return {
    live,
    get size() { return workers.size; },
    /** Some worker has served STABLE_AFTER_MS: the app can run, so failures are no longer fatal. */
    get everStable() { return everStable; },
    serving: () => live().filter((h) => h.state === 'serving').length,

    /** Retires workers numbered above `target`, starts one in every empty slot up to it (unless
     *  backing off), and stops each worker being replaced once its slot has a serving successor. */
    fill(target: number, gen: Generation, gracefulMs: number): void {
      const now = clock.now();
      for (const h of live()) {
        if (h.nr > target && h.state !== 'stopping') beginStop(h, stopPlans.graceful(gracefulMs), 'retired', now);
        const successor = live().some((o) => o !== h && o.nr === h.nr && o.state === 'serving');
        if (h.state === 'replacing' && successor) beginStop(h, stopPlans.graceful(gracefulMs), 'replaced', now);
      }
      for (let nr = 1; nr <= target; nr++) {
        if (occupied(nr)) continue;
        if (now < nextSpawnAtMs) { deps.later(nextSpawnAtMs - now); return; }
        spawn(nr, gen);
      }
    },

    stopAll(plan: StopPlan, reason: string): void {
      const now = clock.now();
      for (const h of live()) beginStop(h, plan, reason, now);
    },

    /** A worker that has served STABLE_AFTER_MS ends a run of failures (called on every tick). */
    noteStable(now: number): void {
      for (const h of live()) {
        if (h.state === 'serving' && !h.stable && h.readyAtMs !== null && now - h.readyAtMs >= STABLE_AFTER_MS) {
          h.stable = true;
          everStable = true;
          if (failures > 0) log.info(`Worker ${h.nr} has run ${STABLE_AFTER_MS} ms: boot failures reset`, { event: 'worker.stable', nr: h.nr });
          log.debug(`Worker ${h.nr} stable (pid:${h.pid})`, { event: 'worker.stable', nr: h.nr });
          failures = 0;
          nextSpawnAtMs = 0;
        }
      }
    },
  };
}

export type Pool = ReturnType<typeof createPool>;
