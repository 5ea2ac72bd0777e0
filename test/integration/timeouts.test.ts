import { rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, isAlive, startForkd, tempDir, waitFor } from '../helpers/forkd';
import { load, rawExchange, request } from '../helpers/http';

const probe = join(APPS, 'probe.js');

test('a hung worker is killed after timeout, its stack and the request that hung it logged, and replaced', async () => {
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '-t', '1', probe]);
  try {
    const hung = request(`${f.url}/spin?job=42`).then(() => 'answered', (err: Error) => err.message);
    const m = await f.waitForLog(/\[CRITICAL\] WORKER TIMEOUT \(pid:(\d+)\)(.*)/);
    const pid = Number(m[1]);
    const line = m[2]!;
    // Read in the paused worker: no response watcher, so its age is not known.
    assert.match(line, /^: serving GET \/spin\?job=42 \(age unknown, 127\.0\.0\.1\) /, line);
    assert.match(line, /stack="spinForever \(\S*probe\.js:\d+:\d+\) \| probe \(\S*probe\.js:\d+:\d+\)/, line);
    assert.match(line, /silentForMs=\d+/);
    assert.is(await hung, 'socket hang up');
    await waitFor(() => !isAlive(pid), 'the hung worker to be gone');
    await waitFor(() => f.workers().length === 2 && !f.workers().includes(pid), 'a replacement');
    assert.is((await request(`${f.url}/`)).status, 200);
  } finally {
    await f.kill();
  }
});

test('with the access log on, the hung request\'s age is known too', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '-t', '1', '--access-logfile', '/dev/null', probe]);
  try {
    void request(`${f.url}/spin`).catch(() => undefined);
    const m = await f.waitForLog(/WORKER TIMEOUT \(pid:\d+\): serving GET \/spin \((\d+\.\d) s, 127\.0\.0\.1\) /);
    assert.ok(Number(m[1]) >= 0.9, m[0]);
  } finally {
    await f.kill();
  }
});

test('--no-timeout-stack kills without opening the inspector', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '-t', '1', '--no-timeout-stack', probe]);
  try {
    void request(`${f.url}/spin`).catch(() => undefined);
    const m = await f.waitForLog(/WORKER TIMEOUT \(pid:(\d+)\).*/);
    assert.match(m[0], 'stack="not captured (timeoutStack is off)"');
    assert.not.match(f.output(), 'Debugger listening');
  } finally {
    await f.kill();
  }
});

test('max-requests recycles workers under load, replacement first, without a failed request', async () => {
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--max-requests', '60', '--max-requests-jitter', '20', '--log-level', 'debug', probe]);
  try {
    const before = f.workers();
    const r = await load(`${f.url}/`, { connections: 8, durationMs: 3000, keepAlive: true });
    // Replacement first: each recycled worker exits only after a worker in its slot became ready.
    const lines = f.output().split('\n');
    lines.forEach((line, i) => {
      const nr = / reason=recycled/.test(line) ? / nr=(\d+)/.exec(line)?.[1] : undefined;
      if (nr === undefined) return;
      const replacedAt = lines.findIndex((l) => l.includes('is to be replaced') && l.includes(`nr=${nr}`));
      assert.ok(lines.slice(replacedAt, i).some((l) => l.includes(`Worker ${nr} ready`)), `worker ${nr} recycled before its successor was ready`);
    });
    assert.is(r.failed, 0, `failed ${r.failed} of ${r.sent}: ${JSON.stringify(r.errors)}`);
    assert.ok(r.ok > 300, `only ${r.ok} requests`);
    const recycles = f.output().match(/is to be replaced: it served \d+ requests \(maxRequests\)/g)?.length ?? 0;
    assert.ok(recycles >= 2, `${recycles} recycles`);
    await waitFor(() => f.workers().length === 2, 'two workers');
    assert.ok(before.every((p) => !f.workers().includes(p)), 'every first worker was replaced');
  } finally {
    await f.kill();
  }
});

test('keep-alive connections are reused; --keep-alive 0 closes after each response', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', probe]);
  const g = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--keep-alive', '0', probe]);
  try {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const first = await request(`${f.url}/`, { agent });
    assert.is(first.headers.connection, 'keep-alive');
    assert.match(String(first.headers['keep-alive']), 'timeout=5');
    const reused = await new Promise<boolean>((ok, fail) => {
      const req = http.get(`${f.url}/`, { agent }, (res) => { res.resume(); res.on('end', () => ok(req.reusedSocket)); });
      req.on('error', fail);
    });
    assert.ok(reused, 'the second request went over the same connection');
    agent.destroy();
    assert.is((await request(`${g.url}/`, { agent: new http.Agent({ keepAlive: true }) })).headers.connection, 'close');
  } finally {
    await f.kill();
    await g.kill();
  }
});

test('a client that sends its headers too slowly gets 408 within headersTimeout', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--headers-timeout', '1', '--request-timeout', '2', probe]);
  try {
    const port = Number(new URL(f.url).port);
    const t0 = Date.now();
    const reply = await rawExchange(port, 'GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ', 6000);
    assert.match(reply.data, /^HTTP\/1\.1 408/);
    assert.ok(reply.closed, 'the connection is closed');
    assert.ok(Date.now() - t0 < 3000, `answered after ${Date.now() - t0} ms`);
  } finally {
    await f.kill();
  }
});

test('a client that sends its body too slowly gets 408 within requestTimeout', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--headers-timeout', '1', '--request-timeout', '1', probe]);
  try {
    const port = Number(new URL(f.url).port);
    const t0 = Date.now();
    const reply = await rawExchange(port, 'POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial', 6000);
    assert.match(reply.data, /^HTTP\/1\.1 408/);
    assert.ok(Date.now() - t0 < 3000, `answered after ${Date.now() - t0} ms`);
  } finally {
    await f.kill();
  }
});

test('a crash loop that starts after the service was up backs off, and recovers', async () => {
  const dir = tempDir();
  const crashFile = join(dir.path, 'crash');
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--log-level', 'debug', join(APPS, 'dies-soon.js')], { env: { CRASH_FILE: crashFile } });
  try {
    await f.waitForLog(/Worker 1 stable/); // from here on, failures are retried rather than fatal
    writeFileSync(crashFile, '');
    process.kill(f.workers()[0]!, 'SIGKILL');
    await f.waitForLog(/after it was ready; next start in 400 ms/);
    assert.ok(!f.hasExited(), 'the master carries on');
    rmSync(crashFile);
    await waitFor(async () => (await request(`${f.url}/`).catch(() => null))?.status === 200, 'service back', 15_000);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('the master reaches "Ready" even when TTOU removes the worker it was waiting for', async () => {
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--log-level', 'debug', join(APPS, 'slow-second.js')],
    { wait: 'listening', env: { BOOT_MS: '3000' } });
  try {
    await f.waitForLog(/Worker 1 ready/);
    f.signal('SIGTTOU');
    await f.waitForLog(/Ready: 1 worker serving/, 2500);
  } finally {
    await f.kill();
  }
});

test('an app that throws answers 500 and its worker lives on', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', probe]);
  try {
    const [worker] = f.workers();
    const sync = await request(`${f.url}/throw`);
    assert.is(sync.status, 500);
    const asyncReject = await request(`${f.url}/reject`);
    assert.is(asyncReject.status, 500);
    assert.match(f.output(), /\[ERROR\] app error .*url=\/throw .*boom from the app/);
    assert.match(f.output(), /async boom from the app/);
    assert.equal(f.workers(), [worker]);
  } finally {
    await f.kill();
  }
});

test.run();
