/** Stopping for a load balancer: shutdownDelay (on TERM /readyz answers 503 at once while the
 *  workers serve on, then the graceful stop), and the connections already queued on the listening
 *  socket at the stop, which are served instead of reset. */

import net from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, startForkd, waitFor, type Forkd } from '../helpers/forkd';
import { load, request } from '../helpers/http';

const probe = join(APPS, 'probe.js');

async function statusUrl(f: Forkd): Promise<string> {
  return (await f.waitForLog(/Status at: (http:\/\/\S+)/))[1]!;
}

test('shutdownDelay: on TERM /readyz answers 503 at once, the workers serve new connections on for the delay, then stop gracefully; a client that stops at the 503, as a load balancer does, sees no failure', async () => {
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--status-bind', '127.0.0.1:0', '--shutdown-delay', '2', probe]);
  try {
    const status = await statusUrl(f);
    assert.is((await request(`${status}/readyz`)).status, 200);
    // The load balancer: it checks /readyz every 200 ms, and sends no new connection once it said 503.
    let out = false;
    let outAt = 0;
    const checker = setInterval(() => {
      void request(`${status}/readyz`).then((r) => { if (r.status === 503 && !out) { out = true; outAt = performance.now(); } }, () => undefined);
    }, 200);
    const running = load(`${f.url}/`, { connections: 4, durationMs: 6000, keepAlive: false, until: () => out });
    await new Promise((ok) => setTimeout(ok, 500));
    const termAt = performance.now();
    f.signal('SIGTERM');
    const r = await running;
    clearInterval(checker);
    assert.is(r.failed, 0, JSON.stringify(r));
    assert.ok(r.ok > 50, `${r.ok} requests answered`);
    assert.ok(outAt - termAt < 1000, `/readyz said 503 ${Math.round(outAt - termAt)} ms after TERM`);
    // Still serving new connections during the delay, for a client that has not noticed.
    assert.is((await request(`${f.url}/`)).status, 200);
    assert.match((await request(`${status}/readyz`)).body, /leaving: the graceful stop begins in \d s \(shutdownDelay\)/);
    assert.match(f.output(), /TERM: \/readyz answers 503 from now; the workers serve on for 2 s \(shutdownDelay\)/);
    assert.equal(await f.waitExit(10_000), { code: 0, signal: null });
    assert.ok(performance.now() - termAt >= 1900, 'the stop waited for the delay');
  } finally {
    await f.kill();
  }
});

test('shutdownDelay: a second TERM stops at once', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--shutdown-delay', '30', probe]);
  try {
    f.signal('SIGTERM');
    await f.waitForLog(/serve on for 30 s \(shutdownDelay\)/);
    f.signal('SIGTERM');
    assert.equal(await f.waitExit(10_000), { code: 0, signal: null });
  } finally {
    await f.kill();
  }
});

test('the connections queued on the listening socket behind a busy worker at TERM are all served, not reset', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', probe]);
  const sockets: net.Socket[] = [];
  try {
    const port = Number(new URL(f.url).port);
    // The worker computes for 1.5 s: the next 100 connections wait in the kernel's queue.
    const busy = request(`${f.url}/block?ms=1500`);
    await new Promise((ok) => setTimeout(ok, 200));
    const answers = Array.from({ length: 100 }, () => new Promise<string>((ok) => {
      const s = net.connect(port, '127.0.0.1', () => s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
      sockets.push(s);
      let data = '';
      s.setEncoding('latin1');
      s.on('data', (c: string) => { data += c; });
      s.on('close', () => ok(data));
      s.on('error', (err) => { data += ` [${err.message}]`; });
    }));
    await waitFor(() => sockets.every((s) => !s.connecting) || null, 'the 100 connections to be queued');
    f.signal('SIGTERM');
    const replies = await Promise.all(answers);
    assert.is((await busy).status, 200);
    const served = replies.filter((d) => /^HTTP\/1\.1 200 /.test(d) && /\r\nConnection: close\r\n/i.test(d)).length;
    assert.is(served, 100, `served ${served} of 100; first other: ${JSON.stringify(replies.find((d) => !/^HTTP\/1\.1 200 /.test(d)))}`);
    assert.equal(await f.waitExit(10_000), { code: 0, signal: null });
  } finally {
    for (const s of sockets) s.destroy();
    await f.kill();
  }
});

test.run();
