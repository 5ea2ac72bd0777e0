/** statsd as a statsd server sees it: a real UDP listener on 127.0.0.1 (and a Unix datagram one)
 *  receives gunicorn's metric names from the workers and the master, with the prefix and the
 *  dogstatsd tags; a worker that stops sends what it still holds; a statsd server that is not
 *  there costs the requests nothing. */

import dgram from 'node:dgram';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, startForkd, tempDir, waitFor, type Forkd } from '../helpers/forkd';
import { load, request } from '../helpers/http';
import { listenForNotify } from '../helpers/notify';

const probe = join(APPS, 'probe.js');

interface StatsdServer { readonly port: number; readonly lines: string[]; close(): void }

/** A statsd server on 127.0.0.1: every line of every datagram (a packet may hold several). */
async function statsdServer(): Promise<StatsdServer> {
  const socket = dgram.createSocket('udp4');
  const lines: string[] = [];
  socket.on('message', (m) => { lines.push(...m.toString('utf8').split('\n').filter(Boolean)); });
  await new Promise<void>((ok) => socket.bind(0, '127.0.0.1', ok));
  return { port: socket.address().port, lines, close: () => socket.close() };
}

/** The sum of the counter `name`'s increments among `lines`. */
function counted(lines: readonly string[], name: string): number {
  let n = 0;
  for (const l of lines) {
    const m = /^([^:]+):(\d+)\|c(?:\||$)/.exec(l);
    if (m && m[1] === name) n += Number(m[2]);
  }
  return n;
}

const TAGS = '|#env:test,team:web';

test('workers send requests, durations and statuses, the master the worker gauge: prefixed and tagged', async () => {
  const server = await statsdServer();
  let f: Forkd | null = null;
  try {
    f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--statsd-host', `127.0.0.1:${server.port}`,
      '--statsd-prefix', 'app', '--dogstatsd-tags', 'env:test,team:web', probe]);
    const url = f.url;
    const r = await load(`${url}/`, { connections: 4, durationMs: 20_000, keepAlive: false, until: (s) => s.sent >= 60 });
    assert.is(r.failed, 0, JSON.stringify(r.errors));
    assert.is(Object.keys(r.byWorker).length, 2, `both workers served: ${JSON.stringify(r.byWorker)}`);
    assert.is((await request(`${url}/throw`)).status, 500);
    const requests = r.ok + 1;

    const { lines } = server;
    const timings = () => lines.filter((l) => l.startsWith('app.forkd.request.duration:'));
    // A response's three lines may straddle two packets, the second sent at the next flush.
    const got = () => [counted(lines, 'app.forkd.requests'), timings().length, counted(lines, 'app.forkd.request.status.200'),
      counted(lines, 'app.forkd.request.status.500')];
    await waitFor(() => { const [n, t, ok, err] = got(); return n! >= requests && t! >= requests && ok! >= r.ok && err! >= 1; },
      `${requests} requests, durations and statuses counted (have ${got().join(', ')})`);
    assert.equal(got(), [requests, requests, r.ok, 1]);
    for (const t of timings()) assert.match(t, /^app\.forkd\.request\.duration:\d+(\.\d+)?\|ms\|#env:test,team:web$/);
    await waitFor(() => lines.includes(`app.forkd.workers:2|g${TAGS}`), 'the master\'s gauge to say 2 workers');
    await waitFor(() => counted(lines, 'app.forkd.log.error') === 1 && counted(lines, 'app.forkd.log.exception') === 1,
      'the app error logged by the worker counted, as an error with an exception');
    for (const l of lines) assert.match(l, /^app\.forkd\.[a-z0-9.]+:\d+(\.\d+)?\|(c|ms|g)\|#env:test,team:web$/);

    f.signal('SIGTTIN');
    await waitFor(() => lines.includes(`app.forkd.workers:3|g${TAGS}`), 'the gauge after a TTIN');
  } finally {
    await f?.kill();
    server.close();
  }
});

/** Why this Node cannot send Unix datagrams through hot-shots (its optional native unix-dgram is
 *  missing, or was built for another Node's ABI: node-gyp builds it against the headers it is
 *  given), or null when it can. forkd must then say so, and nothing else. */
const unixDgramMissing = (() => {
  try { require('unix-dgram'); return null; } catch (err) { return (err as Error).message.split('\n')[0]; }
})();

test('statsd over a Unix datagram socket: the workers send the requests, the master the gauge', async () => {
  if (unixDgramMissing !== null) {
    // Without the package: one line from each process that would send, naming it, and every request served.
    const dir = tempDir();
    const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--statsd-host', `unix:${join(dir.path, 'statsd.sock')}`, probe]);
    try {
      const r = await load(`${f.url}/`, { connections: 4, durationMs: 20_000, keepAlive: false, until: (s) => s.sent >= 20 });
      assert.is(r.failed, 0, JSON.stringify(r.errors));
      const said = () => [...f.output().matchAll(/\[(\d+)\] \[ERROR\] statsd: unix:\S+ needs the optional package unix-dgram, built for Node v/g)].map((m) => Number(m[1]));
      await waitFor(() => said().length >= 3, 'the master and both workers to say statsd needs unix-dgram');
      assert.is(new Set(said()).size, said().length, 'once each');
      f.signal('SIGTERM');
      assert.equal(await f.waitExit(), { code: 0, signal: null });
    } finally {
      await f.kill();
      dir.remove();
    }
    return;
  }
  const dir = tempDir();
  const path = join(dir.path, 'statsd.sock');
  const listener = await listenForNotify(path);
  let f: Forkd | null = null;
  try {
    f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--statsd-host', `unix:${path}`, probe]);
    const r = await load(`${f.url}/`, { connections: 4, durationMs: 20_000, keepAlive: false, until: (s) => s.sent >= 20 });
    assert.is(r.failed, 0, JSON.stringify(r.errors));
    const linesOf = (pids: readonly number[]) => listener.messages.filter((m) => pids.includes(m.pid)).flatMap((m) => m.text.split('\n'));
    const workers = Object.keys(r.byWorker).map(Number);
    const master = f.pid;
    await waitFor(() => counted(linesOf(workers), 'forkd.requests') === r.ok, `${r.ok} forkd.requests from the workers`);
    await waitFor(() => linesOf([master]).includes('forkd.workers:2|g'), 'the master to send the gauge');
    assert.is(counted(linesOf([master]), 'forkd.requests'), 0, 'and no requests');
    assert.not.match(f.output(), 'statsd: cannot send');
    // Its socket cannot be unref'd: the master ends all the same.
    f.signal('SIGTERM');
    assert.equal(await f.waitExit(), { code: 0, signal: null });
  } finally {
    await f?.kill();
    listener.close();
    dir.remove();
  }
});

/** What a process says when it cannot send statsd: a failed send, or (`unixPackage`: a unix:PATH
 *  this Node cannot send to, unixDgramMissing) the package it would need. */
const CANNOT_SEND = /\[(\d+)\] \[WARNING\] statsd: cannot send/g;
const NEEDS_PACKAGE = /\[(\d+)\] \[ERROR\] statsd: unix:\S+ needs the optional package unix-dgram/g;

/** The statsd warnings in `f`'s output, by the pid that logged them. */
function warningsByPid(f: Forkd, said: RegExp = CANNOT_SEND): Map<number, number> {
  const by = new Map<number, number>();
  for (const m of f.output().matchAll(said)) by.set(Number(m[1]), (by.get(Number(m[1])) ?? 0) + 1);
  return by;
}

test('a statsd host where nothing listens costs nothing: every request served, one warning at most', async () => {
  // A UDP port that was just free: datagrams to it are refused by the kernel.
  const closed = await statsdServer();
  const port = closed.port;
  closed.close();
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--statsd-host', `127.0.0.1:${port}`, probe]);
  try {
    const workers = f.workers();
    // Long enough for every process to flush its buffer twice or more.
    const r = await load(`${f.url}/`, { connections: 4, durationMs: 2500, keepAlive: true });
    assert.is(r.failed, 0, JSON.stringify(r.errors));
    assert.ok(r.ok > 0);
    assert.equal(f.workers().sort(), workers.sort(), 'no worker was lost');
    const warned = [...warningsByPid(f).values()];
    assert.ok(warned.reduce((a, b) => a + b, 0) <= 1, f.output());
  } finally {
    await f.kill();
  }
});

test('a statsd socket that is not there: each process says so once, and serves on', async () => {
  const dir = tempDir();
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--statsd-host', `unix:${join(dir.path, 'none.sock')}`, probe]);
  try {
    const r = await load(`${f.url}/`, { connections: 4, durationMs: 2500, keepAlive: false });
    assert.is(r.failed, 0, JSON.stringify(r.errors));
    const senders = [f.pid, ...Object.keys(r.byWorker).map(Number)];
    const said = unixDgramMissing === null ? CANNOT_SEND : NEEDS_PACKAGE;
    await waitFor(() => senders.every((p) => warningsByPid(f, said).get(p) === 1), `a warning from each of ${senders.join(', ')}`);
    // Another round of flushes, and still one each.
    const again = await load(`${f.url}/`, { connections: 4, durationMs: 1500, keepAlive: false });
    assert.is(again.failed, 0);
    for (const [pid, n] of warningsByPid(f, said)) assert.is(n, 1, `pid ${pid} warned ${n} times:\n${f.output()}`);
    assert.match(f.output(), unixDgramMissing === null ? `statsd: cannot send to unix:${join(dir.path, 'none.sock')}: `
      : `statsd: unix:${join(dir.path, 'none.sock')} needs the optional package unix-dgram`);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('a worker stopping sends what it has not sent yet: every request reaches statsd though TERM came at once', async () => {
  const server = await statsdServer();
  let f: Forkd | null = null;
  try {
    f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--statsd-host', `127.0.0.1:${server.port}`, probe]);
    const N = 20;
    const r = await load(`${f.url}/`, { connections: 2, durationMs: 10_000, keepAlive: false, until: (s) => s.sent >= N });
    assert.is(r.ok, N, JSON.stringify(r));
    // Within the workers' flush interval (1 s): what they counted is still in their buffers.
    f.signal('SIGTERM');
    assert.equal(await f.waitExit(), { code: 0, signal: null });
    await waitFor(() => counted(server.lines, 'forkd.requests') >= N, `${N} forkd.requests increments`, 3000)
      .catch((err: Error) => { throw new Error(`${err.message}; received:\n${server.lines.join('\n')}`); });
    assert.is(counted(server.lines, 'forkd.requests'), N);
  } finally {
    await f?.kill();
    server.close();
  }
});

test.run();
