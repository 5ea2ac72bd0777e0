/** Counters across a USR2 upgrade: the successor takes the old master's totals and its status
 *  listener over at the handover, so no scrape is refused and no counter goes down; what the old
 *  master's draining workers count after the handover reaches it, and a rollback (upgrade manual)
 *  gives the successor's counts back. A status listener the successor cannot open fails the
 *  upgrade; a unix: one is bound again by the successor. */

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, lstatSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { APPS, childrenOf, isAlive, ROOT, startForkd, tempDir, waitFor } from '../helpers/forkd';
import { freePort, heldRequest, load, request, requestUnix, type LoadResult } from '../helpers/http';
import { sumOf } from '../helpers/metrics';

const hello = join(ROOT, 'examples', 'hello.js');
const probe = join(APPS, 'probe.js');

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
          scrapes.push({ status: r.status, total: r.status === 200 ? sumOf(r.body, 'forkd_requests_total') : NaN });
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
    assert.ok(sumOf(text, 'forkd_worker_exits_total', { reason: 'recycled' }) >= 2, 'workers were recycled');
    assert.is(sumOf(text, 'forkd_request_duration_seconds_count'), r.ok);
  } finally {
    await f.kill();
  }
});

/** Waits until /metrics's samples of `name` with labels `where` sum to `want`, and returns that
 *  text; a timeout says the last sum seen. */
async function waitForSum(url: string, name: string, want: number, what: string, where: Record<string, string> = {}, timeoutMs = 15_000): Promise<string> {
  let last = 'no answer';
  return waitFor(async () => {
    const body = (await request(url)).body;
    last = String(sumOf(body, name, where));
    return sumOf(body, name, where) === want ? body : null;
  }, `${what} (${name} ${JSON.stringify(where)}: want ${want})`, timeoutMs).catch((err: Error) => { throw new Error(`${err.message}; last seen ${last}`); });
}

type Scrape = { status: number; total: number } | { error: string };

/** Scrapes `url` back to back, keeping every answer (or failure) until stopped. */
function scrapeThrough(url: string): { scrapes: Scrape[]; stop(): Promise<Scrape[]> } {
  const scrapes: Scrape[] = [];
  let scraping = true;
  const loop = (async () => {
    while (scraping) {
      try {
        const r = await request(url);
        scrapes.push({ status: r.status, total: r.status === 200 ? sumOf(r.body, 'forkd_requests_total') : NaN });
      } catch (err) {
        scrapes.push({ error: (err as Error).message });
        // Refused at once while nothing listens: do not spin.
        await new Promise((ok) => setTimeout(ok, 20));
      }
    }
  })();
  return { scrapes, async stop() { scraping = false; await loop; return scrapes; } };
}

test('USR2 with requests in flight: the successor counts what the old workers finish after the handover, and their exits', async () => {
  const dir = tempDir();
  const statusPort = await freePort();
  const metricsUrl = `http://127.0.0.1:${statusPort}/metrics`;
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--status-bind', `127.0.0.1:${statusPort}`, '--graceful-timeout', '30', probe]);
  try {
    const quick = await load(`${f.url}/`, { connections: 2, durationMs: 10_000, keepAlive: false, until: (s) => s.sent >= 20 });
    assert.is(quick.failed, 0, JSON.stringify(quick.errors));
    // In flight at the USR2: late ones the app answers 3 s on, and held ones (their bodies still
    // coming) that are answered only once the successor has taken over.
    const marks = (kind: string) => [1, 2, 3].map((i) => join(dir.path, `${kind}-${i}`));
    const late = marks('late').map((m) => request(`${f.url}/late?ms=3000&mark=${encodeURIComponent(m)}`));
    late.forEach((r) => r.catch(() => undefined));
    const held = marks('held').map((m) => heldRequest(`${f.url}/body?mark=${encodeURIComponent(m)}`));
    await waitFor(() => [...marks('late'), ...marks('held')].every((m) => existsSync(m)), 'the slow requests to reach the app');
    f.signal('SIGUSR2');
    const successor = Number((await f.waitForLog(/Upgrade complete: the successor master \(pid:(\d+)\) serves/))[1]);
    for (const h of held) h.finish();
    const replies: Array<{ status: number }> = await Promise.all([...late, ...held.map((h) => h.reply)]);
    assert.equal(replies.map((r) => r.status), replies.map(() => 200));
    assert.is((await f.waitExit(30_000)).code, 0, 'the old master retires once its workers have drained');

    const made = quick.ok + replies.length;
    const text = await waitForSum(metricsUrl, 'forkd_requests_total', made, `the successor to count all ${made} requests`);
    assert.is(sumOf(text, 'forkd_request_duration_seconds_count'), made);
    await waitForSum(metricsUrl, 'forkd_worker_exits_total', 2, 'the old workers\' exits, as upgraded', { reason: 'upgraded' });
    const stats = JSON.parse((await request(`http://127.0.0.1:${statusPort}/stats`)).body) as { master: { pid: number } };
    assert.is(stats.master.pid, successor, 'the successor answers');
    process.kill(successor, 'SIGTERM');
    await waitFor(() => !isAlive(successor), 'the successor to stop');
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('upgrade manual, rolled back: the old master goes on from what the successor counted, and no scrape sees the count go down', async () => {
  const statusPort = await freePort();
  const status = `http://127.0.0.1:${statusPort}`;
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--status-bind', `127.0.0.1:${statusPort}`, '--upgrade', 'manual', probe]);
  let scraper: ReturnType<typeof scrapeThrough> | null = null;
  try {
    let made = 0;
    const send = async (n: number): Promise<LoadResult> => {
      const r = await load(`${f.url}/`, { connections: 2, durationMs: 10_000, keepAlive: false, until: (s) => s.sent >= n });
      assert.is(r.failed, 0, JSON.stringify(r.errors));
      made += r.ok;
      return r;
    };
    await send(30);
    await waitForSum(`${status}/metrics`, 'forkd_requests_total', made, 'the first requests counted');

    scraper = scrapeThrough(`${status}/metrics`);
    f.signal('SIGUSR2');
    const successor = Number((await f.waitForLog(/the successor master \(pid:(\d+)\) serves\. Send this master WINCH/))[1]);
    // Both masters' workers accept on the same sockets: send until the successor's have served some.
    const theirs = childrenOf(successor);
    assert.is(theirs.length, 2, 'the successor has its workers');
    await waitFor(async () => Object.keys((await send(20)).byWorker).some((w) => theirs.includes(Number(w))),
      'the successor\'s workers to serve some requests', 30_000, 0);
    await waitForSum(`${status}/metrics`, 'forkd_requests_total', made, `the successor to count all ${made} requests`);

    process.kill(successor, 'SIGTERM');
    await f.waitForLog(/The successor master \(pid:\d+\) exited: this master is the main one again/);
    await waitFor(async () => (JSON.parse((await request(`${status}/stats`)).body) as { master: { pid: number } }).master.pid === f.pid,
      'the old master to answer on the status listener again');
    const back = scraper.scrapes.length;
    await waitFor(() => scraper!.scrapes.slice(back).filter((s) => 'total' in s).length >= 5, 'scrapes of the old master');
    const scrapes = await scraper.stop();

    const answered = scrapes.flatMap((s) => ('total' in s ? [s] : []));
    const errors = scrapes.flatMap((s) => ('error' in s ? [s.error] : []));
    // While the old master binds the status port again, a scrape may be refused: no more than that.
    assert.equal(errors.filter((e) => !/ECONNREFUSED|ECONNRESET|socket hang up/.test(e)), [], `only connection errors (${errors.length} of ${scrapes.length})`);
    assert.equal(answered.filter((s) => s.status !== 200), [], 'every scrape answered was a 200');
    for (let i = 1; i < answered.length; i++) {
      assert.ok(answered[i]!.total >= answered[i - 1]!.total, `scrape ${i} of ${answered.length}: ${answered[i - 1]!.total} then ${answered[i]!.total}`);
    }
    assert.is(answered[answered.length - 1]!.total, made, 'the old master counts every request, the successor\'s too');
    assert.is((await request(`${f.url}/`)).status, 200, 'the old master serves');
  } finally {
    await scraper?.stop();
    await f.kill();
  }
});

test('USR2 with a unix: status listener: the successor binds it again, and the socket file outlives the old master', async () => {
  const dir = tempDir();
  const sock = join(dir.path, 'status.sock');
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--status-bind', `unix:${sock}`, hello]);
  try {
    await f.waitForLog(/Status at: /);
    assert.is((await requestUnix(sock, '/livez')).status, 200);
    f.signal('SIGUSR2');
    const successor = Number((await f.waitForLog(/Upgrade complete: the successor master \(pid:(\d+)\) serves/))[1]);
    assert.is((await f.waitExit(15_000)).code, 0, 'the old master retires');
    // The old master let go of the socket (and its file) at the handover; the successor binds it
    // again once it has the ack, which may be a moment after the old master has gone.
    await waitFor(async () => (await requestUnix(sock, '/livez')).status === 200, 'the successor to answer on the status socket', 5000)
      .catch((err: Error) => { throw new Error(`${err.message}; output:\n${f.output()}`); });
    assert.ok(lstatSync(sock).isSocket());
    assert.equal(await requestUnix(sock, '/livez').then((r) => [r.status, r.body]), [200, 'ok\n']);
    const stats = JSON.parse((await requestUnix(sock, '/stats')).body) as { master: { pid: number } };
    assert.is(stats.master.pid, successor, 'the successor answers on it');
    process.kill(successor, 'SIGTERM');
    await waitFor(() => !isAlive(successor), 'the successor to stop');
    assert.not.ok(existsSync(sock), 'the successor, which bound it, removes it as it exits');
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('USR2 when the successor cannot open a status listener the config now names: the upgrade fails, the old master serves on', async () => {
  const dir = tempDir();
  const statusPort = await freePort();
  const status = `http://127.0.0.1:${statusPort}`;
  // Another process holds port B.
  const holder = net.createServer((c) => c.destroy());
  await new Promise<void>((ok) => holder.listen(0, '127.0.0.1', ok));
  const taken = (holder.address() as net.AddressInfo).port;
  const config = join(dir.path, 'forkd.config.json');
  const write = (statusBind: string[]) => writeFileSync(config, JSON.stringify({
    app: hello, bind: ['127.0.0.1:0'], workers: 2, statusBind, reloadOnConfigChange: false,
  }));
  write([`127.0.0.1:${statusPort}`]);
  const f = await startForkd([], { cwd: dir.path });
  try {
    assert.is((await request(`${status}/livez`)).status, 200);
    const served = await load(`${f.url}/`, { connections: 2, durationMs: 10_000, keepAlive: false, until: (s) => s.sent >= 10 });
    assert.is(served.failed, 0);
    write([`127.0.0.1:${statusPort}`, `127.0.0.1:${taken}`]);
    f.signal('SIGUSR2');
    const successor = Number((await f.waitForLog(/Upgrade: started successor master \(pid:(\d+)\)/))[1]);
    await f.waitForLog(/Upgrade failed: the successor exited with code \d+ before it was ready; this master carries on/);
    assert.match(f.output(), `127.0.0.1:${taken}`, 'the successor said which address it could not have');
    assert.not.match(f.output(), /Upgrade complete|retiring this one/);
    await waitFor(() => !isAlive(successor), 'the successor to be gone');

    assert.is((await request(`${f.url}/`)).status, 200, 'the old master serves the app');
    const stats = JSON.parse((await request(`${status}/stats`)).body) as { master: { pid: number } };
    assert.is(stats.master.pid, f.pid, 'and its status listener');
    await waitForSum(`${status}/metrics`, 'forkd_requests_total', served.ok + 1, 'the old master to count on');
    f.signal('SIGTERM');
    assert.equal(await f.waitExit(15_000), { code: 0, signal: null });
  } finally {
    await f.kill();
    holder.close();
    dir.remove();
  }
});

test.run();
