/** CLI entry: argv → config → sockets → master. The only place (with the worker entry) that ends
 *  the process, and the only one that maps errors to exit codes. */

import { createLoop, listenForSignals } from '../arbiter/loop';

// Before anything slow: a signal that arrived before its listener would take its default action.
// Signals queue here until the master runs.
const loop = createLoop();
listenForSignals(loop);

import { resolve } from 'node:path';
import { createArbiter } from '../arbiter/arbiter';
import { writePidfile, type Pidfile } from '../arbiter/pidfile';
import { ConfigError, UsageError } from '../config/errors';
import { loadConfig } from '../config/load';
import { renderConfig } from '../config/print';
import { ExitCode } from '../exit-codes';
import { createLogger } from '../log/logger';
import { BindError, openListeners } from '../net/listeners';
import { loadApp } from '../worker/app-loader';
import { parseArgv } from './argv';
import { renderHelp } from './help';

const VERSION = (require('../../../package.json') as { version: string }).version;

function say(stream: NodeJS.WriteStream, text: string): void {
  stream.write(text.endsWith('\n') ? text : `${text}\n`);
}

async function main(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<ExitCode> {
  const parsed = parseArgv(argv);
  if (parsed.actions.has('help')) { say(process.stdout, renderHelp(VERSION)); return ExitCode.Ok; }
  if (parsed.actions.has('version')) { say(process.stdout, `forkd ${VERSION} (node ${process.version})`); return ExitCode.Ok; }

  const loaded = await loadConfig({ cli: parsed.values, env, cwd: process.cwd() });
  const { config } = loaded;
  if (parsed.actions.has('printConfig')) { say(process.stdout, renderConfig(loaded)); return ExitCode.Ok; }
  if (!config.app) {
    throw new UsageError('no APP to serve: name it on the command line (forkd app.js) or as "app" in the config file');
  }
  if (config.chdir) {
    try { process.chdir(resolve(config.chdir)); } catch (err) {
      throw new ConfigError(`cannot change to directory ${config.chdir} (chdir): ${(err as NodeJS.ErrnoException).code}`);
    }
  }
  if (parsed.actions.has('checkConfig')) {
    try {
      const app = await loadApp(config.app, process.cwd());
      say(process.stdout, `forkd: config OK (${loaded.file ?? 'no config file'}); app OK: ${app.app.shape} from ${app.file}`);
      return ExitCode.Ok;
    } catch (err) {
      throw new ConfigError(`the app failed to load: ${(err as Error).message}`);
    }
  }

  const log = createLogger({ target: config.errorLog, level: config.logLevel });
  const name = config.name ?? config.app;
  process.title = `forkd: master [${name}]`;
  log.info(`Starting forkd ${VERSION}`, { config: loaded.file ?? undefined });
  let listeners;
  try {
    listeners = await openListeners(config.bind);
  } catch (err) {
    if (!(err instanceof BindError)) throw err;
    log.critical(err.message, { event: 'master.bindFailed' });
    return ExitCode.Failure;
  }
  for (const l of listeners) log.info(`Listening at: ${l.url} (${process.pid})`);
  let pidfile: Pidfile | null = null;
  if (config.pid) {
    try { pidfile = writePidfile(config.pid); } catch (err) {
      log.critical(`cannot write pidfile ${config.pid}: ${(err as Error).message}`, { event: 'master.pidfileFailed' });
      for (const l of listeners) l.close();
      return ExitCode.Failure;
    }
  }
  return new Promise<ExitCode>((done) => {
    createArbiter({
      config, name, listeners, log, loop,
      onExit: (code) => {
        pidfile?.remove();
        log.info('Shutting down: Master', { event: 'master.exit', exitCode: code });
        done(code);
      },
    }).start();
  });
}

main(process.argv.slice(2), process.env).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError) { say(process.stderr, `forkd: ${err.message}`); process.exit(ExitCode.Usage); }
    if (err instanceof ConfigError) { say(process.stderr, `forkd: error: ${err.message}`); process.exit(ExitCode.ConfigInvalid); }
    say(process.stderr, `forkd: internal error: ${err instanceof Error ? err.stack : String(err)}`);
    process.exit(ExitCode.Failure);
  },
);
