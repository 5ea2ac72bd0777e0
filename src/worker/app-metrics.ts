/** Owns reading the app's own prom-client metrics in a worker (appMetrics): prom-client as the app
 *  resolves it, from its module's directory, so that it is the app's instance and its default
 *  registry, read with getMetricsAsJSON (what AggregatorRegistry.aggregate takes). With threads,
 *  each thread has an instance of its own: the process asks each and merges them with the app's
 *  AggregatorRegistry, so the master gets one answer per worker process either way. */

import { join } from 'node:path';
import { findAppModule, parseAppSpec } from '../config/app-spec';
import type { WorkerSpec } from '../ipc/messages';

export interface AppMetrics { readonly metrics: unknown[] | null; readonly error?: string }

interface PromClient {
  register: { getMetricsAsJSON(): Promise<unknown[]> };
  AggregatorRegistry: { aggregate(lists: unknown[][]): { getMetricsAsJSON(): Promise<unknown[]> } };
}

/** The app's prom-client, or null when the app cannot resolve one; resolved once (a scrape asks
 *  every few seconds, and the app's module does not move). */
let resolved: { client: PromClient | null } | null = null;
function appPromClient(spec: WorkerSpec): PromClient | null {
  resolved ??= { client: resolveAppPromClient(spec) };
  return resolved.client;
}

function resolveAppPromClient(spec: WorkerSpec): PromClient | null {
  const { createRequire } = require('node:module') as typeof import('node:module');
  const appSpec = parseAppSpec(spec.config.app ?? '');
  const from = (typeof appSpec !== 'string' && findAppModule(appSpec.module, process.cwd())) || join(process.cwd(), 'package.json');
  const appRequire = createRequire(from);
  let path: string;
  try { path = appRequire.resolve('prom-client'); } catch { return null; }
  return appRequire(path) as PromClient;
}

/** The app's registry in this thread. */
export async function appMetricsHere(spec: WorkerSpec): Promise<AppMetrics> {
  try {
    const client = appPromClient(spec);
    return { metrics: client ? await client.register.getMetricsAsJSON() : null };
  } catch (err) {
    return { metrics: null, error: (err as Error).message };
  }
}

/** The threads' answers as one, merged by each metric's aggregator. */
export async function mergeThreads(spec: WorkerSpec, answers: readonly AppMetrics[]): Promise<AppMetrics> {
  const lists = answers.flatMap((a) => (a.metrics ? [a.metrics] : []));
  const error = answers.find((a) => a.error)?.error;
  if (lists.length === 0) return { metrics: null, error };
  try {
    const client = appPromClient(spec);
    if (!client) return { metrics: null, error };
    return { metrics: await client.AggregatorRegistry.aggregate(lists).getMetricsAsJSON(), error };
  } catch (err) {
    return { metrics: null, error: (err as Error).message };
  }
}
