/** Owns what the master knows of one worker: its process, number, generation, the state it is in,
 *  and its deadlines. It is the only writer of its fields; the pool and the deadlines call its
 *  methods, and a method that would break the state machine is refused (an IllegalTransition).
 *
 *      booting ──ready──▶ serving ◀──restore── replacing
 *         │                  │ └──replace──────▶   │
 *         └──────stop────────┴───────stop──────────┴──▶ stopping ──▶ exited
 *
 *  booting: loading the app · serving: ready · replacing: serving until its replacement is ready
 *  (a reload or a recycle) · stopping: told to stop, killed at its deadline · exited. Any state but
 *  exited may go to exited (a crash). Timed out and recycled are events on the way: a timed-out
 *  worker is killed, a recycled one is replaced. Spawning is in spawn.ts. */

import type { ChildProcess } from 'node:child_process';
import type { WorkerInfo } from '../config/hooks';
import type { BeatReport, StalledThread } from '../ipc/messages';
import type { Listener } from '../net/listeners';

export type WorkerState = 'booting' | 'serving' | 'replacing' | 'stopping' | 'exited';

/** Each move of the state machine, and the states it may be made from. */
const MOVES = {
  ready: { from: ['booting'], to: 'serving' },
  replace: { from: ['serving'], to: 'replacing' },
  restore: { from: ['replacing'], to: 'serving' },
  stop: { from: ['booting', 'serving', 'replacing'], to: 'stopping' },
  exit: { from: ['booting', 'serving', 'replacing', 'stopping'], to: 'exited' },
} as const satisfies Record<string, { from: readonly WorkerState[]; to: WorkerState }>;

export class IllegalTransition extends Error {}

/** Escalation is data: what to send, and how long to wait before the next step. */
export interface StopPlan { readonly send: NodeJS.Signals; readonly killAfterMs: number }
export const stopPlans = {
  graceful: (gracefulTimeoutMs: number): StopPlan => ({ send: 'SIGTERM', killAfterMs: gracefulTimeoutMs }),
  /** INT/QUIT: the worker exits at once; a worker too stuck to do so is killed soon after. */
  quick: (gracefulTimeoutMs: number): StopPlan => ({ send: 'SIGQUIT', killAfterMs: Math.min(gracefulTimeoutMs, 2000) }),
};

/** What a worker's heartbeat says. */
export interface Beat {
  readonly stalledMs: number;
  readonly stalledThread: StalledThread | null;
  readonly inFlight: number;
  readonly requests: number;
  readonly connections: number;
  /** With metrics on: what it counted since its last beat, and how it is. */
  readonly report: BeatReport | null;
}

/** How a worker with metrics on last said it was. */
export interface Health {
  readonly lagMs: readonly [number, number] | null;
  readonly oldestMs: number | null;
  readonly rssBytes: number;
}

export interface WorkerStart {
  readonly child: ChildProcess;
  readonly nr: number;
  readonly generation: number;
  readonly nowMs: number;
  /** The sockets it was started with, in its fds' order (sent again when it resumes accepting). */
  readonly listeners: readonly Listener[];
  /** Its serving threads. */
  readonly threads: number;
}

export class WorkerHandle {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly nr: number;
  readonly generation: number;
  readonly spawnedAtMs: number;
  readonly listeners: readonly Listener[];
  readonly threads: number;
  #state: WorkerState = 'booting';
  #readyAtMs: number | null = null;
  #stable = false;
  #lastBeatAtMs: number;
  #lastHeardAtMs: number;
  #stalledThread: StalledThread | null = null;
  #inspectPort: number | null = null;
  #inFlight = 0;
  #requests = 0;
  #connections = 0;
  #health: Health | null = null;
  #fairShareSent = -1;
  #replacedFor: 'recycle' | 'reload' | null = null;
  #recycleWhy: string | null = null;
  #endReason: string | null = null;
  #bootFailure: string | null = null;
  #killAtMs: number | null = null;

  constructor(start: WorkerStart) {
    this.child = start.child;
    this.pid = start.child.pid ?? -1;
    this.nr = start.nr;
    this.generation = start.generation;
    this.spawnedAtMs = start.nowMs;
    this.listeners = start.listeners;
    this.threads = start.threads;
    this.#lastBeatAtMs = start.nowMs;
    this.#lastHeardAtMs = start.nowMs;
  }

  get state(): WorkerState { return this.#state; }
  get readyAtMs(): number | null { return this.#readyAtMs; }
  /** It has served long enough that its start counts as a success (see STABLE_AFTER_MS). */
  get stable(): boolean { return this.#stable; }
  get lastBeatAtMs(): number { return this.#lastBeatAtMs; }
  /** When its main thread last beat (its own silence, whatever its threads do). */
  get lastHeardAtMs(): number { return this.#lastHeardAtMs; }
  /** The thread that makes it late, if one does (threads > 1). */
  get stalledThread(): StalledThread | null { return this.#stalledThread; }
  get inspectPort(): number | null { return this.#inspectPort; }
  get inFlight(): number { return this.#inFlight; }
  get requests(): number { return this.#requests; }
  /** Open connections, as the worker last reported them (for the balance). */
  get connections(): number { return this.#connections; }
  /** Its loop delay, oldest request and RSS, as it last reported them (null: metrics are off). */
  get health(): Health | null { return this.#health; }
  /** Why a worker in state `replacing` is being replaced. */
  get replacedFor(): 'recycle' | 'reload' | null { return this.#replacedFor; }
  /** Set when the master decided to end it (stop, timeout, boot timeout): its exit is expected. */
  get endReason(): string | null { return this.#endReason; }
  /** What the worker said when its app failed to load, or why its boot was cut short. */
  get bootFailure(): string | null { return this.#bootFailure; }
  /** When a stopping worker is killed if it has not exited. */
  get killAtMs(): number | null { return this.#killAtMs; }
  get info(): WorkerInfo { return { pid: this.pid, nr: this.nr, generation: this.generation }; }
  /** Serving requests: ready, and not told to stop yet. */
  get accepting(): boolean { return this.#state === 'serving' || this.#state === 'replacing'; }

  #move(move: keyof typeof MOVES): void {
    const { from, to } = MOVES[move];
    if (!(from as readonly WorkerState[]).includes(this.#state)) {
      throw new IllegalTransition(`worker ${this.nr} (pid:${this.pid}) cannot go from ${this.#state} to ${to} (${move})`);
    }
    this.#state = to;
  }

  /** Its app loaded and it accepts: booting → serving. */
  ready(nowMs: number, inspectPort: number | null): void {
    this.#move('ready');
    this.#readyAtMs = nowMs;
    this.#lastBeatAtMs = nowMs;
    this.#inspectPort = inspectPort;
  }

  /** A thread that has not beaten makes the whole worker as silent as it (deadlines.ts). */
  beat(beat: Beat, nowMs: number): void {
    this.#lastBeatAtMs = nowMs - beat.stalledMs;
    this.#stalledThread = beat.stalledThread;
    this.#lastHeardAtMs = nowMs;
    this.#inFlight = beat.inFlight;
    this.#requests = beat.requests;
    this.#connections = beat.connections;
    if (beat.report) this.#health = { lagMs: beat.report.lagMs, oldestMs: beat.report.oldestMs, rssBytes: beat.report.rssBytes };
  }

  reportLoad(connections: number): void { this.#connections = connections; }

  /** True when `fair` differs from the share last sent, which it records as sent. */
  shareToSend(fair: number): boolean {
    if (this.#fairShareSent === fair) return false;
    this.#fairShareSent = fair;
    return true;
  }

  /** The worker said its app failed to load. */
  bootFailed(reason: string): void { this.#bootFailure = reason; }

  /** Its failure was a reload's, already reported: not one to back off from. */
  forgiveBootFailure(): void { this.#bootFailure = null; }

  /** It has proven its start; false if it had already. */
  markStable(): boolean {
    if (this.#stable) return false;
    this.#stable = true;
    return true;
  }

  /** serving → replacing: it serves until its replacement is ready. */
  replace(forWhat: 'recycle' | 'reload'): void {
    this.#move('replace');
    this.#replacedFor = forWhat;
  }

  /** A recycle asked for while a reload is replacing it: acted on if that reload is abandoned. */
  holdRecycle(why: string): void { this.#recycleWhy ??= why; }

  /** replacing → serving (its reload was abandoned); the recycle it held back, if any. */
  restore(): string | null {
    this.#move('restore');
    this.#replacedFor = null;
    return this.#recycleWhy;
  }

  /** Tells it to stop (→ stopping) and when it will be killed; a second stop only brings that
   *  deadline nearer. The first reason given is the one its exit is logged with. */
  stop(plan: StopPlan, reason: string, nowMs: number): void {
    if (this.#state === 'exited') return;
    if (this.#state !== 'stopping') this.#move('stop');
    this.#endReason ??= reason;
    const killAt = nowMs + plan.killAfterMs;
    this.#killAtMs = this.#killAtMs === null ? killAt : Math.min(this.#killAtMs, killAt);
    this.signal(plan.send);
  }

  /** Its heartbeat is overdue: its exit, once it is killed, is expected. */
  timedOut(): void { this.#endReason = 'timeout'; }

  /** It did not boot in time: killed, and counted as a failed boot. */
  bootTimedOut(reason: string): void {
    this.#bootFailure = reason;
    this.#endReason = 'boot timeout';
    this.signal('SIGKILL');
  }

  /** Kills it if it is stopping and its deadline has passed; true if it did. */
  killIfOverdue(nowMs: number): boolean {
    if (this.#state !== 'stopping' || this.#killAtMs === null || nowMs < this.#killAtMs) return false;
    this.#killAtMs = null;
    this.signal('SIGKILL');
    return true;
  }

  /** The master itself stalled: its silence until `sinceMs` is not the worker's fault. */
  excuseSilenceUntil(sinceMs: number): void { this.#lastBeatAtMs = Math.max(this.#lastBeatAtMs, sinceMs); }

  /** Its process is gone; false if that was known already. */
  exited(): boolean {
    if (this.#state === 'exited') return false;
    this.#move('exit');
    return true;
  }

  signal(sig: NodeJS.Signals): void {
    if (this.#state === 'exited' || this.pid <= 0) return;
    try { process.kill(this.pid, sig); } catch { /* it exited in between; its exit event follows */ }
  }
}
