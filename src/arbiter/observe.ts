/** Owns what the master shows of itself beyond its log: the status listener (status.ts, with the
 *  metrics of metrics.ts), the control socket (control.ts), statsd (log/statsd.ts) and the app's
 *  own metrics collected from the workers (appMetrics). Each is opened only when its setting names
 *  it, and prom-client, hot-shots and the servers are loaded only then. A reload opens, moves or
 *  closes them as the new config says; a USR2 handover releases the listeners for the successor
 *  (and hands it the totals), a rollback takes them back. */

import { closeSync } from 'node:fs';
import type { Registry } from 'prom-client';
import { HANDOVER_STATUS_ENV } from '../env-names';
import type { Config } from '../config/settings';
import type { FromWorker } from '../ipc/messages';
import type { Statsd } from '../log/statsd';
import type { MasterContext } from './context';
import type { ControlActions, ControlServer } from './control';
import type { LifecycleEvent } from './events';
import type { Metrics } from './metrics';
import type { StatusServer } from './status';
import { statsdTarget } from './worker-config';
import type { WorkerHandle } from './worker-handle';

/** The status listeners a USR2 predecessor passed (taken out of `env`). */
function takeInheritedStatus(env: NodeJS.ProcessEnv): Map<string, number | null> {
  const raw = env[HANDOVER_STATUS_ENV];
  delete env[HANDOVER_STATUS_ENV];
  const out = new Map<string, number | null>();
  try {
    for (const { bind, fd } of JSON.parse(raw ?? '[]') as Array<{ bind: string; fd: number | null }>) {
      if (typeof bind === 'string' && (fd === null || (Number.isInteger(fd) && fd > 2))) out.set(bind, fd);
    }
  } catch { /* none */ }
  return out;
}

/** The same addresses, in any order. */
function sameBinds(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && [...a].sort().join('\n') === [...b].sort().join('\n');
}

function closeQuietly(fd: number): void {
  try { closeSync(fd); } catch { /* not open */ }
}

/** How long a scrape waits for the workers' app metrics; a worker silent longer is served from
 *  its last answer. */
const APP_METRICS_WAIT_MS = 500;

type AppMetricsAnswer = Extract<FromWorker, { type: 'appMetrics' }>;

/** One worker as `forkd ctl status` and /stats show it. Ages in seconds. */
export interface WorkerRow {
  readonly nr: number; readonly pid: number; readonly generation: number; readonly state: string;
  readonly ageS: number; readonly requests: number; readonly inFlight: number; readonly oldestS: number | null;
  readonly connections: number; readonly rssBytes: number | null; readonly lagP99S: number | null; readonly lastBeatS: number;
}

export class Observability {
  readonly #ctx: MasterContext;
  readonly #actions: ControlActions;
  readonly #startedAt = Date.now();
  #metrics: Metrics | null = null;
  #status: StatusServer | null = null;
  #statusBinds: readonly string[] = [];
  #control: ControlServer | null = null;
  #statsd: { key: string; client: Statsd } | null = null;
  #appMetrics = false;
  #released = false;
  readonly #appAnswers = new Map<number, unknown[]>();
  readonly #appWaiting = new Map<number, { pending: Set<number>; done: () => void }>();
  #nextId = 1;
  /** A USR2 predecessor's status listeners, by bind: the fd it handed over (TCP), or null (a Unix
   *  one, bound again); opened once it hands over, with what else it still has (#afterHandover). */
  readonly #inherited: Map<string, number | null>;
  #deferred: { status: string[]; control: string | null } = { status: [], control: null };

  constructor(ctx: MasterContext, actions: ControlActions, env: NodeJS.ProcessEnv = process.env) {
    this.#ctx = ctx;
    this.#actions = actions;
    this.#inherited = takeInheritedStatus(env);
  }

  /** The status listeners' fds, for a USR2 successor to inherit. */
  statusHandles(): Array<{ bind: string; fd: number | null }> { return this.#status?.handles() ?? []; }

  /** Follows the lifecycle events: statsd's worker gauge. */
  follow(e: LifecycleEvent): void {
    if (this.#statsd && !this.#released && (e.type === 'worker.ready' || e.type === 'worker.exited' || e.type === 'scale.changed')) {
      this.#statsd.client.gauge('forkd.workers', this.#ctx.pool.live().length);
    }
  }

  /** Opens what `config` names (at start, or again after a rollback); throws naming what failed.
   *  A USR2 successor (`successor`) opens now only what its predecessor does not hold: the rest
   *  once it hands over (afterHandover), so that nothing is refused in between. */
  async open(config: Config, successor = false): Promise<void> {
    this.#released = false;
    this.#appMetrics = config.appMetrics;
    this.#openStatsd(config);
    const held = successor ? config.statusBind.filter((b) => this.#inherited.has(b)) : [];
    await this.#openStatus(config.statusBind.filter((b) => !held.includes(b)));
    const control = config.controlSocket;
    const controlHeld = successor && control !== null && await (require('./control') as typeof import('./control')).socketAnswers(control);
    if (!controlHeld) await this.#openControl(control);
    this.#deferred = { status: held, control: controlHeld ? control : null };
  }

  /** The predecessor has handed over: open what it held. It is retiring, so what fails now is
   *  logged, and the master serves on without it. */
  async afterHandover(): Promise<void> {
    const { status, control } = this.#deferred;
    this.#deferred = { status: [], control: null };
    const fds = new Map([...this.#inherited].flatMap(([bind, fd]) => (fd === null ? [] : [[bind, fd] as [string, number]])));
    try {
      if (status.length > 0) {
        const server = this.#status ?? this.#statusServer();
        const urls = await server.listen(status, fds);
        this.#status = server;
        this.#statusBinds = [...this.#statusBinds, ...status];
        for (const url of urls) this.#ctx.log.info(`Status at: ${url}`, { event: 'master.statusListener' });
      }
    } catch (err) {
      this.#ctx.log.error(`${(err as Error).message}; serving on without it`, { event: 'master.observeFailed' });
    }
    for (const [bind, fd] of fds) if (!status.includes(bind)) closeQuietly(fd);
    this.#inherited.clear();
    if (control) await this.#openControl(control).catch((err: Error) => this.#ctx.log.error(`${err.message}; serving on without it`, { event: 'master.observeFailed' }));
  }

  /** A reload: what changed is reopened; a failure is logged and leaves that part as it was. */
  async update(config: Config): Promise<void> {
    if (this.#released) return;
    this.#appMetrics = config.appMetrics;
    this.#openStatsd(config);
    for (const [what, open] of [
      ['statusBind', () => this.#openStatus(config.statusBind)],
      ['controlSocket', () => this.#openControl(config.controlSocket)],
    ] as const) {
      try { await open(); } catch (err) {
        this.#ctx.log.error(`${(err as Error).message}; keeping the ${what} as it was`, { event: 'master.observeFailed' });
      }
    }
  }

  /** At a USR2 handover: the successor takes the listeners over; this master stops answering. */
  release(): void {
    this.#released = true;
    this.#closeListeners();
  }

  close(): void {
    this.#closeListeners();
    void this.#statsd?.client.close();
    this.#statsd = null;
  }

  #closeListeners(): void {
    this.#status?.close();
    this.#status = null;
    this.#statusBinds = [];
    this.#control?.close();
    this.#control = null;
  }

  #openStatsd(config: Config): void {
    const target = statsdTarget(config);
    const key = JSON.stringify(target);
    if (this.#statsd?.key === key) return;
    void this.#statsd?.client.close();
    this.#statsd = null;
    this.#ctx.log.countLines(null);
    if (!target) return;
    const { openStatsd, statsdLogCounter } = require('../log/statsd') as typeof import('../log/statsd');
    const client = openStatsd(target, this.#ctx.log);
    this.#statsd = { key, client };
    this.#ctx.log.countLines(statsdLogCounter(client));
  }

  /** A status server answering from this master's state (metrics.ts loaded on first use). */
  #statusServer(): StatusServer {
    const { StatusServer } = require('./status') as typeof import('./status');
    this.#metrics ??= (require('./metrics') as typeof import('./metrics')).createMetrics(this.#ctx, () => this.#collectApp());
    const metrics = this.#metrics;
    return new StatusServer({
      notReady: () => this.#notReady(),
      stats: () => this.stats(),
      metrics: async () => ({ contentType: metrics.registry.contentType, text: await metrics.text() }),
    });
  }

  /** Listens on `binds` instead of what it listened on. The old listener goes first (the new binds
   *  may name the same address); when the new ones cannot be had, it is opened again. */
  async #openStatus(binds: readonly string[]): Promise<void> {
    if (sameBinds(binds, this.#statusBinds) && (this.#status !== null || binds.length === 0)) return;
    const before = this.#statusBinds;
    this.#status?.close();
    this.#status = null;
    this.#statusBinds = [];
    let urls: string[] = [];
    if (binds.length > 0) {
      const next = this.#statusServer();
      try {
        urls = await next.listen(binds);
      } catch (err) {
        if (before.length > 0) {
          const back = this.#statusServer();
          await back.listen(before).then(() => { this.#status = back; this.#statusBinds = before; }, () => undefined);
        }
        throw err;
      }
      this.#status = next;
      this.#statusBinds = [...binds];
    }
    for (const url of urls) this.#ctx.log.info(`Status at: ${url}`, { event: 'master.statusListener' });
  }

  /** Takes commands on `path` instead; when it cannot be had, the old socket is made again. */
  async #openControl(path: string | null): Promise<void> {
    const before = this.#control?.path ?? null;
    if (before === path) return;
    this.#control?.close();
    this.#control = null;
    if (!path) return;
    const { ControlServer } = require('./control') as typeof import('./control');
    const open = async (at: string) => { const server = new ControlServer(at, this.#actions); await server.listen(); this.#control = server; };
    try {
      await open(path);
    } catch (err) {
      if (before) await open(before).catch(() => undefined);
      throw err;
    }
    this.#ctx.log.info(`Control socket at: ${path}`, { event: 'master.controlSocket' });
  }

  /** Why the master is not ready, or null when it is. During a reload the old generation serves
   *  until the new one does, so either counts. */
  #notReady(): string | null {
    if (this.#ctx.phase() === 'stopping') return 'the master is stopping';
    const leaving = this.#ctx.leaving();
    if (leaving !== null) return `the master is leaving: the graceful stop begins in ${leaving} s (shutdownDelay)`;
    if (!this.#ctx.pool.live().some((h) => h.accepting)) return 'no worker serves';
    return null;
  }

  /** The workers, as /stats and `forkd ctl status` show them. */
  rows(): WorkerRow[] {
    const now = this.#ctx.clock.now();
    const s = (ms: number) => Math.round(ms) / 1000;
    return this.#ctx.pool.live().map((h: WorkerHandle) => ({
      nr: h.nr, pid: h.pid, generation: h.generation, state: h.state, ageS: s(now - h.spawnedAtMs),
      requests: h.requests, inFlight: h.inFlight, oldestS: h.health?.oldestMs != null ? s(h.health.oldestMs) : null,
      connections: h.connections, rssBytes: h.health?.rssBytes ?? null,
      lagP99S: h.health?.lagMs ? h.health.lagMs[1] / 1000 : null, lastBeatS: s(now - h.lastHeardAtMs),
    })).sort((a, b) => a.nr - b.nr || a.generation - b.generation);
  }

  stats(): unknown {
    const { generations, scale, sockets, totals } = this.#ctx;
    const requests = [...totals.requests().values()].reduce((n, codes) => n + codes.reduce((a, b) => a + b, 0), 0);
    return {
      master: {
        pid: process.pid, name: generations.current.name, phase: this.#ctx.phase(), uptimeS: Math.round((Date.now() - this.#startedAt) / 1000),
        generation: generations.current.id, workers: scale.target, requests,
      },
      listeners: sockets.all().map((l) => l.url),
      lastReload: generations.lastReload,
      reloads: totals.reloads(),
      exits: Object.fromEntries(totals.exits()),
      workers: this.rows(),
      services: this.#ctx.services.rows(),
    };
  }

  /** A worker's answer to an appMetrics request. */
  answer(h: WorkerHandle, msg: AppMetricsAnswer): void {
    if (msg.metrics) this.#appAnswers.set(h.pid, msg.metrics);
    else if (msg.error) this.#ctx.log.warning(`appMetrics: worker ${h.nr} could not read its registry: ${msg.error}`, { event: 'master.appMetrics', nr: h.nr });
    const waiting = this.#appWaiting.get(msg.id);
    if (waiting) { waiting.pending.delete(h.pid); if (waiting.pending.size === 0) waiting.done(); }
  }

  /** The app's metrics from every serving worker, merged by prom-client's aggregators; what a worker
   *  has not answered within APP_METRICS_WAIT_MS is taken from its last answer. */
  async #collectApp(): Promise<Registry | null> {
    if (!this.#appMetrics) return null;
    const live = this.#ctx.pool.live().filter((h) => h.accepting && h.child.connected);
    const livePids = new Set(live.map((h) => h.pid));
    for (const pid of this.#appAnswers.keys()) if (!livePids.has(pid)) this.#appAnswers.delete(pid);
    if (live.length > 0) {
      const id = this.#nextId++;
      await new Promise<void>((done) => {
        const timer = setTimeout(finish, APP_METRICS_WAIT_MS);
        function finish(): void { clearTimeout(timer); done(); }
        this.#appWaiting.set(id, { pending: new Set(livePids), done: finish });
        for (const h of live) h.child.send({ type: 'appMetrics', id }, () => undefined);
      });
      this.#appWaiting.delete(id);
    }
    const { AggregatorRegistry } = require('prom-client') as typeof import('prom-client');
    const all = [...this.#appAnswers.values()];
    return all.length ? AggregatorRegistry.aggregate(all as Parameters<typeof AggregatorRegistry.aggregate>[0]) : null;
  }
}
