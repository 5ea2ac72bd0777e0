/** Owns a reload (HUP, a saved config file, --reload): read the config again through every layer,
 *  start a whole new generation of workers beside the serving one, and switch over only when every
 *  new worker serves. If the config is invalid, or a new worker fails to boot, the serving
 *  generation carries on exactly as it was: nothing of it was stopped or changed. A reload asked
 *  for during start-up runs once the first workers serve. Events: reload.begun (the onReload hook
 *  is awaited), then reload.done or reload.failed, unless a stop cut it short. */

import { logCertificate } from '../config/tls';
import { ConfigError } from '../config/errors';
import type { Loaded } from '../config/load';
import type { Identity } from '../config/identity';
import { preflight } from '../config/preflight';
import { resolveWorkerCount } from '../config/values';
import { BindError, bindOptions, keptSocketAccess, listenersFor, logWhoCanConnect, type BindOptions, type Listener } from '../net/listeners';
import type { MasterContext } from './context';
import type { Generation, Pool } from './pool';
import type { Watchers } from './watchers';
import { generationFrom } from './generations';
import { stopPlans } from './worker-handle';

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

export interface ReloadDeps {
  /** Reads the config again through every layer. */
  readonly readConfig: () => Promise<Loaded>;
  /** The directory workers run in (chdir, resolved against where forkd started). */
  readonly cwdFor: (loaded: Loaded) => string;
  readonly watchers: Watchers;
  /** The pidfile named at start (a changed one takes effect at the next start). */
  readonly startPidfile: string | null;
  /** Resolves when a stop arrives: a reload under way then stands aside for it. */
  readonly stopping: Promise<void>;
}

const STOPPED: unique symbol = Symbol('stopped');
type Stopped = typeof STOPPED;
interface Opened { loaded: Loaded; identity: Identity | null; listeners: readonly Listener[]; opened: readonly Listener[]; bind: BindOptions }

export class Reloader {
  readonly #ctx: MasterContext;
  readonly #deps: ReloadDeps;
  /** A reload asked for before the first workers served, run once they do. */
  #deferred: string | null = null;

  constructor(ctx: MasterContext, deps: ReloadDeps) {
    this.#ctx = ctx;
    this.#deps = deps;
  }

  /** Whichever comes first: `step`, or a stop. */
  #orStop<T>(step: Promise<T>): Promise<T | Stopped> {
    return Promise.race([step, this.#deps.stopping.then((): Stopped => STOPPED)]);
  }

  async run(why: string): Promise<void> {
    const ctx = this.#ctx;
    if (ctx.phase() === 'stopping') return;
    if (ctx.phase() === 'starting') {
      this.#deferred = why;
      void ctx.events.emit({ type: 'reload.deferred', why });
      return;
    }
    await ctx.events.emit({ type: 'reload.begun', why, status: ctx.status() });
    const outcome = await this.#attempt();
    if (!outcome.ok && outcome.reason === 'stopping') return;
    ctx.generations.noteReload(outcome.ok ? { ok: true } : { ok: false, reason: outcome.reason });
    const status = ctx.status();
    if (outcome.ok) void ctx.events.emit({ type: 'reload.done', generation: outcome.generation, workers: outcome.workers, status });
    else void ctx.events.emit({ type: 'reload.failed', reason: outcome.reason, generation: ctx.generations.current.id, status });
  }

  /** The reload asked for during start-up, if there was one (the first workers serve now). */
  takeDeferred(): string | null {
    const why = this.#deferred;
    this.#deferred = null;
    return why;
  }

  async #attempt(): Promise<ReloadOutcome> {
    const { pool, generations, scale } = this.#ctx;
    const prev = generations.current;
    const before = { wanted: scale.wanted, idle: scale.idle };
    const opened = await this.#open(prev);
    if (opened === STOPPED) return { ok: false, reason: 'stopping' };
    if (typeof opened === 'string') return { ok: false, reason: opened };
    const { loaded } = opened;
    const gen = generationFrom(generations.nextId(), loaded, {
      listeners: opened.listeners, cwd: this.#deps.cwdFor(loaded), identity: opened.identity, name: prev.name,
    });
    const count = loaded.origins.workers.layer !== 'default' ? resolveWorkerCount(loaded.config.workers) : scale.wanted;
    const pending = watchGeneration(pool, gen.id, count);
    this.#begin(gen, count, pending, opened.opened);
    pending.changed();
    const result = await this.#orStop(pending.outcome);
    if (result === STOPPED) { generations.settle(gen); return { ok: false, reason: 'stopping' }; }
    if (!result.ok) { this.#abandon(gen, prev, opened.opened, before); return result; }
    const kept = new Set(opened.listeners);
    this.#commit(gen, loaded, prev.listeners.filter((l) => !kept.has(l)), opened);
    return { ok: true, generation: gen.id, workers: count };
  }

  /** The config, checked as at start, and the sockets it binds (kept, or opened anew). */
  async #open(prev: Generation): Promise<Opened | string | Stopped> {
    const read = await readConfig(this.#deps, prev, this.#orStop.bind(this));
    if (read === STOPPED || typeof read === 'string') return read;
    const { loaded, identity } = read;
    let bind: BindOptions;
    try { bind = bindOptions(loaded.config, identity); } catch (err) { return (err as Error).message; }
    const opening = listenersFor(loaded.config.bind, prev.listeners, bind);
    let sockets: Awaited<typeof opening> | Stopped;
    try {
      sockets = await this.#orStop(opening);
    } catch (err) {
      if (err instanceof BindError) return err.message;
      throw err;
    }
    if (sockets === STOPPED) {
      void opening.then((s) => { for (const l of s.opened) l.close(); }, () => undefined);
      return STOPPED;
    }
    return { loaded, identity, listeners: sockets.listeners, opened: sockets.opened, bind };
  }

  /** `gen` becomes the generation new workers start in, and its workers start. */
  #begin(gen: Generation, count: number, pending: PendingGeneration, opened: readonly Listener[]): void {
    const { pool, generations, scale, sockets } = this.#ctx;
    generations.begin(gen, pending);
    sockets.add(opened);
    scale.set(count, false, 'reload');
    pool.replaceOlderThan(gen.id, generations.gracefulMs);
    this.#ctx.fill();
  }

  /** Every new worker serves: retire the old generation and adopt the new config. */
  #commit(gen: Generation, loaded: Loaded, dropped: readonly Listener[], opened: Opened): void {
    const { pool, generations, sockets, log } = this.#ctx;
    generations.settle(gen);
    sockets.close(dropped);
    // Unix socket files: a kept one takes the new socketMode and socketGroup now, and the log says
    // who can connect to each (a new one got them at its bind).
    for (const l of opened.listeners) {
      if (!opened.opened.includes(l)) keptSocketAccess(l, opened.bind, log);
      else if (l.spec.kind === 'unix') logWhoCanConnect(log, l.spec.path);
    }
    pool.stopAll(stopPlans.graceful(generations.gracefulMs), 'reloaded', (h) => h.generation < gen.id && h.state === 'replacing');
    try { log.reconfigure({ target: loaded.config.errorLog, level: loaded.config.logLevel }); } catch (err) {
      log.error(`cannot open errorLog ${loaded.config.errorLog}: ${(err as Error).message}; logging on where it was`);
    }
    if (loaded.config.pid !== this.#deps.startPidfile) log.warning('a changed pid takes effect at the next start', { event: 'reload.pid' });
    if (loaded.tls) logCertificate(log, 'TLS certificate', loaded.tls.facts, loaded.config.certfile!, 'reload.certificate');
    process.title = `forkd: master [${gen.name}]`;
    this.#deps.watchers.update(gen.config, gen.configFile, gen.cwd);
    this.#ctx.fill();
  }

  /** Back to `prev`, as if the reload had never begun. */
  #abandon(gen: Generation, prev: Generation, opened: readonly Listener[], before: { wanted: number; idle: boolean }): void {
    const { pool, generations, scale, sockets } = this.#ctx;
    pool.abandon(gen.id, generations.gracefulMs);
    generations.settle(prev);
    scale.set(before.wanted, before.idle, 'reload');
    sockets.close(opened);
    this.#ctx.fill();
  }
}

/** The config, read through every layer and checked as at start, or why it cannot be used. */
async function readConfig(deps: ReloadDeps, prev: Generation, orStop: <T>(p: Promise<T>) => Promise<T | Stopped>)
  : Promise<{ loaded: Loaded; identity: Identity | null } | string | Stopped> {
  const withinMs = prev.durationsMs.bootTimeout;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<string>((ok) => { timer = setTimeout(() => ok(`reading the config did not finish within ${prev.config.bootTimeout}s`), withinMs); });
  try {
    const loaded = await orStop(Promise.race([deps.readConfig(), late]));
    if (typeof loaded === 'string' || loaded === STOPPED) return loaded;
    if (prev.configFile && loaded.file !== prev.configFile) {
      return `the config file ${prev.configFile} is gone${loaded.file ? ` (found ${loaded.file} instead)` : ''}; restart forkd to change which file it reads`;
    }
    return { loaded, identity: preflight(loaded, deps.cwdFor(loaded)) };
  } catch (err) {
    if (err instanceof ConfigError) return `invalid config: ${err.message}`;
    throw err;
  } finally {
    clearTimeout(timer);
  }
}
