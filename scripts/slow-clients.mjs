#!/usr/bin/env node
// Slow clients against a server while a normal client runs beside them: how long the normal
// client's requests take, whether any fails, and when the server closes each slow connection.
//
//   node scripts/slow-clients.mjs --url http://127.0.0.1:8000/ [--slow 2000] [--mode headers|body]
//     [--every 2000] [--duration 6000] [--gap 20] [--wait 12000] [--json]
//
// headers: each slow connection sends a request line, then one more header byte every --every ms,
// never ending its headers (slowloris). body: each sends whole headers announcing a 1 MB body, then
// one body byte every --every ms (slow POST). The normal client sends GET requests on new
// connections, one every --gap ms, for --duration ms. The run ends when every slow connection has
// been closed, or --wait ms after the normal client stopped. Bounded in time; loopback only.
import http from 'node:http';
import net from 'node:net';

const args = Object.fromEntries(process.argv.slice(2).reduce((out, a, i, all) => {
  if (a.startsWith('--')) out.push([a.slice(2), all[i + 1] && !all[i + 1].startsWith('--') ? all[i + 1] : 'true']);
  return out;
}, []));
const url = new URL(args.url ?? 'http://127.0.0.1:8000/');
const host = url.hostname;
const port = Number(url.port);
if (!['127.0.0.1', 'localhost', '::1'].includes(host)) throw new Error('loopback only');
const SLOW = Number(args.slow ?? 2000);
const MODE = args.mode ?? 'headers';
const EVERY = Number(args.every ?? 2000);
const DURATION = Number(args.duration ?? 6000);
const GAP = Number(args.gap ?? 20);
const WAIT = Number(args.wait ?? 12000);

const t0 = performance.now();
const now = () => performance.now() - t0;
const slow = [];

function openSlow(i) {
  const rec = { openedAt: -1, closedAt: -1, status: null, sent: 0 };
  slow.push(rec);
  const sock = net.connect(port, host);
  let timer = null;
  sock.setNoDelay(true);
  sock.on('connect', () => {
    rec.openedAt = now();
    sock.write(MODE === 'body'
      ? `POST /slow/${i} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n`
      : `GET /slow/${i} HTTP/1.1\r\nHost: x\r\nX-Slow: `);
    timer = setInterval(() => { if (sock.writable) { sock.write('a'); rec.sent++; } }, EVERY);
  });
  sock.setEncoding('latin1');
  sock.on('data', (d) => { rec.status ??= /^HTTP\/1\.1 (\d+)/.exec(d)?.[1] ?? 'other'; });
  const closed = () => { if (rec.closedAt < 0) rec.closedAt = now(); clearInterval(timer); sock.destroy(); };
  sock.on('close', closed);
  sock.on('error', closed);
  return sock;
}

function normalRequest() {
  const started = now();
  return new Promise((done) => {
    const req = http.get({ host, port, path: '/', agent: false, headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => done({ ms: now() - started, ok: res.statusCode === 200 }));
    });
    req.on('error', () => done({ ms: now() - started, ok: false }));
    req.setTimeout(10_000, () => req.destroy());
  });
}

const sockets = [];
// Opened in batches, so that the kernel's SYN queue is not what refuses them.
for (let i = 0; i < SLOW; i++) {
  sockets.push(openSlow(i));
  if (i % 200 === 199) await new Promise((r) => setTimeout(r, 20));
}
await new Promise((r) => setTimeout(r, 200));
const normal = [];
const inFlight = [];
const normalUntil = now() + DURATION;
while (now() < normalUntil) {
  inFlight.push(normalRequest().then((r) => normal.push(r)));
  await new Promise((r) => setTimeout(r, GAP));
}
await Promise.all(inFlight);
const deadline = now() + WAIT;
while (now() < deadline && slow.some((s) => s.closedAt < 0)) await new Promise((r) => setTimeout(r, 100));
for (const s of sockets) s.destroy();

const sorted = normal.map((r) => r.ms).sort((a, b) => a - b);
const pct = (p) => (sorted.length ? Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] * 10) / 10 : null);
const lifetimes = slow.filter((s) => s.openedAt >= 0 && s.closedAt >= 0).map((s) => s.closedAt - s.openedAt).sort((a, b) => a - b);
const statuses = {};
for (const s of slow) statuses[s.status ?? 'none'] = (statuses[s.status ?? 'none'] ?? 0) + 1;
const result = {
  normal: { requests: normal.length, failed: normal.filter((r) => !r.ok).length, p50Ms: pct(0.5), p99Ms: pct(0.99), maxMs: pct(1) },
  slow: {
    mode: MODE, connections: SLOW, connected: slow.filter((s) => s.openedAt >= 0).length,
    closedByServer: lifetimes.length, stillOpen: slow.filter((s) => s.openedAt >= 0 && s.closedAt < 0).length,
    lifetimeMs: lifetimes.length ? { min: Math.round(lifetimes[0]), median: Math.round(lifetimes[lifetimes.length >> 1]), max: Math.round(lifetimes.at(-1)) } : null,
    answered: statuses,
  },
};
if (args.json) console.log(JSON.stringify(result));
else console.log(JSON.stringify(result, null, 2));
