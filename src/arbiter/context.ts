/** What the pieces of the master share (arbiter.ts builds it): the log and clock, the lifecycle
 *  event stream, the workers, the serving generation, how many workers to keep, the sockets held
 *  open, and the master's phase. Each piece of state has one owner, named here; the pieces that
 *  act on them (reload.ts, upgrade.ts, arbiter.ts) take this context instead of each other. */

import type { Logger } from '../log/logger';
import type { Listener } from '../net/listeners';
import type { MasterStatus } from '../systemd/lifecycle';
import type { EventStream } from './events';
import type { Generations } from './generations';
import type { Clock, Pool } from './pool';
import type { Scale } from './scale';
import type { Services } from './services';
import type { Totals } from './totals';

export type Phase = 'starting' | 'running' | 'stopping';

export interface MasterContext {
  readonly log: Logger;
  readonly clock: Clock;
  readonly events: EventStream;
  readonly pool: Pool;
  readonly generations: Generations;
  readonly scale: Scale;
  readonly sockets: OpenSockets;
  /** The config's services: run-once processes beside the workers. */
  readonly services: Services;
  /** The counts behind forkd's counters, for the master's lifetime (and its predecessors'). */
  readonly totals: Totals;
  phase(): Phase;
  /** Seconds until the graceful stop while a TERM waits out shutdownDelay (the master is leaving), else null. */
  leaving(): number | null;
  status(): MasterStatus;
  /** Brings the pool to the target now (what `requestFill` runs). */
  fill(): void;
}

/** Owns the sockets the master holds open: those it bound or was given, and those a reload opened. */
export class OpenSockets {
  readonly #open: Set<Listener>;
  constructor(initial: readonly Listener[]) { this.#open = new Set(initial); }
  all(): Listener[] { return [...this.#open]; }
  add(listeners: Iterable<Listener>): void { for (const l of listeners) this.#open.add(l); }
  close(listeners: Iterable<Listener>): void {
    for (const l of listeners) { l.close(); this.#open.delete(l); }
  }
}
