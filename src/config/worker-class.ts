/** Owns what each worker class means, said once: `async` serves many connections at a time on a
 *  worker's event loop (workerConnections caps them); `sync`, as gunicorn's sync workers, serves
 *  one connection at a time, keeps none alive, and runs in one thread. Validation (layers.ts), the
 *  worker's serving (the WorkerConfig the master sends it) and how many copies of each listening
 *  socket a worker accepts on all ask here. */

import type { Config } from './settings';

export const WORKER_CLASSES = ['async', 'sync'] as const;
export type WorkerClass = (typeof WORKER_CLASSES)[number];

export interface WorkerClassMeaning {
  /** Most connections one serving unit holds at once (0: no cap). */
  readonly workerConnections: number;
  /** Whether an idle connection is kept open for another request (for keepAlive). */
  readonly keepAlive: boolean;
  /** Most serving threads a worker may have; null: any. */
  readonly maxThreads: number | null;
  /** At the workerConnections cap, whether a unit makes room for a new connection by closing the
   *  oldest one still sending its first request (a slow client cannot hold every slot); a sync
   *  unit keeps its one connection. */
  readonly makeRoom: boolean;
}

const MEANINGS: { readonly [K in WorkerClass]: (workerConnections: number) => WorkerClassMeaning } = {
  async: (workerConnections) => ({ workerConnections, keepAlive: true, maxThreads: null, makeRoom: true }),
  sync: () => ({ workerConnections: 1, keepAlive: false, maxThreads: 1, makeRoom: false }),
};

/** What serving with `config`'s worker class comes to, given its workerConnections. */
export function workerClassMeaning(config: Pick<Config, 'workerClass' | 'workerConnections'>): WorkerClassMeaning {
  return MEANINGS[config.workerClass](config.workerConnections);
}
