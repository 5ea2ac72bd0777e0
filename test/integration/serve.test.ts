import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync, lstatSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  APPS, BIN, cleanEnv, isAlive, processTitle, runForkd, startForkd, tempDir, waitFor,
} from '../helpers/forkd';
import { load, request, requestUnix } from '../helpers/http';

const probe = join(APPS, 'probe.js');

test('serves with N workers, titled and numbered, with a pidfile while it runs', async () => {
  const dir = tempDir();
  const pidfile = join(dir.path, 'forkd.pid');
  const f = await startForkd(['-w', '3', '-b', '127.0.0.1:0', '-p', pidfile, '-n', 'myapp', probe]);
  try {
    assert.is(f.workers().length, 3);
    assert.is(processTitle(f.pid), 'forkd: master [myapp]');
    assert.equal(f.workers().map(processTitle).sort(), ['forkd: worker 1 [myapp]', 'forkd: worker 2 [myapp]', 'forkd: worker 3 [myapp]']);
    assert.is(readFileSync(pidfile, 'utf8').trim(), String(f.pid));
    const reply = await request(`${f.url}/`);
    assert.is(reply.status, 200);
    assert.ok(f.workers().includes(Number(reply.headers['x-worker'])), 'a worker answered');
    assert.is((await request(`${f.url}/env`)).body, JSON.stringify({ FOO: null, spec: null }), 'the worker spec is not left in the app\'s environment');
    f.signal('SIGTERM');
    assert.equal(await f.waitExit(), { code: 0, signal: null });
    assert.not.ok(existsSync(pidfile), 'pidfile removed at exit');
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('the master never accepts: every one of 300 short connections is answered by a worker', async () => {
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', probe]);
  try {
    const workers = f.workers();
    const r = await load(`${f.url}/`, { connections: 10, durationMs: 60_000, keepAlive: false, until: (sofar) => sofar.sent >= 300 });
    assert.is(r.failed, 0, JSON.stringify(r.errors));
    assert.ok(r.ok >= 300);
    for (const pid of Object.keys(r.byWorker)) assert.ok(workers.includes(Number(pid)), `answered by ${pid}, not a worker`);
  } finally {
    await f.kill();
  }
});

test('every app shape is served through the CLI', async () => {
  const cases: Array<[string, string]> = [
    ['express.js', 'express ok'], ['koa.mjs', 'koa ok'], ['fastify.js', 'fastify ok'], ['hono.mjs', 'hono ok'],
    ['fetch.mjs', 'fetch ok /'], ['server.js', 'server ok'], ['factory.js:createAppAsync()', 'async factory ok'],
    ['typed.ts', 'typescript ok'], ['esm.mjs:app', 'esm named ok'], ['listens.js', 'listens ok'],
  ];
  const started = await Promise.all(cases.map(([app]) => startForkd(['-w', '1', '-b', '127.0.0.1:0', join(APPS, app)], { timeoutMs: 30_000 })));
  try {
    for (let i = 0; i < cases.length; i++) {
      const reply = await request(`${started[i]!.url}/`);
      assert.is(reply.body, cases[i]![1], cases[i]![0]);
    }
  } finally {
    await Promise.all(started.map((f) => f.kill()));
  }
});

test('binds IPv4, IPv6 and a Unix socket at once; the socket file outlives workers and goes with the master', async () => {
  const dir = tempDir();
  const sock = join(dir.path, 'app.sock');
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '-b', '[::1]:0', '-b', `unix:${sock}`, probe]);
  try {
    const v6 = /Listening at: (http:\/\/\[::1\]:\d+)/.exec(f.output())![1]!;
    assert.match(f.output(), `Listening at: unix:${sock}`);
    assert.is((await request(`${f.url}/`)).status, 200);
    assert.is((await request(`${v6}/`)).status, 200);
    assert.is((await requestUnix(sock)).status, 200);
    const before = f.workers();
    f.signal('SIGTTOU');
    await waitFor(() => f.workers().length === 1 && !before.every(isAlive), 'a worker to retire');
    assert.ok(lstatSync(sock).isSocket(), 'a worker that exits leaves the socket file');
    assert.is((await requestUnix(sock)).status, 200);
    f.signal('SIGTERM');
    assert.is((await f.waitExit()).code, 0);
    assert.not.ok(existsSync(sock), 'the master removes its socket file at exit');
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('a stale Unix socket file is replaced; one that answers is not', async () => {
  const dir = tempDir();
  const sock = join(dir.path, 'stale.sock');
  try {
    // A socket file whose process is gone: bound, never listened on, and left behind.
    execFileSync('python3', ['-c', `import socket; s = socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(sock)})`]);
    assert.ok(lstatSync(sock).isSocket());
    const f = await startForkd(['-w', '1', '-b', `unix:${sock}`, probe]);
    try {
      assert.is((await requestUnix(sock)).status, 200);
      const second = await runForkd(['-w', '1', '-b', `unix:${sock}`, probe]);
      assert.is(second.code, 1);
      assert.match(second.stderr + second.stdout, `cannot bind unix:${sock}: another process is listening on ${sock}`);
      assert.is((await requestUnix(sock)).status, 200, 'the running forkd keeps its socket');
    } finally { await f.kill(); }
    writeFileSync(join(dir.path, 'plain'), 'x');
    const notSocket = await runForkd(['-w', '1', '-b', `unix:${join(dir.path, 'plain')}`, probe]);
    assert.is(notSocket.code, 1);
    assert.match(notSocket.stderr + notSocket.stdout, 'exists and is not a socket');
  } finally {
    dir.remove();
  }
});

test('a TCP port in use is refused with exit 1', async () => {
  const blocker = net.createServer();
  await new Promise<void>((ok) => blocker.listen(0, '127.0.0.1', ok));
  try {
    const port = (blocker.address() as net.AddressInfo).port;
    const r = await runForkd(['-w', '1', '-b', `127.0.0.1:${port}`, probe]);
    assert.is(r.code, 1);
    assert.match(r.stderr, `cannot bind 127.0.0.1:${port}: address already in use`);
  } finally {
    blocker.close();
  }
});

test('fd://N serves on a socket forkd inherited from its parent', async () => {
  // python binds a socket, passes it as fd 3 and execs forkd: what a supervisor does.
  const script = [
    'import os, socket, sys',
    's = socket.socket(); s.bind(("127.0.0.1", 0))',
    'print(s.getsockname()[1], flush=True)',
    'os.dup2(s.fileno(), 3); os.set_inheritable(3, True)',
    'os.execv(sys.argv[1], sys.argv[1:])',
  ].join('\n');
  const child = spawn('python3', ['-c', script, process.execPath, BIN, '-w', '2', '-b', 'fd://3', probe], {
    env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => { out += c; });
  child.stderr.setEncoding('utf8').on('data', (c: string) => { out += c; });
  try {
    await waitFor(() => /Ready: 2 workers serving/.test(out), `forkd on fd://3 to be ready (${out})`);
    const port = /^(\d+)$/m.exec(out)![1];
    assert.match(out, 'Listening at: fd://3');
    assert.is((await request(`http://127.0.0.1:${port}/`)).status, 200);
  } finally {
    const kids = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    child.kill('SIGKILL');
    for (const k of kids) { try { process.kill(k, 'SIGKILL'); } catch { /* gone */ } }
    await waitFor(() => child.exitCode !== null || child.signalCode !== null, 'python/forkd to exit');
  }
});

test('-e sets the workers\' environment; --chdir sets where the app is found', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--chdir', APPS, '-e', 'FOO=bar baz', 'probe.js']);
  try {
    assert.is((await request(`${f.url}/env`)).body, JSON.stringify({ FOO: 'bar baz', spec: null }));
  } finally {
    await f.kill();
  }
});

test.run();
