/** TLS served by the workers (issue 12, first part): certificates made with openssl for the test,
 *  https on a TCP bind with certfile, http:// binds and Unix sockets plain beside it, and bad TLS
 *  input refused at start with exit 78 naming the file. */

import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { connect as tlsConnect } from 'node:tls';
import https from 'node:https';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROOT, runForkd, startForkd, tempDir, waitFor } from '../helpers/forkd';
import { request } from '../helpers/http';
import { caAndClient, certificate } from '../helpers/tls';

const hello = join(ROOT, 'examples', 'hello.js');

function httpsGet(url: string, ca: string): Promise<{ status: number; body: string; protocol: string }> {
  return new Promise((ok, fail) => {
    const req = https.get(url, { ca, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => ok({ status: res.statusCode ?? 0, body, protocol: (res.socket as import('node:tls').TLSSocket).getProtocol?.() ?? '' }));
    });
    req.on('error', fail);
  });
}

test('with certfile, a TCP bind serves TLS from the workers; http:// and unix: binds stay plain', async () => {
  const dir = tempDir();
  const { cert, key } = certificate(dir.path, 'server');
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '-b', 'http://127.0.0.1:0', '-b', `unix:${join(dir.path, 'app.sock')}`,
    '--certfile', cert, '--keyfile', key, hello]);
  try {
    const urls = [...f.output().matchAll(/Listening at: (\S+)/g)].map((m) => m[1]!);
    assert.ok(urls[0]!.startsWith('https://127.0.0.1:'), urls.join(' '));
    assert.ok(urls[1]!.startsWith('http://127.0.0.1:'), urls.join(' '));
    const r = await httpsGet(`${urls[0]}/`, execFileSync('cat', [cert], { encoding: 'utf8' }));
    assert.is(r.status, 200);
    assert.match(r.body, /^Hello from forkd worker \d+/);
    assert.match(r.protocol, /^TLSv1\.[23]$/);
    assert.is((await request(`${urls[1]}/`)).status, 200, 'the http:// bind is plain');
    assert.match(f.output(), /TLS certificate: CN=server, serial [0-9A-F]+, SHA-256 [0-9A-F:]+, valid until /);
  } finally {
    await f.kill();
    dir.remove();
  }
});

/** The certificate a new TLS handshake with `port` gets now (asking for `servername`, when given). */
function servedCertificate(port: number, servername?: string): Promise<import('node:tls').PeerCertificate> {
  return new Promise((ok, fail) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ...(servername ? { servername } : {}), rejectUnauthorized: false }, () => {
      const cert = socket.getPeerCertificate();
      socket.end();
      ok(cert);
    });
    socket.on('error', fail);
  });
}
const servedSerial = async (port: number) => (await servedCertificate(port)).serialNumber;
const servedTo = async (port: number, servername: string) => String((await servedCertificate(port, servername)).subject.CN);

test('saving a new certificate and key over the old rotates them in every worker, which keep running', async () => {
  const dir = tempDir();
  const a = certificate(dir.path, 'a');
  const b = certificate(dir.path, 'b');
  const live = { cert: join(dir.path, 'live.pem'), key: join(dir.path, 'live.key') };
  copyFileSync(a.cert, live.cert);
  copyFileSync(a.key, live.key);
  const serialOf = (pem: string) => new X509Certificate(readFileSync(pem)).serialNumber;
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--certfile', live.cert, '--keyfile', live.key, hello]);
  try {
    const port = Number(/Listening at: https:\/\/127\.0\.0\.1:(\d+)/.exec(f.output())![1]);
    const workers = f.workers().sort();
    assert.is(await servedSerial(port), serialOf(a.cert));
    // Written one file at a time, as a deploy tool would: half-new for a moment.
    copyFileSync(b.cert, live.cert);
    copyFileSync(b.key, live.key);
    await waitFor(async () => (await servedSerial(port)) === serialOf(b.cert), 'the new certificate served');
    await f.waitForLog(new RegExp(`TLS certificate rotated \\(.*\\): CN=b, serial ${serialOf(b.cert)}`));
    assert.equal(f.workers().sort(), workers, 'no worker was restarted');
    // A bad pair is refused, and the one before serves on.
    copyFileSync(a.cert, live.cert);
    await f.waitForLog(/TLS certificates not rotated \(.*\): keyfile \S+ is not the key of certfile/, 10_000);
    assert.is(await servedSerial(port), serialOf(b.cert));
    // A HUP reads the files again: the bad pair fails the reload, and the service is as it was.
    f.signal('SIGHUP');
    await f.waitForLog(/Reload failed: .*keyfile \S+ is not the key of certfile/);
    assert.equal(f.workers().sort(), workers, 'the workers serve on');
    assert.is(await servedSerial(port), serialOf(b.cert));
  } finally {
    await f.kill();
    dir.remove();
  }
});

function mtlsGet(port: number, server: string, client: { cert: string; key: string } | null): Promise<string> {
  return new Promise((ok, fail) => {
    const req = https.get({ host: '127.0.0.1', port, path: '/', agent: false, ca: readFileSync(server),
      ...(client ? { cert: readFileSync(client.cert), key: readFileSync(client.key) } : {}) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => ok(body.trim()));
    });
    req.on('error', fail);
  });
}

test('mutual TLS: certReqs required refuses a client without a certificate; the app and the access log see the one given', async () => {
  const dir = tempDir();
  const server = certificate(dir.path, 'server');
  const client = caAndClient(dir.path, 'alice');
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '-b', 'http://127.0.0.1:0', '--certfile', server.cert, '--keyfile', server.key,
    '--ca-certs', client.ca, '--cert-reqs', 'required', '--access-logfile', '-', '--access-logformat', '%(U)s %(S)s "%(c)s"',
    join(ROOT, 'test', 'fixtures', 'apps', 'peer-cert.js')]);
  try {
    const port = Number(/Listening at: https:\/\/127\.0\.0\.1:(\d+)/.exec(f.output())![1]);
    const plain = /Listening at: (http:\S+)/.exec(f.output())![1]!;
    assert.is(await mtlsGet(port, server.cert, client), 'tls alice');
    await request(`${plain}/plain`);
    await waitFor(() => /^\/plain http "-"$/m.test(f.stdout()), 'the plain request logged');
    assert.match(f.stdout(), /^\/ https "CN=alice"$/m);
    let refused: Error | null = null;
    try { await mtlsGet(port, server.cert, null); } catch (err) { refused = err as Error; }
    assert.ok(refused, 'a client without a certificate is refused');
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('TERM drains a TLS request in flight: it is answered, and the worker then stops', async () => {
  const dir = tempDir();
  const { cert, key } = certificate(dir.path, 'server');
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--certfile', cert, '--keyfile', key, join(ROOT, 'test', 'fixtures', 'apps', 'probe.js')]);
  try {
    const url = /Listening at: (https:\/\/\S+)/.exec(f.output())![1]!;
    const mark = join(dir.path, 'arrived');
    const pending = httpsGet(`${url}/late?ms=1500&mark=${encodeURIComponent(mark)}`, readFileSync(cert, 'utf8'));
    await waitFor(() => existsSync(mark), 'the request to reach the app');
    f.signal('SIGTERM');
    const r = await pending;
    assert.is(r.status, 200);
    assert.match(r.body, /^late done/);
    assert.equal(await f.waitExit(), { code: 0, signal: null });
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('a TLS handshake under way at TERM is waited for and served; a TCP connection that never says hello does not hold the stop', async () => {
  const dir = tempDir();
  const { cert, key } = certificate(dir.path, 'server');
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--certfile', cert, '--keyfile', key, '--graceful-timeout', '30', hello]);
  const early = new net.Socket();
  const silent = new net.Socket();
  try {
    const port = Number(/Listening at: https:\/\/127\.0\.0\.1:(\d+)/.exec(f.output())![1]);
    const worker = f.workers()[0]!;
    for (const s of [early, silent]) await new Promise<void>((ok, fail) => { s.once('error', fail); s.connect(port, '127.0.0.1', ok); });
    // Accepted by the worker (its process holds them), not only queued by the kernel.
    await waitFor(() => (execFileSync('ss', ['-tnpH', 'state', 'established', `( sport = :${port} )`], { encoding: 'utf8' })
      .match(new RegExp(`pid=${worker},`, 'g')) ?? []).length === 2, 'the worker to accept both connections');
    f.signal('SIGTERM');
    const body = await new Promise<string>((ok, fail) => {
      https.get({ path: '/', createConnection: () => tlsConnect({ socket: early, ca: readFileSync(cert), servername: 'localhost' }) }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => { text += c; }).on('end', () => ok(`${res.statusCode} ${text}`));
      }).on('error', fail);
    });
    assert.match(body, /^200 Hello from forkd worker/);
    assert.equal(await f.waitExit(10_000), { code: 0, signal: null }, 'stopped well before gracefulTimeout (30 s)');
  } finally {
    early.destroy();
    silent.destroy();
    await f.kill();
    dir.remove();
  }
});

test('SNI: a client asking for a configured name gets its certificate (exactly or by *.name), any other the default', async () => {
  const dir = tempDir();
  const a = certificate(dir.path, 'a');
  const b = certificate(dir.path, 'b');
  const c = certificate(dir.path, 'c');
  writeFileSync(join(dir.path, 'forkd.config.json'), JSON.stringify({
    app: hello, workers: 1, bind: '127.0.0.1:0', certfile: a.cert, keyfile: a.key,
    sni: [{ servername: 'B.test', certfile: b.cert, keyfile: b.key }, { servername: '*.c.test', certfile: c.cert, keyfile: c.key }],
  }));
  const f = await startForkd([], { cwd: dir.path });
  try {
    const port = Number(/Listening at: https:\/\/127\.0\.0\.1:(\d+)/.exec(f.output())![1]);
    assert.is(await servedTo(port, 'b.test'), 'b');
    assert.is(await servedTo(port, 'www.c.test'), 'c');
    assert.is(await servedTo(port, 'elsewhere.test'), 'a');
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('10 rotations under load (new handshakes all along, and kept-alive connections): no request fails', async () => {
  const dir = tempDir();
  const pairs = [certificate(dir.path, 'r0'), certificate(dir.path, 'r1')];
  const live = { cert: join(dir.path, 'live.pem'), key: join(dir.path, 'live.key') };
  copyFileSync(pairs[0]!.cert, live.cert);
  copyFileSync(pairs[0]!.key, live.key);
  const serialOf = (pem: string) => new X509Certificate(readFileSync(pem)).serialNumber;
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--certfile', live.cert, '--keyfile', live.key, hello]);
  const fresh = new https.Agent({ keepAlive: false, rejectUnauthorized: false });
  const kept = new https.Agent({ keepAlive: true, maxSockets: 4, rejectUnauthorized: false });
  let running = true;
  const counts = { ok: 0, failed: 0, errors: [] as string[] };
  const client = async (agent: https.Agent, port: number) => {
    while (running) {
      await new Promise<void>((done) => {
        const req = https.get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
          res.resume();
          res.on('end', () => { if (res.statusCode === 200) counts.ok++; else counts.failed++; done(); });
        });
        req.on('error', (err) => { counts.failed++; counts.errors.push(err.message); done(); });
      });
    }
  };
  try {
    const port = Number(/Listening at: https:\/\/127\.0\.0\.1:(\d+)/.exec(f.output())![1]);
    const clients = [...Array.from({ length: 4 }, () => client(fresh, port)), ...Array.from({ length: 4 }, () => client(kept, port))];
    for (let i = 1; i <= 10; i++) {
      const next = pairs[i % 2]!;
      copyFileSync(next.cert, live.cert);
      copyFileSync(next.key, live.key);
      await waitFor(async () => (await servedSerial(port)) === serialOf(next.cert), `rotation ${i} served`);
      await waitFor(() => (f.output().match(/TLS certificate rotated/g)?.length ?? 0) >= i, `rotation ${i} logged`);
    }
    running = false;
    await Promise.all(clients);
    assert.is(counts.failed, 0, counts.errors.slice(0, 5).join('; '));
    assert.ok(counts.ok > 100, `requests made through the rotations: ${counts.ok}`);
  } finally {
    running = false;
    fresh.destroy();
    kept.destroy();
    await f.kill();
    dir.remove();
  }
});

test('a certificate ending within 14 days is warned about at start and at each reload, and a reload logs the live one', async () => {
  const dir = tempDir();
  const { cert, key } = certificate(dir.path, 'short', 5);
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--certfile', cert, '--keyfile', key, hello]);
  try {
    assert.match(f.output(), new RegExp(`WARNING\\] TLS certificate ${cert} expires in [45]\\.\\d days`));
    f.signal('SIGHUP');
    await waitFor(() => (f.output().match(/TLS certificate: CN=short, serial/g) ?? []).length === 2, 'the certificate logged at the reload');
    await waitFor(() => (f.output().match(/TLS certificate \S+ expires in/g) ?? []).length === 2, 'the warning at the reload');
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('bad TLS input is refused at start with exit 78, naming the file and what is wrong', async () => {
  const dir = tempDir();
  try {
    const a = certificate(dir.path, 'a');
    const b = certificate(dir.path, 'b');
    const old = certificate(dir.path, 'old', -1);
    const junk = join(dir.path, 'junk.pem');
    writeFileSync(junk, 'not a certificate\n');
    const cases: Array<[string[], RegExp]> = [
      [['--certfile', a.cert, '--keyfile', b.key], /keyfile \S+b\.key is not the key of certfile \S+a\.pem/],
      [['--certfile', join(dir.path, 'none.pem'), '--keyfile', a.key], /certfile \S+none\.pem: cannot read it \(ENOENT\)/],
      [['--certfile', junk, '--keyfile', a.key], /certfile \S+junk\.pem: not a PEM file/],
      [['--certfile', old.cert, '--keyfile', old.key], /certfile \S+old\.pem expired on \d{4}-\d\d-\d\dT/],
      [['--certfile', a.cert], /keyfile is missing: TLS needs both certfile and keyfile/],
      [['--certfile', a.cert, '--keyfile', a.key, '--cert-reqs', 'required'], /certReqs required needs caCerts/],
      [['--certfile', a.cert, '--keyfile', a.key, '--tls-min-version', 'TLSv1.1'], /tlsMinVersion/],
    ];
    for (const [args, said] of cases) {
      const r = await runForkd(['-b', '127.0.0.1:0', ...args, hello]);
      assert.is(r.code, 78, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stdout + r.stderr, said);
    }
  } finally {
    dir.remove();
  }
});

test.run();
