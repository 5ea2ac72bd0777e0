/** Worker entry: the process the master spawns for each worker. It serves the app as one unit in
 *  its main thread, or as one unit in each of `threads` worker_threads; beats its heart over IPC;
 *  drains on TERM. It and the CLI are the only modules that end a process. */

// Signal listeners come first, before anything slow: a signal that arrives before its listener
// takes its default action (TTIN/TTOU would stop the process, TERM kill it mid-request). Until the
// worker serves, a stop means exit now; `stop` is the one piece of mutable state here because it
// must exist before anything else is loaded, and it is replaced once there is something to drain.
// USR1 is left to Node when timeoutStack is on: it opens the inspector, which is how the master
// reads the stack of a hung worker before killing it (a JavaScript listener could not run then).
const stop = { graceful: (): void => process.exit(0), quick: (): void => process.exit(0) };
process.on('SIGTERM', () => stop.graceful());
process.on('disconnect', () => stop.graceful());
process.on('SIGINT', () => stop.quick());
process.on('SIGQUIT', () => stop.quick());
for (const sig of ['SIGHUP', 'SIGTTIN', 'SIGTTOU', 'SIGWINCH', 'SIGUSR2'] as const) process.on(sig, () => undefined);

import { dropPrivileges, freePort, sendToMaster, takeSpec } from './become';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { runHook, type Hooks, type WorkerInfo } from '../config/hooks';
import { ExitCode } from '../exit-codes';
import type { ConfigSnapshot } from '../config/compile';
import { THREAD_ENV, WORKER_SPEC_ENV } from '../env-names';
import { assertNever, isToWorker, type BeatReport, type FromWorker, type StalledThread, type WorkerSpec } from '../ipc/messages';
import { addTally, emptyTally, type Tally } from '../ipc/tally';
import { createLogger, type Logger } from '../log/logger';
import type { ServingStats } from './serve';
import type { FromThread, ThreadData, ToThread } from './thread';
import type { UnitReport } from './unit-metrics';
import type { TlsMaterial } from '../config/tls';
import { appMetricsHere, mergeThreads, type AppMetrics } from './app-metrics';
import { answeredInOrder, loadFailure, readWorkerHooks, startUnit, watchConnections } from './unit';

function readSpec(): WorkerSpec {
  const spec = takeSpec<WorkerSpec>(WORKER_SPEC_ENV);
  if (spec) return spec;
  process.stderr.write('forkd: the worker entry is started by the forkd master, not by hand\n');
  process.exit(ExitCode.Usage);
}

const send = (msg: FromWorker): Promise<void> => sendToMaster(msg);

type RawHandle = { readonly fd: number };

/** Listener handles the master sent, by index, handed out in the order they were asked for.
 *  `ask` gives the handle itself, for a server of this thread to take over (closing the server
 *  closes it). `askFd` gives only its fd, for a serving thread (a handle cannot be passed to a
 *  thread): the handle object is then kept for the life of the process, since closing it would
 *  close whatever else has that fd number by then; each costs a few hundred bytes (measured). */
function createRelistener(): { ask(index: number): Promise<RawHandle>; askFd(index: number): Promise<number>; got(index: number, handle: RawHandle): void } {
  const handles = answeredInOrder<RawHandle>((index) => void send({ type: 'relisten', index }));
  const kept: RawHandle[] = [];
  return {
    ask: handles.ask,
    askFd: async (index) => { const handle = await handles.ask(index); kept.push(handle); return handle.fd; },
    got: handles.answer,
  };
}

type BeatStats = ServingStats & { stalledMs: number; stalledThread: StalledThread | null };

/** What the process does with its serving: one unit here, or threads. */
interface Serving {
  stats(): BeatStats;
  /** What was counted since the last call (null: metrics are off). */
  report(): UnitReport | null;
  /** The app's prom-client metrics (appMetrics), its threads' merged. */
  appMetrics(): Promise<AppMetrics>;
  setFairShare(n: number): void;
  setTls(material: TlsMaterial): void;
  reopenLogs(): void;
  drain(): Promise<void>;
}

async function serveHere(spec: WorkerSpec, log: Logger, hooks: Partial<Hooks>, tls: TlsMaterial | null, relistener: ReturnType<typeof createRelistener>): Promise<Serving> {
  const unit = await startUnit({
    spec, tls, fds: spec.fds[0]!, spareFds: spec.spareFds?.[0] ?? [], log, hooks,
    relisten: (index) => relistener.ask(index),
    onRecycle: (requests) => {
      log.info('max requests reached: asking to be replaced', { event: 'worker.recycle', nr: spec.nr, requests });
      void send({ type: 'recycle', requests });
    },
  });
  log.debug('worker serving', { event: 'worker.ready', nr: spec.nr, app: unit.shape });
  return { ...unit, stats: () => ({ ...unit.stats(), stalledMs: 0, stalledThread: null }), report: () => unit.report(), appMetrics: () => appMetricsHere(spec), reopenLogs: () => unit.reopenLogs() };
}

/** What the process knows of one of its serving threads. */
interface ThreadState { readonly worker: Worker; stats: ServingStats; lastAtMs: number; drained: boolean }

/** How long the process waits for a thread's app metrics: less than the master waits for it. */
const THREAD_ANSWER_MS = 300;

/** Asks threads for their app metrics; a thread that does not answer in time counts as none. */
function appMetricsAsker(): { ask(t: ThreadState, withinMs: number): Promise<AppMetrics>; answer(msg: { id: number } & AppMetrics): void } {
  const waiting = new Map<number, (a: AppMetrics) => void>();
  let next = 1;
  return {
    ask: (t, withinMs) => new Promise<AppMetrics>((ok) => {
      const id = next++;
      const timer = setTimeout(() => { waiting.delete(id); ok({ metrics: null }); }, withinMs);
      waiting.set(id, (a) => { clearTimeout(timer); waiting.delete(id); ok(a); });
      t.worker.postMessage({ type: 'appMetrics', id } satisfies ToThread);
    }),
    answer: (msg) => waiting.get(msg.id)?.({ metrics: msg.metrics, error: msg.error }),
  };
}

/** The threads' reports since the last beat, added up (a tally is a delta); the worst loop delay. */
function reportsOfThreads(): { add(r: UnitReport | null): void; take(): UnitReport | null } {
  let sum: { tally: Tally; lagMs: [number, number] | null } | null = null;
  return {
    add(r) {
      if (!r) return;
      sum ??= { tally: emptyTally(), lagMs: null };
      addTally(sum.tally, r.tally);
      if (r.lagMs) sum.lagMs = sum.lagMs ? [Math.max(sum.lagMs[0], r.lagMs[0]), Math.max(sum.lagMs[1], r.lagMs[1])] : [...r.lagMs];
    },
    take() { const out = sum; sum = null; return out; },
  };
}

/** Starts `threads` serving threads; a thread that throws ends the process. */
function startThreads(spec: WorkerSpec, snapshot: ConfigSnapshot | null, tls: TlsMaterial | null, log: Logger): ThreadState[] {
  // Loaded here, not at the top: a worker without threads never needs it.
  const { Worker: NodeWorker } = require('node:worker_threads') as typeof import('node:worker_threads');
  const script = join(__dirname, 'thread.js');
  return Array.from({ length: spec.config.threads }, (_, index) => {
    const worker = new NodeWorker(script, { workerData: { spec, index, snapshot, tls } satisfies ThreadData, env: { ...process.env, [THREAD_ENV]: String(index + 1) } });
    const state: ThreadState = { worker, stats: { inFlight: 0, requests: 0, connections: 0, oldestMs: null }, lastAtMs: performance.now(), drained: false };
    worker.on('error', (err) => {
      log.critical(`worker crashed: thread ${index + 1} threw`, { event: 'worker.crash', nr: spec.nr, error: err });
      process.exit(ExitCode.Failure);
    });
    return state;
  });
}

/** The threads' stats summed, as silent as the quietest of them. */
function threadStats(threads: readonly ThreadState[], beatIntervalMs: number): BeatStats {
  const now = performance.now();
  const sum = (k: 'inFlight' | 'requests' | 'connections') => threads.reduce((n, t) => n + t.stats[k], 0);
  const quietest = threads.reduce((q, t) => (t.lastAtMs < q.lastAtMs ? t : q));
  const stalledMs = now - quietest.lastAtMs - beatIntervalMs;
  const ages = threads.map((t) => t.stats.oldestMs).filter((a): a is number => a !== null);
  return {
    inFlight: sum('inFlight'), requests: sum('requests'), connections: sum('connections'), stalledMs,
    oldestMs: ages.length ? Math.max(...ages) : null,
    stalledThread: stalledMs > 0 ? { index: threads.indexOf(quietest) + 1, threadId: quietest.worker.threadId } : null,
  };
}

/** `threads` serving threads: ready when all are; as silent as the quietest; drained when all are. */
function serveInThreads(spec: WorkerSpec, snapshot: ConfigSnapshot | null, tls: TlsMaterial | null, log: Logger, relistener: ReturnType<typeof createRelistener>): Promise<Serving> {
  const threads = startThreads(spec, snapshot, tls, log);
  const post = (msg: ToThread) => { for (const t of threads) t.worker.postMessage(msg); };
  let recycling = false;
  const reports = reportsOfThreads();
  const asked = appMetricsAsker();
  return new Promise((ok) => {
    let ready = 0;
    let drainedAll: (() => void) | null = null;
    threads.forEach((t, index) => t.worker.on('message', (msg: FromThread) => {
      switch (msg.type) {
        case 'ready': t.lastAtMs = performance.now(); if (++ready === threads.length) ok(serving); break;
        case 'bootFailed':
          void send({ type: 'bootFailed', reason: msg.reason }).then(() => process.exit(ExitCode.AppLoadFailed));
          break;
        case 'stats': t.stats = msg; t.lastAtMs = performance.now(); reports.add(msg.report); break;
        case 'load': t.stats = { ...t.stats, connections: msg.connections }; break;
        case 'recycle':
          if (!recycling) { recycling = true; log.info(`max requests reached in thread ${index + 1}: asking to be replaced`, { event: 'worker.recycle', nr: spec.nr }); void send({ type: 'recycle', requests: msg.requests }); }
          break;
        case 'relisten': void relistener.askFd(msg.index).then((fd) => t.worker.postMessage({ type: 'listener', index: msg.index, fd } satisfies ToThread)); break;
        case 'appMetrics': asked.answer(msg); break;
        case 'drained': t.drained = true; reports.add(msg.report); if (threads.every((x) => x.drained)) drainedAll?.(); break;
        default: assertNever(msg);
      }
    }));
    const serving: Serving = {
      stats: () => threadStats(threads, spec.beatIntervalMs),
      report: () => reports.take(),
      appMetrics: async () => mergeThreads(spec, await Promise.all(threads.map((t) => asked.ask(t, THREAD_ANSWER_MS)))),
      setFairShare: (n) => post({ type: 'balance', fairShare: n }),
      setTls: (material) => post({ type: 'tls', material }),
      reopenLogs: () => post({ type: 'reopenLogs' }),
      drain: () => new Promise<void>((done) => { drainedAll = done; post({ type: 'drain' }); }),
    };
  });
}

/** Until when an inspector that USR1 opens is forkd ctl stacks' (0: none is expected). */
const inspectorExpected = { untilMs: 0 };

/** Heartbeats, from an event-loop timer: a blocked loop is exactly what stops them. A loop that can
 *  beat is not hung, so an inspector a stray USR1 opened is closed here rather than left listening.
 *  Changes in open connections are told more often, for the master's balance. Returns a beat to
 *  send once more as the worker stops: what was counted since the last one would otherwise be lost. */
function startBeating(spec: WorkerSpec, log: Logger, serving: () => Serving | null): () => Promise<void> {
  const stats = () => serving()?.stats() ?? null;
  const beat = () => {
    const s = stats() ?? { inFlight: 0, requests: 0, connections: 0, oldestMs: null, stalledMs: 0, stalledThread: null };
    const r = spec.config.metrics ? serving()?.report() ?? null : null;
    const report: BeatReport | null = spec.config.metrics
      ? { tally: r?.tally ?? emptyTally(), lagMs: r?.lagMs ?? null, oldestMs: s.oldestMs, rssBytes: process.memoryUsage.rss() } : null;
    return send({
      type: 'beat', inFlight: s.inFlight, requests: s.requests, connections: s.connections, stalledMs: Math.max(0, s.stalledMs), stalledThread: s.stalledThread, report,
    });
  };
  // The inspector module is loaded at the first beat, after the worker serves, not during its start.
  let inspector: typeof import('node:inspector') | null = null;
  setInterval(() => {
    inspector ??= require('node:inspector') as typeof import('node:inspector');
    if (inspector.url() && performance.now() >= inspectorExpected.untilMs) {
      inspector.close();
      if (inspectorExpected.untilMs === 0) log.warning('closed the inspector a USR1 opened (the worker is not hung)', { event: 'worker.inspectorClosed', nr: spec.nr });
      inspectorExpected.untilMs = 0;
    }
    void beat();
  }, spec.beatIntervalMs);
  watchConnections(() => stats()?.connections ?? 0, (connections) => void send({ type: 'load', connections }));
  return beat;
}

/** Becomes this worker before anything of the app runs: its user, its process title, USR1 as
 *  timeoutStack wants it, its error log, and a crash on an uncaught exception. */
function becomeWorker(spec: WorkerSpec): Logger {
  const { config } = spec;
  dropPrivileges(spec.identity);
  process.title = `forkd: worker ${spec.nr} [${spec.name}]`;
  if (!config.timeoutStack) process.on('SIGUSR1', () => undefined);
  const log = createLogger({ target: config.errorLog, level: config.logLevel });
  process.on('uncaughtException', (err) => {
    log.critical('worker crashed: uncaught exception', { event: 'worker.crash', nr: spec.nr, error: err });
    process.exit(ExitCode.Failure);
  });
  return log;
}

/** Takes the master's messages. Called before the worker's first await: a worker with hooks of its
 *  own is sent its generation's config snapshot right as it starts, and this resolves with it (null
 *  when it has none to wait for). */
function listenToMaster(spec: WorkerSpec, log: Logger, relistener: ReturnType<typeof createRelistener>, serving: () => Serving | null):
  { snapshot: Promise<ConfigSnapshot | null>; tls: Promise<TlsMaterial | null> } {
  let gotSnapshot: (snapshot: ConfigSnapshot) => void = () => undefined;
  const snapshot = spec.workerHooks.length === 0 ? Promise.resolve(null) : new Promise<ConfigSnapshot>((ok) => { gotSnapshot = ok; });
  let gotTls: (material: TlsMaterial) => void = () => undefined;
  const tls = spec.tls.some(Boolean) ? new Promise<TlsMaterial>((ok) => { gotTls = ok; }) : Promise.resolve(null);
  process.on('message', (msg: unknown, handle?: { fd: number }) => {
    if (!isToWorker(msg)) return;
    switch (msg.type) {
      case 'reopenLogs':
        try { log.reopen(); } catch (err) { log.error(`cannot reopen errorLog: ${(err as Error).message}; writing on to the file it had`); }
        serving()?.reopenLogs();
        break;
      case 'listener': if (handle) relistener.got(msg.index, handle); break;
      case 'balance': serving()?.setFairShare(msg.fairShare); break;
      case 'configSnapshot': gotSnapshot(msg.snapshot); break;
      // The first is what the TLS listeners start with; a later one is a rotation.
      case 'tls': { const current = serving(); if (current) current.setTls(msg.material); else gotTls(msg.material); break; }
      case 'stackCapture': inspectorExpected.untilMs = performance.now() + msg.forMs; break;
      case 'appMetrics': {
        const current = serving();
        void (current ? current.appMetrics() : Promise.resolve<AppMetrics>({ metrics: null })).then((r) => send({ type: 'appMetrics', id: msg.id, ...r }));
        break;
      }
      default: assertNever(msg);
    }
  });
  return { snapshot, tls };
}

/** From now on a graceful stop drains `serving`, once; the process ends when the drain and the
 *  workerExit hook are done. */
function drainOnStop(serving: Serving, log: Logger, gracefulTimeoutMs: number, lastBeat: () => Promise<void>, workerExit: () => Promise<void>): void {
  let draining = false;
  stop.graceful = () => {
    if (draining) return;
    draining = true;
    log.debug('worker draining', { event: 'worker.drain', ...serving.stats() });
    // The master kills us after gracefulTimeout; this covers a master that is gone.
    setTimeout(() => process.exit(ExitCode.Ok), gracefulTimeoutMs).unref();
    // The last beat carries what was counted since the one before: no count is lost to a stop.
    void serving.drain().then(lastBeat).then(() => workerExit()).then(() => process.exit(ExitCode.Ok));
  };
}

async function main(): Promise<void> {
  const spec = readSpec();
  const { config } = spec;
  const log = becomeWorker(spec);
  log.info(`Booting worker with pid: ${process.pid}`, { nr: spec.nr, generation: spec.generation, threads: config.threads > 1 ? config.threads : undefined });
  // Found while the app loads: an ephemeral port is a round trip of the event loop away.
  const inspectPortFound = config.timeoutStack ? freePort() : Promise.resolve(null);
  inspectPortFound.catch(() => undefined); // awaited below, where a failure is reported
  let serving: Serving | null = null;
  const lastBeat = startBeating(spec, log, () => serving);
  const relistener = createRelistener();
  const fromMaster = listenToMaster(spec, log, relistener, () => serving);
  const [snapshot, tls] = await Promise.all([fromMaster.snapshot, fromMaster.tls]);
  const hooks = await readWorkerHooks(spec.workerHooks, snapshot, log);
  const me: WorkerInfo = { pid: process.pid, nr: spec.nr, generation: spec.generation };
  const hook = (name: 'workerInt' | 'workerExit') => runHook(hooks[name], name, [me] as Parameters<Hooks[typeof name]>, { timeoutMs: config.hookTimeoutMs, log });
  stop.quick = () => { void lastBeat().then(() => hook('workerInt')).then(() => hook('workerExit')).then(() => process.exit(ExitCode.Ok)); };
  try {
    serving = config.threads > 1 ? await serveInThreads(spec, snapshot, tls, log, relistener) : await serveHere(spec, log, hooks, tls, relistener);
  } catch (err) {
    const { reason, stack } = loadFailure(err);
    log.error(`App failed to load: ${reason}`, { event: 'app.loadFailed', nr: spec.nr, stack });
    await send({ type: 'bootFailed', reason });
    process.exit(ExitCode.AppLoadFailed);
  }
  drainOnStop(serving, log, config.gracefulTimeoutMs, lastBeat, () => hook('workerExit'));
  // The master may have gone while the app loaded; its disconnect then came before `stop` could drain.
  if (!process.connected) { stop.graceful(); return; }
  const inspectPort = await inspectPortFound;
  if (inspectPort !== null) process.debugPort = inspectPort;
  await send({ type: 'ready', inspectPort });
}

main().catch(async (err: unknown) => {
  process.stderr.write(`forkd worker ${process.pid}: ${err instanceof Error ? err.stack : String(err)}\n`);
  // Tell the master why, so that its log (and a failed reload) names the cause.
  await send({ type: 'bootFailed', reason: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
  process.exit(ExitCode.Failure);
});
