/** Worker identity, for the app: FORKD_WORKER_NUMBER (1..N, kept by the worker that replaces one),
 *  FORKD_GENERATION (one more per reload), FORKD_THREAD (1..threads) and NODE_APP_INSTANCE (PM2's
 *  0-based name), in every worker and thread; and a forkd started with them in its environment (an
 *  app's worker that runs a forkd of its own) does not take them for unknown settings. */

import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, startForkd, waitFor, type Forkd } from '../helpers/forkd';
import { request } from '../helpers/http';

const probe = join(APPS, 'probe.js');

interface Identity { pid: number; FORKD_WORKER_NUMBER: string | null; FORKD_GENERATION: string | null; FORKD_THREAD: string | null; NODE_APP_INSTANCE: string | null }

const identity = async (f: Forkd) => JSON.parse((await request(`${f.url}/identity`, { headers: { connection: 'close' }, agent: false })).body) as Identity;

/** What each pid of `f` says it is, once `pids` answered (new connections spread over the workers). */
async function identities(f: Forkd, pids: readonly number[]): Promise<Map<number, Identity>> {
  const seen = new Map<number, Identity>();
  await waitFor(async () => {
    const who = await identity(f);
    seen.set(who.pid, who);
    return pids.every((p) => seen.has(p)) || null;
  }, `workers ${pids.join(', ')} to answer`, 15_000, 0);
  return seen;
}

test('every worker knows its number (stable when it is replaced), its generation, its thread and NODE_APP_INSTANCE', async () => {
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', probe]);
  try {
    const first = await identities(f, f.workers());
    const numbers = [...first.values()].map((w) => w.FORKD_WORKER_NUMBER).sort();
    assert.equal(numbers, ['1', '2']);
    for (const w of first.values()) {
      assert.is(w.NODE_APP_INSTANCE, String(Number(w.FORKD_WORKER_NUMBER) - 1));
      assert.is(w.FORKD_GENERATION, '1');
      assert.is(w.FORKD_THREAD, '1');
    }
    // Worker 1 killed: the one that takes its place is worker 1 again, of the same generation.
    const one = [...first.values()].find((w) => w.FORKD_WORKER_NUMBER === '1')!;
    process.kill(one.pid, 'SIGKILL');
    const replaced = await waitFor(() => f.workers().find((p) => !first.has(p)), 'a replacement worker');
    const after = await identities(f, [replaced]);
    assert.is(after.get(replaced)!.FORKD_WORKER_NUMBER, '1');
    assert.is(after.get(replaced)!.NODE_APP_INSTANCE, '0');
    assert.is(after.get(replaced)!.FORKD_GENERATION, '1');
    // A reload: generation 2, numbered 1 and 2 again.
    f.signal('SIGHUP');
    await f.waitForLog(/Reload complete: generation 2/);
    const second = await identities(f, await waitFor(() => (f.workers().length === 2 && f.workers().every((p) => !first.has(p) && p !== replaced) ? f.workers() : null), 'the old generation to leave'));
    assert.equal([...second.values()].map((w) => [w.FORKD_WORKER_NUMBER, w.FORKD_GENERATION]).sort(), [['1', '2'], ['2', '2']]);
  } finally {
    await f.kill();
  }
});

test('under threads each serving thread knows its index, and shares its worker\'s number', async () => {
  const f = await startForkd(['-w', '1', '--threads', '2', '-b', '127.0.0.1:0', probe]);
  try {
    const threads = new Set<string>();
    await waitFor(async () => {
      const who = await identity(f);
      assert.is(who.FORKD_WORKER_NUMBER, '1');
      threads.add(who.FORKD_THREAD!);
      return threads.size === 2 || null;
    }, 'both threads to answer', 15_000, 0);
    assert.equal([...threads].sort(), ['1', '2']);
  } finally {
    await f.kill();
  }
});

test('a forkd started with a worker\'s identity in its environment (a worker running a forkd of its own) starts, and its workers get their own', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', probe], {
    env: { FORKD_WORKER_NUMBER: '7', FORKD_GENERATION: '9', FORKD_THREAD: '3', NODE_APP_INSTANCE: '6' },
  });
  try {
    const who = await identity(f);
    assert.equal([who.FORKD_WORKER_NUMBER, who.FORKD_GENERATION, who.FORKD_THREAD, who.NODE_APP_INSTANCE], ['1', '1', '1', '0']);
  } finally {
    await f.kill();
  }
});

test.run();
