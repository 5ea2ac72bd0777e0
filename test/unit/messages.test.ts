import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isFromSuccessor, isFromWorker, isToWorker } from '../../src/ipc/messages';

test('each side takes only the messages of its union', () => {
  assert.ok(isToWorker({ type: 'balance', fairShare: 3 }));
  assert.ok(isToWorker({ type: 'reopenLogs' }));
  assert.not.ok(isToWorker({ type: 'beat' }), 'a worker\'s own message is not one to it');
  assert.ok(isFromWorker({ type: 'beat', inFlight: 0 }));
  assert.not.ok(isFromWorker({ type: 'balance' }));
  assert.ok(isFromSuccessor({ type: 'upgraded', pid: 1, kept: [] }));
  for (const junk of [null, undefined, 'balance', 7, {}, { type: 'toString' }, { type: 'constructor' }, { type: ['balance'] }]) {
    assert.not.ok(isToWorker(junk) || isFromWorker(junk) || isFromSuccessor(junk), JSON.stringify(junk));
  }
});

test.run();
