/** Owns the names of forkd's own environment variables, FORKD_*: FORKD_<SETTING> for each setting
 *  (the settings table's name in upper snake case), and the few that forkd sets for itself to hand
 *  something to a process it starts, which are never settings. Other programs' variables (systemd's
 *  LISTEN_FDS, NOTIFY_SOCKET, …) are named where they are read. */

export const ENV_PREFIX = 'FORKD_';

/** FORKD_<NAME>: gracefulTimeout → FORKD_GRACEFUL_TIMEOUT. */
export function envName(setting: string): string {
  return `${ENV_PREFIX}${setting.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

/** A worker's WorkerSpec, as JSON; the worker deletes it on start. */
export const WORKER_SPEC_ENV = `${ENV_PREFIX}WORKER`;
/** A service's ServiceSpec, as JSON; the service deletes it on start. */
export const SERVICE_SPEC_ENV = `${ENV_PREFIX}SERVICE`;
/** To a USR2 successor: the fds of the listening sockets it is handed, comma-separated. */
export const HANDOVER_FDS_ENV = `${ENV_PREFIX}FDS`;
/** To a USR2 successor: what each of those sockets is (HandedOver in net/inherited.ts), as a JSON list. */
export const HANDOVER_BINDS_ENV = `${ENV_PREFIX}BINDS`;
/** To a USR2 successor: the status listeners it is handed, as a JSON list of { bind, fd }; it
 *  accepts on them once the handover is taken, so that no scrape is refused in between. */
export const HANDOVER_STATUS_ENV = `${ENV_PREFIX}STATUS_FDS`;
/** To a USR2 successor: the pid of the master that started it. */
export const UPGRADE_FROM_ENV = `${ENV_PREFIX}SUCCESSOR_OF`;

/** To the app, in each worker: its number, 1..workers, kept by the worker that replaces it (the N
 *  of its process title). */
export const WORKER_NUMBER_ENV = `${ENV_PREFIX}WORKER_NUMBER`;
/** To the app, in each worker: the generation it belongs to (1 at start, one more per reload). */
export const GENERATION_ENV = `${ENV_PREFIX}GENERATION`;
/** To the app, in each serving thread: its index, 1..threads (1 in a worker without threads). */
export const THREAD_ENV = `${ENV_PREFIX}THREAD`;
/** To the app, in each worker: the worker number less one, PM2's name for it (which the `config`
 *  package reads); not forkd's own, so not FORKD_*. */
export const APP_INSTANCE_ENV = 'NODE_APP_INSTANCE';

/** The FORKD_* variables forkd sets for itself: never taken for an unknown setting (an app's
 *  worker that starts a forkd of its own passes its identity on to it). */
export const INTERNAL_ENV: readonly string[] = [WORKER_SPEC_ENV, SERVICE_SPEC_ENV, HANDOVER_FDS_ENV, HANDOVER_BINDS_ENV, HANDOVER_STATUS_ENV, UPGRADE_FROM_ENV,
  WORKER_NUMBER_ENV, GENERATION_ENV, THREAD_ENV];
