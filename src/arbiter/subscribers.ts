/** What follows the master's lifecycle events (events.ts): its log lines, its hooks, and systemd.
 *  Each is a table with an entry for every event type (null: nothing to do), so a new event must be
 *  given its log line, hook and systemd message (or none) here before the master builds. */

import { runHook, type HookName, type Hooks, type MasterInfo } from '../config/hooks';
import type { Config } from '../config/settings';
import type { Logger } from '../log/logger';
import type { Lifecycle } from '../systemd/lifecycle';
import { createEventStream, type EventOf, type EventStream, type EventType, type LifecycleEvent } from './events';
import { STABLE_AFTER_MS } from './backoff';
import { inFlightText, type InFlight } from './stack-capture';

const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;
/** ": serving GET /a (31.2 s, 10.0.0.7), …": what a hung worker had in flight, for its log line. */
const inFlightNote = (list: readonly InFlight[] | null) =>
  (list === null ? '' : list.length === 0 ? ': no request in flight' : `: serving ${list.map(inFlightText).join(', ')}`);

type Table<R> = { readonly [T in EventType]: ((e: EventOf<T>) => R) | null };
const follow = <R>(table: Table<R>) => (e: LifecycleEvent): R | undefined =>
  (table[e.type] as ((e: LifecycleEvent) => R) | null)?.(e) ?? undefined;

function logLines(log: Logger): (e: LifecycleEvent) => void {
  return follow<void>({
    'master.starting': null, // the entry point says which forkd starts
    'master.started': (e) => log.info(`Using ${plural(e.workers, 'worker')}`, { event: 'master.start', workers: e.workers }),
    'master.ready': (e) => log.info(`Ready: ${plural(e.status.serving, 'worker')} serving`, { event: 'master.ready', startupMs: e.startupMs }),
    'master.status': null,
    'master.stopping': null, // the signal's own line says why
    'master.exiting': null, // the entry point says it last
    'worker.spawning': null,
    'worker.spawned': null, // the worker says it boots
    'worker.ready': (e) => log.debug(`Worker ${e.worker.nr} ready (pid:${e.worker.pid})`, { event: 'worker.ready', generation: e.worker.generation, bootMs: e.bootMs }),
    'worker.stable': (e) => {
      if (e.resetFailures) log.info(`Worker ${e.worker.nr} has run ${STABLE_AFTER_MS} ms: boot failures reset`, { event: 'worker.stable', nr: e.worker.nr });
      log.debug(`Worker ${e.worker.nr} stable (pid:${e.worker.pid})`, { event: 'worker.stable', nr: e.worker.nr });
    },
    'worker.recycling': (e) => log.info(`Worker (pid:${e.worker.pid}) is to be replaced: ${e.why}`, { event: 'worker.recycle', nr: e.worker.nr }),
    'worker.timedOut': (e) => log.critical(`WORKER TIMEOUT (pid:${e.worker.pid})${e.thread !== null ? `: thread ${e.thread} is hung` : ''}${inFlightNote(e.inFlight)}`,
      { event: 'worker.timeout', nr: e.worker.nr, ...(e.thread !== null ? { thread: e.thread } : {}), silentForMs: e.silentForMs, stack: e.stack }),
    'worker.bootFailed': (e) => log.error(`Worker ${e.nr} failed to boot: ${e.reason}; next start in ${e.retryInMs} ms`,
      { event: 'worker.bootFailed', nr: e.nr, generation: e.generation, failures: e.failures }),
    'worker.exited': (e) => {
      const how = e.signal ? `was killed by ${e.signal}` : `exited with code ${e.code}`;
      if (e.reason !== null) log.info(`Worker (pid:${e.worker.pid}) ${how}`, { event: 'worker.exit', nr: e.worker.nr, reason: e.reason });
      else log.error(`Worker (pid:${e.worker.pid}) ${how}`, { event: 'worker.died', nr: e.worker.nr, generation: e.worker.generation });
    },
    'reload.deferred': (e) => log.info(`${e.why} during start-up: reloading once the workers serve`, { event: 'reload.deferred' }),
    'reload.begun': (e) => log.info(`Reloading (${e.why})`, { event: 'reload.begin', generation: e.status.generation }),
    'reload.done': (e) => log.info(`Reload complete: generation ${e.generation}, ${plural(e.workers, 'worker')}`, { event: 'reload.done', generation: e.generation }),
    'reload.failed': (e) => log.error(`Reload failed: ${e.reason}; still serving generation ${e.generation} as before`, { event: 'reload.failed', generation: e.generation }),
    'upgrade.requested': null,
    'upgrade.begun': (e) => log.info(`Upgrade: started successor master (pid:${e.successor})`, { event: 'upgrade.begin', successor: e.successor }),
    'upgrade.failed': (e) => log.error(`Upgrade failed: ${e.reason}; this master carries on${e.pidfileRestored ? ' (pidfile restored)' : ''}`, { event: 'upgrade.failed' }),
    'upgrade.handedOver': (e) => (e.manual
      ? log.info(`Upgrade: the successor master (pid:${e.successor}) serves. Send this master WINCH then TERM to finish, `
        + 'or HUP this master and TERM the successor to roll back', { event: 'upgrade.ready', successor: e.successor })
      : log.info(`Upgrade complete: the successor master (pid:${e.successor}) serves; retiring this one`, { event: 'upgrade.done', successor: e.successor })),
    'upgrade.rolledBack': (e) => log.info(`The successor master (pid:${e.successor}) exited: this master is the main one again`, { event: 'upgrade.rolledBack' }),
    'scale.changed': (e) => { if (e.why === 'TTIN' || e.why === 'TTOU' || e.why === 'ctl') log.info(`Number of workers: ${e.workers}`, { event: 'master.resize', workers: e.workers }); },
    'logs.reopened': () => log.info('Handling signal: USR1: log files reopened', { event: 'master.reopenLogs' }),
  });
}

/** What a master hook is run with: the config of the generation new workers start in (during a
 *  reload, the new one), and what it says of the master. */
export interface HookContext { readonly config: Config; readonly hookTimeoutMs: number; readonly master: MasterInfo }

/** The master's event stream, followed in this order: its log lines, systemd (once `tellSystemd`
 *  names it: the sockets must be bound first), the hooks. A hook is started after the event's log
 *  line and systemd message, as it always was: RELOADING=1 before onReload, READY=1 before
 *  whenReady. `context` is read as each hook runs. */
export interface MasterEvents extends EventStream {
  tellSystemd(lifecycle: Lifecycle): void;
}

export function masterEventStream(log: Logger, context: () => HookContext): MasterEvents {
  const events = createEventStream((err, e) => log.error(`following ${e.type} failed`, { event: 'master.error', error: err }));
  let systemd: ((e: LifecycleEvent) => void) | null = null;
  events.subscribe(logLines(log));
  events.subscribe((e) => systemd?.(e));
  events.subscribe(hookRunner(log, context));
  return { ...events, tellSystemd(lifecycle) { systemd = systemdFollower(lifecycle); } };
}

/** The master hooks, run with the config of the generation serving when the event happens; the
 *  promise of each is the event's, so whoever awaits the event waits for its hook. */
function hookRunner(log: Logger, now: () => HookContext): (e: LifecycleEvent) => Promise<void> | undefined {
  const hook = <K extends HookName>(name: K, ...args: Parameters<Hooks[K]>) => {
    const { config, hookTimeoutMs } = now();
    return runHook(config[name], name, args, { timeoutMs: hookTimeoutMs, log });
  };
  const master = () => now().master;
  return follow<Promise<void>>({
    'master.starting': () => hook('onStarting', master()),
    'master.started': null,
    'master.ready': () => hook('whenReady', master()),
    'master.status': null,
    'master.stopping': null,
    'master.exiting': () => hook('onExit', master()),
    'worker.spawning': (e) => hook('preFork', master(), { nr: e.nr, generation: e.generation }),
    'worker.spawned': (e) => hook('postFork', master(), e.worker),
    'worker.ready': null,
    'worker.stable': null,
    'worker.recycling': null,
    'worker.timedOut': (e) => hook('workerAbort', master(), { ...e.worker, stack: e.stack }),
    'worker.bootFailed': null,
    'worker.exited': (e) => hook('childExit', master(), { ...e.worker, code: e.code, signal: e.signal }),
    'reload.deferred': null,
    'reload.begun': () => hook('onReload', master()),
    'reload.done': null,
    'reload.failed': null,
    'upgrade.requested': () => hook('preExec', master()),
    'upgrade.begun': null,
    'upgrade.failed': null,
    'upgrade.handedOver': null,
    'upgrade.rolledBack': null,
    'scale.changed': (e) => hook('nworkersChanged', master(), e.workers, e.before),
    'logs.reopened': null,
  });
}

/** What systemd hears (systemd/lifecycle.ts says how): readiness, reloads, stopping, STATUS=, and
 *  the handover of an upgrade. */
function systemdFollower(lifecycle: Lifecycle): (e: LifecycleEvent) => void {
  return follow<void>({
    'master.starting': null,
    'master.started': null,
    'master.ready': (e) => lifecycle.ready(e.status),
    'master.status': (e) => lifecycle.status(e.status),
    'master.stopping': (e) => lifecycle.stopping(e.status),
    'master.exiting': () => lifecycle.close(),
    'worker.spawning': null,
    'worker.spawned': null,
    'worker.ready': null,
    'worker.stable': null,
    'worker.recycling': null,
    'worker.timedOut': null,
    'worker.bootFailed': null,
    'worker.exited': null,
    'reload.deferred': null,
    'reload.begun': (e) => lifecycle.reloading(e.status),
    'reload.done': (e) => lifecycle.reloaded(e.status),
    'reload.failed': (e) => lifecycle.reloaded(e.status),
    'upgrade.requested': null,
    'upgrade.begun': null,
    'upgrade.failed': null,
    'upgrade.handedOver': (e) => lifecycle.handOver(e.successor),
    'upgrade.rolledBack': (e) => lifecycle.reclaim(e.status),
    'scale.changed': null,
    'logs.reopened': null,
  });
}
