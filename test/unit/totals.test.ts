/** What a worker counts between beats (ipc/tally.ts) and what the master keeps of it for its
 *  lifetime (arbiter/totals.ts): counts only go up, across worker exits and a USR2 handover. */

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Totals, exitReason } from '../../src/arbiter/totals';
import { addTally, codeClass, DURATION_BUCKETS_S, emptyTally, observe, readTally } from '../../src/ipc/tally';
import type { LifecycleEvent } from '../../src/arbiter/events';

const exited = (reason: string | null, signal: NodeJS.Signals | null = null): LifecycleEvent => ({
  type: 'worker.exited', worker: { pid: 1, nr: 1, generation: 1 }, code: signal ? null : 0, signal, reason,
});

test('a response lands in its status class and its duration bucket, the bound inclusive', () => {
  const t = emptyTally();
  observe(t, 200, 5);      // 0.005 s: the first bucket (le="0.005")
  observe(t, 204, 5.01);   // just above: the second
  observe(t, 404, 20_000); // above 10 s: +Inf
  observe(t, 101, 1);
  observe(t, 503, 1);
  observe(t, 700, 1);      // outside 100..599: counted as a 5xx
  assert.equal(t.codes, [1, 2, 0, 1, 2]);
  assert.is(t.buckets.length, DURATION_BUCKETS_S.length + 1);
  assert.is(t.buckets[0], 4);
  assert.is(t.buckets[1], 1);
  assert.is(t.buckets[DURATION_BUCKETS_S.length], 1);
  assert.ok(Math.abs(t.sumS - 20.01301) < 1e-9);
  assert.equal([codeClass(99), codeClass(100), codeClass(599), codeClass(600)], [4, 0, 4, 4]);
});

test('tallies add up, and one that is not a tally is refused', () => {
  const a = emptyTally();
  const b = emptyTally();
  observe(a, 200, 1);
  observe(b, 500, 1);
  b.shed = 3;
  addTally(a, b);
  assert.equal(a.codes, [0, 1, 0, 0, 1]);
  assert.is(a.shed, 3);
  assert.ok(readTally(JSON.parse(JSON.stringify(a))));
  for (const junk of [null, {}, { ...a, codes: [1, 2] }, { ...a, sumS: -1 }, { ...a, codes: [0, 0, 0, 0, Infinity] }, { ...a, shed: '1' }]) {
    assert.is(readTally(junk), null, JSON.stringify(junk));
  }
});

test('totals keep what an exited worker reported, and a successor goes on from them', () => {
  const old = new Totals();
  const t = emptyTally();
  observe(t, 200, 3);
  observe(t, 200, 3);
  old.add(1, t);
  old.add(2, t);
  old.follow(exited('reloaded'));
  old.follow(exited(null, 'SIGKILL'));
  old.follow(exited(null));
  old.follow({ type: 'reload.done', generation: 2, workers: 2, status: { serving: 2, wanted: 2, generation: 2, lastReload: { ok: true } } });
  assert.is(old.requestsOf(1), 2);
  assert.equal(Object.fromEntries(old.exits()), { reloaded: 1, SIGKILL: 1, crash: 1 });

  const next = new Totals();
  const mine = emptyTally();
  observe(mine, 404, 1);
  next.add(1, mine);
  next.adopt(JSON.parse(JSON.stringify(old.toJSON())));
  assert.equal(next.requests().get(1), [0, 2, 0, 1, 0]);
  assert.is(next.requestsOf(2), 2);
  assert.is(next.all().buckets[0], 5);
  assert.equal(next.reloads(), { ok: 1, failed: 0 });
  assert.is(next.exits().get('SIGKILL'), 1);
  assert.is(exitReason(exited('retired', 'SIGTERM') as Extract<LifecycleEvent, { type: 'worker.exited' }>), 'retired');
});

test.run();
