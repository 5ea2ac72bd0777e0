/** Owns what a worker is told of its generation's config: the WorkerConfig in its spec (what a
 *  worker uses of the master's Config, durations in milliseconds from Loaded.durationsMs, its
 *  worker class applied) and which of its hooks run in the worker. Made once per generation. */

import { WORKER_HOOK_NAMES, type HookName } from '../config/hooks';
import type { Loaded } from '../config/load';
import { workerClassMeaning } from '../config/worker-class';
import type { WorkerConfig } from '../ipc/messages';

export interface WorkerSetup {
  readonly workerConfig: WorkerConfig;
  /** The worker-side hooks the config file defines (functions cannot cross in JSON). */
  readonly workerHooks: readonly HookName[];
}

export function workerSetupFor({ config, durationsMs }: Loaded): WorkerSetup {
  const workerClass = workerClassMeaning(config);
  const workerConfig: WorkerConfig = {
    app: config.app, threads: config.threads, workerConnections: workerClass.workerConnections, backlog: config.backlog,
    maxRequests: config.maxRequests, maxRequestsJitter: config.maxRequestsJitter,
    limitRequestLine: config.limitRequestLine, limitRequestFields: config.limitRequestFields, limitRequestFieldSize: config.limitRequestFieldSize,
    keepAliveMs: workerClass.keepAlive ? durationsMs.keepAlive : 0, requestTimeoutMs: durationsMs.requestTimeout,
    headersTimeoutMs: durationsMs.headersTimeout, hookTimeoutMs: durationsMs.hookTimeout, gracefulTimeoutMs: durationsMs.gracefulTimeout,
    timeoutStack: config.timeoutStack, errorLog: config.errorLog, logLevel: config.logLevel,
    accessLog: config.accessLog, accessLogFormat: config.accessLogFormat,
  };
  return { workerConfig, workerHooks: WORKER_HOOK_NAMES.filter((name) => typeof config[name] === 'function') };
}
