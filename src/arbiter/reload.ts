/** Owns a reload (HUP, a saved config file, --reload): read the config again through every layer,
 *  start a whole new generation of workers beside the serving one, and switch over only when every
 *  new worker serves. If the config is invalid, or a new worker fails to boot, the serving
 *  generation carries on exactly as it was: nothing of it was stopped or changed. */

import { ConfigError } from '../config/errors';
import type { Loaded } from '../config/load';
import type { Identity } from '../config/identity';
import { preflight } from '../config/preflight';
import type { Logger } from '../log/logger';
import { BindError, listenersFor, type Listener } from '../net/listeners';
import type { Generation, Pool } from './pool';
import { workerSetupFor } from './worker-config';

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
  const proven = new Set<number>();
  return {
    id,
    outcome,
    // Stable, not just ready: a new worker that dies in its first second must fail the reload while
    // the old generation is still there to carry on. A slot once proven stays proven: its worker
    // may be recycled (maxRequests) and its successor not yet a second old.
    changed() {
      for (const h of pool.live()) if (h.generation === id && h.stable) proven.add(h.nr);
      let all = true;
      for (let nr = 1; nr <= count; nr++) if (!proven.has(nr)) all = false;
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
  /** Makes `gen` the generation new workers start in, tracked by `pending`, and starts them;
   *  `opened` are the sockets the reload opened (closed with the rest if a stop comes). */
  begin(gen: Generation, count: number, pending: PendingGeneration, opened: readonly Listener[]): void;
  /** Every new worker serves: retire the old generation and adopt the new config. */
  commit(gen: Generation, loaded: Loaded, count: number, dropped: readonly Listener[]): void;
  /** Back to `prev`, as if the reload had never begun. */
  abandon(gen: Generation, prev: Generation, opened: readonly Listener[]): void;
  /** Resolves if a stop arrives meanwhile: the reload then stands aside for it. */
  readonly stopping: Promise<void>;
}

const STOPPED: unique symbol = Symbol('stopped');

/** The config, read through every layer and checked as at start, or why it cannot be used. */
async function readConfig(host: ReloadHost, prev: Generation): Promise<{ loaded: Loaded; identity: Identity | null } | string | typeof STOPPED> {
  const withinMs = prev.config.bootTimeout * 1000;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<string>((ok) => { timer = setTimeout(() => ok(`reading the config did not finish within ${prev.config.bootTimeout}s`), withinMs); });
  try {
    const loaded = await Promise.race([host.readConfig(), late, host.stopping.then((): typeof STOPPED => STOPPED)]);
    if (typeof loaded === 'string' || loaded === STOPPED) return loaded;
    if (prev.configFile && loaded.file !== prev.configFile) {
      return `the config file ${prev.configFile} is gone${loaded.file ? ` (found ${loaded.file} instead)` : ''}; restart forkd to change which file it reads`;
    }
    return { loaded, identity: preflight(loaded, host.cwdFor(loaded)) };
  } catch (err) {
    if (err instanceof ConfigError) return `invalid config: ${err.message}`;
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** Every step waits for whichever comes first: its own end, or a stop (which then takes over). */
export async function reload(host: ReloadHost, why: string): Promise<ReloadOutcome> {
  const { log, pool } = host;
  const prev = host.serving();
  log.info(`Reloading (${why})`, { event: 'reload.begin', generation: prev.id });
  const read = await readConfig(host, prev);
  if (read === STOPPED) return { ok: false, reason: 'stopping' };
  if (typeof read === 'string') return { ok: false, reason: read };
  const { loaded, identity } = read;
  const opening = listenersFor(loaded.config.bind, prev.listeners, { owner: identity, reusePort: loaded.config.reusePort });
  let sockets: Awaited<typeof opening> | typeof STOPPED;
  try {
    sockets = await Promise.race([opening, host.stopping.then((): typeof STOPPED => STOPPED)]);
  } catch (err) {
    if (err instanceof BindError) return { ok: false, reason: err.message };
    throw err;
  }
  if (sockets === STOPPED) {
    void opening.then((s) => { for (const l of s.opened) l.close(); }, () => undefined);
    return { ok: false, reason: 'stopping' };
  }
  const gen: Generation = {
    id: host.nextGenerationId(), config: loaded.config, listeners: sockets.listeners, cwd: host.cwdFor(loaded),
    configFile: loaded.file, name: loaded.config.name ?? loaded.config.app ?? prev.name, identity, worker: workerSetupFor(loaded),
  };
  const count = host.workersFor(loaded);
  const pending = watchGeneration(pool, gen.id, count);
  host.begin(gen, count, pending, sockets.opened);
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
