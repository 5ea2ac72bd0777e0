/** --app-metrics as a Prometheus scrape sees it: an app that uses prom-client as apps do (its
 *  default metrics, a counter, a gauge aggregated by max) runs in two workers, and the master's
 *  /metrics shows the app's metrics merged over both beside forkd's own. */

import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, startForkd, waitFor, type Forkd } from '../helpers/forkd';
import { load, request, type LoadResult } from '../helpers/http';

const promApp = join(APPS, 'prom-app.js');

async function serve(extra: readonly string[], workers = ['-w', '2']): Promise<{ f: Forkd; status: string }> {
  const f = await startForkd([...workers, '-b', '127.0.0.1:0', '--status-bind', '127.0.0.1:0', ...extra, promApp]);
  try {
    const status = (await f.waitForLog(/Status at: (http:\/\/\S+)/))[1]!;
    return { f, status };
  } catch (err) {
    await f.kill();
    throw err;
  }
}

/** Requests until both workers have answered some (each answer names its worker). */
async function spreadLoad(url: string): Promise<LoadResult> {
  const total: LoadResult = { sent: 0, ok: 0, failed: 0, statuses: {}, errors: [], byWorker: {} };
  await waitFor(async () => {
    const r = await load(`${url}/`, { connections: 4, durationMs: 5000, keepAlive: false, until: (s) => s.sent >= 20 });
    total.sent += r.sent;
    total.ok += r.ok;
    total.failed += r.failed;
    total.errors.push(...r.errors);
    for (const [w, n] of Object.entries(r.byWorker)) total.byWorker[w] = (total.byWorker[w] ?? 0) + n;
    return Object.keys(total.byWorker).length === 2;
  }, 'both workers to serve requests', 30_000, 0);
  return total;
}

/** The value of the sample `series` (name and labels as written) in an exposition text. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test('the app\'s prom-client metrics, from both workers, merged into /metrics beside forkd\'s', async () => {
  const { f, status } = await serve(['--app-metrics']);
  try {
    const r = await spreadLoad(f.url);
    assert.is(r.failed, 0, JSON.stringify(r.errors));
    const m = await request(`${status}/metrics`);
    assert.is(m.status, 200, m.body);
    assert.match(String(m.headers['content-type']), 'text/plain');
    assert.is(sample(m.body, 'app_hits_total{route="/"}'), r.ok, 'the counter summed over the workers');
    assert.is(sample(m.body, 'app_worker_hits_max'), Math.max(...Object.values(r.byWorker)), 'the gauge by its max aggregator');
    assert.is(m.body.match(/^# TYPE app_hits_total counter$/gm)?.length, 1);
    // forkd's own are still there, and a name both collect (prom-client's defaults) is there once.
    assert.is(sample(m.body, 'forkd_workers{state="serving"}'), 2);
    assert.ok(m.body.includes('# TYPE forkd_requests_total counter'));
    assert.is(m.body.match(/^process_cpu_user_seconds_total /gm)?.length, 1, 'one process_cpu_user_seconds_total');

    // Each scrape asks the workers again.
    const more = await load(`${f.url}/`, { connections: 2, durationMs: 5000, keepAlive: true, until: (s) => s.sent >= 10 });
    assert.is(more.failed, 0);
    const again = await request(`${status}/metrics`);
    assert.is(sample(again.body, 'app_hits_total{route="/"}'), r.ok + more.ok);
  } finally {
    await f.kill();
  }
});

test('with threads, each thread\'s registry is asked and merged in its process', async () => {
  const { f, status } = await serve(['--app-metrics'], ['-w', '1', '--threads', '2']);
  try {
    const r = await load(`${f.url}/`, { connections: 4, durationMs: 5000, keepAlive: false, until: (s) => s.sent >= 60 });
    assert.is(r.failed, 0, JSON.stringify(r.errors));
    const m = await request(`${status}/metrics`);
    assert.is(m.status, 200, m.body);
    assert.is(sample(m.body, 'app_hits_total{route="/"}'), r.ok, 'the counter summed over the threads');
  } finally {
    await f.kill();
  }
});

test('without --app-metrics, /metrics has forkd\'s metrics and none of the app\'s', async () => {
  const { f, status } = await serve([]);
  try {
    const r = await load(`${f.url}/`, { connections: 2, durationMs: 5000, keepAlive: false, until: (s) => s.sent >= 10 });
    assert.is(r.failed, 0);
    const m = await request(`${status}/metrics`);
    assert.is(m.status, 200, m.body);
    assert.is(sample(m.body, 'forkd_workers{state="serving"}'), 2);
    assert.not.match(m.body, 'app_hits_total');
    assert.not.match(m.body, 'app_worker_hits_max');
  } finally {
    await f.kill();
  }
});

test.run();
