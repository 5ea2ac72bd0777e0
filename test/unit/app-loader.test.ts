import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { AppLoadError, loadApp, type LoadedApp } from '../../src/worker/app-loader';
import { APPS } from '../helpers/forkd';
import { rawExchange, request } from '../helpers/http';

/** Serves a loaded app on a loopback port in this process and fetches one path from it. */
async function fetchFrom(app: LoadedApp, path = '/', init: { method?: string; body?: string } = {}) {
  const server = app.kind === 'server' ? app.server as http.Server : http.createServer(app.listener);
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  try {
    const { port } = server.address() as AddressInfo;
    return await request(`http://127.0.0.1:${port}${path}`, { method: init.method, body: init.body });
  } finally {
    server.close();
  }
}

const SHAPES: Array<[string, string, string]> = [
  ['probe.js', 'request listener', 'ok '],
  ['express.js', 'request listener', 'express ok'],
  ['koa.mjs', 'Koa app', 'koa ok'],
  ['fastify.js', 'Fastify instance', 'fastify ok'],
  ['hono.mjs', 'object with fetch()', 'hono ok'],
  ['fetch.mjs', 'fetch handler', 'fetch ok /'],
  ['server.js', 'http.Server', 'server ok'],
  ['factory.js:createApp()', 'request listener', 'factory ok'],
  ['factory.js:createAppAsync()', 'request listener', 'async factory ok'],
  ['typed.ts', 'request listener', 'typescript ok'],
  ['esm.mjs', 'request listener', 'esm ok'],
  ['esm.mjs:app', 'request listener', 'esm named ok'],
  // .js files whose package.json has no "type": CommonJS is required, ES module syntax detected.
  ['typeless/esm-syntax.js', 'request listener', 'esm syntax ok'],
  ['typeless/esm-syntax.js:app', 'request listener', 'esm syntax ok'],
  ['typeless/top-level-await.js', 'request listener', 'top-level await ok'],
];

for (const [spec, shape, body] of SHAPES) {
  test(`shape: ${spec} is served as a ${shape}`, async () => {
    const loaded = await loadApp(spec, APPS);
    assert.is(loaded.app.shape, shape);
    const reply = await fetchFrom(loaded.app);
    assert.is(reply.status, 200);
    assert.ok(reply.body.startsWith(body), `${spec} answered ${JSON.stringify(reply.body)}`);
  });
}

test('fetch handlers get the request body and can set several cookies', async () => {
  const hono = await loadApp('hono.mjs', APPS);
  assert.is((await fetchFrom(hono.app, '/echo', { method: 'POST', body: 'hello' })).body, 'hono got hello');
  const fetch = await loadApp('fetch.mjs', APPS);
  assert.is((await fetchFrom(fetch.app, '/', { method: 'POST', body: 'x'.repeat(100_000) })).body.length, 'fetch got '.length + 100_000);
  assert.equal((await fetchFrom(fetch.app)).headers['set-cookie'], ['a=1', 'b=2']);
});

test('fetch handlers see an absolute URL that no client can point at another host', async () => {
  const { app } = await loadApp('fetch.mjs', APPS);
  const server = http.createServer((app as { listener: http.RequestListener }).listener);
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  try {
    const port = (server.address() as AddressInfo).port;
    const urlOf = async (head: string) => /x-url: (\S+)/i.exec((await rawExchange(port, `${head}\r\nConnection: close\r\n\r\n`)).data)?.[1];
    assert.is(await urlOf('GET /p?q=1 HTTP/1.1\r\nHost: a.example:81'), 'http://a.example:81/p?q=1');
    assert.is(await urlOf('GET //evil.example/x HTTP/1.1\r\nHost: a.example'), 'http://a.example//evil.example/x');
    assert.is(await urlOf('GET http://b.example/abs HTTP/1.1\r\nHost: a.example'), 'http://b.example/abs');
    assert.is(await urlOf('GET /y HTTP/1.1\r\nHost: bad host'), 'http://localhost/y');
  } finally {
    server.close();
  }
});

test('an app that calls listen() while loading is served, and never binds a port of its own', async () => {
  const loaded = await loadApp('listens.js', APPS);
  assert.is(loaded.app.shape, 'http.Server (from listen())');
  assert.ok(loaded.app.kind === 'server' && !loaded.app.server.listening);
  assert.match(loaded.notes.join(' '), 'called listen()');
  assert.is((await fetchFrom(loaded.app)).body, 'listens ok');
});

async function loadError(spec: string): Promise<string> {
  try { await loadApp(spec, APPS); } catch (err) {
    return (err as Error).message;
  }
  throw new Error(`${spec} loaded`);
}

test('a module that is not an app is refused, naming what it found and what is expected', async () => {
  const msg = await loadError('not-an-app.js');
  assert.match(msg, join(APPS, 'not-an-app.js'));
  assert.match(msg, 'an object with keys port, name');
  assert.match(msg, 'expected a request listener');
  assert.match(await loadError('factory.js:notAFunction()'), 'notAFunction() is not a function: the export is a number (42)');
  assert.match(await loadError('factory.js:nothing'), 'has no export "nothing"; it exports: createApp, createAppAsync, notAFunction');
  assert.match(await loadError('no-such-app.js'), 'cannot find module no-such-app.js');
  try { await loadApp('missing.js', APPS); } catch (err) { assert.instance(err, AppLoadError); }
});

test('an app whose dependency has top-level await fails as require() says, having run once', async () => {
  const g = globalThis as { forkdRequiresTlaRuns?: number };
  delete g.forkdRequiresTlaRuns;
  const err = await loadApp('typeless/requires-tla.cjs', APPS).then(() => null, (e: unknown) => e as NodeJS.ErrnoException);
  assert.is(err?.code, 'ERR_REQUIRE_ASYNC_MODULE');
  assert.is(g.forkdRequiresTlaRuns, 1, 'the app\'s code ran once, not again through import()');
});

test('errors thrown while loading come through as they are', async () => {
  assert.match(await loadError('throws.js'), 'DATABASE_URL is not set');
  assert.match(await loadError('syntax-error.js'), 'missing ) after argument list');
});

test.run();
