/** Hostile and oversized requests: the body limit (limitRequestBody), and slow clients (slowloris
 *  headers, slow bodies) with and without a workerConnections cap, driven by scripts/slow-clients.mjs
 *  (whose figures the closing notes quote; here only what must hold on a noisy machine is checked). */

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, ROOT, startForkd, tempDir } from '../helpers/forkd';
import { rawExchange, request } from '../helpers/http';
import { certificate } from '../helpers/tls';

const reader = join(APPS, 'body-reader.js');
const LIMIT = 1000;

/** A chunked body of `chunks` chunks of 100 bytes on one connection, sent a chunk at a time;
 *  resolves with what came back once the server closes (or 3 s pass). */
function chunked(port: number, chunks: number): Promise<{ data: string; closed: boolean; sent: number }> {
  return new Promise((ok) => {
    const sock = net.connect(port, '127.0.0.1');
    let data = '';
    let sent = 0;
    let closed = false;
    const timer = setTimeout(() => finish(), 3000);
    const finish = () => { clearTimeout(timer); clearInterval(writer); sock.destroy(); ok({ data, closed, sent }); };
    const writer = setInterval(() => {
      if (!sock.writable) return;
      if (sent === chunks) { sock.write('0\r\n\r\n'); return; }
      sock.write(`64\r\n${'x'.repeat(100)}\r\n`);
      sent++;
    }, 5);
    sock.write('POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n');
    sock.setEncoding('latin1');
    sock.on('data', (c: string) => { data += c; });
    sock.on('end', () => { closed = true; finish(); });
    sock.on('error', () => { closed = true; finish(); });
  });
}

test('limitRequestBody: a declared Content-Length over it gets 413 and Connection: close before the app; a chunked body past it is cut with 413; the app never reads more than the limit', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--limit-request-body', String(LIMIT), '--access-logfile', '-', reader]);
  try {
    const port = Number(new URL(f.url).port);
    const read = async () => JSON.parse((await request(`${f.url}/__read`)).body) as { most: number; errors: number; requests: number };
    // At the limit: served.
    const ok = await request(`${f.url}/up`, { method: 'POST', body: 'x'.repeat(LIMIT) });
    assert.is(ok.body, `read ${LIMIT}\n`);
    // Declared over it: the app never sees the request.
    const over = await rawExchange(port, `POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: ${LIMIT + 1}\r\n\r\n${'x'.repeat(LIMIT + 1)}`, 1000);
    assert.match(over.data, /^HTTP\/1\.1 413 /);
    assert.match(over.data, /\r\nConnection: close\r\n/i);
    assert.match(over.data, /limitRequestBody/);
    assert.ok(over.closed, 'the connection is closed');
    assert.is((await read()).requests, 1, 'the app did not see it');
    // Chunked, growing past it: the app has the request, reads at most the limit, and its body
    // fails; the client gets 413 and the connection closes.
    const cut = await chunked(port, 30);
    assert.match(cut.data, /^HTTP\/1\.1 413 /, cut.data);
    assert.ok(cut.closed, 'the connection is closed');
    assert.ok(cut.sent < 30, `the client was stopped before it sent the whole body (sent ${cut.sent} of 30 chunks)`);
    const after = await read();
    assert.is(after.requests, 2);
    assert.is(after.most, LIMIT, 'the app read the limit and no more');
    assert.is(after.errors, 1, 'the app\'s body stream failed');
    // A chunked body within the limit is served.
    const small = await chunked(port, 5);
    assert.match(small.data, /^HTTP\/1\.1 200 [^]*read 500\n/);
    assert.match(f.output(), /"POST \/up HTTP\/1\.1" 413 /, 'the access log has the 413');
    assert.not.match(f.output(), /Worker \(pid:\d+\) (exited|was killed)/);
  } finally {
    await f.kill();
  }
});

test('limitRequestBody over h2: a body past it gets 413 on its stream, and the session serves on', async () => {
  const dir = tempDir();
  const { cert, key } = certificate(dir.path, 'server');
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--certfile', cert, '--keyfile', key, '--http2', '--limit-request-body', String(LIMIT), reader]);
  const url = /Listening at: (https:\/\/127\.0\.0\.1:\d+)/.exec(f.output())![1]!;
  const session = http2.connect(url, { ca: readFileSync(cert, 'utf8') });
  session.on('error', () => undefined);
  const post = (chunks: number) => new Promise<{ status: number; body: string }>((ok, fail) => {
    const stream = session.request({ ':method': 'POST', ':path': '/up' });
    let status = 0;
    let body = '';
    stream.on('response', (h) => { status = Number(h[':status']); });
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => { body += c; });
    stream.on('close', () => ok({ status, body }));
    stream.on('error', fail);
    // A final answer before the body is sent: stop sending and close the stream once it is read,
    // as curl does. (Node's client otherwise waits on the writes the server no longer reads: the
    // session sat quiet until keepAlive wound it down, once in ~500 such streams under load.)
    stream.on('end', () => { if (status >= 400 && !stream.writableEnded) stream.close(); });
    let sent = 0;
    const next = () => {
      if (stream.destroyed || stream.writableEnded || status >= 400) return;
      if (sent === chunks) { stream.end(); return; }
      sent++;
      stream.write('x'.repeat(100), () => setTimeout(next, 2));
    };
    next();
  });
  try {
    const over = await post(30);
    assert.is(over.status, 413, over.body);
    assert.match(over.body, /limitRequestBody/);
    const fine = await post(5);
    assert.equal(fine, { status: 200, body: 'read 500\n' }, 'the same session serves on');
    const stats = JSON.parse(await new Promise<string>((ok) => {
      const s = session.request({ ':path': '/__read' });
      let b = '';
      s.setEncoding('utf8');
      s.on('data', (c: string) => { b += c; });
      s.on('end', () => ok(b));
    })) as { most: number };
    assert.is(stats.most, LIMIT, 'the app read the limit and no more');
  } finally {
    session.destroy();
    await f.kill();
  }
  // An app that reads bodies without an 'error' listener: the cut is no uncaught exception.
  const g = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--certfile', cert, '--keyfile', key, '--http2', '--limit-request-body', String(LIMIT), join(APPS, 'upgrades.js')]);
  const again = http2.connect(/Listening at: (https:\/\/127\.0\.0\.1:\d+)/.exec(g.output())![1]!, { ca: readFileSync(cert, 'utf8') });
  again.on('error', () => undefined);
  try {
    const [worker] = g.workers();
    const status = await new Promise<number>((ok) => {
      const stream = again.request({ ':method': 'POST', ':path': '/up' });
      stream.on('response', (h) => ok(Number(h[':status'])));
      stream.on('error', () => ok(-1));
      stream.write('x'.repeat(LIMIT + 100));
    });
    assert.is(status, 413);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(g.workers(), [worker], 'the worker lives on');
    assert.not.match(g.output(), /uncaught|crashed/i);
  } finally {
    again.destroy();
    await g.kill();
    dir.remove();
  }
});

interface SlowRun {
  normal: { requests: number; failed: number; p50Ms: number; p99Ms: number; maxMs: number };
  slow: { connections: number; connected: number; closedByServer: number; stillOpen: number; lifetimeMs: { min: number; median: number; max: number } | null; answered: Record<string, number> };
}

/** Runs scripts/slow-clients.mjs against `url` (it bounds itself in time); killed by pid if the test ends first. */
async function slowClients(url: string, args: readonly string[]): Promise<SlowRun> {
  const child = spawn(process.execPath, [join(ROOT, 'scripts', 'slow-clients.mjs'), '--url', url, '--json', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => { out += c; });
  child.stderr.setEncoding('utf8').on('data', (c: string) => { out += c; });
  try {
    const code = await new Promise<number | null>((ok) => child.once('exit', ok));
    if (code !== 0) throw new Error(`slow-clients.mjs exited ${code}: ${out}`);
    return JSON.parse(out) as SlowRun;
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}

test('2,000 slowloris connections (a header byte a second) beside a normal client: every normal request is served, and every slow connection is closed at headersTimeout with 408', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--headers-timeout', '3', '--request-timeout', '6', reader]);
  try {
    const run = await slowClients(`${f.url}/`, ['--slow', '2000', '--every', '1000', '--duration', '4000', '--wait', '8000']);
    assert.is(run.normal.failed, 0, JSON.stringify(run));
    assert.ok(run.normal.requests > 20, JSON.stringify(run));
    assert.is(run.slow.connected, 2000);
    assert.is(run.slow.closedByServer, 2000, JSON.stringify(run.slow));
    assert.equal(run.slow.answered, { 408: 2000 });
    // At headersTimeout, checked every 750 ms (a quarter of it): never before, and not long after.
    assert.ok(run.slow.lifetimeMs!.min >= 2900 && run.slow.lifetimeMs!.max <= 6000, JSON.stringify(run.slow.lifetimeMs));
    assert.not.match(f.output(), /Worker \(pid:\d+\) (exited|was killed)/);
  } finally {
    await f.kill();
  }
});

test('500 slow bodies (a byte a second) beside a normal client: every normal request is served, and every slow request is closed at requestTimeout', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--headers-timeout', '2', '--request-timeout', '3', reader]);
  try {
    const run = await slowClients(`${f.url}/`, ['--slow', '500', '--mode', 'body', '--every', '1000', '--duration', '3000', '--wait', '8000']);
    assert.is(run.normal.failed, 0, JSON.stringify(run));
    assert.is(run.slow.closedByServer, 500, JSON.stringify(run.slow));
    assert.equal(run.slow.answered, { 408: 500 });
    assert.ok(run.slow.lifetimeMs!.min >= 2900 && run.slow.lifetimeMs!.max <= 6000, JSON.stringify(run.slow.lifetimeMs));
  } finally {
    await f.kill();
  }
});

test('--worker-connections 100 on one worker and 1,000 slowloris connections: the slow ones cannot take every slot, and every normal request is served', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--worker-connections', '100', reader]);
  try {
    const run = await slowClients(`${f.url}/`, ['--slow', '1000', '--every', '1000', '--duration', '3000', '--wait', '500']);
    // Before makeRoom every one of them waited behind the slow connections and timed out (10 s).
    assert.is(run.normal.failed, 0, JSON.stringify(run));
    assert.ok(run.normal.requests > 20, JSON.stringify(run));
    assert.ok(run.slow.closedByServer >= 900 - 100, `slow connections made room: ${JSON.stringify(run.slow)}`);
  } finally {
    await f.kill();
  }
});

test.run();
