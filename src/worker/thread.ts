/** Owns a serving thread (`threads` > 1): one unit in a worker_thread, speaking to its process's
 *  main thread over parentPort. The process speaks to the master for all its threads (main.ts). */

import { parentPort, workerData } from 'node:worker_threads';
import type { ConfigSnapshot } from '../config/compile';
import type { TlsMaterial } from '../config/tls';
import { assertNever, type WorkerSpec } from '../ipc/messages';
import { createLogger } from '../log/logger';
import type { ServingStats } from './serve';
import type { UnitReport } from './unit-metrics';
import { appMetricsHere, type AppMetrics } from './app-metrics';
import { answeredInOrder, loadFailure, readWorkerHooks, startUnit, watchConnections, type Unit } from './unit';

/** `snapshot`: the config to take the worker's hooks from (see listenToMaster in main.ts). */
export interface ThreadData { readonly spec: WorkerSpec; readonly index: number; readonly snapshot: ConfigSnapshot | null; readonly tls: TlsMaterial | null }

export type FromThread =
  | { readonly type: 'ready'; readonly shape: string }
  | { readonly type: 'bootFailed'; readonly reason: string }
  | ({ readonly type: 'stats'; readonly report: UnitReport | null } & ServingStats)
  | { readonly type: 'load'; readonly connections: number }
  | { readonly type: 'recycle'; readonly requests: number }
  | { readonly type: 'relisten'; readonly index: number }
  /** Drained; with what it counted since its last stats (metrics on). */
  | { readonly type: 'drained'; readonly report: UnitReport | null }
  | ({ readonly type: 'appMetrics'; readonly id: number } & AppMetrics);

export type ToThread =
  | { readonly type: 'listener'; readonly index: number; readonly fd: number }
  | { readonly type: 'balance'; readonly fairShare: number }
  | { readonly type: 'reopenLogs' }
  | { readonly type: 'drain' }
  | { readonly type: 'appMetrics'; readonly id: number }
  | { readonly type: 'tls'; readonly material: TlsMaterial };

async function run(): Promise<void> {
  const port = parentPort!;
  const { spec, index, snapshot, tls } = workerData as ThreadData;
  const post = (msg: FromThread) => port.postMessage(msg);
  const log = createLogger({ target: spec.config.errorLog, level: spec.config.logLevel });
  const relistens = answeredInOrder<{ fd: number }>((i) => post({ type: 'relisten', index: i }));
  let unit: Unit | null = null;
  port.on('message', (msg: ToThread) => {
    switch (msg.type) {
      case 'listener': relistens.answer(msg.index, { fd: msg.fd }); break;
      case 'balance': unit?.setFairShare(msg.fairShare); break;
      case 'reopenLogs': unit?.reopenLogs(); break;
      case 'tls': unit?.setTls(msg.material); break;
      case 'appMetrics': void appMetricsHere(spec).then((a) => post({ type: 'appMetrics', id: msg.id, ...a })); break;
      case 'drain': void unit?.drain().then(() => post({ type: 'drained', report: unit?.report() ?? null })); break;
      default: assertNever(msg);
    }
  });
  try {
    unit = await startUnit({
      spec, tls, fds: spec.fds[index]!, spareFds: spec.spareFds?.[index] ?? [], log, hooks: await readWorkerHooks(spec.workerHooks, snapshot, log),
      relisten: relistens.ask,
      onRecycle: (requests) => post({ type: 'recycle', requests }),
    });
  } catch (err) {
    const { reason, stack } = loadFailure(err);
    log.error(`App failed to load: ${reason}`, { event: 'app.loadFailed', nr: spec.nr, thread: index + 1, stack });
    post({ type: 'bootFailed', reason });
    return;
  }
  post({ type: 'ready', shape: unit.shape });
  setInterval(() => post({ type: 'stats', ...unit!.stats(), report: unit!.report() }), spec.beatIntervalMs);
  watchConnections(() => unit!.stats().connections, (connections) => post({ type: 'load', connections }));
}

void run();
