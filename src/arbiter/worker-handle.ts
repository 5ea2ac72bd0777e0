/** Owns what the master knows of one worker: its process, number, generation, state and deadlines,
 *  and how it is started and stopped. The code that runs inside a worker is in src/worker/. */

import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { Config } from '../config/settings';
import { WORKER_SPEC_ENV } from '../env-names';
import type { StalledThread, ToWorker, WorkerConfig, WorkerSpec } from '../ipc/messages';
import type { Listener } from '../net/listeners';
import type { WorkerSetup } from './worker-config';

/** The worker entry, as the inspector names it (see stack-capture.ts). */
export const WORKER_SCRIPT = join(__dirname, '..', 'worker', 'main.js');

/** booting: loading the app · serving: ready · replacing: serving until its replacement is ready ·
 *  stopping: told to stop · exited. */
export type WorkerState = 'booting' | 'serving' | 'replacing' | 'stopping' | 'exited';

export interface WorkerHandle {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly nr: number;
  readonly generation: number;
  readonly spawnedAtMs: number;
  state: WorkerState;
  readyAtMs: number | null;
  /** It has served long enough that its start counts as a success (see STABLE_AFTER_MS). */
  stable: boolean;
  lastBeatAtMs: number;
  inspectPort: number | null;
  /** The thread that makes it late, if one does (threads > 1). */
  stalledThread: StalledThread | null;
  /** When its main thread last beat (its own silence, whatever its threads do). */
  lastHeardAtMs: number;
  inFlight: number;
  requests: number;
  /** Open connections, as the worker last reported them (for the balance). */
  connections: number;
  /** The fair share last sent to it (-1: none yet). */
  fairShareSent: number;
  /** The sockets it was started with, in its fds' order (sent again when it resumes accepting). */
  readonly listeners: readonly Listener[];
  /** Its serving threads. */
  readonly threads: number;
  /** Why a worker in state `replacing` is being replaced. */
  replacedFor: 'recycle' | 'reload' | null;
  /** A recycle asked for while a reload was replacing the worker (see pool.replace). */
  recycleWhy: string | null;
  /** Set when the master decided to end it (stop, timeout, boot timeout): its exit is expected. */
  endReason: string | null;
  /** What the worker said when its app failed to load. */
  bootFailure: string | null;
  /** When a stopping worker is killed if it has not exited. */
  killAtMs: number | null;
}

/** Escalation is data: what to send, and how long to wait before the next step. */
export interface StopPlan { readonly send: NodeJS.Signals; readonly killAfterMs: number }
export const stopPlans = {
  graceful: (gracefulTimeoutMs: number): StopPlan => ({ send: 'SIGTERM', killAfterMs: gracefulTimeoutMs }),
  /** INT/QUIT: the worker exits at once; a worker too stuck to do so is killed soon after. */
  quick: (gracefulTimeoutMs: number): StopPlan => ({ send: 'SIGQUIT', killAfterMs: Math.min(gracefulTimeoutMs, 2000) }),
};

export interface SpawnRequest extends WorkerSetup {
  readonly nr: number;
  readonly generation: number;
  readonly config: Config;
  readonly name: string;
  readonly listeners: readonly Listener[];
  readonly beatIntervalMs: number;
  readonly nowMs: number;
  readonly cwd: string;
  readonly identity: WorkerSpec['identity'];
}

export type SpawnWorker = (req: SpawnRequest) => WorkerHandle;

/** What the master was given by systemd is the master's alone: a worker that saw NOTIFY_SOCKET or
 *  LISTEN_FDS could notify systemd or adopt fds in its name. */
const MASTER_ONLY_ENV = ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID', 'LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES'];

/** NODE_OPTIONS flags that run code as the process starts. */
const PRELOAD = /^(?:-r|--require|--import|--loader|--experimental-loader)(?:=|$)/;

/** NODE_OPTIONS without the flags that load code: for a worker that starts as root and drops its
 *  privileges itself (--initgroups), such code would run as root before the drop. */
function withoutPreloads(options: string): string {
  const kept: string[] = [];
  const tokens = options.split(/\s+/).filter(Boolean);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (PRELOAD.test(t)) { if (!t.includes('=')) i++; continue; }
    kept.push(t);
  }
  return kept.join(' ');
}

function workerEnv(config: Config, spec: WorkerSpec): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...config.env, [WORKER_SPEC_ENV]: JSON.stringify(spec) };
  for (const name of MASTER_ONLY_ENV) delete env[name];
  if (spec.identity?.initgroups && env.NODE_OPTIONS) env.NODE_OPTIONS = withoutPreloads(env.NODE_OPTIONS);
  return env;
}

/** A root master starts a worker as its user directly (libuv drops every supplementary group,
 *  then sets the gid, then the uid, before node runs), so nothing runs as root in it. Only with
 *  --initgroups does the worker start as root, to take the user's groups, and drop at once. */
function startAs(identity: WorkerSpec['identity']): { uid?: number; gid?: number } {
  return identity && !identity.initgroups && process.getuid?.() === 0 ? { uid: identity.uid, gid: identity.gid } : {};
}

/** How many fds each serving unit accepts on for each listener. Node accepts one connection per
 *  listening fd each turn of its event loop, and a turn lasts as long as the app computes for the
 *  requests it reads then: a CPU-bound worker holding 25 connections (~50 ms a turn) took a burst of
 *  50 new ones over 400 ms, so their first requests waited that long (measured: wrk's p99 on a 2 ms
 *  route, 2 workers, 50 connections: 330–400 ms with one fd, 96 ms with four, same throughput; a
 *  hello app with Connection: close served 1.3–1.5× as much). A unit with a connection cap (or sync)
 *  takes one at a time anyway, so it gets one. */
const ACCEPT_COPIES = 4;
const acceptCopies = (config: Pick<WorkerConfig, 'workerConnections'>): number =>
  (config.workerConnections > 0 ? 1 : ACCEPT_COPIES);

/** Starts a worker process with the listening fds in stdio slots 3.., and the IPC channel after. */
export const spawnWorker: SpawnWorker = (req) => {
  // Every listener `copies` times per thread, in stdio slots 3..: thread t's copy c of listener i
  // is fd 3 + (t·copies + c)·n + i. Copy 0 is served by the unit's http server, the others by
  // acceptors that hand their connections to it.
  const threads = req.config.threads;
  const copies = acceptCopies(req.workerConfig);
  const n = req.listeners.length;
  const fdOf = (t: number, c: number, i: number) => 3 + (t * copies + c) * n + i;
  const stdioFds = Array.from({ length: threads * copies }, () => req.listeners.map((l) => l.fd)).flat();
  const spec: WorkerSpec = {
    nr: req.nr, generation: req.generation,
    fds: Array.from({ length: threads }, (_, t) => req.listeners.map((__, i) => fdOf(t, 0, i))),
    spareFds: Array.from({ length: threads }, (_, t) => Array.from({ length: copies - 1 }, (__, c) => req.listeners.map((___, i) => fdOf(t, c + 1, i)))),
    beatIntervalMs: req.beatIntervalMs, config: req.workerConfig, name: req.name,
    workerHooks: req.workerHooks, identity: req.identity,
  };
  const child = spawn(process.execPath, [...req.config.nodeArgs, WORKER_SCRIPT], {
    ...startAs(spec.identity),
    cwd: req.cwd,
    env: workerEnv(req.config, spec),
    stdio: ['ignore', 'inherit', 'inherit', ...stdioFds, 'ipc'],
    serialization: 'json',
  });
  if (req.configSnapshot) child.send({ type: 'configSnapshot', snapshot: req.configSnapshot } satisfies ToWorker, () => undefined);
  return {
    child, pid: child.pid ?? -1, nr: req.nr, generation: req.generation, spawnedAtMs: req.nowMs,
    state: 'booting', readyAtMs: null, stable: false, lastBeatAtMs: req.nowMs, inspectPort: null, stalledThread: null, lastHeardAtMs: req.nowMs, inFlight: 0, requests: 0, connections: 0, fairShareSent: -1, listeners: req.listeners, threads, replacedFor: null, recycleWhy: null,
    endReason: null, bootFailure: null, killAtMs: null,
  };
};

export function sendSignal(h: WorkerHandle, sig: NodeJS.Signals): void {
  if (h.state === 'exited' || h.pid <= 0) return;
  try { process.kill(h.pid, sig); } catch { /* it exited in between; its exit event follows */ }
}

export function beginStop(h: WorkerHandle, plan: StopPlan, reason: string, nowMs: number): void {
  if (h.state === 'exited') return;
  h.state = 'stopping';
  h.endReason ??= reason;
  const killAt = nowMs + plan.killAfterMs;
  h.killAtMs = h.killAtMs === null ? killAt : Math.min(h.killAtMs, killAt);
  sendSignal(h, plan.send);
}
