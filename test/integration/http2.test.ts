/** HTTP/2 by ALPN on TLS listeners (the http2 setting), with real h2 clients: curl --http2, nghttp
 *  (Debian's nghttp2-client), and Node's http2 client for load. h2 and HTTP/1.1 on one port;
 *  streams in flight through a reload and a stop; a reload and recycling under h2 load with no
 *  failed stream; an app that cannot run on the compatibility API; the refusal without TLS. */

import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import http2 from 'node:http2';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, runForkd, startForkd, tempDir, waitFor } from '../helpers/forkd';
import { h2Load } from '../helpers/h2';
import { certificate } from '../helpers/tls';

/** Runs `cmd` to its end (killed, by pid, at `timeoutMs` or when the test leaves early). */
function run(cmd: string, args: readonly string[], timeoutMs = 20_000): { done: Promise<{ code: number | null; stdout: string; stderr: string }>; kill(): void } {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c; });
  child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
  const kill = () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); };
  const timer = setTimeout(kill, timeoutMs);
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((ok, fail) => {
    child.on('error', fail);
    child.on('close', (code) => { clearTimeout(timer); ok({ code, stdout, stderr }); });
  });
  return { done, kill };
}

const httpsUrl = (output: string) => /Listening at: (https:\/\/127\.0\.0\.1:\d+)/.exec(output)![1]!;

test('--http2: curl gets h2 and HTTP/1.1 from one port; a fetch handler gets its Request over h2; the access log says HTTP/2.0 and https', async () => {
  const dir = tempDir();
  const { cert, key } = certificate(dir.path, 'server');
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--certfile', cert, '--keyfile', key, '--http2',
    '--access-logfile', '-', '--access-logformat', '%(h)s "%(r)s" %(s)s %(b)s %(S)s', join(APPS, 'fetch.mjs')]);
  try {
    const url = httpsUrl(f.output());
    const h2 = await run('curl', ['-sS', '--cacert', cert, '--http2', '-D', '-', `${url}/over-h2`]).done;
    assert.is(h2.code, 0, h2.stderr);
    assert.match(h2.stdout, /^HTTP\/2 200/);
    assert.match(h2.stdout, new RegExp(`x-url: ${url}/over-h2`), 'the Request URL has the https scheme and the :authority');
    assert.is(h2.stdout.match(/^set-cookie: /gm)?.length, 2);
    assert.match(h2.stdout, /\r\n\r\nfetch ok \/over-h2$/);
    const posted = await run('curl', ['-sS', '--cacert', cert, '--http2', '--data-binary', 'a body', `${url}/`]).done;
    assert.is(posted.stdout, 'fetch got a body');
    const h1 = await run('curl', ['-sS', '--cacert', cert, '--http1.1', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', `${url}/over-h1`]).done;
    assert.is(h1.stdout, '1.1 200', 'an HTTP/1.1 client is served on the same port');
    await waitFor(() => /^127\.0\.0\.1 "GET \/over-h2 HTTP\/2\.0" 200 17 https$/m.test(f.stdout()), `the h2 request logged: ${f.stdout()}`);
    await waitFor(() => /^127\.0\.0\.1 "GET \/over-h1 HTTP\/1\.1" 200 17 https$/m.test(f.stdout()), `the HTTP/1.1 request logged: ${f.stdout()}`);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('streams in flight on one h2 connection are all answered through a HUP (GOAWAY, then the old workers stop) and through TERM', async () => {
  const dir = tempDir();
  const { cert, key } = certificate(dir.path, 'server');
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--certfile', cert, '--keyfile', key, '--http2', join(APPS, 'probe.js')]);
  let nghttp: ReturnType<typeof run> | null = null;
  try {
    const url = httpsUrl(f.output());
    const mark = join(dir.path, 'arrived');
    const old = f.workers();
    // 20 streams at once on one connection, each answered 1.5 s after it arrives.
    const urls = Array.from({ length: 20 }, (_, i) => `${url}/late?ms=1500&n=${i}&mark=${mark}`);
    nghttp = run('nghttp', ['-n', '-s', ...urls]);
    await waitFor(() => existsSync(mark), 'the streams arrived');
    f.signal('SIGHUP');
    const r = await nghttp.done;
    assert.is(r.code, 0, r.stdout + r.stderr);
    const answered = r.stdout.split('\n').filter((l) => /^\s*\d+\s+\S+\s+\S+\s+\S+\s+200\s/.test(l));
    assert.is(answered.length, 20, r.stdout);
    await waitFor(() => f.workers().length === 1 && !old.includes(f.workers()[0]!), 'the old worker replaced');
    // TERM: a stream in flight is answered, and forkd then exits 0.
    const curl = run('curl', ['-sS', '--cacert', cert, '--http2', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', `${url}/late?ms=1000&mark=${mark}.2`]);
    await waitFor(() => existsSync(`${mark}.2`), 'the stream arrived');
    f.signal('SIGTERM');
    const c = await curl.done;
    assert.is(c.stdout, '2 200', c.stderr);
    assert.is((await f.waitExit()).code, 0);
  } finally {
    nghttp?.kill();
    await f.kill();
    dir.remove();
  }
});

test('HUP three times and recycling by maxRequests, under h2 load (16 sessions, 8 streams each): no stream fails', async () => {
  const dir = tempDir();
  const { cert, key } = certificate(dir.path, 'server');
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--certfile', cert, '--keyfile', key, '--http2',
    '--max-requests', '3000', join(APPS, 'probe.js')]);
  try {
    const url = httpsUrl(f.output());
    const running = h2Load(url, { clients: 16, streams: 8, durationMs: 5000, ca: readFileSync(cert, 'utf8'), path: '/' });
    for (let i = 1; i <= 3; i++) {
      await new Promise((ok) => setTimeout(ok, 1200));
      f.signal('SIGHUP');
    }
    const r = await running;
    assert.is(r.failed, 0, `failed streams: ${r.errors.join('; ')}`);
    assert.ok(r.ok > 1000, `${r.ok} streams answered`);
    assert.ok(r.goaways >= 3, `${r.goaways} sessions were told to go away`);
    // The master handles each HUP in turn, after the reload before it: the third may be logged after the load.
    await f.waitForLog(/(Handling signal: HUP[^]*){3}/);
    assert.match(f.output(), /max requests/i);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('h2 edges: an app error over a connection header answers 500 and the worker serves on; a cancelled HEAD stream leaves the session to its keep-alive', async () => {
  const dir = tempDir();
  const { cert, key } = certificate(dir.path, 'server');
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--certfile', cert, '--keyfile', key, '--http2',
    '--keep-alive', '1', join(APPS, 'probe.js')]);
  const session = http2.connect(httpsUrl(f.output()), { ca: readFileSync(cert, 'utf8') });
  session.on('error', () => undefined);
  try {
    const url = httpsUrl(f.output());
    const worker = f.workers()[0];
    const te = await run('curl', ['-sS', '--cacert', cert, '--http2', '-o', '/dev/null', '-w', '%{http_code}', `${url}/te`]).done;
    assert.is(te.stdout, '500', te.stderr);
    const after = await run('curl', ['-sS', '--cacert', cert, '--http2', `${url}/`]).done;
    assert.is(after.stdout, `ok ${worker}\n`, 'the same worker serves on');
    // HEAD, cancelled before the app answers: once its stream is gone the session is idle, and
    // keep-alive (1 s) sends GOAWAY.
    const goaway = new Promise<number>((ok) => session.once('goaway', () => ok(performance.now())));
    const head = session.request({ ':method': 'HEAD', ':path': '/late?ms=1500' });
    head.on('error', () => undefined);
    await new Promise((ok) => setTimeout(ok, 200));
    head.close(http2.constants.NGHTTP2_CANCEL);
    const cancelledAt = performance.now();
    const at = await Promise.race([goaway, new Promise<number>((ok) => setTimeout(() => ok(-1), 6000))]);
    assert.ok(at > 0 && at - cancelledAt < 4000, `GOAWAY ${at < 0 ? 'never came' : `came ${Math.round(at - cancelledAt)} ms after the cancel`}`);
  } finally {
    session.destroy();
    await f.kill();
    dir.remove();
  }
});

test('an Express app under --http2 is served HTTP/1.1 only, with a warning; http2 without TLS is refused (exit 78)', async () => {
  const dir = tempDir();
  const { cert, key } = certificate(dir.path, 'server');
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--certfile', cert, '--keyfile', key, '--http2', join(APPS, 'express.js')]);
  try {
    const url = httpsUrl(f.output());
    const r = await run('curl', ['-sS', '--cacert', cert, '--http2', '-w', ' %{http_version}', `${url}/`]).done;
    assert.is(r.stdout, 'express ok 1.1', r.stderr);
    assert.match(f.output(), /WARNING\] http2 is on, but Express cannot run on Node's HTTP\/2 compatibility API/);
  } finally {
    await f.kill();
  }
  try {
    const refused = await runForkd(['-b', '127.0.0.1:0', '--http2', join(APPS, 'probe.js')]);
    assert.is(refused.code, 78);
    assert.match(refused.stderr, /http2 needs certfile and keyfile/);
  } finally {
    dir.remove();
  }
});

test.run();
