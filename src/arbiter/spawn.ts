/** Owns how a worker process is started: its command line, its environment (what it inherits, what
 *  it must not), who it runs as, and the layout of the listening fds it inherits. What the master
 *  knows of a started worker is its WorkerHandle (worker-handle.ts); the code that runs inside a
 *  worker is in src/worker/. */

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import type { Config } from '../config/settings';
import { APP_INSTANCE_ENV, GENERATION_ENV, THREAD_ENV, WORKER_NUMBER_ENV, WORKER_SPEC_ENV } from '../env-names';
import type { ToWorker, WorkerConfig, WorkerSpec } from '../ipc/messages';
import type { WorkerSetup } from './worker-config';
import { listenerServesTls, type Listener } from '../net/listeners';
import { WorkerHandle } from './worker-handle';

/** The worker entry, as the inspector names it (see stack-capture.ts). */
export const WORKER_SCRIPT = join(__dirname, '..', 'worker', 'main.js');

export interface SpawnRequest extends WorkerSetup {
  readonly nr: number;
  readonly generation: number;
  readonly config: Config;
  readonly name: string;
  readonly listeners: readonly Listener[];
  readonly beatIntervalMs: number;
  readonly nowMs: number;
  readonly cwd: string;
  readonly identity: WorkerSpec['identity'];
}

export type SpawnWorker = (req: SpawnRequest) => WorkerHandle;

/** What the master was given by systemd is the master's alone: a worker that saw NOTIFY_SOCKET or
 *  LISTEN_FDS could notify systemd or adopt fds in its name. */
const MASTER_ONLY_ENV = ['NOTIFY_SOCKET', 'WATCHDOG_USEC', 'WATCHDOG_PID', 'LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES'];

/** NODE_OPTIONS flags that run code as the process starts. */
const PRELOAD = /^(?:-r|--require|--import|--loader|--experimental-loader)(?:=|$)/;

/** NODE_OPTIONS without the flags that load code: for a worker that starts as root and drops its
 *  privileges itself (--initgroups), such code would run as root before the drop. */
function withoutPreloads(options: string): string {
  const kept: string[] = [];
  const tokens = options.split(/\s+/).filter(Boolean);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (PRELOAD.test(t)) { if (!t.includes('=')) i++; continue; }
    kept.push(t);
  }
  return kept.join(' ');
}

/** The environment of a child of the master (a worker, a service): the master's, the config's
 *  `env`, then `own`; never what systemd gave the master. */
export function childEnv(config: Config, identity: WorkerSpec['identity'], own: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...config.env, ...own };
  for (const name of MASTER_ONLY_ENV) delete env[name];
  if (identity?.initgroups && env.NODE_OPTIONS) env.NODE_OPTIONS = withoutPreloads(env.NODE_OPTIONS);
  return env;
}

function workerEnv(config: Config, spec: WorkerSpec): NodeJS.ProcessEnv {
  return childEnv(config, spec.identity, {
    [WORKER_SPEC_ENV]: JSON.stringify(spec),
    // Who it is, for the app: set over whatever the master or the config had under these names.
    [WORKER_NUMBER_ENV]: String(spec.nr), [GENERATION_ENV]: String(spec.generation), [THREAD_ENV]: '1', [APP_INSTANCE_ENV]: String(spec.nr - 1),
  });
}

/** A root master starts a worker as its user directly (libuv drops every supplementary group,
 *  then sets the gid, then the uid, before node runs), so nothing runs as root in it. Only with
 *  --initgroups does the worker start as root, to take the user's groups, and drop at once. */
export function startAs(identity: WorkerSpec['identity']): { uid?: number; gid?: number } {
  return identity && !identity.initgroups && process.getuid?.() === 0 ? { uid: identity.uid, gid: identity.gid } : {};
}

/** How many fds each serving unit accepts on for each listener. Node accepts one connection per
 *  listening fd each turn of its event loop, and a turn lasts as long as the app computes for the
 *  requests it reads then: a CPU-bound worker holding 25 connections (~50 ms a turn) took a burst of
 *  50 new ones over 400 ms, so their first requests waited that long (measured: wrk's p99 on a 2 ms
 *  route, 2 workers, 50 connections: 330–400 ms with one fd, 96 ms with four, same throughput; a
 *  hello app with Connection: close served 1.3–1.5× as much). A unit with a connection cap (or sync)
 *  takes one at a time anyway, so it gets one. */
const ACCEPT_COPIES = 4;
const acceptCopies = (config: Pick<WorkerConfig, 'workerConnections'>): number =>
  (config.workerConnections > 0 ? 1 : ACCEPT_COPIES);

/** Starts a worker process with the listening fds in stdio slots 3.., and the IPC channel after. */
export const spawnWorker: SpawnWorker = (req) => {
  // Every listener `copies` times per thread, in stdio slots 3..: thread t's copy c of listener i
  // is fd 3 + (t·copies + c)·n + i. Copy 0 is served by the unit's http server, the others by
  // acceptors that hand their connections to it.
  const threads = req.config.threads;
  const copies = acceptCopies(req.workerConfig);
  const n = req.listeners.length;
  const fdOf = (t: number, c: number, i: number) => 3 + (t * copies + c) * n + i;
  const stdioFds = Array.from({ length: threads * copies }, () => req.listeners.map((l) => l.fd)).flat();
  const spec: WorkerSpec = {
    nr: req.nr, generation: req.generation,
    fds: Array.from({ length: threads }, (_, t) => req.listeners.map((__, i) => fdOf(t, 0, i))),
    spareFds: Array.from({ length: threads }, (_, t) => Array.from({ length: copies - 1 }, (__, c) => req.listeners.map((___, i) => fdOf(t, c + 1, i)))),
    beatIntervalMs: req.beatIntervalMs, config: req.workerConfig, name: req.name,
    workerHooks: req.workerHooks, identity: req.identity,
    tls: req.listeners.map((l) => req.tls !== null && listenerServesTls(l, req.config.certfile)),
  };
  const child = spawn(process.execPath, [...req.config.nodeArgs, WORKER_SCRIPT], {
    ...startAs(spec.identity),
    cwd: req.cwd,
    env: workerEnv(req.config, spec),
    stdio: ['ignore', 'inherit', 'inherit', ...stdioFds, 'ipc'],
    serialization: 'json',
  });
  if (req.configSnapshot) child.send({ type: 'configSnapshot', snapshot: req.configSnapshot } satisfies ToWorker, () => undefined);
  if (req.tls && spec.tls.some(Boolean)) child.send({ type: 'tls', material: req.tls } satisfies ToWorker, () => undefined);
  return new WorkerHandle({ child, nr: req.nr, generation: req.generation, nowMs: req.nowMs, listeners: req.listeners, threads });
};
