/** Owns one serving unit: the app loaded, its hooks read, and it served on a set of listening fds.
 *  A worker process is one unit, or, with `threads`, runs one in each worker_thread (thread.ts);
 *  either way the unit is the same code, and says what it needs through UnitDeps. */

import type { ConfigSnapshot } from '../config/compile';
import { runHook, type HookName, type Hooks, type WorkerInfo } from '../config/hooks';
import type { WorkerSpec } from '../ipc/messages';
import { compileAccessFormat, trustForwarded } from '../log/access';
import { openLineSink } from '../log/line-sink';
import type { Logger } from '../log/logger';
import { loadApp, type AppLoadResult, type LoadedApp } from './app-loader';
import { createServing, type ListenTarget, type Serving, type ServingStats } from './serve';
import { createUnitMetrics, type UnitReport } from './unit-metrics';
import type { ResponseDone } from './responses';
import type { Statsd } from '../log/statsd';
import type { TlsMaterial } from '../config/tls';
import { allowList } from '../net/allow-list';

export interface UnitDeps {
  readonly spec: WorkerSpec;
  /** What the TLS listeners (spec.tls) serve with. */
  readonly tls: TlsMaterial | null;
  /** This unit's copy of every listener, in order. */
  readonly fds: readonly number[];
  /** More copies of those fds, to accept on as well (one list per copy, one fd per listener). */
  readonly spareFds: readonly (readonly number[])[];
  readonly log: Logger;
  readonly hooks: Partial<Hooks>;
  /** Accept on listener `index` again after a pause: asks the master for it. */
  readonly relisten: (index: number) => Promise<ListenTarget>;
  readonly onRecycle: (requests: number) => void;
}

export interface Unit {
  readonly shape: string;
  stats(): ServingStats;
  /** What the unit counted since the last call (null: metrics are off). */
  report(): UnitReport | null;
  setFairShare(connections: number): void;
  setTls(material: TlsMaterial): void;
  reopenLogs(): void;
  drain(): Promise<void>;
}

/** Questions about listener `index` asked over a channel, answered in the order they were asked
 *  (a unit may ask for the same listener again before the first answer comes). */
export function answeredInOrder<T>(send: (index: number) => void): { ask(index: number): Promise<T>; answer(index: number, value: T): void } {
  const waiting = new Map<number, Array<(value: T) => void>>();
  return {
    ask: (index) => new Promise<T>((ok) => {
      waiting.set(index, [...(waiting.get(index) ?? []), ok]);
      send(index);
    }),
    answer(index, value) { waiting.get(index)?.shift()?.(value); },
  };
}

/** Tells `tell` the open connections whenever they change (checked every 100 ms), for the
 *  master's balance: sooner than a heartbeat. */
export function watchConnections(read: () => number, tell: (connections: number) => void): void {
  let last = -1;
  setInterval(() => {
    const connections = read();
    if (connections !== last) { last = connections; tell(connections); }
  }, 100);
}

/** Why the app could not be loaded, as the master's log will say it. */
export function loadFailure(err: unknown): { reason: string; stack?: string } {
  const e = err instanceof Error ? err : new Error(String(err));
  return e.name === 'AppLoadError' ? { reason: e.message } : { reason: `${e.name}: ${e.message}`, stack: e.stack };
}

/** The worker-side hooks `names`, run from the snapshot of the config file that the worker's
 *  generation read (functions do not cross to a worker in its JSON spec), never from the file as it
 *  is now: it may have been edited since, without a reload, or saved invalid. */
export async function readWorkerHooks(names: readonly string[], snapshot: ConfigSnapshot | null, log: Logger): Promise<Partial<Hooks>> {
  if (names.length === 0 || !snapshot) return {};
  try {
    const { runSnapshot } = require('../config/compile') as typeof import('../config/compile');
    const values = await runSnapshot(snapshot) as Readonly<Record<string, unknown>> | null | undefined;
    const out: Partial<Record<HookName, unknown>> = {};
    for (const name of names) out[name as HookName] = values?.[name];
    return out as Partial<Hooks>;
  } catch (err) {
    log.error(`cannot read hooks from ${snapshot.file}: ${(err as Error).message}`, { event: 'hook.loadFailed' });
    return {};
  }
}

/** Loads the app (throws what loading threw) and serves it on the unit's fds. */
export async function startUnit(deps: UnitDeps): Promise<Unit> {
  const { spec, log, hooks } = deps;
  const { config } = spec;
  const loaded: AppLoadResult = await loadApp(config.app ?? '', process.cwd());
  for (const note of loaded.notes) log.warning(note, { event: 'app.note', nr: spec.nr });
  const me: WorkerInfo = { pid: process.pid, nr: spec.nr, generation: spec.generation };
  const hookOpts = { timeoutMs: config.hookTimeoutMs, log };
  const accessFormat = config.accessLog ? compileAccessFormat(config.accessLogFormat) : null;
  if (config.accessLog) trustForwarded(allowList(config.forwardedAllowIps));
  const accessSink = config.accessLog ? openLineSink(config.accessLog, 1, { buffered: true }) : null;
  const metrics = config.metrics ? createUnitMetrics() : null;
  const responseDone: ResponseDone[] = metrics ? [metrics.responseDone] : [];
  let statsd: Statsd | null = null;
  if (config.statsd) {
    const { openStatsd, statsdResponses, statsdLogCounter } = require('../log/statsd') as typeof import('../log/statsd');
    statsd = openStatsd(config.statsd, log);
    responseDone.push(statsdResponses(statsd));
    log.countLines(statsdLogCounter(statsd));
  }
  const jitter = config.maxRequestsJitter > 0 ? Math.floor(Math.random() * (config.maxRequestsJitter + 1)) : 0;
  const serving: Serving = createServing(loaded.app, {
    keepAliveMs: config.keepAliveMs,
    requestTimeoutMs: config.requestTimeoutMs,
    headersTimeoutMs: config.headersTimeoutMs,
    requestDeadlineMs: config.requestDeadlineMs,
    backlog: config.backlog,
    limits: { line: config.limitRequestLine, fields: config.limitRequestFields, fieldSize: config.limitRequestFieldSize, body: config.limitRequestBody },
    maxRequests: config.maxRequests > 0 ? config.maxRequests + jitter : 0,
    onRecycle: deps.onRecycle,
    maxConnections: config.workerConnections,
    makeRoom: config.makeRoom,
    relisten: deps.relisten,
    accessLog: accessFormat && typeof accessFormat !== 'string' && accessSink
      ? { format: accessFormat, write: (line) => accessSink.write(line) } : null,
    responseDone,
    tls: deps.tls ? { material: tlsFor(loaded.app, deps.tls, log), listeners: spec.tls } : null,
    proxy: config.proxyProtocol === 'off' ? null : { version: config.proxyProtocol, trusted: allowList(config.proxyAllowIps) },
    hooks: {
      preRequest: hooks.preRequest ? (req) => runHook(hooks.preRequest, 'preRequest', [me, req], hookOpts) : null,
      postRequest: hooks.postRequest ? (req, res) => void runHook(hooks.postRequest, 'postRequest', [me, req, res], hookOpts) : null,
    },
    log,
  });
  await runHook(hooks.postWorkerInit, 'postWorkerInit', [me], hookOpts);
  await serving.listen(deps.fds, deps.spareFds);
  return {
    shape: loaded.app.shape,
    stats: () => serving.stats(),
    report: () => metrics?.take(serving.takeCounted()) ?? null,
    setFairShare: (n) => serving.setFairShare(n),
    setTls: (material) => serving.setTls(material),
    reopenLogs() {
      for (const [what, sink] of [['errorLog', log], ['accessLog', accessSink]] as const) {
        try { sink?.reopen(); } catch (err) {
          log.error(`cannot reopen ${what}: ${(err as Error).message}; writing on to the file it had`, { event: 'worker.reopenFailed', nr: spec.nr });
        }
      }
    },
    async drain() {
      await serving.drain();
      // Its buffered lines now: a thread ends with its process and runs no exit listener.
      accessSink?.close();
      await statsd?.close();
    },
  };
}

/** The TLS material as the app can be served with it: HTTP/1.1 only (no h2 offered by ALPN, said
 *  once per unit) for an app that cannot run on Node's HTTP/2 compatibility API. */
function tlsFor(app: LoadedApp, material: TlsMaterial, log: Logger): TlsMaterial {
  if (!material.http2 || !app.http1Only) return material;
  log.warning(`http2 is on, but ${app.http1Only}: its TLS listeners offer HTTP/1.1 only`, { event: 'app.http1Only' });
  return { ...material, http2: false };
}
