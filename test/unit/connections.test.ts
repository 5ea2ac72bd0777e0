import { Socket } from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Connections } from '../../src/worker/connections';

test('removal from the middle moves the last into its place, and each is still found', () => {
  const held = new Connections();
  const sockets = [new Socket(), new Socket(), new Socket(), new Socket()];
  for (const s of sockets) held.add(s);
  assert.is(held.size, 4);
  assert.ok(held.remove(sockets[1]!));
  assert.is(held.size, 3);
  assert.equal(held.all().map((c) => c.socket), [sockets[0], sockets[3], sockets[2]]);
  for (const [i, conn] of held.all().entries()) assert.is(conn.index, i);
  assert.is(held.get(sockets[3]!)?.socket, sockets[3]);
  assert.is(held.get(sockets[1]!), undefined);
  assert.not.ok(held.remove(sockets[1]!), 'a second remove finds nothing');
  assert.ok(held.remove(sockets[2]!), 'the last one');
  assert.ok(held.remove(sockets[0]!));
  assert.ok(held.remove(sockets[3]!));
  assert.is(held.size, 0);
});

test('a socket held by another unit\'s list is not this one\'s', () => {
  const a = new Connections();
  const b = new Connections();
  const s = new Socket();
  const t = new Socket();
  a.add(s);
  b.add(t);
  assert.is(b.get(s), undefined);
  assert.not.ok(b.remove(s));
  assert.is(a.size, 1);
});

test('a record starts unseen by the drain and unshed', () => {
  const held = new Connections();
  const s = new Socket();
  held.add(s);
  assert.equal({ ...held.get(s)!, socket: null }, { socket: null, index: 0, seq: 1, idleSinceMs: 0, lastBytesRead: -1, shed: false, session: null, streams: null });
  const t = new Socket();
  held.add(t);
  assert.is(held.get(t)!.seq, 2, 'accepted later, a higher seq');
  assert.is(held.lastSeq, 2);
});

test.run();
