/** Owns the master's Prometheus metrics, in a prom-client registry of forkd's own, which also
 *  writes the exposition format. Everything is read at scrape time: the counts from the totals
 *  (totals.ts: what the workers reported with their heartbeats, and what the lifecycle events
 *  said), the rest from the pool as the workers last reported (a scrape never waits on a worker),
 *  and each TCP listener's accept queue from the kernel. prom-client's defaults describe the
 *  master's own process. Loaded only when a status listener is configured. */

import { collectDefaultMetrics, Counter, Gauge, Registry, type MetricObjectWithValues, type MetricValueWithName } from 'prom-client';
import { CODE_CLASSES, DURATION_BUCKETS_S } from '../ipc/tally';
import { listenQueues, queueLimit } from '../net/listen-queue';
import type { MasterContext } from './context';
import type { WorkerHandle } from './worker-handle';

/** prom-client's defaults that `promtool check metrics` refuses: gauges named like counters. */
const REFUSED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

export const STATE_OF: Record<WorkerHandle['state'], 'booting' | 'serving' | 'draining' | null> = {
  booting: 'booting', serving: 'serving', replacing: 'serving', stopping: 'draining', exited: null,
};

export interface Metrics {
  readonly registry: Registry;
  /** The exposition text, the app's metrics merged in when `appMetrics` gives them. */
  text(): Promise<string>;
}

/** A gauge read from the live workers at scrape time, one value per worker number (a reload's
 *  outgoing worker and its replacement share a number while the old one drains: `merge` says
 *  how their values combine). */
function perWorkerGauge(registry: Registry, ctx: MasterContext, name: string, help: string,
  read: (h: WorkerHandle) => number | null, merge: (a: number, b: number) => number, extra: string[] = []): void {
  new Gauge({
    name, help, labelNames: ['worker', ...extra], registers: [registry],
    collect() {
      this.reset();
      const by = new Map<number, number>();
      for (const h of ctx.pool.live()) {
        const v = read(h);
        if (v === null) continue;
        const had = by.get(h.nr);
        by.set(h.nr, had === undefined ? v : merge(had, v));
      }
      for (const [nr, v] of by) this.set({ worker: String(nr) }, v);
    },
  });
}

/** forkd_request_duration_seconds, from the workers' bucket counts: a metric object in
 *  prom-client's own format (what Histogram.get() returns), which the registry writes out. */
function durationHistogram(ctx: MasterContext): { name: string; get(): Promise<Omit<MetricObjectWithValues<MetricValueWithName<string>>, 'collect' | 'type'> & { type: string }> } {
  const name = 'forkd_request_duration_seconds';
  const help = 'Time from a request reaching the app to its response\'s end, in seconds.';
  return {
    name,
    async get() {
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
      return { name, help, type: 'histogram', values, aggregator: 'sum' };
    },
  };
}

export function createMetrics(ctx: MasterContext, appMetrics: () => Promise<Registry | null>): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  for (const name of REFUSED_DEFAULTS) registry.removeSingleMetric(name);
  const { totals } = ctx;

  new Counter({
    name: 'forkd_requests_total', help: 'Responses finished, by worker number and status class.', labelNames: ['worker', 'code'], registers: [registry],
    collect() {
      this.reset();
      for (const [nr, codes] of totals.requests()) codes.forEach((n, i) => this.inc({ worker: String(nr), code: CODE_CLASSES[i]! }, n));
    },
  });
  registry.registerMetric(durationHistogram(ctx) as never);
  perWorkerGauge(registry, ctx, 'forkd_requests_in_flight', 'Requests a worker is serving now, as it last reported.',
    (h) => (h.state === 'booting' ? null : h.inFlight), (a, b) => a + b);
  perWorkerGauge(registry, ctx, 'forkd_connections', 'Connections a worker holds open now, as it last reported.',
    (h) => (h.state === 'booting' ? null : h.connections), (a, b) => a + b);
  perWorkerGauge(registry, ctx, 'forkd_worker_resident_memory_bytes', 'A worker\'s resident memory, as it last reported.',
    (h) => h.health?.rssBytes ?? null, (a, b) => a + b);
  // Two gauges, as prom-client's nodejs_eventloop_lag_p50/p99_seconds: a `quantile` label is for
  // summaries only, and `promtool check metrics` refuses it on a gauge.
  for (const [i, p] of [[0, 'p50'], [1, 'p99']] as const) {
    perWorkerGauge(registry, ctx, `forkd_worker_event_loop_lag_${p}_seconds`, `A worker's event loop delay over its last report interval, ${p}.`,
      (h) => (h.health?.lagMs ? h.health.lagMs[i] / 1000 : null), Math.max);
  }
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
  new Counter({
    name: 'forkd_reloads_total', help: 'Reloads (HUP, config edits, forkd ctl reload), by result.', labelNames: ['result'], registers: [registry],
    collect() { this.reset(); const r = totals.reloads(); this.inc({ result: 'ok' }, r.ok); this.inc({ result: 'failed' }, r.failed); },
  });
  new Counter({
    name: 'forkd_balance_closed_total', help: 'Kept-alive connections the balance asked to close, to even out the workers.', registers: [registry],
    collect() { this.reset(); this.inc(totals.all().shed); },
  });
  const queue = (name: string, help: string, read: (length: number, limit: number) => number) => new Gauge({
    name, help, labelNames: ['listener'], registers: [registry],
    collect() {
      this.reset();
      const listeners = ctx.sockets.all();
      const lengths = listenQueues(listeners.map((l) => l.fd));
      const limit = queueLimit(ctx.generations.config.backlog);
      for (const l of listeners) {
        const length = lengths.get(l.fd);
        if (length !== undefined) this.set({ listener: l.url }, read(length, limit));
      }
    },
  });
  queue('forkd_listen_queue_length', 'Connections waiting in a TCP listener\'s accept queue now.', (length) => length);
  queue('forkd_listen_queue_limit', 'The longest a TCP listener\'s accept queue may get (backlog, capped by somaxconn).', (_, limit) => limit);

  return {
    registry,
    async text() {
      const app = await appMetrics();
      return app ? Registry.merge([registry, app]).metrics() : registry.metrics();
    },
  };
}
