/** Owns which generation serves: its config, sockets and directory, the one a reload is starting
 *  (pending), the numbers given so far, and how the last reload ended. */

import type { Generation } from './pool';
import type { PendingGeneration } from './reload';
import type { MasterStatus } from '../systemd/lifecycle';

export class Generations {
  #current: Generation;
  #pending: PendingGeneration | null = null;
  #lastId: number;
  #lastReload: MasterStatus['lastReload'] = null;

  constructor(first: Generation) {
    this.#current = first;
    this.#lastId = first.id;
  }

  /** The generation new workers start in: the serving one, or, during a reload, the new one. */
  get current(): Generation { return this.#current; }
  get pending(): PendingGeneration | null { return this.#pending; }
  get lastReload(): MasterStatus['lastReload'] { return this.#lastReload; }
  /** The config new workers start with; durations in it are seconds. */
  get config(): Generation['config'] { return this.#current.config; }
  get gracefulMs(): number { return this.#current.durationsMs.gracefulTimeout; }

  /** A generation number never used before (an abandoned reload's stragglers keep theirs). */
  nextId(): number { return ++this.#lastId; }

  /** A reload starts `next`, tracked by `pending`, beside the serving one. */
  begin(next: Generation, pending: PendingGeneration): void {
    this.#current = next;
    this.#pending = pending;
  }

  /** The reload is over: `serving` serves (the new one, or the previous one again). */
  settle(serving: Generation): void {
    this.#current = serving;
    this.#pending = null;
  }

  noteReload(outcome: MasterStatus['lastReload']): void { this.#lastReload = outcome; }
}
