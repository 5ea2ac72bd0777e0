/** Owns the master's Prometheus metrics, in a prom-client registry of forkd's own, which also
 *  writes the exposition format. Everything is read at scrape time: the counts from the totals
 *  (totals.ts: what the workers reported with their heartbeats, and what the lifecycle events
 *  said), the rest from the pool as the workers last reported (a scrape never waits on a worker),
 *  and each TCP listener's accept queue from the kernel. prom-client's defaults describe the
 *  master's own process. Loaded only when a status listener is configured. */

import { collectDefaultMetrics, Counter, Gauge, Registry, type MetricValueWithName } from 'prom-client';
import { CODE_CLASSES, DURATION_BUCKETS_S } from '../ipc/tally';
import { listenQueues, queueLimit } from '../net/listen-queue';
import type { MasterContext } from './context';
import type { WorkerHandle } from './worker-handle';

/** prom-client's defaults that `promtool check metrics` refuses: gauges named like counters. */
const REFUSED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

const STATE_OF: Record<WorkerHandle['state'], 'booting' | 'serving' | 'draining' | null> = {
  booting: 'booting', serving: 'serving', replacing: 'serving', stopping: 'draining', exited: null,
};

export interface Metrics {
  readonly registry: Registry;
  /** The exposition text, the app's metrics merged in when `appMetrics` gives them. */
  text(): Promise<string>;
}

/** One value per worker number, read from the live workers as they last reported (a reload's
 *  outgoing worker and its replacement share a number while the old one drains: `merge` says how
 *  their values combine). */
function byWorker<T>(ctx: MasterContext, read: (h: WorkerHandle) => T | null, merge: (a: T, b: T) => T): Map<number, T> {
  const by = new Map<number, T>();
  for (const h of ctx.pool.live()) {
    const v = read(h);
    if (v === null) continue;
    const had = by.get(h.nr);
    by.set(h.nr, had === undefined ? v : merge(had, v));
  }
  return by;
}

function perWorkerGauge(registry: Registry, ctx: MasterContext, name: string, help: string,
  read: (h: WorkerHandle) => number | null, merge: (a: number, b: number) => number): void {
  new Gauge({
    name, help, labelNames: ['worker'], registers: [registry],
    collect() {
      this.reset();
      for (const [nr, v] of byWorker(ctx, read, merge)) this.set({ worker: String(nr) }, v);
    },
  });
}

/** A metric whose samples forkd computes itself at scrape time, in prom-client's own format (what
 *  Histogram.get() returns), for the registry to write out: for a histogram or summary made of
 *  counts the workers sent, which prom-client's classes can only build one observation at a time. */
function computed(registry: Registry, name: string, help: string, type: 'histogram' | 'summary', aggregator: 'sum' | 'max',
  values: () => MetricValueWithName<string>[]): void {
  const metric = { name, async get() { return { name, help, type, values: values(), aggregator }; } };
  registry.registerMetric(metric as never);
}

/** forkd_request_duration_seconds, from the workers' bucket counts. */
function durationHistogram(registry: Registry, ctx: MasterContext): void {
  const name = 'forkd_request_duration_seconds';
  computed(registry, name, 'Time from a request reaching the app to its response\'s end, in seconds.', 'histogram', 'sum', () => {
    const all = ctx.totals.all();
    let acc = 0;
    const values: MetricValueWithName<string>[] = DURATION_BUCKETS_S.map((le, i) => {
      acc += all.buckets[i]!;
      return { labels: { le }, value: acc, metricName: `${name}_bucket` };
    });
    acc += all.buckets[DURATION_BUCKETS_S.length]!;
    values.push({ labels: { le: '+Inf' }, value: acc, metricName: `${name}_bucket` });
    values.push({ labels: {}, value: all.sumS, metricName: `${name}_sum` });
    values.push({ labels: {}, value: acc, metricName: `${name}_count` });
    return values;
  });
}

/** forkd_worker_event_loop_lag_seconds: each worker's loop delay over its last heartbeat
 *  interval, at quantiles 0.5 and 0.99, as a summary of quantiles only (`promtool check metrics`
 *  refuses a `quantile` label on a gauge); of two workers sharing a number, the larger delay. */
function loopLagSummary(registry: Registry, ctx: MasterContext): void {
  computed(registry, 'forkd_worker_event_loop_lag_seconds',
    'A worker\'s event loop delay over its last report interval (perf_hooks.monitorEventLoopDelay), by quantile.', 'summary', 'max',
    () => [...byWorker<readonly [number, number]>(ctx, (h) => h.health?.lagMs ?? null, (a, b) => [Math.max(a[0], b[0]), Math.max(a[1], b[1])])]
      .flatMap(([nr, [p50, p99]]) => [
        { labels: { worker: nr, quantile: 0.5 }, value: p50 / 1000 },
        { labels: { worker: nr, quantile: 0.99 }, value: p99 / 1000 },
      ]));
}

/** What the workers reported: responses, durations, and how each worker is now. */
function workerMetrics(registry: Registry, ctx: MasterContext): void {
  const { totals } = ctx;
  new Counter({
    name: 'forkd_requests_total', help: 'Responses finished, by worker number and status class.', labelNames: ['worker', 'code'], registers: [registry],
    collect() {
      this.reset();
      for (const [nr, codes] of totals.requests()) codes.forEach((n, i) => this.inc({ worker: String(nr), code: CODE_CLASSES[i]! }, n));
    },
  });
  durationHistogram(registry, ctx);
  perWorkerGauge(registry, ctx, 'forkd_requests_in_flight', 'Requests a worker is serving now, as it last reported.',
    (h) => (h.state === 'booting' ? null : h.inFlight), (a, b) => a + b);
  perWorkerGauge(registry, ctx, 'forkd_connections', 'Connections a worker holds open now, as it last reported.',
    (h) => (h.state === 'booting' ? null : h.connections), (a, b) => a + b);
  perWorkerGauge(registry, ctx, 'forkd_worker_resident_memory_bytes', 'A worker\'s resident memory, as it last reported.',
    (h) => h.health?.rssBytes ?? null, (a, b) => a + b);
  loopLagSummary(registry, ctx);
  new Counter({
    name: 'forkd_balance_closed_total', help: 'Kept-alive connections the balance asked to close, to even out the workers.', registers: [registry],
    collect() { this.reset(); this.inc(totals.all().shed); },
  });
  new Counter({
    name: 'forkd_proxy_protocol_refused_total', help: 'Connections closed for their PROXY protocol header: an untrusted peer, a malformed or missing header.', registers: [registry],
    collect() { this.reset(); this.inc(totals.all().proxyRefused); },
  });
  new Counter({
    name: 'forkd_request_deadline_total', help: 'Responses forkd ended because their requestDeadline passed (503, 504, or the connection closed).', registers: [registry],
    collect() { this.reset(); this.inc(totals.all().deadlines); },
  });
}

/** What the master knows of its pool and its life: workers by state, the generation, exits, reloads. */
function masterMetrics(registry: Registry, ctx: MasterContext): void {
  const { totals } = ctx;
  new Gauge({
    name: 'forkd_workers', help: 'Worker processes now, by state.', labelNames: ['state'], registers: [registry],
    collect() {
      const counts = { booting: 0, serving: 0, draining: 0 };
      for (const h of ctx.pool.live()) { const s = STATE_OF[h.state]; if (s) counts[s]++; }
      for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
    },
  });
  new Gauge({
    name: 'forkd_generation', help: 'The generation new workers start in (1 at start, one more for each reload).', registers: [registry],
    collect() { this.set(ctx.generations.current.id); },
  });
  new Counter({
    name: 'forkd_worker_exits_total', help: 'Worker exits, by reason (as the log\'s reason=; a signal\'s name, or crash).', labelNames: ['reason'], registers: [registry],
    collect() { this.reset(); for (const [reason, n] of totals.exits()) this.inc({ reason }, n); },
  });
  new Gauge({
    name: 'forkd_service_up', help: 'Whether each of the config\'s services runs now (1) or is being started again (0).', labelNames: ['service'], registers: [registry],
    collect() { this.reset(); for (const s of ctx.services.rows()) this.set({ service: s.name }, s.state === 'running' ? 1 : 0); },
  });
  new Counter({
    name: 'forkd_service_restarts_total', help: 'Times each service was started again after it died or hung.', labelNames: ['service'], registers: [registry],
    collect() { this.reset(); for (const s of ctx.services.rows()) this.inc({ service: s.name }, s.restarts); },
  });
  new Counter({
    name: 'forkd_reloads_total', help: 'Reloads (HUP, config edits, forkd ctl reload), by result.', labelNames: ['result'], registers: [registry],
    collect() { this.reset(); const r = totals.reloads(); this.inc({ result: 'ok' }, r.ok); this.inc({ result: 'failed' }, r.failed); },
  });
}

/** Each TCP listener's accept queue and its limit, both from one read of the kernel's table per
 *  scrape; returns what forgets that read (call it as a scrape begins). */
function queueMetrics(registry: Registry, ctx: MasterContext): () => void {
  let queues: Array<[string, number, number]> | null = null;
  const readQueues = () => {
    if (!queues) {
      const listeners = ctx.sockets.all();
      const lengths = listenQueues(listeners.map((l) => l.fd));
      const limit = queueLimit(ctx.generations.config.backlog);
      queues = listeners.flatMap((l) => (lengths.has(l.fd) ? [[l.url, lengths.get(l.fd)!, limit] as [string, number, number]] : []));
    }
    return queues;
  };
  const queue = (name: string, help: string, pick: 1 | 2) => new Gauge({
    name, help, labelNames: ['listener'], registers: [registry],
    collect() {
      this.reset();
      for (const q of readQueues()) this.set({ listener: q[0] }, q[pick]);
    },
  });
  queue('forkd_listen_queue_length', 'Connections waiting in a TCP listener\'s accept queue now.', 1);
  queue('forkd_listen_queue_limit', 'The longest a TCP listener\'s accept queue may get (backlog, capped by somaxconn).', 2);
  return () => { queues = null; };
}

export function createMetrics(ctx: MasterContext, appMetrics: () => Promise<Registry | null>): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  for (const name of REFUSED_DEFAULTS) registry.removeSingleMetric(name);
  workerMetrics(registry, ctx);
  masterMetrics(registry, ctx);
  const newScrape = queueMetrics(registry, ctx);
  return {
    registry,
    async text() {
      newScrape();
      const app = await appMetrics();
      if (!app) return registry.metrics();
      // A name the app shares with forkd (prom-client's defaults, which most apps collect too)
      // would make Registry.merge throw and fail every scrape: forkd's own, the master's, stays.
      for (const { name } of app.getMetricsAsArray()) if (registry.getSingleMetric(name)) app.removeSingleMetric(name);
      return Registry.merge([registry, app]).metrics();
    },
  };
}
