/** requestDeadline: a response not finished within it is ended by forkd (503 before anything was
 *  written, 504 through a fetch handler whose Request.signal is aborted, the connection closed once
 *  the response had begun), the app told first, logged and counted, and the worker serves on; what
 *  the app writes afterwards is dropped. */

import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, startForkd, tempDir, waitFor } from '../helpers/forkd';
import { request } from '../helpers/http';
import { parseMetrics, sumOf } from '../helpers/metrics';

const probe = join(APPS, 'probe.js');

test('an async handler that does not answer in time: its client gets 503 at the deadline, the app gets \'deadline\', the worker serves others, and its late answer is dropped', async () => {
  const dir = tempDir();
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--status-bind', '127.0.0.1:0', '--request-deadline', '1', probe]);
  try {
    const status = (await f.waitForLog(/Status at: (http:\/\/\S+)/))[1]!;
    const [worker] = f.workers();
    const seen = join(dir.path, 'seen');
    const started = performance.now();
    const hung = request(`${f.url}/awaits?ms=2500&seen=${encodeURIComponent(seen)}`);
    // Meanwhile the worker answers others.
    assert.is((await request(`${f.url}/count`)).status, 200);
    const reply = await hung;
    const tookMs = performance.now() - started;
    assert.is(reply.status, 503);
    assert.match(reply.body, 'the request deadline passed');
    assert.is(reply.headers.connection, 'close');
    assert.ok(tookMs >= 950 && tookMs < 2400, `answered after ${Math.round(tookMs)} ms`);
    assert.is(readFileSync(seen, 'utf8'), 'deadline');
    await f.waitForLog(/\[WARNING\] request deadline \(1 s\) passed: GET \/awaits\?ms=2500&seen=\S+, running 1\.\d s, client 127\.0\.0\.1: answered 503/);
    await waitFor(async () => sumOf(parseMetrics((await request(`${status}/metrics`)).body), 'forkd_request_deadline_total') === 1, 'the counter to say 1');
    // The app's own answer comes at 2.5 s, into a response that is over: nothing breaks.
    await new Promise((ok) => setTimeout(ok, 2000));
    assert.equal(f.workers(), [worker]);
    assert.not.match(f.output(), /app error|Worker \(pid:\d+\) (exited|was killed)/);
    assert.is((await request(`${f.url}/count`)).status, 200);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('an app that answers when told of the deadline has answered; a \'deadline\' listener that throws is logged, and the worker lives', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--request-deadline', '1', probe]);
  try {
    const [worker] = f.workers();
    const own = await request(`${f.url}/awaits?ms=2500&answer=1`);
    assert.is(own.status, 202);
    assert.is(own.body, 'answered at the deadline\n');
    await f.waitForLog(/request deadline \(1 s\) passed: GET \/awaits\?ms=2500&answer=1, running 1\.\d s, client 127\.0\.0\.1: the app answered it when told/);
    const thrown = await request(`${f.url}/awaits?ms=2500&throw=1`);
    assert.is(thrown.status, 503);
    await f.waitForLog(/\[ERROR\] a 'deadline' listener threw .*a deadline listener that throws/);
    await new Promise((ok) => setTimeout(ok, 2000));
    assert.equal(f.workers(), [worker]);
    assert.is((await request(`${f.url}/count`)).status, 200);
  } finally {
    await f.kill();
  }
});

test('a response that had begun when its deadline passed has its connection closed', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--request-deadline', '1', probe]);
  try {
    const outcome = await new Promise<string>((ok) => {
      http.get(`${f.url}/slow?ms=4000`, (res) => {
        res.resume();
        res.once('end', () => ok('ended'));
        res.once('aborted', () => ok(`aborted after ${res.statusCode}`));
        res.once('error', () => ok(`aborted after ${res.statusCode}`));
      }).once('error', (err) => ok(err.message));
    });
    assert.is(outcome, 'aborted after 200');
    await f.waitForLog(/request deadline \(1 s\) passed: GET \/slow\?ms=4000, running 1\.\d s, client 127\.0\.0\.1: the response had begun: its connection was closed/);
    assert.is((await request(`${f.url}/count`)).status, 200);
  } finally {
    await f.kill();
  }
});

test('a fetch handler waiting on its Request.signal: aborted with a TimeoutError at the deadline, and its client gets 504', async () => {
  const dir = tempDir();
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--request-deadline', '1', join(APPS, 'fetch.mjs')]);
  try {
    const seen = join(dir.path, 'seen');
    const reply = await request(`${f.url}/awaits?seen=${encodeURIComponent(seen)}`);
    assert.is(reply.status, 504);
    await waitFor(() => existsSync(seen), 'the handler to see its signal abort');
    assert.is(readFileSync(seen, 'utf8'), 'TimeoutError');
    await f.waitForLog(/request deadline \(1 s\) passed: GET \/awaits\?seen=\S+, running 1\.\d s, client 127\.0\.0\.1: answered 504/);
    // The handler's rejection after its deadline is no app error.
    assert.not.match(f.output(), /\[ERROR\] app error/);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('without requestDeadline nothing is ended: a slow answer arrives', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', probe]);
  try {
    const reply = await request(`${f.url}/awaits?ms=1500`);
    assert.is(reply.status, 200);
    assert.is(reply.body, 'too late\n');
  } finally {
    await f.kill();
  }
});

test.run();
