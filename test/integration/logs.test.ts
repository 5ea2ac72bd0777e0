import { existsSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, startForkd, tempDir, waitFor } from '../helpers/forkd';
import { rawExchange, request, requestUnix } from '../helpers/http';

const probe = join(APPS, 'probe.js');

function lines(path: string): string[] {
  return existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter(Boolean) : [];
}

test('access log to a file, in gunicorn\'s format, with the body size even when chunked', async () => {
  const dir = tempDir();
  const access = join(dir.path, 'access.log');
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--access-logfile', access, probe]);
  try {
    await request(`${f.url}/chunked?x=1`, { headers: { 'user-agent': 'tester/1', referer: 'http://ref/' } });
    await request(`${f.url}/throw`);
    const all = await waitFor(() => (lines(access).length >= 2 ? lines(access) : null), 'two access log lines');
    // Each worker writes its own lines (buffered, flushed within 50 ms): with two workers the
    // second request's line may come first.
    const log = [all.find((l) => l.includes('/chunked')) ?? '', all.find((l) => l.includes('/throw')) ?? ''];
    assert.match(log[0]!, /^127\.0\.0\.1 - - \[\d{2}\/\w{3}\/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] "GET \/chunked\?x=1 HTTP\/1\.1" 200 7 "http:\/\/ref\/" "tester\/1"$/);
    assert.match(log[1]!, /"GET \/throw HTTP\/1\.1" 500 /);
    assert.not.match(f.output(), 'GET /chunked', 'the access log is not in the error log');
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('access log "-" is stdout; json is one object a line', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--access-logfile', '-', '--access-logformat', 'json', probe]);
  try {
    await request(`${f.url}/count`, { headers: { 'user-agent': 'json-tester' } });
    await f.waitForLog(/"json-tester"/);
    const m = /^\{.*"json-tester".*\}$/m.exec(f.stdout());
    assert.ok(m, `the access log line is on stdout: ${f.stdout()}`);
    const entry = JSON.parse(m[0]) as Record<string, unknown>;
    assert.is(entry.method, 'GET');
    assert.is(entry.url, '/count');
    assert.is(entry.status, 200);
    assert.type(entry.duration_ms, 'number');
  } finally {
    await f.kill();
  }
});

test('the access log times each request, and logs one whose client left before the answer, when it left', async () => {
  const dir = tempDir();
  const access = join(dir.path, 'access.log');
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--access-logfile', access, '--access-logformat', '%(r)s %(s)s %(D)s', probe]);
  try {
    await request(`${f.url}/late?ms=300`);
    const [timed] = await waitFor(() => (lines(access).length ? lines(access) : null), 'the first access log line');
    const m = /^GET \/late\?ms=300 HTTP\/1\.1 200 (\d+)$/.exec(timed!);
    assert.ok(m, timed);
    // A 300 ms timer may fire up to a millisecond early, as libuv counts whole milliseconds.
    assert.ok(Number(m[1]) >= 295_000 && Number(m[1]) < 10_000_000, `%(D)s is microseconds from arrival to the end: ${timed}`);
    // The app answers after 5 s; the client leaves after its request has reached the app.
    const port = Number(new URL(f.url).port);
    const mark = join(dir.path, 'arrived');
    const client = connect(port, '127.0.0.1');
    client.on('error', () => undefined);
    client.write(`GET /late?ms=5000&mark=${mark} HTTP/1.1\r\nHost: a\r\n\r\n`);
    await waitFor(() => existsSync(mark), 'the request to reach the app');
    client.destroy();
    const left = await waitFor(() => lines(access)[1], 'a line for the request whose client left', 3000);
    assert.match(left, /^GET \/late\?ms=5000&mark=\S+ HTTP\/1\.1 200 \d+$/);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('a client cannot forge or colour log lines: request bytes are escaped', async () => {
  const dir = tempDir();
  const access = join(dir.path, 'access.log');
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--access-logfile', access, probe]);
  try {
    const port = Number(new URL(f.url).port);
    // obs-text bytes pass Node's parser; 0x9b is the one-byte CSI that starts a terminal escape.
    const evil = Buffer.concat([
      Buffer.from('GET /x HTTP/1.1\r\nHost: a\r\nUser-Agent: ok" 200 1 "-" "x\x9b31m\xff\r\nReferer: ', 'latin1'),
      Buffer.from([0x9b]), Buffer.from('2J\r\nConnection: close\r\n\r\n'),
    ]);
    const reply = await rawExchange(port, evil);
    assert.match(reply.data, /^HTTP\/1\.1 200/);
    const [line] = await waitFor(() => (lines(access).length ? lines(access) : null), 'the access log line');
    assert.not.match(line!, /[\x00-\x1f\x7f-\x9f]/, 'no control character reaches the log');
    assert.ok(line!.includes('"ok\\" 200 1 \\"-\\" \\"x\\x9b31m\xff"'), line);
    assert.ok(line!.includes('"\\x9b2J"'), line);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('--error-logfile gets the master\'s and the workers\' lines; --log-level filters them', async () => {
  const dir = tempDir();
  const errors = join(dir.path, 'error.log');
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--error-logfile', errors, '--log-level', 'debug', probe], { logFile: errors });
  try {
    await waitFor(() => lines(errors).some((l) => l.includes('Ready: 2 workers serving')), 'the ready line in the file');
    const log = lines(errors);
    assert.ok(log.some((l) => /\[DEBUG\] Worker \d ready/.test(l)));
    assert.is(log.filter((l) => l.includes('Booting worker with pid')).length, 2);
    const pids = new Set(log.map((l) => /^\[[^\]]+\] \[(\d+)\]/.exec(l)?.[1]));
    assert.ok(pids.size >= 3, 'lines from the master and both workers');
    assert.is(f.stdio(), '', 'nothing on stderr');
  } finally {
    await f.kill();
    dir.remove();
  }
  const quiet = tempDir();
  const sock = join(quiet.path, 's.sock');
  const g = await startForkd(['-w', '1', '-b', `unix:${sock}`, '--log-level', 'warning', probe], { wait: 'none' });
  try {
    await waitFor(() => requestUnix(sock).then((r) => r.status === 200, () => false), 'forkd to serve');
    await requestUnix(sock, '/throw');
    await g.waitForLog(/\[ERROR\] app error/);
    assert.not.match(g.output(), '[INFO]');
  } finally {
    await g.kill();
    quiet.remove();
  }
});

test.run();
