/** Hostile and oversized requests: the body limit (limitRequestBody). */

import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, startForkd, tempDir } from '../helpers/forkd';
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
    let sent = 0;
    const next = () => {
      if (stream.destroyed || stream.writableEnded) return;
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
    dir.remove();
  }
});

test.run();
