/** Owns the set of workers: starting them, hearing from them, noticing their exits, filling each
 *  numbered slot, and backing off when workers keep dying young. Workers belong to a generation
 *  (the config and sockets they were started with); a reload starts a new generation beside the
 *  old one. The arbiter decides how many workers there should be and when; the pool makes it so. */

import type { Identity } from '../config/identity';
import type { Config } from '../config/settings';
import { assertNever, isFromWorker, type ToWorker } from '../ipc/messages';
import type { Logger } from '../log/logger';
import type net from 'node:net';
import type { Listener } from '../net/listeners';
import {
  beginStop, spawnWorker, stopPlans, type SpawnWorker, type StopPlan, type WorkerHandle,
} from './worker-handle';
import type { WorkerSetup } from './worker-config';

export interface Clock { now(): number }
export const monotonicClock: Clock = { now: () => performance.now() };

/** What a worker is started with: the config, sockets and directory of one generation. */
export interface Generation {
  readonly id: number;
  readonly config: Config;
  readonly listeners: readonly Listener[];
  readonly cwd: string;
  /** The config file it was read from, for workers that run hooks of their own. */
  readonly configFile: string | null;
  readonly name: string;
  /** What its workers are told of its config. */
  readonly worker: WorkerSetup;
  /** Who its workers run as (user, group), or null for the master's own user. */
  readonly identity: Identity | null;
}

/** A worker that dies within this long of being ready counts as dying at boot: an app that crashes
 *  right after it starts must back off like one that cannot start at all. */
export const STABLE_AFTER_MS = 1000;
const BACKOFF_BASE_MS = 100;
const BACKOFF_MAX_MS = 10_000;

export interface PoolEvents {
  /** A worker died young (before ready or within STABLE_AFTER_MS of it). */
  bootFailed(nr: number, generation: number, failures: number, reason: string, code: number | null): void;
  /** Something changed that may let the arbiter move on (a worker ready, one gone). */
  changed(): void;
  spawning(nr: number, generation: number): void;
  spawned(h: WorkerHandle): void;
  exited(h: WorkerHandle, code: number | null, signal: NodeJS.Signals | null): void;
  /** A worker's open connections changed: time to look at the balance. */
  load(): void;
}

export interface PoolDeps {
  readonly log: Logger;
  readonly clock: Clock;
  readonly events: PoolEvents;
  /** Ask for `fill` to run again after a backoff. */
  readonly later: (delayMs: number) => void;
  readonly spawn?: SpawnWorker;
}

const threadsOf = (h: WorkerHandle) => h.threads;

function beatIntervalMs(config: Config): number {
  const timeoutMs = config.timeout * 1000;
  return timeoutMs > 0 ? Math.min(1000, Math.max(50, timeoutMs / 4)) : 1000;
}

export function createPool(deps: PoolDeps) {
  const { log, clock, events } = deps;
  const spawnOne = deps.spawn ?? spawnWorker;
  const workers = new Set<WorkerHandle>();
  let failures = 0;
  let nextSpawnAtMs = 0;
  let everStable = false;
  /** The open connections at the last balance, to tell a steady load from a ramp. */
  let lastTotal = 0;

  const live = () => [...workers];
  /** A slot is taken by a worker that is booting or serving (one being replaced does not count). */
  const occupied = (nr: number) => live().some((h) => h.nr === nr && (h.state === 'booting' || h.state === 'serving'));

  function spawn(nr: number, gen: Generation): void {
    events.spawning(nr, gen.id);
    let h: WorkerHandle;
    try {
      h = spawnOne({
        nr, generation: gen.id, config: gen.config, name: gen.name, listeners: gen.listeners,
        beatIntervalMs: beatIntervalMs(gen.config), nowMs: clock.now(), cwd: gen.cwd, ...gen.worker,
        identity: gen.identity ? { ...gen.identity, initgroups: gen.config.initgroups } : null,
      });
    } catch (err) {
      log.error(`cannot start worker ${nr}: ${(err as Error).message}`, { event: 'worker.spawnFailed', nr });
      failed(nr, gen.id, `it could not be started: ${(err as Error).message}`, null);
      return;
    }
    workers.add(h);
    h.child.on('message', (msg) => onMessage(h, msg));
    h.child.once('exit', (code, signal) => onExit(h, code, signal));
    h.child.on('error', (err) => {
      log.error(`cannot start worker ${nr}: ${err.message}`, { event: 'worker.spawnFailed', nr });
      if (h.pid <= 0) onExit(h, null, null);
    });
    events.spawned(h);
  }

  function onMessage(h: WorkerHandle, msg: unknown): void {
    if (!isFromWorker(msg)) return;
    switch (msg.type) {
      case 'beat':
        // A thread that has not beaten makes the whole worker as silent as it (timeouts, deadlines.ts).
        h.lastBeatAtMs = clock.now() - msg.stalledMs;
        h.stalledThread = msg.stalledThread;
        h.lastHeardAtMs = clock.now();
        h.inFlight = msg.inFlight;
        h.requests = msg.requests;
        h.connections = msg.connections;
        events.load(); // a steady load sends no 'load': the beats let the balance see it hold still
        break;
      case 'load': h.connections = msg.connections; events.load(); break;
      case 'relisten': {
        const listener = h.listeners[msg.index];
        if (listener && h.child.connected) h.child.send({ type: 'listener', index: msg.index }, listener.handle() as net.Server, { keepOpen: true });
        break;
      }
      case 'ready': onReady(h, msg.inspectPort); break;
      case 'bootFailed': h.bootFailure = msg.reason; break;
      case 'recycle': replace(h, `it served ${msg.requests} requests (maxRequests)`); break;
      default: assertNever(msg);
    }
  }

  /** Recycling: a replacement starts in the worker's slot, and the worker stops once it serves. A
   *  request that comes while the worker cannot be replaced (a reload is replacing it) is kept, and
   *  acted on if that reload is abandoned. */
  function replace(h: WorkerHandle, why: string): void {
    if (h.state === 'replacing' && h.replacedFor === 'reload') { h.recycleWhy ??= why; return; }
    if (h.state !== 'serving') return;
    log.info(`Worker (pid:${h.pid}) is to be replaced: ${why}`, { event: 'worker.recycle', nr: h.nr });
    h.state = 'replacing';
    h.replacedFor = 'recycle';
    // A worker recycled for what it served has proven its start, however soon that came.
    markStable(h);
    events.changed();
  }

  function onReady(h: WorkerHandle, inspectPort: number | null): void {
    if (h.state !== 'booting') return;
    const now = clock.now();
    h.state = 'serving';
    h.readyAtMs = now;
    h.lastBeatAtMs = now;
    h.inspectPort = inspectPort;
    log.debug(`Worker ${h.nr} ready (pid:${h.pid})`, { event: 'worker.ready', generation: h.generation, bootMs: Math.round(now - h.spawnedAtMs) });
    events.changed();
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
    events.exited(h, code, signal);
    if (!expected && young) {
      const reason = h.bootFailure ?? (h.readyAtMs === null ? `it ${how} before it was ready`
        : `it ${how} ${Math.round(now - h.readyAtMs)} ms after it was ready`);
      failed(h.nr, h.generation, reason, code);
    }
    events.changed();
  }

  function failed(nr: number, generation: number, reason: string, code: number | null): void {
    failures++;
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** (failures - 1));
    nextSpawnAtMs = clock.now() + delay;
    log.error(`Worker ${nr} failed to boot: ${reason}; next start in ${delay} ms`,
      { event: 'worker.bootFailed', nr, generation, failures });
    events.bootFailed(nr, generation, failures, reason, code);
  }

  return {
    live,
    get size() { return workers.size; },
    /** Some worker has served STABLE_AFTER_MS: the app can run, so failures are no longer fatal. */
    get everStable() { return everStable; },
    serving: (generation?: number) => live().filter((h) => h.state === 'serving' && (generation === undefined || h.generation === generation)),
    replace,

    /** Retires workers numbered above `target` and starts one in every empty slot up to it (unless
     *  backing off). A worker being recycled stops once its slot has a serving successor; one being
     *  replaced by a reload waits for the reload to finish (`retireReplaced` false). */
    fill(target: number, gen: Generation, gracefulMs: number, retireReplaced = true): void {
      const now = clock.now();
      for (const h of live()) {
        const heldForReload = !retireReplaced && h.state === 'replacing' && h.replacedFor === 'reload';
        if (h.nr > target && h.state !== 'stopping' && !heldForReload) beginStop(h, stopPlans.graceful(gracefulMs), 'retired', now);
        const successor = live().some((o) => o !== h && o.nr === h.nr && o.state === 'serving');
        if (h.state === 'replacing' && successor && (retireReplaced || h.replacedFor === 'recycle')) {
          beginStop(h, stopPlans.graceful(gracefulMs), h.replacedFor === 'recycle' ? 'recycled' : 'reloaded', now);
        }
      }
      for (let nr = 1; nr <= target; nr++) {
        if (occupied(nr)) continue;
        if (now < nextSpawnAtMs) { deps.later(nextSpawnAtMs - now); return; }
        spawn(nr, gen);
      }
    },

    /** A reload begins: every worker of an older generation is to be replaced (a serving one keeps
     *  serving until then; one still booting is stopped, its successor boots instead). */
    replaceOlderThan(generation: number, gracefulMs: number): void {
      const now = clock.now();
      for (const h of live()) {
        if (h.generation >= generation) continue;
        if (h.state === 'serving') { h.state = 'replacing'; h.replacedFor = 'reload'; }
        else if (h.state === 'booting') beginStop(h, stopPlans.quick(gracefulMs), 'superseded by a reload', now);
      }
    },

    /** A reload failed: its workers go, and the workers it was to replace serve on. */
    abandon(generation: number, gracefulMs: number): void {
      const now = clock.now();
      for (const h of live()) {
        if (h.generation === generation) {
          h.bootFailure = null; // its failure was the reload's, already reported; not one to back off from
          beginStop(h, stopPlans.quick(gracefulMs), 'reload abandoned', now);
        }
        else if (h.state === 'replacing' && h.replacedFor === 'reload') {
          h.state = 'serving';
          h.replacedFor = null;
          if (h.recycleWhy) replace(h, h.recycleWhy);
        }
      }
      failures = 0;
      nextSpawnAtMs = 0;
    },

    /** A worker still booting has nothing to drain: it is stopped quickly whatever the plan. */
    stopAll(plan: StopPlan, reason: string, which: (h: WorkerHandle) => boolean = () => true): void {
      const now = clock.now();
      const quick = stopPlans.quick(plan.killAfterMs);
      for (const h of live()) if (which(h)) beginStop(h, h.state === 'booting' ? quick : plan, reason, now);
    },

    /** Tells each accepting worker its fair share of the open connections: the total, divided by
     *  every serving unit (worker × threads). Only while the total holds still (connections that
     *  are still arriving would make any share stale); only changes are sent. */
    balance(enabled: boolean): void {
      const accepting = live().filter((h) => h.state === 'serving' || h.state === 'replacing');
      const units = accepting.reduce((n, h) => n + (h.listeners.length ? threadsOf(h) : 0), 0);
      const total = accepting.reduce((n, h) => n + h.connections, 0);
      const steady = Math.abs(total - lastTotal) <= Math.max(2, total * 0.1);
      lastTotal = total;
      const fair = enabled && steady && units > 1 ? Math.ceil(total / units) : 0;
      for (const h of accepting) {
        if (h.fairShareSent === fair || !h.child.connected) continue;
        h.fairShareSent = fair;
        h.child.send({ type: 'balance', fairShare: fair }, () => undefined);
      }
    },

    send(msg: ToWorker): void {
      for (const h of live()) {
        if (h.state !== 'exited' && h.child.connected) h.child.send(msg, (err) => { if (err) log.debug('IPC send failed', { pid: h.pid }); });
      }
    },

    /** A worker that has served STABLE_AFTER_MS ends a run of failures (called on every tick). */
    noteStable(now: number): void {
      let any = false;
      for (const h of live()) {
        if (h.state === 'serving' && !h.stable && h.readyAtMs !== null && now - h.readyAtMs >= STABLE_AFTER_MS) {
          any = true;
          markStable(h);
        }
      }
      if (any) events.changed();
    },
  };

  function markStable(h: WorkerHandle): void {
    if (h.stable) return;
    h.stable = true;
    everStable = true;
    if (failures > 0) log.info(`Worker ${h.nr} has run ${STABLE_AFTER_MS} ms: boot failures reset`, { event: 'worker.stable', nr: h.nr });
    log.debug(`Worker ${h.nr} stable (pid:${h.pid})`, { event: 'worker.stable', nr: h.nr });
    failures = 0;
    nextSpawnAtMs = 0;
  }
}

export type Pool = ReturnType<typeof createPool>;
