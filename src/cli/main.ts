/** CLI entry: argv → config → sockets → master. The only place (with the worker entry) that ends
 *  the process, and the only one that maps errors to exit codes. bin/forkd.js calls
 *  catchSignalsEarly() (early.ts) before this module loads, and hands what it set up to run(). */

import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import { Arbiter } from '../arbiter/arbiter';
import { masterEventStream, type HookContext } from '../arbiter/subscribers';
import { pidfileAt, writePidfile, type Pidfile } from '../arbiter/pidfile';
import { successorLifecycle, takeSuccessorOf } from '../arbiter/upgrade';
import type { TotalsJSON } from '../arbiter/totals';
import { findAppModule, parseAppSpec } from '../config/app-spec';
import { AppLoadError, ConfigError, UsageError } from '../config/errors';
import { loadConfig, type Loaded } from '../config/load';
import type { Identity } from '../config/identity';
import { checkReusePort, preflight } from '../config/preflight';
import { autoWorkers, resolveWorkerCount } from '../config/values';
import { ExitCode } from '../exit-codes';
import { createLogger, type Logger } from '../log/logger';
import { activatedSockets, predecessorSockets } from '../net/inherited';
import { BindError, bindOptions, listenerServesTls, logWhoCanConnect, openListeners, type Listener } from '../net/listeners';
import { logCertificate } from '../config/tls';
import { systemdLifecycle, type Lifecycle } from '../systemd/lifecycle';
import { createNotifier, type Notifier } from '../systemd/notify';
import { isTypeScriptFile, typeScriptTools } from '../typescript-files';
import { parseArgv } from './argv';
import type { Early } from './early';

const VERSION = (require('../../../package.json') as { version: string }).version;

function say(stream: NodeJS.WriteStream, text: string): void {
  stream.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** --check-config: the app must load, with the workers' environment, within bootTimeout. */
async function checkApp(loaded: Loaded): Promise<ExitCode> {
  const { config } = loaded;
  Object.assign(process.env, config.env);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, fail) => {
    timer = setTimeout(() => fail(new Error(`it did not finish loading within ${config.bootTimeout}s (bootTimeout)`)),
      loaded.durationsMs.bootTimeout);
  });
  try {
    // Loaded here only: the serving master never loads an app.
    const { loadApp } = require('../worker/app-loader') as typeof import('../worker/app-loader');
    const app = await Promise.race([loadApp(config.app!, process.cwd()), deadline]);
    say(process.stdout, `forkd: config OK (${loaded.file ?? 'no config file'}); app OK: ${app.app.shape} from ${app.file}`);
    return ExitCode.Ok;
  } catch (err) {
    throw new ConfigError(`the app failed to load: ${(err as Error).message}`);
  } finally {
    clearTimeout(timer);
  }
}

/** Opens the error log, once the config has passed the checks a reload also makes. */
function openLog(loaded: Loaded): { log: Logger; identity: Identity | null } {
  const { config } = loaded;
  const identity = preflight(loaded, process.cwd());
  try {
    return { log: createLogger({ target: config.errorLog, level: config.logLevel }), identity };
  } catch (err) {
    throw new ConfigError(`cannot open errorLog ${config.errorLog}: ${(err as Error).message}`);
  }
}

/** A master that dies takes every worker with it: an error that escapes (a hook's stray promise,
 *  a bug) is logged, and the master carries on. */
function keepMasterAlive(log: Logger): void {
  process.on('unhandledRejection', (reason) => {
    log.error('unhandled promise rejection in the master (a hook\'s?); carrying on', { event: 'master.unhandledRejection', error: reason });
  });
  process.on('uncaughtException', (err) => {
    log.critical('uncaught exception in the master; carrying on', { event: 'master.uncaughtException', error: err });
  });
}

async function bindAll(loaded: Loaded, log: Logger, successorOf: number | null, owner: Identity | null): Promise<Listener[] | null> {
  const given = [...activatedSockets(process.env), ...(successorOf ? predecessorSockets(process.env, successorOf) : [])];
  try {
    const listeners = await openListeners(loaded.config.bind, given, loaded.origins.bind.layer !== 'default', bindOptions(loaded.config, owner));
    for (const l of listeners) {
      // A socket given as an fd is named by its fd: the log says it serves TLS.
      const tls = loaded.tls !== null && listenerServesTls(l, loaded.config.certfile);
      const url = !tls ? l.url : l.url.startsWith('http:') ? l.url.replace(/^http:/, 'https:') : `${l.url} (TLS)`;
      log.info(`Listening at: ${url} (${process.pid})${l.origin ? `, from ${l.origin}` : ''}`);
      if (l.spec.kind === 'unix') logWhoCanConnect(log, l.spec.path);
    }
    if (loaded.tls) logCertificate(log, 'TLS certificate', loaded.tls.facts, loaded.config.certfile!, 'master.certificate');
    return listeners;
  } catch (err) {
    if (!(err instanceof BindError)) throw err;
    log.critical(err.message, { event: 'master.bindFailed' });
    return null;
  }
}

/** What the master reports as it runs: to systemd when NOTIFY_SOCKET is set, and, for a successor
 *  master started by USR2, to the master that started it (upgrade.ts). */
function lifecycleFor(notifier: Notifier, successorOf: number | null, listeners: readonly Listener[],
  onHandover: (totals: TotalsJSON | null) => void): Lifecycle | undefined {
  const systemd = notifier.enabled ? systemdLifecycle(notifier, process.env, { successor: successorOf !== null }) : null;
  return successorOf === null ? systemd ?? undefined : successorLifecycle(systemd, listeners, onHandover);
}

/** The working directory as the operator named it: $PWD when it is the same directory as the
 *  kernel's (a `current` symlink to a release stays a symlink, so a USR2 successor started there
 *  sees the release it points to then), else the kernel's. */
function logicalCwd(): string {
  const physical = process.cwd();
  const pwd = process.env.PWD;
  try {
    if (pwd && pwd.startsWith('/')) {
      const [a, b] = [statSync(pwd), statSync(physical)];
      if (a.ino === b.ino && a.dev === b.dev) return pwd;
    }
  } catch { /* fall back */ }
  return physical;
}

/** Why forkd cannot start with `path` as its control socket (an exit code, with the reason
 *  logged), checked before anything is bound; null when it can. A USR2 successor's predecessor
 *  answers there until the handover, so that is no reason. */
async function refuseControlSocket(path: string | null, log: Logger, successorOf: number | null): Promise<ExitCode | null> {
  if (!path) return null;
  const { controlPathProblem, socketAnswers } = require('../arbiter/control') as typeof import('../arbiter/control');
  const problem = controlPathProblem(path);
  if (problem) {
    log.critical(`refusing controlSocket ${path}: ${problem}`, { event: 'master.controlSocket' });
    return ExitCode.ConfigInvalid;
  }
  if (successorOf === null && await socketAnswers(path)) {
    log.critical(`controlSocket ${path}: another process answers on it (is forkd running there already?)`, { event: 'master.controlSocket' });
    return ExitCode.Failure;
  }
  return null;
}

async function serve(early: Early, loaded: Loaded, readConfig: () => Promise<Loaded>, startCwd: string): Promise<ExitCode> {
  const { config } = loaded;
  const successorOf = takeSuccessorOf(process.env);
  if (config.umask !== null) process.umask(config.umask);
  const { log, identity } = openLog(loaded);
  keepMasterAlive(log);
  const name = config.name ?? config.app!;
  process.title = `forkd: master [${name}]`;
  log.info(`Starting forkd ${VERSION}${successorOf ? `, succeeding master ${successorOf}` : ''}`, { config: loaded.file ?? undefined });
  if (process.pid === 1) {
    // A container started without an init (docker run without --init): the kernel sends PID 1 only
    // the signals it handles, which forkd does, but orphans re-parented to it are never reaped.
    log.warning('forkd is PID 1: signals work as anywhere, but processes orphaned by the app\'s children are never reaped '
      + '(they stay zombies); run it under an init: docker run --init, or tini as the entrypoint', { event: 'master.pid1' });
  }
  if (config.workers === 'auto') {
    const auto = autoWorkers();
    if (auto.source.startsWith('cgroup')) log.info(`workers auto: ${auto.count}, the container's CPU quota (${auto.source})`, { event: 'master.autoWorkers' });
  }
  // The master's lifecycle events start here, so that onStarting runs before the sockets are bound;
  // once the master runs, its hooks see the generation new workers start in.
  let hooksSee = (): HookContext => ({
    config, hookTimeoutMs: loaded.durationsMs.hookTimeout,
    master: { pid: process.pid, name, generation: 1, workers: resolveWorkerCount(config.workers) },
  });
  const events = masterEventStream(log, () => hooksSee());
  await events.emit({ type: 'master.starting' });
  const refused = await refuseControlSocket(config.controlSocket, log, successorOf);
  if (refused !== null) return refused;
  const listeners = await bindAll(loaded, log, successorOf, identity);
  if (!listeners) return ExitCode.Failure;
  early.undoOnStop(() => { for (const l of listeners) l.close(); });
  const pidfiles: Pidfile[] = [];
  if (config.pid) {
    try {
      pidfiles.push(writePidfile(config.pid), pidfileAt(`${config.pid}.oldbin`));
      early.undoOnStop(() => { for (const p of pidfiles) p.remove(); });
    } catch (err) {
      log.critical(`cannot write pidfile ${config.pid}: ${(err as Error).message}`, { event: 'master.pidfileFailed' });
      for (const l of listeners) l.close();
      return ExitCode.Failure;
    }
  }
  const notifier = createNotifier(process.env, log);
  let handover: (totals: TotalsJSON | null) => void = () => undefined;
  const handedOver = successorOf === null ? undefined : new Promise<TotalsJSON | null>((ok) => { handover = ok; });
  return new Promise<ExitCode>((done) => {
    const arbiter = new Arbiter({ events, handedOver,
      loaded, listeners, log, loop: early.loop, readConfig, startCwd, identity, pidfile: config.pid ? resolve(config.pid) : null,
      lifecycle: lifecycleFor(notifier, successorOf, listeners, (totals) => handover(totals)),
      onExit: (code) => {
        // The arbiter closed the sockets it should (none, if a successor serves them now).
        for (const p of pidfiles) p.remove();
        log.info('Shutting down: Master', { event: 'master.exit', exitCode: code });
        void notifier.flush().then(() => done(code));
      },
    });
    hooksSee = () => arbiter.hookContext();
    arbiter.start();
  });
}

async function main(early: Early, argv: readonly string[], env: NodeJS.ProcessEnv): Promise<ExitCode> {
  const parsed = parseArgv(argv);
  // --help and --print-config load their renderers only when asked: a serving master never needs them.
  if (parsed.actions.has('help')) { say(process.stdout, (require('./help') as typeof import('./help')).renderHelp(VERSION)); return ExitCode.Ok; }
  if (parsed.actions.has('version')) { say(process.stdout, `forkd ${VERSION} (node ${process.version})`); return ExitCode.Ok; }
  const startCwd = logicalCwd();
  const readConfig = () => loadConfig({ cli: parsed.values, env, cwd: startCwd });
  const loaded = await readConfig();
  if (parsed.actions.has('printConfig')) { say(process.stdout, (require('../config/print') as typeof import('../config/print')).renderConfig(loaded)); return ExitCode.Ok; }
  if (!loaded.config.app) {
    throw new UsageError('no APP to serve: name it on the command line (forkd app.js) or as "app" in the config file');
  }
  if (loaded.config.chdir) {
    try { process.chdir(resolve(loaded.config.chdir)); } catch (err) {
      throw new ConfigError(`cannot change to directory ${loaded.config.chdir} (chdir): ${(err as NodeJS.ErrnoException).code}`);
    }
  }
  if (parsed.actions.has('checkConfig')) {
    checkReusePort(loaded);
    return checkApp(loaded);
  }
  checkAppTools(loaded.config.app);
  return serve(early, loaded, readConfig, startCwd);
}

/** A TypeScript app needs ts-node and typescript (optional peers): said once, before any worker
 *  starts, rather than by every worker failing to boot. */
function checkAppTools(app: string): void {
  const spec = parseAppSpec(app);
  const file = typeof spec === 'string' ? null : findAppModule(spec.module, process.cwd());
  if (!file || !isTypeScriptFile(file)) return;
  const tools = typeScriptTools(file, ['ts-node', 'typescript']);
  if (typeof tools === 'string') throw new AppLoadError(tools);
}

/** Runs the CLI to its end: the process exits with the code it maps to. */
export function run(early: Early): void {
  main(early, process.argv.slice(2), process.env).then(
    (code) => process.exit(code),
    failed,
  );
}

function failed(err: unknown): never {
  if (err instanceof UsageError) { say(process.stderr, `forkd: ${err.message}`); process.exit(ExitCode.Usage); }
  if (err instanceof ConfigError) { say(process.stderr, `forkd: error: ${err.message}`); process.exit(ExitCode.ConfigInvalid); }
  if (err instanceof AppLoadError) { say(process.stderr, `forkd: error: ${err.message}`); process.exit(ExitCode.AppLoadFailed); }
  say(process.stderr, `forkd: internal error: ${err instanceof Error ? err.stack : String(err)}`);
  process.exit(ExitCode.Failure);
}
