/** Owns a reload (HUP, a saved config file, --reload): read the config again through every layer,
 *  start a whole new generation of workers beside the serving one, and switch over only when every
 *  new worker serves. If the config is invalid, or a new worker fails to boot, the serving
 *  generation carries on exactly as it was: nothing of it was stopped or changed. */

import { ConfigError } from '../config/errors';
import type { Loaded } from '../config/load';
import type { Logger } from '../log/logger';
import { BindError, listenersFor, type Listener } from '../net/listeners';
import type { Generation, Pool } from './pool';

export type ReloadOutcome =
  | { readonly ok: true; readonly generation: number; readonly workers: number }
  | { readonly ok: false; readonly reason: string };

/** Waits for a new generation: settled when all its slots serve, or when one of its workers fails. */
export interface PendingGeneration {
  readonly id: number;
  changed(): void;
  failed(generation: number, reason: string): void;
  readonly outcome: Promise<{ ok: true } | { ok: false; reason: string }>;
}

export function watchGeneration(pool: Pool, id: number, count: number): PendingGeneration {
  let settle!: (o: { ok: true } | { ok: false; reason: string }) => void;
  const outcome = new Promise<{ ok: true } | { ok: false; reason: string }>((ok) => { settle = ok; });
  return {
    id,
    outcome,
    changed() {
      const slots = new Set(pool.serving(id).map((h) => h.nr));
      let all = true;
      for (let nr = 1; nr <= count; nr++) if (!slots.has(nr)) all = false;
      if (all) settle({ ok: true });
    },
    failed(generation, reason) {
      if (generation === id) settle({ ok: false, reason: `a new worker failed to boot: ${reason}` });
    },
  };
}

export interface ReloadHost {
  readonly log: Logger;
  readonly pool: Pool;
  /** The generation serving now. */
  serving(): Generation;
  /** A generation number never used before (an abandoned reload's stragglers keep theirs). */
  nextGenerationId(): number;
  readConfig(): Promise<Loaded>;
  /** The directory new workers run in (chdir, resolved against where forkd started). */
  cwdFor(loaded: Loaded): string;
  /** How many workers the new config asks for. */
  workersFor(loaded: Loaded): number;
  /** Makes `gen` the generation new workers start in, tracked by `pending`, and starts them. */
  begin(gen: Generation, count: number, pending: PendingGeneration): void;
  /** Every new worker serves: retire the old generation and adopt the new config. */
  commit(gen: Generation, loaded: Loaded, count: number, dropped: readonly Listener[]): void;
  /** Back to `prev`, as if the reload had never begun. */
  abandon(gen: Generation, prev: Generation, opened: readonly Listener[]): void;
  /** Resolves if a stop arrives meanwhile: the reload then stands aside for it. */
  readonly stopping: Promise<void>;
}

async function readConfig(host: ReloadHost): Promise<Loaded | string> {
  try {
    return await host.readConfig();
  } catch (err) {
    if (err instanceof ConfigError) return `invalid config: ${err.message}`;
    throw err;
  }
}

export async function reload(host: ReloadHost, why: string): Promise<ReloadOutcome> {
  const { log, pool } = host;
  const prev = host.serving();
  log.info(`Reloading (${why})`, { event: 'reload.begin', generation: prev.id });
  const loaded = await readConfig(host);
  if (typeof loaded === 'string') return { ok: false, reason: loaded };
  const cwd = host.cwdFor(loaded);
  let sockets: { listeners: Listener[]; opened: Listener[] };
  try {
    sockets = await listenersFor(loaded.config.bind, prev.listeners);
  } catch (err) {
    if (err instanceof BindError) return { ok: false, reason: err.message };
    throw err;
  }
  const gen: Generation = {
    id: host.nextGenerationId(), config: loaded.config, listeners: sockets.listeners, cwd, configFile: loaded.file,
    name: loaded.config.name ?? loaded.config.app ?? prev.name,
  };
  const count = host.workersFor(loaded);
  const pending = watchGeneration(pool, gen.id, count);
  host.begin(gen, count, pending);
  pending.changed();
  const result = await Promise.race([pending.outcome, host.stopping.then(() => ({ ok: false as const, reason: 'stopping' }))]);
  if (result.ok) {
    const kept = new Set(sockets.listeners);
    host.commit(gen, loaded, count, prev.listeners.filter((l) => !kept.has(l)));
    return { ok: true, generation: gen.id, workers: count };
  }
  if (result.reason !== 'stopping') host.abandon(gen, prev, sockets.opened);
  return result;
}
