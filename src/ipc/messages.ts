/** Owns what the master and a worker say to each other: the worker's boot spec (passed in its
 *  environment, as WORKER_SPEC_ENV in env-names.ts) and the messages on the IPC channel. The only code both sides share. */

import type { ConfigSnapshot } from '../config/compile';
import type { LogLevel } from '../log/logger';
import type { StatsdTarget } from '../log/statsd';
import type { Tally } from './tally';
import type { TotalsJSON } from '../arbiter/totals';
import type { TlsMaterial } from '../config/tls';

/** What a worker needs of its generation's config, and only that: plain JSON, with every duration
 *  in milliseconds and what the worker class implies already applied (arbiter/worker-config.ts
 *  makes it from the master's Config). */
export interface WorkerConfig {
  readonly app: string | null;
  readonly threads: number;
  /** Most connections one serving unit holds at once (0: no cap). */
  readonly workerConnections: number;
  readonly backlog: number;
  readonly maxRequests: number;
  readonly maxRequestsJitter: number;
  readonly limitRequestLine: number;
  readonly limitRequestFields: number;
  readonly limitRequestFieldSize: number;
  readonly limitRequestBody: number;
  /** At the workerConnections cap, close the oldest connection still sending its first request to take a new one. */
  readonly makeRoom: boolean;
  readonly proxyProtocol: 'off' | 'v1' | 'v2' | 'auto';
  readonly proxyAllowIps: readonly string[];
  readonly forwardedAllowIps: readonly string[];
  /** How long an idle connection is kept open (0: not at all). */
  readonly keepAliveMs: number;
  readonly requestTimeoutMs: number;
  readonly headersTimeoutMs: number;
  /** A response not finished this long after its request reached the app is ended (0: never). */
  readonly requestDeadlineMs: number;
  readonly hookTimeoutMs: number;
  readonly gracefulTimeoutMs: number;
  /** The master may ask for the worker's stack through its inspector (SIGUSR1). */
  readonly timeoutStack: boolean;
  readonly errorLog: string;
  readonly logLevel: LogLevel;
  readonly accessLog: string | null;
  readonly accessLogFormat: string;
  /** Count responses and the loop's delay for the master's metrics (a status listener or a
   *  control socket is on), sent with each heartbeat. */
  readonly metrics: boolean;
  /** Where each response is told to statsd, when statsdHost is set. */
  readonly statsd: StatsdTarget | null;
}

export interface WorkerSpec {
  /** Stable worker number, 1..workers, reused by the worker's replacement. */
  readonly nr: number;
  readonly generation: number;
  /** The listening sockets, as this worker's inherited file descriptors: one list per thread, each
   *  with one fd per listener (the master passes each socket `copies` times for every thread:
   *  this is the first copy, `spareFds` the rest). */
  readonly fds: readonly (readonly number[])[];
  /** More copies of the listening sockets, per thread: a list of copies, each with one fd per
   *  listener. A unit accepts on every copy as well (see ACCEPT_COPIES in arbiter/worker-handle). */
  readonly spareFds: readonly (readonly (readonly number[])[])[];
  readonly beatIntervalMs: number;
  readonly config: WorkerConfig;
  /** The resolved title name ("forkd: worker N [NAME]"). */
  readonly name: string;
  /** The worker-side hooks the config file defines (functions cannot cross in JSON); when there
   *  are some, the master's first message is the config file to take them from (configSnapshot). */
  readonly workerHooks: readonly string[];
  /** Which listeners serve TLS, by index; the material comes over IPC first ('tls'). */
  readonly tls: readonly boolean[];
  /** Who the worker becomes before it loads the app; null: it stays who the master is. */
  readonly identity: { readonly uid: number; readonly gid: number; readonly user: string; readonly initgroups: boolean } | null;
}

export type ToWorker =
  /** USR1 reached the master: reopen the log files (USR1 itself is kept for the inspector). */
  | { readonly type: 'reopenLogs' }
  /** Listener `index`, sent with its handle, to accept on again after a pause. */
  | { readonly type: 'listener'; readonly index: number }
  /** The connections each serving unit should have: more than that, and it sheds and pauses. */
  | { readonly type: 'balance'; readonly fairShare: number }
  /** The config file as the worker's generation read it, to run the worker's own hooks from. */
  | { readonly type: 'configSnapshot'; readonly snapshot: ConfigSnapshot }
  /** appMetrics: send the app's prom-client registry (its getMetricsAsJSON), answering `id`. */
  | { readonly type: 'appMetrics'; readonly id: number }
  /** forkd ctl stacks is about to open the inspector (USR1) of a worker that is not hung: leave it
   *  open for `forMs`, then close it without a warning. */
  | { readonly type: 'stackCapture'; readonly forMs: number }
  /** The certificate, key and options the worker's TLS listeners serve with. */
  | { readonly type: 'tls'; readonly material: TlsMaterial };

export interface StalledThread { readonly index: number; readonly threadId: number }

/** What a worker with metrics on adds to its heartbeat: what it counted since the last one (a
 *  delta), and how it is now. */
export interface BeatReport {
  readonly tally: Tally;
  /** Event loop delay p50 and p99 over the interval, in ms (the worst thread's, with threads). */
  readonly lagMs: readonly [number, number] | null;
  /** The oldest request in flight, how long it has run (ms). */
  readonly oldestMs: number | null;
  readonly rssBytes: number;
}

export type FromWorker =
  /** The app is loaded and the worker accepts on every listener. */
  | { readonly type: 'ready'; readonly inspectPort: number | null }
  /** `stalledMs`: how long the quietest thread has not beaten (a hung thread hangs the process);
   *  `stalledThread` names it (1-based, and its threadId for the inspector) while it is late. */
  | { readonly type: 'beat'; readonly inFlight: number; readonly requests: number; readonly connections: number; readonly stalledMs: number;
      readonly stalledThread: StalledThread | null; readonly report: BeatReport | null }
  /** The open connections changed: for the master's balance. */
  | { readonly type: 'load'; readonly connections: number }
  /** Send listener `index` again: accepting was paused, and its fd closed. */
  | { readonly type: 'relisten'; readonly index: number }
  /** Loading the app failed; the worker exits with AppLoadFailed right after. */
  | { readonly type: 'bootFailed'; readonly reason: string }
  /** maxRequests reached: start my replacement, then stop me. */
  | { readonly type: 'recycle'; readonly requests: number }
  /** The app's prom-client metrics as getMetricsAsJSON gave them (null: it has none), for `id`. */
  | { readonly type: 'appMetrics'; readonly id: number; readonly metrics: unknown[] | null; readonly error?: string };

/** What the receiving side accepts of a union `M`: an object whose `type` is one of `types`, a table
 *  the compiler checks against the union (a type left out, or one it lacks, fails the build). */
function accepts<M extends { readonly type: string }>(types: { readonly [K in M['type']]: true }): (msg: unknown) => msg is M {
  return (msg: unknown): msg is M => {
    const type = typeof msg === 'object' && msg !== null ? (msg as { type?: unknown }).type : undefined;
    return typeof type === 'string' && Object.hasOwn(types, type);
  };
}

/** The master takes only these from a worker's channel. */
export const isFromWorker = accepts<FromWorker>({ ready: true, beat: true, load: true, relisten: true, bootFailed: true, recycle: true, appMetrics: true });
/** A worker takes only these from its master. */
export const isToWorker = accepts<ToWorker>({ reopenLogs: true, listener: true, balance: true, configSnapshot: true, appMetrics: true, stackCapture: true, tls: true });

/** A successor master (USR2) to the master that started it. */
export type FromSuccessor =
  /** Every one of its workers serves, on these of the sockets it was handed (the rest the old
   *  master closes when it exits). */
  | { readonly type: 'upgraded'; readonly pid: number; readonly kept: readonly string[] }
  /** It is exiting (upgrade manual: a rollback): its totals, for the old master to go on from. */
  | { readonly type: 'totals'; readonly totals: TotalsJSON };

/** The old master to its successor: the handover is taken; tell systemd MAINPID= now. */
export type ToSuccessor =
  /** The handover is taken; with the old master's counts (arbiter/totals.ts), for the successor's
   *  counters to go on from. */
  | { readonly type: 'handover'; readonly totals: TotalsJSON | null }
  /** After the handover, what the old master's draining workers still count, and their exits. */
  | { readonly type: 'tally'; readonly nr: number; readonly tally: Tally }
  | { readonly type: 'exit'; readonly reason: string };

export const isFromSuccessor = accepts<FromSuccessor>({ upgraded: true, totals: true });
export const isToSuccessor = accepts<ToSuccessor>({ handover: true, tally: true, exit: true });

export function assertNever(x: never): never {
  throw new Error(`unexpected value: ${JSON.stringify(x)}`);
}

/** What the master gives a service (one of the config's `services`) in its environment. */
export interface ServiceSpec {
  /** The service's name (`services[].name`). */
  readonly service: string;
  /** Its module, as the config names it (found from the service's working directory). */
  readonly module: string;
  readonly generation: number;
  /** The resolved title name ("forkd: service NAME [app]"). */
  readonly name: string;
  /** Load the module, say so, and wait for the master's go before running it (a stop-then-start
   *  replacement: the old service is stopped in between). */
  readonly hold: boolean;
  readonly beatIntervalMs: number;
  readonly timeoutStack: boolean;
  readonly errorLog: string;
  readonly logLevel: LogLevel;
  readonly identity: WorkerSpec['identity'];
}

export type FromService =
  /** The module loaded and exports a function; the inspector port, as a worker's ready says. */
  | { readonly type: 'loaded'; readonly inspectPort: number | null }
  /** The module could not be loaded, or exports no function. */
  | { readonly type: 'failed'; readonly reason: string }
  /** Its function runs. */
  | { readonly type: 'running' }
  | { readonly type: 'beat' };

export type ToService =
  /** A held service may run now (the one it replaces has stopped). */
  | { readonly type: 'go' }
  | { readonly type: 'reopenLogs' };

export const isFromService = accepts<FromService>({ loaded: true, failed: true, running: true, beat: true });
export const isToService = accepts<ToService>({ go: true, reopenLogs: true });
