/** The status listener (--status-bind) with real peers: a Prometheus server scraping it through a
 *  kill -9, reloads and a TTOU, promtool's lint of /metrics, the probes as a load balancer or
 *  Kubernetes uses them, and 64 workers; a response whose client went first is not counted; a
 *  unix: status socket left by a killed process is replaced, and fd:// is refused. Prometheus and
 *  promtool come from Debian's prometheus package (.ci/run installs it). How fast a 64-worker
 *  scrape is, is scripts/bench-status.mjs's. */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, isAlive, ROOT, runForkd, startForkd, tempDir, waitFor, type Forkd } from '../helpers/forkd';
import { freePort, heldRequest, load, request, requestUnix } from '../helpers/http';
import { parseMetrics, sumOf, type Sample } from '../helpers/metrics';

const probe = join(APPS, 'probe.js');

/** The status listener's URL, from the master's "Status at:" line. */
async function statusUrl(f: Forkd): Promise<string> {
  return (await f.waitForLog(/Status at: (http:\/\/\S+)/))[1]!;
}

async function scrape(status: string): Promise<Sample[]> {
  const r = await request(`${status}/metrics`);
  if (r.status !== 200) throw new Error(`/metrics answered ${r.status}: ${r.body}`);
  return parseMetrics(r.body);
}

interface Prometheus { readonly url: string; stop(): Promise<void>; output(): string }

/** A Prometheus server of the test's own on 127.0.0.1: its data in `dir`, scraping `target`'s
 *  /metrics every second. Resolves once it says it is ready. */
async function startPrometheus(dir: string, target: string): Promise<Prometheus> {
  const port = await freePort();
  const config = join(dir, 'prometheus.yml');
  writeFileSync(config, [
    'global: { scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s }',
    'scrape_configs:',
    '  - job_name: forkd',
    `    static_configs: [{ targets: ['${new URL(target).host}'] }]`,
    '',
  ].join('\n'));
  const child: ChildProcess = spawn('prometheus', [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`,
    `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => { out += c; });
  child.stderr!.setEncoding('utf8').on('data', (c: string) => { out += c; });
  child.once('error', (err) => { out += `spawn failed: ${err.message}\n`; });
  const exited = new Promise<void>((ok) => child.once('exit', () => ok()));
  const prom: Prometheus = {
    url: `http://127.0.0.1:${port}`,
    output: () => out,
    async stop() {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
      await exited;
    },
  };
  try {
    await waitFor(async () => {
      if (child.exitCode !== null || child.signalCode !== null || out.includes('spawn failed')) throw new Error(`prometheus exited:\n${out}`);
      return (await request(`${prom.url}/-/ready`)).status === 200;
    }, 'Prometheus to be ready', 30_000, 100);
  } catch (err) {
    await prom.stop();
    throw err;
  }
  return prom;
}

/** An instant query's data, evaluated at `atS` (seconds since the epoch) or now. */
async function promQuery(prom: Prometheus, query: string, atS?: number): Promise<{ resultType: string; result: unknown }> {
  const at = atS === undefined ? '' : `&time=${atS}`;
  const r = await request(`${prom.url}/api/v1/query?query=${encodeURIComponent(query)}${at}`);
  const body = JSON.parse(r.body) as { status: string; data?: { resultType: string; result: unknown } };
  if (r.status !== 200 || body.status !== 'success' || !body.data) throw new Error(`${query}: ${r.status} ${r.body}`);
  return body.data;
}

/** The one value of an instant query's answer (a vector of one sample, or a scalar). */
async function promValue(prom: Prometheus, query: string, atS?: number): Promise<number> {
  const { resultType, result } = await promQuery(prom, query, atS);
  if (resultType === 'scalar') return Number((result as [number, string])[1]);
  const vector = result as { value: [number, string] }[];
  if (vector.length !== 1) throw new Error(`${query}: ${vector.length} samples, not one: ${JSON.stringify(result)}`);
  return Number(vector[0]!.value[1]);
}

/** The time of the first scrape of forkd after `afterS` that succeeded, or null while there is
 *  none. A scrape that timed out on a busy machine marks every series stale: queried at a good
 *  scrape's time, the answers are that scrape's, whatever came after. */
async function goodScrapeAfter(prom: Prometheus, afterS: number): Promise<number | null> {
  const { result } = await promQuery(prom, 'up{job="forkd"}[1m]');
  const values = (result as { values: [number, string][] }[])[0]?.values ?? [];
  return values.find(([t, up]) => t > afterS && up === '1')?.[0] ?? null;
}

/** How many times `re` occurs in what forkd wrote. */
const occurrences = (f: Forkd, re: RegExp) => [...f.output().matchAll(new RegExp(re.source, 'g'))].length;

test('Prometheus scrapes forkd through a kill -9, reloads and a TTOU: no counter resets, every request counted', async () => {
  const HUPS = 3;
  const dir = tempDir();
  const f = await startForkd(['-w', '3', '-b', '127.0.0.1:0', '--status-bind', '127.0.0.1:0', probe]);
  let prom: Prometheus | null = null;
  try {
    const status = await statusUrl(f);
    prom = await startPrometheus(dir.path, status);
    const p = prom;
    await waitFor(async () => (await promValue(p, 'up{job="forkd"}')) === 1, 'Prometheus to scrape forkd', 20_000, 200);
    let sent = 0;
    const send = async (durationMs: number, keepAlive: boolean) => {
      const r = await load(`${f.url}/`, { connections: 4, durationMs, keepAlive });
      assert.is(r.failed, 0, JSON.stringify(r));
      assert.ok(r.ok > 0, 'requests were sent');
      sent += r.ok;
    };
    const counted = async () => sumOf(await scrape(status), 'forkd_requests_total');

    await send(1500, true);
    // A kill -9 loses what the worker counted since its last beat: kill one once everything it
    // served is counted (nothing else sends it requests), so that the count stays exact.
    await waitFor(async () => (await counted()) === sent, `forkd to count the ${sent} requests`);
    const [victim] = f.workers();
    process.kill(victim!, 'SIGKILL');
    await f.waitForLog(new RegExp(`Worker \\(pid:${victim}\\) was killed by SIGKILL`));
    await waitFor(async () => sumOf(await scrape(status), 'forkd_workers', { state: 'serving' }) === 3, 'a worker in its place');
    await send(500, true);

    for (let i = 1; i <= HUPS; i++) {
      const old = f.workers();
      f.signal('SIGHUP');
      await waitFor(() => occurrences(f, /Reload complete/) === i, `reload ${i} to complete`, 30_000);
      // Requests once the old generation has gone: a drained worker's kept-alive connection
      // closing under the load's next request is a failed request, counted or not.
      await waitFor(() => old.every((pid) => !isAlive(pid)), `generation ${i}'s workers to exit`);
      await send(300, true);
    }
    // Requests right before a TTOU, over new connections to every worker: the retired one
    // reports what it served since its last beat as it drains, before it exits.
    await send(400, false);
    const before = f.workers();
    f.signal('SIGTTOU');
    await waitFor(() => f.workers().length === 2 && before.some((pid) => !isAlive(pid)), 'a worker retired');
    await send(1000, true);

    // forkd's own /metrics first, all at its final values; then a scrape that began after that.
    await waitFor(async () => {
      const m = await scrape(status);
      return sumOf(m, 'forkd_requests_total') === sent && sumOf(m, 'forkd_worker_exits_total', { reason: 'SIGKILL' }) === 1
        && sumOf(m, 'forkd_worker_exits_total', { reason: 'reloaded' }) === 3 * HUPS
        && sumOf(m, 'forkd_worker_exits_total', { reason: 'retired' }) === 1 && sumOf(m, 'forkd_reloads_total', { result: 'ok' }) === HUPS;
    }, `forkd's /metrics to count ${sent} requests, the exits and the reloads`, 10_000, 100).catch(async (err: Error) => {
      const m = await scrape(status);
      const seen = m.filter((s) => s.value > 0 && /^forkd_(requests|worker_exits|reloads)_total$/.test(s.name)).map((s) => `${s.name}${JSON.stringify(s.labels)} ${s.value}`);
      throw new Error(`${err.message}; it has:\n${seen.join('\n')}`);
    });
    const finalAtS = Date.now() / 1000;
    const at = await waitFor(() => goodScrapeAfter(p, finalAtS), 'Prometheus to scrape the final values', 15_000, 200);
    const value = (query: string) => promValue(p, query, at);
    assert.is(await value('sum(forkd_requests_total)'), sent, 'every request counted, none twice');
    assert.is(await value('sum(forkd_request_duration_seconds_count)'), sent);
    assert.is(await value('sum(resets(forkd_requests_total[5m]))'), 0, 'forkd_requests_total never went down');
    // One counter at a time: resets() drops the name, and two counters without labels would collide.
    const names = JSON.parse((await request(`${p.url}/api/v1/label/__name__/values`)).body) as { data: string[] };
    const counters = names.data.filter((n) => /^forkd_.+_total$/.test(n));
    assert.ok(counters.length > 3, `Prometheus has forkd's counters: ${counters.join(' ')}`);
    for (const name of counters) assert.is(await value(`sum(resets(${name}[5m])) or vector(0)`), 0, `${name} never went down`);
    assert.ok(await value('count(count_over_time(forkd_requests_total[5m]) > 5)') > 0, 'Prometheus scraped throughout');
    assert.is(await value('forkd_worker_exits_total{reason="SIGKILL"}'), 1);
    assert.is(await value('forkd_worker_exits_total{reason="reloaded"}'), 3 * HUPS);
    assert.is(await value('forkd_worker_exits_total{reason="retired"}'), 1);
    assert.is(await value('forkd_reloads_total{result="ok"}'), HUPS);
    assert.is(await value('forkd_reloads_total{result="failed"}'), 0);
    assert.is(await value('forkd_generation'), 1 + HUPS);
    assert.is(await value('forkd_workers{state="serving"}'), 2);
  } finally {
    await prom?.stop();
    await f.kill();
    dir.remove();
  }
});

test('promtool check metrics finds nothing to say about /metrics', async () => {
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--status-bind', '127.0.0.1:0', probe]);
  try {
    const status = await statusUrl(f);
    // Every kind of series forkd writes: 2xx and 5xx, an exit, per-worker gauges once beaten.
    for (const path of ['/', '/throw', '/', '/chunked']) await request(`${f.url}${path}`);
    await waitFor(async () => sumOf(await scrape(status), 'forkd_requests_total') === 4, 'the requests counted');
    f.signal('SIGTTOU');
    await waitFor(async () => {
      const m = await scrape(status);
      return sumOf(m, 'forkd_worker_exits_total') === 1 && m.some((s) => s.name === 'forkd_worker_event_loop_lag_seconds' && s.labels.quantile === '0.99');
    }, 'an exit and a loop delay in /metrics');
    // Connections the kernel completed but no worker accepted (the one left is stopped) wait in
    // the accept queue: its length is what /proc says of the listener.
    const [worker] = f.workers();
    const waiting: net.Socket[] = [];
    process.kill(worker!, 'SIGSTOP');
    try {
      await waitFor(() => /^\S+ \(.*\) T/.test(readFileSync(`/proc/${worker}/stat`, 'utf8')), 'the worker to stop');
      for (let i = 0; i < 3; i++) {
        const s = net.connect(Number(new URL(f.url).port), '127.0.0.1');
        waiting.push(s);
        await new Promise<void>((ok, fail) => s.once('connect', ok).once('error', fail));
      }
      const m = await scrape(status);
      assert.is(sumOf(m, 'forkd_listen_queue_length', { listener: f.url }), 3);
      assert.ok(sumOf(m, 'forkd_listen_queue_limit', { listener: f.url }) > 0);
    } finally {
      process.kill(worker!, 'SIGCONT');
      for (const s of waiting) s.destroy();
    }
    const text = (await request(`${status}/metrics`)).body;
    for (const name of ['forkd_requests_total', 'forkd_request_duration_seconds_bucket', 'forkd_worker_resident_memory_bytes', 'forkd_listen_queue_limit']) {
      assert.ok(text.includes(`\n${name}{`), `${name} in /metrics`);
    }
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 20_000 });
    assert.is(lint.error, undefined);
    assert.is(lint.stdout + lint.stderr, '');
    assert.is(lint.status, 0);
  } finally {
    await f.kill();
  }
});

test('the probes: /readyz 503 until a worker serves, then 200; /livez; 404, 405, HEAD', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--status-bind', '127.0.0.1:0', join(APPS, 'slow-boot.js')],
    { wait: 'none', env: { BOOT_MS: '4000' } });
  try {
    const status = await statusUrl(f);
    // The worker takes 4 s to load its app: until then the master lives but is not ready.
    assert.equal(await request(`${status}/readyz`).then((r) => [r.status, r.body]), [503, 'no worker serves\n']);
    assert.equal(await request(`${status}/livez`).then((r) => [r.status, r.body]), [200, 'ok\n']);
    await f.waitForLog(/Ready: 1 worker serving/);
    assert.equal(await request(`${status}/readyz`).then((r) => [r.status, r.body]), [200, 'ready\n']);

    const missing = await request(`${status}/nope`);
    assert.is(missing.status, 404);
    assert.match(missing.body, /\/metrics/);
    const post = await request(`${status}/metrics`, { method: 'POST', body: 'x' });
    assert.is(post.status, 405);
    assert.is(post.headers.allow, 'GET, HEAD');
    const head = await request(`${status}/metrics`, { method: 'HEAD' });
    assert.is(head.status, 200);
    assert.is(head.body, '');
    assert.match(String(head.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    assert.ok(Number(head.headers['content-length']) > 1000, 'HEAD says how long the GET would be');
    assert.equal(await request(`${status}/readyz`, { method: 'HEAD' }).then((r) => [r.status, r.body]), [200, '']);
    const stats = JSON.parse((await request(`${status}/stats?x=1`)).body) as { master: { phase: string }; workers: unknown[] };
    assert.is(stats.master.phase, 'running');
    assert.is(stats.workers.length, 1);
  } finally {
    await f.kill();
  }
});

test('/readyz 503 while the master stops', async () => {
  const dir = tempDir();
  const mark = join(dir.path, 'mark');
  // A request whose body has not all come keeps the worker draining, and so the master stopping.
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--status-bind', '127.0.0.1:0', '--graceful-timeout', '60', probe]);
  try {
    const status = await statusUrl(f);
    const held = heldRequest(`${f.url}/body?mark=${encodeURIComponent(mark)}`);
    await waitFor(() => existsSync(mark), 'the request to reach the app');
    f.signal('SIGTERM');
    // The master is stopping from the moment it says it handles the TERM.
    await f.waitForLog(/Handling signal: TERM/);
    assert.equal(await request(`${status}/readyz`).then((r) => [r.status, r.body]), [503, 'the master is stopping\n']);
    assert.is((await request(`${status}/livez`)).status, 200);
    held.finish();
    assert.equal(await held.reply, { status: 200, body: 'body read' });
    assert.is((await f.waitExit()).code, 0);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('64 workers: each its own series, all serving', async () => {
  const f = await startForkd(['-w', '64', '-b', '127.0.0.1:0', '--status-bind', '127.0.0.1:0', join(ROOT, 'examples', 'hello.js')],
    { timeoutMs: 150_000 });
  try {
    const status = await statusUrl(f);
    const m = await scrape(status);
    assert.is(sumOf(m, 'forkd_workers', { state: 'serving' }), 64);
    assert.is(sumOf(m, 'forkd_workers', { state: 'booting' }), 0);
    const numbers = new Set(m.filter((s) => s.name === 'forkd_requests_in_flight').map((s) => s.labels.worker));
    assert.equal([...numbers].sort((a, b) => Number(a) - Number(b)), Array.from({ length: 64 }, (_, i) => String(i + 1)));
    // Every worker's beat reaches the master: its memory, once each has beaten.
    await waitFor(async () => (await scrape(status)).filter((s) => s.name === 'forkd_worker_resident_memory_bytes').length === 64,
      '64 workers\' resident memory in /metrics', 20_000, 200);
    const stats = JSON.parse((await request(`${status}/stats`)).body) as { workers: { pid: number }[] };
    assert.equal(stats.workers.map((w) => w.pid).sort((a, b) => a - b), f.workers().sort((a, b) => a - b));
  } finally {
    await f.kill();
  }
});

test('a request whose client went away before the response was sent is not counted', async () => {
  const dir = tempDir();
  const mark = join(dir.path, 'abandoned');
  const LATE_MS = 1500;
  // One worker: the abandoned request and the others are counted by the same tally.
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--status-bind', '127.0.0.1:0', '--access-logfile', '-', probe]);
  try {
    const status = await statusUrl(f);
    const abandoned = http.get(`${f.url}/late?ms=${LATE_MS}&mark=${encodeURIComponent(mark)}`, { agent: false });
    abandoned.on('error', () => undefined);
    await waitFor(() => existsSync(mark), 'the request to reach the app');
    const arrivedAtMs = Date.now();
    await new Promise((ok) => setTimeout(ok, 200));
    abandoned.destroy();
    // The worker saw the connection go: the access log has the request all the same.
    await f.waitForLog(/"GET \/late\?ms=\d+&mark=\S+ HTTP\/1\.1"/);
    const N = 10;
    for (let i = 0; i < N; i++) assert.is((await request(`${f.url}/`)).status, 200);
    // Past the app's end of the abandoned response, and a heartbeat after it.
    await waitFor(async () => Date.now() > arrivedAtMs + LATE_MS + 1500 && sumOf(await scrape(status), 'forkd_requests_total') >= N,
      `${N} requests counted, and the abandoned one over`);
    const m = await scrape(status);
    assert.is(sumOf(m, 'forkd_requests_total'), N, 'the abandoned request is not counted');
    assert.is(sumOf(m, 'forkd_request_duration_seconds_count'), N);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('statusBind fd://3 is refused as invalid (78): the status listener binds its own', async () => {
  const r = await runForkd(['-w', '1', '-b', '127.0.0.1:0', '--status-bind', 'fd://3', probe]);
  assert.is(r.code, 78, r.stdout + r.stderr);
  assert.match(r.stdout + r.stderr, 'fd://3 is a socket forkd is given; the status listener binds its own');
  assert.not.match(r.stdout + r.stderr, /Booting worker/);
});

test('a unix: status socket a killed process left behind is replaced; one a live master answers on is not', async () => {
  const dir = tempDir();
  const sock = join(dir.path, 'status.sock');
  const holder = spawn(process.execPath, ['-e', "require('node:net').createServer().listen(process.argv[1], () => console.log('listening'))", sock],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  let said = '';
  holder.stdout!.setEncoding('utf8').on('data', (c: string) => { said += c; });
  const holderGone = new Promise<void>((ok) => holder.once('exit', () => ok()));
  let f: Forkd | null = null;
  try {
    await waitFor(() => said.includes('listening'), 'the other process to listen');
    process.kill(holder.pid!, 'SIGKILL');
    await holderGone;
    assert.ok(lstatSync(sock).isSocket(), 'the killed process left its socket file');
    f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--status-bind', `unix:${sock}`, probe]);
    await f.waitForLog(/Status at: unix:/);
    assert.equal(await requestUnix(sock, '/livez').then((r) => [r.status, r.body]), [200, 'ok\n']);

    const second = await runForkd(['-w', '1', '-b', '127.0.0.1:0', '--status-bind', `unix:${sock}`, probe]);
    assert.is(second.code, 1, second.stdout + second.stderr);
    assert.match(second.stdout + second.stderr, `another process is listening on ${sock}`);
    const stats = JSON.parse((await requestUnix(sock, '/stats')).body) as { master: { pid: number } };
    assert.is(stats.master.pid, f.pid, 'the socket is still the first master\'s');
  } finally {
    if (holder.exitCode === null && holder.signalCode === null) process.kill(holder.pid!, 'SIGKILL');
    await holderGone;
    await f?.kill();
    dir.remove();
  }
});

test.run();
