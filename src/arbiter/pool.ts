/** Owns the set of workers: starting them, hearing from them, noticing their exits, filling each
 *  numbered slot, and backing off when workers keep dying young. Workers belong to a generation
 *  (the config and sockets they were started with); a reload starts a new generation beside the
 *  old one. The arbiter decides how many workers there should be and when; the pool makes it so.
 *  What happens to a worker is emitted as a lifecycle event from here (or, for a timeout, from
 *  deadlines.ts); a worker's own state changes only through its handle's methods. */

import type net from 'node:net';
import type { DurationsMs } from '../config/durations';
import type { Identity } from '../config/identity';
import type { Config } from '../config/settings';
import { assertNever, isFromWorker, type FromWorker, type ToWorker } from '../ipc/messages';
import { readTally, type Tally } from '../ipc/tally';
import type { Logger } from '../log/logger';
import type { Listener } from '../net/listeners';
import { Backoff, STABLE_AFTER_MS } from './backoff';
import type { LifecycleEvent } from './events';
import { spawnWorker, type SpawnWorker } from './spawn';
import type { WorkerSetup } from './worker-config';
import { stopPlans, type StopPlan, type WorkerHandle } from './worker-handle';

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
  /** Its config's durations, in milliseconds. */
  readonly durationsMs: DurationsMs;
  /** What its workers are told of its config. */
  readonly worker: WorkerSetup;
  /** Who its workers run as (user, group), or null for the master's own user. */
  readonly identity: Identity | null;
}

/** What the arbiter is told so that it can move on (events are for subscribers; these steer). */
export interface PoolControl {
  /** A worker died young (before ready or within STABLE_AFTER_MS of it). */
  bootFailed(generation: number, failures: number, reason: string, code: number | null): void;
  /** Something changed that may let the arbiter move on (a worker ready, one gone). */
  changed(): void;
  /** A worker's open connections changed: time to look at the balance. */
  load(): void;
  /** Ask for `fill` to run again after a backoff. */
  later(delayMs: number): void;
}

export interface PoolDeps {
  readonly log: Logger;
  readonly clock: Clock;
  readonly emit: (event: LifecycleEvent) => unknown;
  readonly control: PoolControl;
  readonly spawn?: SpawnWorker;
  /** Told what worker `nr` counted since its last beat (metrics on). */
  readonly tally?: (nr: number, tally: Tally) => void;
  /** A worker's answer to an appMetrics request. */
  readonly appMetrics?: (h: WorkerHandle, msg: Extract<FromWorker, { type: 'appMetrics' }>) => void;
}

export function beatIntervalMs(durations: DurationsMs): number {
  const timeoutMs = durations.timeout;
  return timeoutMs > 0 ? Math.min(1000, Math.max(50, timeoutMs / 4)) : 1000;
}

/** The fair share of open connections for each serving unit (worker × threads) of `accepting`, or
 *  0 (no limit) unless the total holds still: connections still arriving would make any share stale. */
function fairShare(accepting: readonly WorkerHandle[], lastTotal: number, enabled: boolean): { fair: number; total: number } {
  const units = accepting.reduce((n, h) => n + (h.listeners.length ? h.threads : 0), 0);
  const total = accepting.reduce((n, h) => n + h.connections, 0);
  const steady = Math.abs(total - lastTotal) <= Math.max(2, total * 0.1);
  return { fair: enabled && steady && units > 1 ? Math.ceil(total / units) : 0, total };
}

export class Pool {
  readonly #workers = new Set<WorkerHandle>();
  readonly #backoff = new Backoff();
  /** The open connections at the last balance, to tell a steady load from a ramp. */
  #lastTotal = 0;
  readonly #deps: PoolDeps;

  constructor(deps: PoolDeps) { this.#deps = deps; }

  live(): WorkerHandle[] { return [...this.#workers]; }
  get size(): number { return this.#workers.size; }
  get everStable(): boolean { return this.#backoff.everStable; }
  serving(generation?: number): WorkerHandle[] {
    return this.live().filter((h) => h.state === 'serving' && (generation === undefined || h.generation === generation));
  }

  /** A slot is taken by a worker that is booting or serving (one being replaced does not count). */
  #occupied(nr: number): boolean {
    return this.live().some((h) => h.nr === nr && (h.state === 'booting' || h.state === 'serving'));
  }

  #spawn(nr: number, gen: Generation): void {
    const { log, clock, emit } = this.#deps;
    emit({ type: 'worker.spawning', nr, generation: gen.id });
    let h: WorkerHandle;
    try {
      h = (this.#deps.spawn ?? spawnWorker)({
        nr, generation: gen.id, config: gen.config, name: gen.name, listeners: gen.listeners,
        beatIntervalMs: beatIntervalMs(gen.durationsMs), nowMs: clock.now(), cwd: gen.cwd, ...gen.worker,
        identity: gen.identity ? { ...gen.identity, initgroups: gen.config.initgroups } : null,
      });
    } catch (err) {
      log.error(`cannot start worker ${nr}: ${(err as Error).message}`, { event: 'worker.spawnFailed', nr });
      this.#failed(nr, gen.id, `it could not be started: ${(err as Error).message}`, null);
      return;
    }
    this.#workers.add(h);
    h.child.on('message', (msg) => { if (isFromWorker(msg)) this.#onMessage(h, msg); });
    h.child.once('exit', (code, signal) => this.#onExit(h, code, signal));
    h.child.on('error', (err) => {
      log.error(`cannot start worker ${nr}: ${err.message}`, { event: 'worker.spawnFailed', nr });
      if (h.pid <= 0) this.#onExit(h, null, null);
    });
    emit({ type: 'worker.spawned', worker: h.info });
  }

  #onMessage(h: WorkerHandle, msg: FromWorker): void {
    const { control } = this.#deps;
    switch (msg.type) {
      // A steady load sends no 'load': the beats let the balance see it hold still.
      case 'beat': {
        const tally = msg.report ? readTally(msg.report.tally) : null;
        h.beat({ ...msg, report: tally ? msg.report : null }, this.#deps.clock.now());
        if (tally) this.#deps.tally?.(h.nr, tally);
        control.load();
        break;
      }
      case 'load': h.reportLoad(msg.connections); control.load(); break;
      case 'relisten': {
        const listener = h.listeners[msg.index];
        const resend: ToWorker = { type: 'listener', index: msg.index };
        if (listener && h.child.connected) h.child.send(resend, listener.handle() as net.Server, { keepOpen: true });
        break;
      }
      case 'ready': this.#onReady(h, msg.inspectPort); break;
      case 'bootFailed': h.bootFailed(msg.reason); break;
      case 'recycle': this.replace(h, `it served ${msg.requests} requests (maxRequests)`); break;
      case 'appMetrics': this.#deps.appMetrics?.(h, msg); break;
      default: assertNever(msg);
    }
  }

  /** Recycling: a replacement starts in the worker's slot, and the worker stops once it serves. A
   *  request that comes while the worker cannot be replaced (a reload is replacing it) is kept, and
   *  acted on if that reload is abandoned. */
  replace(h: WorkerHandle, why: string): void {
    if (h.state === 'replacing' && h.replacedFor === 'reload') { h.holdRecycle(why); return; }
    if (h.state !== 'serving') return;
    this.#deps.emit({ type: 'worker.recycling', worker: h.info, why });
    h.replace('recycle');
    // A worker recycled for what it served has proven its start, however soon that came.
    this.#markStable(h);
    this.#deps.control.changed();
  }

  #onReady(h: WorkerHandle, inspectPort: number | null): void {
    if (h.state !== 'booting') return;
    const now = this.#deps.clock.now();
    h.ready(now, inspectPort);
    this.#deps.emit({ type: 'worker.ready', worker: h.info, bootMs: Math.round(now - h.spawnedAtMs) });
    this.#deps.control.changed();
  }

  #onExit(h: WorkerHandle, code: number | null, signal: NodeJS.Signals | null): void {
    if (!h.exited()) return;
    const now = this.#deps.clock.now();
    const young = h.readyAtMs === null || now - h.readyAtMs < STABLE_AFTER_MS;
    const expected = h.endReason !== null && h.bootFailure === null;
    this.#workers.delete(h);
    this.#deps.emit({ type: 'worker.exited', worker: h.info, code, signal, reason: expected ? h.endReason : null });
    if (!expected && young) {
      const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      const reason = h.bootFailure ?? (h.readyAtMs === null ? `it ${how} before it was ready`
        : `it ${how} ${Math.round(now - h.readyAtMs)} ms after it was ready`);
      this.#failed(h.nr, h.generation, reason, code);
    }
    this.#deps.control.changed();
  }

  #failed(nr: number, generation: number, reason: string, code: number | null): void {
    const retryInMs = this.#backoff.failed(this.#deps.clock.now());
    const failures = this.#backoff.failures;
    this.#deps.emit({ type: 'worker.bootFailed', nr, generation, failures, reason, retryInMs });
    this.#deps.control.bootFailed(generation, failures, reason, code);
  }

  /** Retires workers numbered above `target` and starts one in every empty slot up to it (unless
   *  backing off). A worker being recycled stops once its slot has a serving successor; one being
   *  replaced by a reload waits for the reload to finish (`retireReplaced` false). */
  fill(target: number, gen: Generation, gracefulMs: number, retireReplaced = true): void {
    const now = this.#deps.clock.now();
    const graceful = stopPlans.graceful(gracefulMs);
    for (const h of this.live()) {
      const heldForReload = !retireReplaced && h.state === 'replacing' && h.replacedFor === 'reload';
      if (h.nr > target && h.state !== 'stopping' && !heldForReload) h.stop(graceful, 'retired', now);
      if (h.state !== 'replacing' || !(retireReplaced || h.replacedFor === 'recycle')) continue;
      if (this.live().some((o) => o !== h && o.nr === h.nr && o.state === 'serving')) {
        h.stop(graceful, h.replacedFor === 'recycle' ? 'recycled' : 'reloaded', now);
      }
    }
    for (let nr = 1; nr <= target; nr++) {
      if (this.#occupied(nr)) continue;
      const wait = this.#backoff.waitMs(now);
      if (wait > 0) { this.#deps.control.later(wait); return; }
      this.#spawn(nr, gen);
    }
  }

  /** A reload begins: every worker of an older generation is to be replaced (a serving one keeps
   *  serving until then; one still booting is stopped, its successor boots instead). */
  replaceOlderThan(generation: number, gracefulMs: number): void {
    const now = this.#deps.clock.now();
    for (const h of this.live()) {
      if (h.generation >= generation) continue;
      if (h.state === 'serving') h.replace('reload');
      else if (h.state === 'booting') h.stop(stopPlans.quick(gracefulMs), 'superseded by a reload', now);
    }
  }

  /** A reload failed: its workers go, and the workers it was to replace serve on. */
  abandon(generation: number, gracefulMs: number): void {
    const now = this.#deps.clock.now();
    for (const h of this.live()) {
      if (h.generation === generation) {
        h.forgiveBootFailure(); // its failure was the reload's, already reported
        h.stop(stopPlans.quick(gracefulMs), 'reload abandoned', now);
      } else if (h.state === 'replacing' && h.replacedFor === 'reload') {
        const heldRecycle = h.restore();
        if (heldRecycle) this.replace(h, heldRecycle);
      }
    }
    this.#backoff.reset();
  }

  /** A worker still booting has nothing to drain: it is stopped quickly whatever the plan. */
  stopAll(plan: StopPlan, reason: string, which: (h: WorkerHandle) => boolean = () => true): void {
    const now = this.#deps.clock.now();
    const quick = stopPlans.quick(plan.killAfterMs);
    for (const h of this.live()) if (which(h)) h.stop(h.state === 'booting' ? quick : plan, reason, now);
  }

  /** Tells each accepting worker its fair share of the open connections; only changes are sent. */
  balance(enabled: boolean): void {
    const accepting = this.live().filter((h) => h.accepting);
    const { fair, total } = fairShare(accepting, this.#lastTotal, enabled);
    this.#lastTotal = total;
    for (const h of accepting) {
      if (!h.child.connected || !h.shareToSend(fair)) continue;
      const msg: ToWorker = { type: 'balance', fairShare: fair };
      h.child.send(msg, () => undefined);
    }
  }

  send(msg: ToWorker): void {
    for (const h of this.live()) {
      if (h.state !== 'exited' && h.child.connected) h.child.send(msg, (err) => { if (err) this.#deps.log.debug('IPC send failed', { pid: h.pid }); });
    }
  }

  /** A worker that has served STABLE_AFTER_MS ends a run of failures (called on every tick). */
  noteStable(now: number): void {
    let any = false;
    for (const h of this.live()) {
      if (h.state === 'serving' && !h.stable && h.readyAtMs !== null && now - h.readyAtMs >= STABLE_AFTER_MS) {
        any = true;
        this.#markStable(h);
      }
    }
    if (any) this.#deps.control.changed();
  }

  #markStable(h: WorkerHandle): void {
    if (!h.markStable()) return;
    this.#deps.emit({ type: 'worker.stable', worker: h.info, resetFailures: this.#backoff.succeeded() });
  }
}
