/** Behind the real proxies a user puts in front of forkd: HAProxy sending the PROXY protocol (v1
 *  and v2) to a TCP and a Unix listener, nginx's stream module sending it, nginx (its workers as
 *  www-data) over a Unix socket with X-Forwarded-For. What a user's Express app and the access log
 *  see is the client's address; the client connects from 127.0.0.77, the proxies from 127.0.0.1. */

import { chmodSync, readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, startForkd, tempDir, waitFor, type Forkd } from '../helpers/forkd';
import { freePort, freePorts, rawExchange, request } from '../helpers/http';
import { parseMetrics, sumOf } from '../helpers/metrics';
import { childUsers, startHaproxy, startNginx, type Peer } from '../helpers/peers';
import { certificate } from '../helpers/tls';

const app = join(APPS, 'whoami-express.js');
const CLIENT = '127.0.0.77';

interface Seen { ip?: string; remoteAddress?: string; remotePort?: number; protocol: string }

/** GET `url` from CLIENT: what the app saw, and the client's own port. */
function ask(url: string, headers: Record<string, string> = {}, ca?: string): Promise<{ status: number; seen: Seen | null; port: number; body: string }> {
  return new Promise((ok, fail) => {
    let port = 0;
    const get = url.startsWith('https:') ? https.get : http.get;
    const req = get(url, { localAddress: CLIENT, headers, agent: false, ca }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => {
        let seen: Seen | null = null;
        try { seen = JSON.parse(body) as Seen; } catch { /* not the app's */ }
        ok({ status: res.statusCode ?? 0, seen, port, body });
      });
    });
    req.on('socket', (s: net.Socket) => s.once('connect', () => { port = s.localPort ?? 0; }));
    req.on('error', fail);
    req.setTimeout(10_000, () => req.destroy(new Error('no answer in 10 s')));
  });
}

/** The access log lines of requests from CLIENT's forkd, as `%(h)s %(S)s "%(r)s" %(s)s`. */
const FORMAT = ['--access-logfile', '-', '--access-logformat', '%(h)s %(S)s "%(r)s" %(s)s'];

/** nginx's workers run as www-data: each starts as root, for the moment between its fork and its setuid. */
async function workersAreWwwData(nginx: Peer): Promise<void> {
  await waitFor(() => { const c = childUsers(nginx.pid); return (c.length > 0 && c.every((w) => w.user === 'www-data')) || null; },
    'nginx\'s workers to run as www-data');
}

async function statusUrl(f: Forkd): Promise<string> {
  return (await f.waitForLog(/Status at: (http:\/\/\S+)/))[1]!;
}

test('HAProxy with send-proxy-v2 to a TCP listener and send-proxy (v1) to a Unix one: Express\'s req.ip, the socket\'s address and port, and the access log are the client\'s; a connection without a header never reaches the app, and is counted', async () => {
  const dir = tempDir();
  const sock = join(dir.path, 'app.sock');
  const { cert, key } = certificate(dir.path, 'server');
  const f = await startForkd(['-w', '1', '-b', 'http://127.0.0.1:0', '-b', 'https://127.0.0.1:0', '-b', `unix:${sock}`,
    '--certfile', cert, '--keyfile', key, '--proxy-protocol', 'auto',
    '--status-bind', '127.0.0.1:0', '--log-level', 'debug', ...FORMAT, app]).catch((err: Error) => { dir.remove(); throw err; });
  const peers: Peer[] = [];
  try {
    const forkdPort = Number(new URL(f.url).port);
    const tlsPort = Number(/Listening at: https:\/\/127\.0\.0\.1:(\d+)/.exec(f.output())![1]);
    const [v2, v1, v2tls] = await freePorts(3) as [number, number, number];
    peers.push(await startHaproxy(dir.path, [
      `frontend v2\n  bind 127.0.0.1:${v2}\n  default_backend forkd_tcp`,
      `backend forkd_tcp\n  server s1 127.0.0.1:${forkdPort} send-proxy-v2`,
      `frontend v1\n  bind 127.0.0.1:${v1}\n  default_backend forkd_unix`,
      `backend forkd_unix\n  server s1 unix@${sock} send-proxy`,
      // TLS passed through: the header comes before the handshake, which forkd's worker terminates.
      `frontend v2tls\n  bind 127.0.0.1:${v2tls}\n  default_backend forkd_tls`,
      `backend forkd_tls\n  server s1 127.0.0.1:${tlsPort} send-proxy-v2`,
    ].join('\n'), [v2, v1, v2tls]));
    const ca = readFileSync(cert, 'utf8');
    for (const [port, path, scheme] of [[v2, '/v2', 'http'], [v1, '/v1', 'http'], [v2tls, '/v2tls', 'https']] as const) {
      const r = await ask(`${scheme}://127.0.0.1:${port}${path}`, {}, ca);
      assert.is(r.status, 200, r.body);
      assert.equal(r.seen, { ip: CLIENT, remoteAddress: CLIENT, remotePort: r.port, protocol: scheme }, `through ${path}`);
      await f.waitForLog(new RegExp(`^${CLIENT.replace(/\./g, '\\.')} ${scheme} "GET ${path} HTTP/1\\.1" 200$`, 'm'));
    }
    // A LOCAL header (a proxy's health check): served with the proxy's own address.
    const local = await rawExchange(forkdPort, Buffer.concat([Buffer.from('0d0a0d0a000d0a515549540a20000000', 'hex'),
      Buffer.from('GET /local HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')]), 500);
    assert.match(local.data, /^HTTP\/1\.1 200 /);
    await f.waitForLog(/^127\.0\.0\.1 http "GET \/local HTTP\/1\.1" 200$/m);
    // Straight to forkd, no header: closed before HTTP, logged at debug with the peer, counted.
    const direct = await request(f.url).then((r) => `answered ${r.status}`, (err: Error) => err.message);
    assert.match(direct, /socket hang up|ECONNRESET/);
    await f.waitForLog(/connection closed: no PROXY header \(v1 or v2\) where the connection starts.* peer=127\.0\.0\.1/);
    const status = await statusUrl(f);
    await waitFor(async () => sumOf(parseMetrics((await request(`${status}/metrics`)).body), 'forkd_proxy_protocol_refused_total') >= 1,
      'forkd_proxy_protocol_refused_total to count it');
    assert.not.match(f.output(), /GET \/ HTTP\/1\.1/, 'the app never had it');
    // A connection that says nothing is closed at the header's deadline, 5 s.
    const opened = performance.now();
    const silent = await rawExchange(forkdPort, '', 8000);
    const after = performance.now() - opened;
    assert.ok(silent.closed && after >= 4900 && after < 7900, `a silent connection was ${silent.closed ? `closed after ${Math.round(after)} ms` : 'never closed'}`);
    await f.waitForLog(/connection closed: no PROXY header within 5 s/);
  } finally {
    for (const p of peers) await p.stop();
    await f.kill();
    dir.remove();
  }
});

test('nginx\'s stream module with proxy_protocol on (its workers as www-data): the client\'s address; a proxy outside proxyAllowIps is refused', async () => {
  const dir = tempDir();
  const started: Forkd[] = [];
  let nginx: Peer | null = null;
  try {
    const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--proxy-protocol', 'v1', ...FORMAT, app]);
    started.push(f);
    const untrusted = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--proxy-protocol', 'v1', '--proxy-allow-from', '10.0.0.0/8,fd00::/8',
      '--log-level', 'debug', ...FORMAT, app]);
    started.push(untrusted);
    const [a, b] = await freePorts(2) as [number, number];
    nginx = await startNginx(dir.path, {
      stream: `server { listen 127.0.0.1:${a}; proxy_pass 127.0.0.1:${new URL(f.url).port}; proxy_protocol on; }\n`
        + `server { listen 127.0.0.1:${b}; proxy_pass 127.0.0.1:${new URL(untrusted.url).port}; proxy_protocol on; }`,
    }, [a, b]);
    await workersAreWwwData(nginx);
    const r = await ask(`http://127.0.0.1:${a}/stream`);
    assert.equal(r.seen, { ip: CLIENT, remoteAddress: CLIENT, remotePort: r.port, protocol: 'http' });
    await f.waitForLog(/^127\.0\.0\.77 http "GET \/stream HTTP\/1\.1" 200$/m);
    const refused = await ask(`http://127.0.0.1:${b}/nope`).then((x) => `answered ${x.status}`, (err: Error) => err.message);
    assert.match(refused, /socket hang up|ECONNRESET/);
    await untrusted.waitForLog(/connection closed: a peer outside proxyAllowIps.* peer=127\.0\.0\.1/);
    assert.not.match(untrusted.output(), /GET \/nope/, 'the app never had it');
  } finally {
    await nginx?.stop();
    for (const f of started) await f.kill();
    dir.remove();
  }
});

test('nginx (workers as www-data) over forkd\'s Unix socket: reachable with the default socketMode, X-Forwarded-For gives Express and the access log the client, a spoofed one is not believed; a socket only root may use gets 502 and a warning that says so; one of group www-data is reached', async () => {
  const dir = tempDir();
  const sock = join(dir.path, 'app.sock');
  const port = await freePort();
  // The README's example, with this test's socket and port.
  const conf = (socket: string) => ({
    http: `upstream app { server unix:${socket}; keepalive 32; }\n`
      + `server { listen 127.0.0.1:${port}; location / { proxy_pass http://app; proxy_http_version 1.1; `
      + 'proxy_set_header Connection ""; proxy_set_header Host $host; '
      + 'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme; } }',
  });
  let nginx: Peer | null = null;
  // Where a user's socket lives (/run/app, say) anyone may pass through; nginx needs that too.
  chmodSync(dir.path, 0o755);
  const f = await startForkd(['-w', '1', '-b', `unix:${sock}`, ...FORMAT, app]).catch((err: Error) => { dir.remove(); throw err; });
  try {
    nginx = await startNginx(dir.path, conf(sock), [port]);
    await workersAreWwwData(nginx);
    assert.match(f.output(), /is srw-rw-rw- root:root: any local user can connect/);
    const r = await ask(`http://127.0.0.1:${port}/xff`);
    assert.is(r.status, 200, r.body);
    assert.is(r.seen?.ip, CLIENT, 'Express (trust proxy 1) reads the client from X-Forwarded-For');
    await f.waitForLog(/^127\.0\.0\.77 http "GET \/xff HTTP\/1\.1" 200$/m);
    // The client's own X-Forwarded-For comes first in nginx's: neither Express nor forkd believes it.
    const spoof = await ask(`http://127.0.0.1:${port}/spoof`, { 'x-forwarded-for': '6.6.6.6' });
    assert.is(spoof.seen?.ip, CLIENT);
    await f.waitForLog(/^127\.0\.0\.77 http "GET \/spoof HTTP\/1\.1" 200$/m);
  } finally {
    await nginx?.stop();
    await f.kill();
  }
  // Only root may connect: nginx's workers are refused, and forkd said so at start.
  const closed = join(dir.path, 'closed.sock');
  const g = await startForkd(['-w', '1', '-b', `unix:${closed}`, '--socket-mode', '600', app]).catch((err: Error) => { dir.remove(); throw err; });
  try {
    assert.match(g.output(), /\[WARNING\] unix:\S+closed\.sock is srw------- root:root: only root can connect/);
    nginx = await startNginx(dir.path, conf(closed), [port]);
    const r = await ask(`http://127.0.0.1:${port}/`);
    assert.is(r.status, 502);
    assert.match(nginx.output(), /connect\(\) to unix:\S+closed\.sock failed \(13: Permission denied\)/);
  } finally {
    await nginx?.stop();
    await g.kill();
  }
  // Narrowed to nginx's group, as the README shows: www-data's workers connect, and the log says who can.
  const shared = join(dir.path, 'shared.sock');
  const h = await startForkd(['-w', '1', '-b', `unix:${shared}`, '--socket-mode', '660', '--socket-group', 'www-data', app])
    .catch((err: Error) => { dir.remove(); throw err; });
  try {
    assert.match(h.output(), /unix:\S+shared\.sock is srw-rw---- root:www-data: root and group www-data can connect/);
    nginx = await startNginx(dir.path, conf(shared), [port]);
    assert.is((await ask(`http://127.0.0.1:${port}/group`)).seen?.ip, CLIENT);
  } finally {
    await nginx?.stop();
    await h.kill();
    dir.remove();
  }
});

test('forwardedAllowIps: X-Forwarded-For and Forwarded from a trusted peer give the access log the client and scheme; from any other peer they are plain headers', async () => {
  const trusting = await startForkd(['-w', '1', '-b', '127.0.0.1:0', ...FORMAT, app]);
  const strict = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--forwarded-allow-ips', '10.0.0.0/8', ...FORMAT, app])
    .catch(async (err: Error) => { await trusting.kill(); throw err; });
  try {
    await request(`${trusting.url}/a`, { headers: { 'x-forwarded-for': '203.0.113.9, 127.0.0.1', 'x-forwarded-proto': 'https' } });
    await trusting.waitForLog(/^203\.0\.113\.9 https "GET \/a HTTP\/1\.1" 200$/m);
    await request(`${trusting.url}/b`, { headers: { forwarded: 'for=192.0.2.60;proto=https, for="[2001:db8::1]:4711"' } });
    await trusting.waitForLog(/^2001:db8::1 https "GET \/b HTTP\/1\.1" 200$/m);
    await request(`${trusting.url}/c`, { headers: { 'x-forwarded-for': 'unknown, 127.0.0.1' } });
    await trusting.waitForLog(/^127\.0\.0\.1 http "GET \/c HTTP\/1\.1" 200$/m);
    // A client's own Forwarded, passed through by a proxy that writes X-Forwarded-For: not read.
    await request(`${trusting.url}/e`, { headers: { forwarded: 'for=6.6.6.6;proto=https', 'x-forwarded-for': '198.51.100.7' } });
    await trusting.waitForLog(/^198\.51\.100\.7 http "GET \/e HTTP\/1\.1" 200$/m);
    // The client's X-Forwarded-For line first, the proxy's own after it (HAProxy's option forwardfor): the proxy's counts.
    const twoLines = await rawExchange(Number(new URL(trusting.url).port),
      'GET /f HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 198.51.100.8\r\nConnection: close\r\n\r\n', 500);
    assert.match(twoLines.data, /^HTTP\/1\.1 200 /);
    await trusting.waitForLog(/^198\.51\.100\.8 http "GET \/f HTTP\/1\.1" 200$/m);
    await request(`${strict.url}/d`, { headers: { 'x-forwarded-for': '6.6.6.6', 'x-forwarded-proto': 'https', forwarded: 'for=6.6.6.6' } });
    await strict.waitForLog(/^127\.0\.0\.1 http "GET \/d HTTP\/1\.1" 200$/m);
  } finally {
    await strict.kill();
    await trusting.kill();
  }
});

test.run();
