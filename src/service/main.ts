/** Service entry: a child of the master that runs one of the config's `services` (a module that
 *  exports `(ctx) => …`) once per master, beside the workers, serving no HTTP. It becomes its user,
 *  takes its title (`forkd: service NAME [app]`), loads the module and tells the master, waits for
 *  a go when the master holds it (a reload that replaces a service stop-then-start: the new code is
 *  loaded, and so known to load, before the old one stops), then runs it and beats its heart. On
 *  TERM (or the master's stop) its signal aborts and it has until gracefulTimeout to return; the
 *  master kills what is left. It, the worker entry and the CLI are the only modules that end a
 *  process. */

// A stop before the service runs is an exit now; once it runs, the stop aborts its signal.
const stop = { now: (): void => process.exit(0) };
process.on('SIGTERM', () => stop.now());
process.on('disconnect', () => stop.now());
process.on('SIGINT', () => process.exit(0));
process.on('SIGQUIT', () => process.exit(0));
for (const sig of ['SIGHUP', 'SIGTTIN', 'SIGTTOU', 'SIGWINCH', 'SIGUSR2'] as const) process.on(sig, () => undefined);

import { SERVICE_SPEC_ENV } from '../env-names';
import { ExitCode } from '../exit-codes';
import { isToService, type FromService, type ServiceSpec } from '../ipc/messages';
import { createLogger, type Logger } from '../log/logger';
import { findModule, loadModule } from '../worker/app-loader';
import { dropPrivileges, freePort, sendToMaster, takeSpec } from '../worker/become';

/** What a service's function is given. */
export interface ServiceContext {
  /** The service's name, as the config gives it. */
  readonly name: string;
  /** Aborted when the service is to stop (TERM, a reload that replaces it, the master's stop). */
  readonly signal: AbortSignal;
  /** forkd's error log, each line marked with the service's name. */
  readonly log: Pick<Logger, 'error' | 'warning' | 'info' | 'debug'>;
}

function readSpec(): ServiceSpec {
  const spec = takeSpec<ServiceSpec>(SERVICE_SPEC_ENV);
  if (spec) return spec;
  process.stderr.write('forkd: the service entry is started by the forkd master, not by hand\n');
  process.exit(ExitCode.Usage);
}

const send = (msg: FromService): Promise<void> => sendToMaster(msg);

/** The function the module exports: its default export, or the module itself (CommonJS). */
function serviceFunction(mod: Record<string, unknown>): ((ctx: ServiceContext) => unknown) | null {
  for (const candidate of [mod.default, (mod.default as Record<string, unknown> | undefined)?.default, mod]) {
    if (typeof candidate === 'function') return candidate as (ctx: ServiceContext) => unknown;
  }
  return null;
}

async function main(): Promise<void> {
  const spec = readSpec();
  dropPrivileges(spec.identity);
  process.title = `forkd: service ${spec.service} [${spec.name}]`;
  if (!spec.timeoutStack) process.on('SIGUSR1', () => undefined);
  const log = createLogger({ target: spec.errorLog, level: spec.logLevel });
  process.on('uncaughtException', (err) => {
    log.critical(`service ${spec.service} crashed: uncaught exception`, { event: 'service.crash', service: spec.service, error: err });
    process.exit(ExitCode.Failure);
  });
  const aborter = new AbortController();
  let held: (() => void) | null = null;
  const go = spec.hold ? new Promise<void>((ok) => { held = ok; }) : Promise.resolve();
  process.on('message', (msg: unknown) => {
    if (!isToService(msg)) return;
    if (msg.type === 'go') held?.();
    else if (msg.type === 'reopenLogs') {
      try { log.reopen(); } catch (err) { log.error(`cannot reopen errorLog: ${(err as Error).message}; writing on to the file it had`); }
    }
  });

  let run: (ctx: ServiceContext) => unknown;
  try {
    const fn = serviceFunction(await loadModule(findModule(spec.module, process.cwd())));
    if (!fn) throw new Error(`${spec.module} exports no function (ctx) => …`);
    run = fn;
  } catch (err) {
    const reason = err instanceof Error ? (err.name === 'AppLoadError' || err.name === 'Error' ? err.message : `${err.name}: ${err.message}`) : String(err);
    log.error(`service ${spec.service} failed to load: ${reason}`, { event: 'service.loadFailed', service: spec.service });
    await send({ type: 'failed', reason });
    process.exit(ExitCode.AppLoadFailed);
  }
  const inspectPort = spec.timeoutStack ? await freePort().catch(() => null) : null;
  if (inspectPort !== null) process.debugPort = inspectPort;
  await send({ type: 'loaded', inspectPort });
  await go;

  const ctxLog = (level: 'error' | 'warning' | 'info' | 'debug') => (message: string, meta = {}) => log[level](message, { service: spec.service, ...meta });
  const ctx: ServiceContext = { name: spec.service, signal: aborter.signal, log: { error: ctxLog('error'), warning: ctxLog('warning'), info: ctxLog('info'), debug: ctxLog('debug') } };
  setInterval(() => void send({ type: 'beat' }), spec.beatIntervalMs).unref();
  // Said before it runs: a function that never gives the loop back is then a hung service.
  await send({ type: 'running' });
  let returned: Promise<unknown>;
  try {
    returned = Promise.resolve(run(ctx));
  } catch (err) {
    returned = Promise.reject(err);
  }
  // Stopping: the signal aborts; a service that returned a promise has until it settles (the
  // master's gracefulTimeout bounds it), one that did not is done once its abort listeners ran.
  let stopping = false;
  stop.now = () => {
    if (stopping) return;
    stopping = true;
    aborter.abort(new DOMException('the service is stopping', 'AbortError'));
    void returned.then(() => undefined, () => undefined).then(() => setImmediate(() => process.exit(ExitCode.Ok)));
  };
  returned.then(
    () => {
      if (stopping) return;
      log.warning(`service ${spec.service} returned without being stopped`, { event: 'service.ended', service: spec.service });
      process.exit(ExitCode.Failure);
    },
    (err: unknown) => {
      if (stopping) return;
      log.error(`service ${spec.service} failed`, { event: 'service.failed', service: spec.service, error: err });
      process.exit(ExitCode.Failure);
    },
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`forkd service ${process.pid}: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(ExitCode.Failure);
});
