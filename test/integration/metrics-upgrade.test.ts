/** Counters across a USR2 upgrade: the successor takes the old master's totals and its status
 *  listener over at the handover, so no scrape is refused and no counter goes down. */

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { ROOT, startForkd, waitFor } from '../helpers/forkd';
import { freePort, load, request } from '../helpers/http';

const hello = join(ROOT, 'examples', 'hello.js');

/** The sum of every sample of `name` in a Prometheus text. */
function sumOf(text: string, name: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

test('USR2: every scrape answers, forkd_requests_total never goes down, and the successor counts on from the old total', async () => {
  const statusPort = await freePort();
  const metricsUrl = `http://127.0.0.1:${statusPort}/metrics`;
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--status-bind', `127.0.0.1:${statusPort}`, hello]);
  try {
    const before = await load(`${f.url}/`, { connections: 4, durationMs: 1000, keepAlive: true });
    assert.is(before.failed, 0);
    await waitFor(async () => sumOf((await request(metricsUrl)).body, 'forkd_requests_total') === before.ok, `${before.ok} requests counted`);

    // Scrape as fast as one answers, all through the upgrade, and keep every answer.
    const scrapes: Array<{ status: number; total: number } | { error: string }> = [];
    let scraping = true;
    const scraper = (async () => {
      while (scraping) {
        try {
          const r = await request(metricsUrl);
          scrapes.push({ status: r.status, total: sumOf(r.body, 'forkd_requests_total') });
        } catch (err) {
          scrapes.push({ error: (err as Error).message });
        }
      }
    })();
    f.signal('SIGUSR2');
    const successor = Number((await f.waitForLog(/Upgrade complete: the successor master \(pid:(\d+)\) serves/))[1]);
    assert.is((await f.waitExit(15_000)).code, 0, 'the old master retires');
    await waitFor(() => scrapes.length > 5, 'scrapes after the handover');
    scraping = false;
    await scraper;

    const failed = scrapes.filter((s) => 'error' in s || s.status !== 200);
    assert.equal(failed, [], 'no scrape refused or failed during the upgrade');
    const totals = scrapes.map((s) => ('total' in s ? s.total : NaN));
    for (let i = 1; i < totals.length; i++) assert.ok(totals[i]! >= totals[i - 1]!, `scrape ${i}: ${totals[i - 1]} then ${totals[i]}`);
    assert.is(totals[totals.length - 1], before.ok, 'the successor starts from the old master\'s total');

    const after = await load(`${f.url}/`, { connections: 4, durationMs: 1000, keepAlive: true });
    assert.is(after.failed, 0);
    await waitFor(async () => sumOf((await request(metricsUrl)).body, 'forkd_requests_total') === before.ok + after.ok,
      `${before.ok} + ${after.ok} requests counted by the successor`);
    const stats = JSON.parse((await request(`http://127.0.0.1:${statusPort}/stats`)).body) as { master: { pid: number } };
    assert.is(stats.master.pid, successor, 'the successor answers');
    process.kill(successor, 'SIGTERM');
  } finally {
    await f.kill();
  }
});

test('maxRequests recycling: each recycled worker leaves its count, and the sum is every request made', async () => {
  const statusPort = await freePort();
  const metricsUrl = `http://127.0.0.1:${statusPort}/metrics`;
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--max-requests', '40', '--status-bind', `127.0.0.1:${statusPort}`, hello]);
  try {
    const r = await load(`${f.url}/`, { connections: 4, durationMs: 2000, keepAlive: false });
    assert.is(r.failed, 0);
    assert.ok(r.ok > 200, `enough requests to recycle a few times (${r.ok})`);
    const text = await waitFor(async () => {
      const body = (await request(metricsUrl)).body;
      return sumOf(body, 'forkd_requests_total') === r.ok ? body : null;
    }, `${r.ok} requests counted`);
    assert.ok(sumOf(text, 'forkd_worker_exits_total{reason="recycled"}') >= 2, 'workers were recycled');
    assert.is(sumOf(text, 'forkd_request_duration_seconds_count'), r.ok);
  } finally {
    await f.kill();
  }
});

test.run();
