/** Owns the master's Prometheus metrics (prom-client, in a registry of forkd's own): what the
 *  master knows now (workers by state, the generation, each worker's connections and requests in
 *  flight as last reported) is read at scrape time; what happens (worker exits by reason, reloads
 *  by result) is counted from the lifecycle events, for the master's lifetime. Loaded only when a
 *  status listener is configured. */

import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { MasterContext } from './context';
import type { LifecycleEvent } from './events';
import type { WorkerHandle } from './worker-handle';

/** prom-client's defaults that `promtool check metrics` refuses: gauges named like counters. */
const REFUSED_DEFAULTS = ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total'];

const STATE_OF: Record<WorkerHandle['state'], 'booting' | 'serving' | 'draining' | null> = {
  booting: 'booting', serving: 'serving', replacing: 'serving', stopping: 'draining', exited: null,
};

export interface Metrics {
  readonly registry: Registry;
  /** Follows the lifecycle events (subscribe it to the master's stream). */
  follow(event: LifecycleEvent): void;
}

export function createMetrics(ctx: MasterContext): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  for (const name of REFUSED_DEFAULTS) registry.removeSingleMetric(name);
  const live = () => ctx.pool.live();
  new Gauge({
    name: 'forkd_workers', help: 'Worker processes now, by state.', labelNames: ['state'], registers: [registry],
    collect() {
      const counts = { booting: 0, serving: 0, draining: 0 };
      for (const h of live()) { const s = STATE_OF[h.state]; if (s) counts[s]++; }
      for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
    },
  });
  new Gauge({
    name: 'forkd_generation', help: 'The generation new workers start in.', registers: [registry],
    collect() { this.set(ctx.generations.current.id); },
  });
  const perWorker = (name: string, help: string, read: (h: WorkerHandle) => number) => new Gauge({
    name, help, labelNames: ['worker'], registers: [registry],
    collect() {
      this.reset();
      for (const h of live()) if (h.accepting) this.set({ worker: String(h.nr) }, read(h));
    },
  });
  perWorker('forkd_requests_in_flight', 'Requests a worker is serving now, as it last reported.', (h) => h.inFlight);
  perWorker('forkd_connections', 'Connections a worker holds open now, as it last reported.', (h) => h.connections);
  const exits = new Counter({ name: 'forkd_worker_exits_total', help: 'Worker exits, by reason.', labelNames: ['reason'], registers: [registry] });
  const reloads = new Counter({ name: 'forkd_reloads_total', help: 'Reloads, by result.', labelNames: ['result'], registers: [registry] });
  reloads.inc({ result: 'ok' }, 0);
  reloads.inc({ result: 'failed' }, 0);
  return {
    registry,
    follow(e) {
      if (e.type === 'worker.exited') exits.inc({ reason: e.reason ?? e.signal ?? 'crash' });
      else if (e.type === 'reload.done') reloads.inc({ result: 'ok' });
      else if (e.type === 'reload.failed') reloads.inc({ result: 'failed' });
    },
  };
}
