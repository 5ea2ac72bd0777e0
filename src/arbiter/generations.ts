/** Owns which generation serves: its config, sockets and directory, the one a reload is starting
 *  (pending), the numbers given so far, and how the last reload ended. */

import type { Identity } from '../config/identity';
import type { TlsMaterial } from '../config/tls';
import type { Loaded } from '../config/load';
import type { Listener } from '../net/listeners';
import type { Generation } from './pool';
import { workerSetupFor } from './worker-config';
import type { PendingGeneration } from './reload';
import type { MasterStatus } from '../systemd/lifecycle';

/** Generation `id` of a config read: at start, or by a reload (`name` when the config names none). */
export function generationFrom(id: number, loaded: Loaded, at: {
  readonly listeners: readonly Listener[]; readonly cwd: string; readonly identity: Identity | null; readonly name: string;
}): Generation {
  const { config } = loaded;
  return {
    id, config, listeners: at.listeners, cwd: at.cwd, configFile: loaded.file, name: config.name ?? config.app ?? at.name,
    identity: at.identity, durationsMs: loaded.durationsMs, worker: workerSetupFor(loaded),
  };
}

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
  /** New certificates (a rotation): the serving generation's workers get them over IPC, and new ones start with them. */
  setTls(material: TlsMaterial): void {
    this.#current = { ...this.#current, worker: { ...this.#current.worker, tls: material } };
  }

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
