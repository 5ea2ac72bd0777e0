// The master's lifecycle, driven with fake worker processes and a fake clock: the worker state
// machine refuses illegal transitions, and a reload emits its events in order (begun, the new
// workers spawned, ready, done), or ends in failed with its reason.
import type { ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Arbiter } from '../../src/arbiter/arbiter';
import type { LifecycleEvent, Subscriber } from '../../src/arbiter/events';
import { createEventStream } from '../../src/arbiter/events';
import { createLoop } from '../../src/arbiter/loop';
import type { SpawnRequest } from '../../src/arbiter/spawn';
import { IllegalTransition, stopPlans, WorkerHandle } from '../../src/arbiter/worker-handle';
import { ConfigError } from '../../src/config/errors';
import { durationsMs } from '../../src/config/durations';
import type { Loaded } from '../../src/config/load';
import { resolveLayers } from '../../src/config/layers';
import { createLogger } from '../../src/log/logger';

/** A worker process that is not one: no pid (so no signal is ever sent), messages on demand. */
class FakeChild extends EventEmitter {
  readonly pid = undefined;
  connected = true;
  readonly sent: unknown[] = [];
  send(msg: unknown, ...rest: unknown[]): boolean {
    this.sent.push(msg);
    const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
    cb?.();
    return true;
  }
}

const isIllegal = (e: unknown) => e instanceof IllegalTransition;

const handle = (child = new FakeChild()) => new WorkerHandle({
  child: child as unknown as ChildProcess, nr: 1, generation: 1, nowMs: 0, listeners: [], threads: 1,
});

test('a worker goes booting → serving → replacing → serving → stopping → exited', () => {
  const h = handle();
  assert.is(h.state, 'booting');
  h.ready(5, null);
  assert.is(h.state, 'serving');
  assert.is(h.readyAtMs, 5);
  h.replace('reload');
  assert.is(h.state, 'replacing');
  assert.is(h.replacedFor, 'reload');
  h.holdRecycle('maxRequests');
  assert.is(h.restore(), 'maxRequests', 'a recycle held back during the reload comes back');
  assert.is(h.state, 'serving');
  h.stop(stopPlans.graceful(30_000), 'TERM', 10);
  h.stop(stopPlans.quick(30_000), 'INT', 20);
  assert.is(h.state, 'stopping');
  assert.is(h.endReason, 'TERM', 'the first reason is kept');
  assert.is(h.killAtMs, 2020, 'a second stop only brings the kill nearer');
  assert.not.ok(h.killIfOverdue(2019));
  assert.ok(h.killIfOverdue(2020));
  assert.ok(h.exited());
  assert.not.ok(h.exited(), 'an exit is noted once');
});

test('illegal transitions are refused and change nothing', () => {
  const booting = handle();
  assert.throws(() => booting.replace('recycle'), (e: unknown) => e instanceof IllegalTransition && /from booting to replacing/.test((e as Error).message));
  assert.throws(() => booting.restore(), isIllegal);
  assert.is(booting.state, 'booting');
  const stopping = handle();
  stopping.stop(stopPlans.graceful(1000), 'TERM', 0);
  assert.throws(() => stopping.ready(1, null), isIllegal);
  assert.throws(() => stopping.replace('reload'), isIllegal);
  assert.is(stopping.state, 'stopping');
  const exited = handle();
  exited.exited();
  assert.throws(() => exited.ready(1, null), isIllegal);
  exited.stop(stopPlans.graceful(1000), 'TERM', 0); // stopping what has exited is nothing to do
  assert.is(exited.state, 'exited');
  assert.is(exited.endReason, null);
});

test('the event stream tells subscribers in order, waits for promises, and survives a throw', async () => {
  const errors: string[] = [];
  const stream = createEventStream((err) => errors.push((err as Error).message));
  const seen: string[] = [];
  stream.subscribe(() => { seen.push('a'); throw new Error('a broke'); });
  stream.subscribe(() => new Promise<void>((ok) => setTimeout(() => { seen.push('slow'); ok(); }, 20)));
  stream.subscribe(() => { seen.push('c'); });
  await stream.emit({ type: 'logs.reopened' });
  assert.equal(seen, ['a', 'c', 'slow']);
  assert.equal(errors, ['a broke']);
});

/** A master over fake workers: every worker reports ready at once unless `failBoot` says not. */
function master(opts: { readConfig?: () => Promise<Loaded>; failBoot?: (req: SpawnRequest) => boolean; also?: Subscriber } = {}) {
  // Port 0: a reload opens the config's binds for real (these fake workers hold none), and the
  // default 127.0.0.1:8000 may be in use on the machine (a README example running), failing it.
  const resolved = resolveLayers({ cli: { app: { value: 'app.js', flag: 'APP' }, workers: { value: '2', flag: '--workers' }, errorLog: { value: '/dev/null', flag: '--error-logfile' },
    bind: { value: ['127.0.0.1:0'], flag: '--bind' } }, env: {}, file: null });
  const loaded: Loaded = { ...resolved, file: null, durationsMs: durationsMs(resolved.config), snapshot: null, tls: null };
  let now = 0;
  const events: LifecycleEvent[] = [];
  const loop = createLoop();
  const arbiter = new Arbiter({
    loaded, listeners: [], loop, startCwd: process.cwd(), pidfile: null, identity: null,
    log: createLogger({ target: loaded.config.errorLog, level: 'debug' }),
    readConfig: opts.readConfig ?? (async () => loaded),
    onExit: () => undefined,
    clock: { now: () => now },
    subscribers: [(e) => { events.push(e); }, ...(opts.also ? [opts.also] : [])],
    spawn: (req) => {
      const child = new FakeChild();
      setImmediate(() => {
        if (opts.failBoot?.(req)) child.emit('exit', 1, null);
        else child.emit('message', { type: 'ready', inspectPort: null });
      });
      return new WorkerHandle({ child: child as unknown as ChildProcess, nr: req.nr, generation: req.generation, nowMs: now, listeners: [], threads: 1 });
    },
  });
  const until = async (what: string, done: () => boolean) => {
    const deadline = Date.now() + 5000;
    while (!done()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; events: ${events.map((e) => e.type).join(', ')}`);
      // The fake clock runs at 4× (faster, and the deadlines' 100 ms ticks would see a stalled master).
      now += 20;
      await new Promise((ok) => setTimeout(ok, 5));
    }
  };
  const stop = async () => {
    loop.push('SIGQUIT');
    for (const h of arbiter.workers()) (h.child as unknown as FakeChild).emit('exit', 0, null);
    await until('the master to exit', () => events.some((e) => e.type === 'master.exiting'));
  };
  const types = () => events.map((e) => e.type);
  /** Starts the master, sends HUP once it serves, and returns how the reload failed. */
  const failedReload = async () => {
    arbiter.start();
    await until('ready', () => types().includes('master.ready'));
    loop.push('SIGHUP');
    await until('the reload to fail', () => types().includes('reload.failed'));
    return events.find((e) => e.type === 'reload.failed') as Extract<LifecycleEvent, { type: 'reload.failed' }>;
  };
  return { arbiter, loop, events, until, stop, types, failedReload, loaded };
}

test('a reload emits begun → the new workers spawned → ready → done, in that order', async () => {
  const m = master();
  m.arbiter.start();
  try {
    await m.until('ready', () => m.types().includes('master.ready'));
    const from = m.events.length;
    m.loop.push('SIGHUP');
    await m.until('the reload', () => m.types().includes('reload.done'));
    const reload = m.events.slice(from).filter((e) => ['reload.begun', 'worker.spawned', 'worker.ready', 'reload.done'].includes(e.type));
    assert.equal(reload.map((e) => e.type), ['reload.begun', 'worker.spawned', 'worker.spawned', 'worker.ready', 'worker.ready', 'reload.done']);
    const done = reload.at(-1) as Extract<LifecycleEvent, { type: 'reload.done' }>;
    assert.equal({ generation: done.generation, workers: done.workers }, { generation: 2, workers: 2 });
    for (const e of reload) if (e.type === 'worker.spawned' || e.type === 'worker.ready') assert.is(e.worker.generation, 2);
  } finally {
    await m.stop();
  }
});

test('a reload with an invalid config ends in failed, with the reason', async () => {
  let reads = 0;
  const m = master({ readConfig: async () => { reads++; throw new ConfigError('workers: must be a whole number'); } });
  try {
    const failed = await m.failedReload();
    assert.is(failed.reason, 'invalid config: workers: must be a whole number');
    assert.is(failed.generation, 1);
    assert.is(reads, 1);
    assert.not.ok(m.events.some((e) => e.type === 'worker.spawned' && e.worker.generation === 2), 'no worker of a generation 2');
  } finally {
    await m.stop();
  }
});

test('a reload whose new worker fails to boot ends in failed, and generation 1 serves on', async () => {
  const m = master({ failBoot: (req) => req.generation === 2 });
  try {
    const failed = await m.failedReload();
    assert.match(failed.reason, /^a new worker failed to boot: it exited with code 1 before it was ready/);
    assert.equal(m.arbiter.workers().filter((h) => h.state === 'serving').map((h) => h.generation), [1, 1]);
  } finally {
    await m.stop();
  }
});

test('a reload reads the config only once what follows reload.begun is done (how onReload is waited for)', async () => {
  const order: string[] = [];
  let loaded: Loaded | null = null;
  const m = master({
    readConfig: async () => { order.push('config read'); return loaded!; },
    also: (e) => (e.type === 'reload.begun'
      ? new Promise<void>((ok) => setTimeout(() => { order.push('reload.begun followed'); ok(); }, 100)) : undefined),
  });
  loaded = m.loaded;
  m.arbiter.start();
  try {
    await m.until('ready', () => m.types().includes('master.ready'));
    m.loop.push('SIGHUP');
    await m.until('the reload', () => m.types().includes('reload.done'));
    assert.equal(order, ['reload.begun followed', 'config read']);
  } finally {
    await m.stop();
  }
});

test('the loop: commands one at a time in order; USR1 runs at once, even behind a long command; a stop is told as it arrives', async () => {
  const loop = createLoop();
  const ran: string[] = [];
  const interrupted: string[] = [];
  let finishLong!: () => void;
  loop.onInterrupt((sig) => interrupted.push(sig));
  loop.start(async (item) => {
    if (typeof item === 'function') { await item(); return; }
    ran.push(item);
  }, () => undefined);
  loop.push(() => new Promise<void>((ok) => { ran.push('long begins'); finishLong = () => { ran.push('long ends'); ok(); }; }));
  loop.push('SIGTTIN');
  loop.push('SIGUSR1');
  loop.push('SIGTERM');
  await new Promise((ok) => setImmediate(ok));
  assert.equal(ran, ['long begins', 'SIGUSR1'], 'USR1 did not wait; TTIN and TERM did');
  assert.equal(interrupted, ['SIGTERM'], 'the stop was told as it arrived');
  finishLong();
  await new Promise((ok) => setTimeout(ok, 10));
  assert.equal(ran, ['long begins', 'SIGUSR1', 'long ends', 'SIGTTIN', 'SIGTERM']);
});

test.run();
