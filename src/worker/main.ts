/** Worker entry: the process the master spawns for each worker. It loads the app, serves on the
 *  listening fds it inherited, beats its heart over IPC, and drains on TERM. It and the CLI are the
 *  only modules that end a process. */

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

import inspector from 'node:inspector';
import net from 'node:net';
import { runHook, type HookName, type Hooks, type WorkerInfo } from '../config/hooks';
import { ExitCode } from '../exit-codes';
import { WORKER_SPEC_ENV, type FromWorker, type ToWorker, type WorkerSpec } from '../ipc/messages';
import { compileAccessFormat } from '../log/access';
import { openLineSink, type LineSink } from '../log/line-sink';
import { createLogger, type Logger } from '../log/logger';
import { loadApp } from './app-loader';
import { createServing, type Serving } from './serve';

function readSpec(): WorkerSpec {
  const raw = process.env[WORKER_SPEC_ENV];
  if (!raw || typeof process.send !== 'function') {
    process.stderr.write('forkd: the worker entry is started by the forkd master, not by hand\n');
    process.exit(ExitCode.Usage);
  }
  delete process.env[WORKER_SPEC_ENV];
  return JSON.parse(raw) as WorkerSpec;
}

function send(msg: FromWorker): Promise<void> {
  return new Promise((done) => {
    if (!process.connected) { done(); return; }
    process.send!(msg, undefined, {}, () => done());
  });
}

/** A port for the inspector, should the master need this worker's stack (see USR1 above). */
function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const probe = net.createServer();
    probe.once('error', fail);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => ok(port));
    });
  });
}

/** Heartbeats, from an event-loop timer: a blocked loop is exactly what stops them. A loop that can
 *  beat is not hung, so an inspector a stray USR1 opened is closed here rather than left listening. */
function startBeating(spec: WorkerSpec, log: Logger, stats: () => { inFlight: number; requests: number }): void {
  setInterval(() => {
    if (inspector.url()) {
      inspector.close();
      log.warning('closed the inspector a USR1 opened (the worker is not hung)', { event: 'worker.inspectorClosed', nr: spec.nr });
    }
    void send({ type: 'beat', ...stats() });
  }, spec.beatIntervalMs);
}

/** The worker-side hooks, read from the config file only when it defines some (functions do not
 *  cross to a worker in its JSON spec, and reading a TypeScript config costs a few hundred ms). */
async function workerHooks(spec: WorkerSpec, log: Logger): Promise<Partial<Hooks>> {
  if (spec.workerHooks.length === 0 || !spec.configFile) return {};
  try {
    const { loadConfigFile } = require('../config/file') as typeof import('../config/file');
    const file = await loadConfigFile({ explicit: spec.configFile, searchFrom: process.cwd() });
    const out: Partial<Record<HookName, unknown>> = {};
    for (const name of spec.workerHooks) out[name as HookName] = file?.values[name];
    return out as Partial<Hooks>;
  } catch (err) {
    log.error(`cannot read hooks from ${spec.configFile}: ${(err as Error).message}`, { event: 'hook.loadFailed' });
    return {};
  }
}

type RunWorkerHook = (name: 'postWorkerInit' | 'workerInt' | 'workerExit') => Promise<void>;

function drainThenExit(serving: Serving, log: Logger, gracefulTimeoutMs: number, hook: RunWorkerHook): () => void {
  let stopping = false;
  return () => {
    if (stopping) return;
    stopping = true;
    log.debug('worker draining', { event: 'worker.drain', ...serving.stats() });
    // The master kills us after gracefulTimeout; this covers a master that is gone.
    setTimeout(() => process.exit(ExitCode.Ok), gracefulTimeoutMs).unref();
    void serving.drain().then(() => hook('workerExit')).then(() => process.exit(ExitCode.Ok));
  };
}

function quitNow(hook: RunWorkerHook): () => void {
  return () => { void hook('workerInt').then(() => hook('workerExit')).then(() => process.exit(ExitCode.Ok)); };
}

async function load(spec: WorkerSpec, log: Logger) {
  try {
    return await loadApp(spec.config.app ?? '', process.cwd());
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    const reason = e.name === 'AppLoadError' ? e.message : `${e.name}: ${e.message}`;
    log.error(`App failed to load: ${reason}`, { event: 'app.loadFailed', nr: spec.nr, stack: e.name === 'AppLoadError' ? undefined : e.stack });
    await send({ type: 'bootFailed', reason });
    return process.exit(ExitCode.AppLoadFailed);
  }
}

function serve(spec: WorkerSpec, log: Logger, app: Awaited<ReturnType<typeof load>>['app'], hooks: Partial<Hooks>,
  accessSink: LineSink | null): Serving {
  const { config } = spec;
  const me: WorkerInfo = { pid: process.pid, nr: spec.nr, generation: spec.generation };
  const hookOpts = { timeoutMs: config.hookTimeout * 1000, log };
  const accessFormat = config.accessLog ? compileAccessFormat(config.accessLogFormat) : null;
  const jitter = config.maxRequestsJitter > 0 ? Math.floor(Math.random() * (config.maxRequestsJitter + 1)) : 0;
  return createServing(app, {
    keepAliveMs: config.keepAlive * 1000,
    requestTimeoutMs: config.requestTimeout * 1000,
    headersTimeoutMs: config.headersTimeout * 1000,
    backlog: config.backlog,
    limits: { line: config.limitRequestLine, fields: config.limitRequestFields, fieldSize: config.limitRequestFieldSize },
    maxRequests: config.maxRequests > 0 ? config.maxRequests + jitter : 0,
    onRecycle: (requests) => {
      log.info('max requests reached: asking to be replaced', { event: 'worker.recycle', nr: spec.nr, requests });
      void send({ type: 'recycle', requests });
    },
    accessLog: accessFormat && typeof accessFormat !== 'string' && accessSink
      ? { format: accessFormat, write: (line) => accessSink.write(line) } : null,
    hooks: {
      preRequest: hooks.preRequest ? (req) => runHook(hooks.preRequest, 'preRequest', [me, req], hookOpts) : null,
      postRequest: hooks.postRequest ? (req, res) => void runHook(hooks.postRequest, 'postRequest', [me, req, res], hookOpts) : null,
    },
    log,
  });
}

/** Becomes the configured user before anything of the app runs: groups first, then gid, then uid
 *  (once the uid is dropped, nothing else may be changed). */
function dropPrivileges(identity: WorkerSpec['identity']): void {
  if (!identity || (process.getuid!() === identity.uid && process.getgid!() === identity.gid && process.getuid!() !== 0)) return;
  if (identity.initgroups) (process as unknown as { initgroups(user: string, gid: number): void }).initgroups(identity.user, identity.gid);
  else process.setgroups!([identity.gid]);
  process.setgid!(identity.gid);
  process.setuid!(identity.uid);
}

async function main(): Promise<void> {
  const spec = readSpec();
  const { config } = spec;
  dropPrivileges(spec.identity);
  process.title = `forkd: worker ${spec.nr} [${spec.name}]`;
  if (!config.timeoutStack) process.on('SIGUSR1', () => undefined);
  const log = createLogger({ target: config.errorLog, level: config.logLevel, backend: 'direct' });
  process.on('uncaughtException', (err) => {
    log.critical('worker crashed: uncaught exception', { event: 'worker.crash', nr: spec.nr, error: err });
    process.exit(ExitCode.Failure);
  });
  log.info(`Booting worker with pid: ${process.pid}`, { nr: spec.nr, generation: spec.generation });
  const inspectPort = config.timeoutStack ? await freePort() : null;
  if (inspectPort !== null) process.debugPort = inspectPort;
  let serving: Serving | null = null;
  startBeating(spec, log, () => serving?.stats() ?? { inFlight: 0, requests: 0 });

  const hooks = await workerHooks(spec, log);
  const me: WorkerInfo = { pid: process.pid, nr: spec.nr, generation: spec.generation };
  const hook: RunWorkerHook = (name) => runHook(hooks[name], name, [me] as Parameters<Hooks[typeof name]>, { timeoutMs: config.hookTimeout * 1000, log });
  stop.quick = quitNow(hook);
  const loaded = await load(spec, log);
  for (const note of loaded.notes) log.warning(note, { event: 'app.note', nr: spec.nr });
  const accessSink = config.accessLog ? openLineSink(config.accessLog, 1) : null;
  process.on('message', (msg: ToWorker) => {
    if (msg?.type !== 'reopenLogs') return;
    for (const [what, sink] of [['errorLog', log], ['accessLog', accessSink]] as const) {
      try { sink?.reopen(); } catch (err) {
        log.error(`cannot reopen ${what}: ${(err as Error).message}; writing on to the file it had`, { event: 'worker.reopenFailed', nr: spec.nr });
      }
    }
  });
  serving = serve(spec, log, loaded.app, hooks, accessSink);
  stop.graceful = drainThenExit(serving, log, config.gracefulTimeout * 1000, hook);
  await hook('postWorkerInit');
  await serving.listen(spec.fds);
  // The master may have gone while the app loaded; its disconnect then came before `stop` could drain.
  if (!process.connected) { stop.graceful(); return; }
  log.debug('worker serving', { event: 'worker.ready', nr: spec.nr, app: loaded.app.shape });
  await send({ type: 'ready', inspectPort });
}

main().catch(async (err: unknown) => {
  process.stderr.write(`forkd worker ${process.pid}: ${err instanceof Error ? err.stack : String(err)}\n`);
  // Tell the master why, so that its log (and a failed reload) names the cause.
  await send({ type: 'bootFailed', reason: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
  process.exit(ExitCode.Failure);
});
