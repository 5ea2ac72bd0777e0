/** Owns the hook contract: gunicorn's server hooks, camelCased, each with where it runs and the
 *  arguments it gets. Hooks are functions in the config file; the settings table declares one
 *  setting per hook from HOOK_DOCS. A hook may be async; it runs with a deadline (hookTimeout), and
 *  one that throws or overruns is logged and never takes a process down. */

import type { IncomingMessage, ServerResponse } from 'node:http';

/** What master hooks are told about the master. */
export interface MasterInfo {
  readonly pid: number;
  readonly name: string;
  /** Bumped by every successful reload. */
  readonly generation: number;
  /** How many workers the master is keeping alive. */
  readonly workers: number;
}

/** What hooks are told about a worker. */
export interface WorkerInfo {
  readonly pid: number;
  readonly nr: number;
  readonly generation: number;
}

export interface Hooks {
  onStarting(master: MasterInfo): unknown;
  onReload(master: MasterInfo): unknown;
  whenReady(master: MasterInfo): unknown;
  preFork(master: MasterInfo, worker: Omit<WorkerInfo, 'pid'>): unknown;
  postFork(master: MasterInfo, worker: WorkerInfo): unknown;
  postWorkerInit(worker: WorkerInfo): unknown;
  workerInt(worker: WorkerInfo): unknown;
  workerAbort(master: MasterInfo, worker: WorkerInfo & { readonly stack: string }): unknown;
  preExec(master: MasterInfo): unknown;
  preRequest(worker: WorkerInfo, req: IncomingMessage): unknown;
  postRequest(worker: WorkerInfo, req: IncomingMessage, res: ServerResponse): unknown;
  childExit(master: MasterInfo, worker: WorkerInfo & { readonly code: number | null; readonly signal: string | null }): unknown;
  workerExit(worker: WorkerInfo): unknown;
  nworkersChanged(master: MasterInfo, newValue: number, oldValue: number): unknown;
  onExit(master: MasterInfo): unknown;
}

export type HookName = keyof Hooks;

export const HOOK_DOCS: Readonly<Record<HookName, { readonly where: 'master' | 'worker'; readonly doc: string }>> = {
  onStarting: { where: 'master', doc: 'Before the master binds its sockets: (master) => …' },
  onReload: { where: 'master', doc: 'When a reload (HUP, a config file save) begins: (master) => …' },
  whenReady: { where: 'master', doc: 'Once, when every worker first serves: (master) => …' },
  preFork: { where: 'master', doc: 'Before a worker process is started: (master, { nr, generation }) => …' },
  postFork: { where: 'master', doc: 'Right after a worker process is started (Node spawns, it does not fork): (master, worker) => …' },
  postWorkerInit: { where: 'worker', doc: 'In a worker, once the app is loaded, before it serves: (worker) => …' },
  workerInt: { where: 'worker', doc: 'In a worker told to quit now (INT, QUIT): (worker) => …' },
  workerAbort: { where: 'master', doc: 'When a worker timed out, before it is killed (a hung worker cannot run code): (master, { …worker, stack }) => …' },
  preExec: { where: 'master', doc: 'Before a successor master is started (USR2): (master) => …' },
  preRequest: { where: 'worker', doc: 'In a worker, before the app gets a request: (worker, req) => …' },
  postRequest: { where: 'worker', doc: 'In a worker, after a response is finished: (worker, req, res) => …' },
  childExit: { where: 'master', doc: 'After a worker exited: (master, { …worker, code, signal }) => …' },
  workerExit: { where: 'worker', doc: 'In a worker, just before it exits: (worker) => …' },
  nworkersChanged: { where: 'master', doc: 'When the number of workers to keep changes: (master, newValue, oldValue) => …' },
  onExit: { where: 'master', doc: 'Before the master exits: (master) => …' },
};

export const HOOK_NAMES = Object.keys(HOOK_DOCS) as HookName[];
export const WORKER_HOOK_NAMES = HOOK_NAMES.filter((n) => HOOK_DOCS[n].where === 'worker');

/** Any hook, as the settings table holds it. */
export type HookFn = (...args: never[]) => unknown;

interface HookLog { error(message: string, meta?: Readonly<Record<string, unknown>>): void }

/** Runs one hook if it is set: awaited up to `timeoutMs`; a throw or an overrun is logged, never
 *  passed on. Resolves when the hook is done or the deadline passed, whichever is first. */
export async function runHook<K extends HookName>(
  fn: unknown, name: K, args: Parameters<Hooks[K]>, opts: { timeoutMs: number; log: HookLog },
): Promise<void> {
  if (typeof fn !== 'function') return;
  let timer: NodeJS.Timeout | undefined;
  try {
    const result = (fn as (...a: Parameters<Hooks[K]>) => unknown)(...args);
    if (result && typeof (result as Promise<unknown>).then === 'function') {
      const overran = new Promise<'overran'>((ok) => { timer = setTimeout(() => ok('overran'), opts.timeoutMs); });
      if (await Promise.race([result as Promise<unknown>, overran]) === 'overran') {
        opts.log.error(`hook ${name} did not finish within ${opts.timeoutMs / 1000}s (hookTimeout); carrying on`, { event: 'hook.overrun', hook: name });
      }
    }
  } catch (err) {
    opts.log.error(`hook ${name} threw: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`,
      { event: 'hook.failed', hook: name, stack: err instanceof Error ? err.stack : undefined });
  } finally {
    clearTimeout(timer);
  }
}
