/** Owns what a worker is told of its generation's config: the WorkerConfig in its spec (what a
 *  worker uses of the master's Config, durations in milliseconds from Loaded.durationsMs, its
 *  worker class applied), which of its hooks run in the worker, and the snapshot of the config file
 *  they run from (never the file as it is when the worker starts). Made once per generation. */

import type { ConfigSnapshot } from '../config/compile';
import { WORKER_HOOK_NAMES, type HookName } from '../config/hooks';
import type { Loaded } from '../config/load';
import { workerClassMeaning } from '../config/worker-class';
import type { WorkerConfig } from '../ipc/messages';
import type { StatsdTarget } from '../log/statsd';
import type { TlsMaterial } from '../config/tls';

export interface WorkerSetup {
  readonly workerConfig: WorkerConfig;
  /** The worker-side hooks the config file defines (functions cannot cross in JSON). */
  readonly workerHooks: readonly HookName[];
  /** The config file as this generation read it, when it has worker-side hooks; sent to each worker
   *  over IPC right after it starts (with its local modules it may be too large for the environment). */
  readonly configSnapshot: ConfigSnapshot | null;
  /** The certificate and key (and CAs) the TLS listeners serve with, sent over IPC as a worker
   *  starts (never in its environment); null without certfile. */
  readonly tls: TlsMaterial | null;
}

/** Where statsd lines go, and how they are named, or null (no statsdHost). */
export function statsdTarget(config: Loaded['config']): StatsdTarget | null {
  if (!config.statsdHost) return null;
  const p = config.statsdPrefix ?? '';
  return { host: config.statsdHost, prefix: p === '' || p.endsWith('.') ? p : `${p}.`, tags: config.dogstatsdTags };
}

export function workerSetupFor({ config, durationsMs, snapshot, tls = null }: Pick<Loaded, 'config' | 'durationsMs' | 'snapshot'> & { tls?: Loaded['tls'] }): WorkerSetup {
  const workerClass = workerClassMeaning(config);
  const workerConfig: WorkerConfig = {
    app: config.app, threads: config.threads, workerConnections: workerClass.workerConnections, makeRoom: workerClass.makeRoom, backlog: config.backlog,
    maxRequests: config.maxRequests, maxRequestsJitter: config.maxRequestsJitter,
    limitRequestLine: config.limitRequestLine, limitRequestFields: config.limitRequestFields, limitRequestFieldSize: config.limitRequestFieldSize, limitRequestBody: config.limitRequestBody,
    proxyProtocol: config.proxyProtocol, proxyAllowIps: config.proxyAllowIps, forwardedAllowIps: config.forwardedAllowIps,
    keepAliveMs: workerClass.keepAlive ? durationsMs.keepAlive : 0, requestTimeoutMs: durationsMs.requestTimeout,
    headersTimeoutMs: durationsMs.headersTimeout, requestDeadlineMs: durationsMs.requestDeadline, hookTimeoutMs: durationsMs.hookTimeout, gracefulTimeoutMs: durationsMs.gracefulTimeout,
    timeoutStack: config.timeoutStack, errorLog: config.errorLog, logLevel: config.logLevel,
    accessLog: config.accessLog, accessLogFormat: config.accessLogFormat,
    metrics: config.statusBind.length > 0 || config.controlSocket !== null,
    statsd: statsdTarget(config),
  };
  // Hooks come with a snapshot (only a JavaScript or TypeScript config holds functions, and each
  // read of one keeps its snapshot): a worker told of hooks waits for the snapshot to run them from.
  const workerHooks = snapshot ? WORKER_HOOK_NAMES.filter((name) => typeof config[name] === 'function') : [];
  return { workerConfig, workerHooks, configSnapshot: workerHooks.length > 0 ? snapshot : null, tls: tls?.material ?? null };
}
