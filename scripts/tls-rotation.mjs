#!/usr/bin/env node
// Certificate rotation under load, as an operator does it: a test CA made with openssl, ten server
// certificates it signs (ten serials), forkd serving https with the first, and wrk over https with
// 50 connections, once with keep-alive and once with `Connection: close` (a handshake a request),
// while the certificate and key are copied over the live files ten times. After each rotation
// `openssl s_client` must see the new serial (within 5 s). Prints wrk's requests and socket errors
// for each run; exits 1 when a run had a socket error or a non-2xx answer, or a rotation was not
// seen. Usage: npm run build && node scripts/tls-rotation.mjs [--workers 2] [--every-ms 600]
// Loopback only; every process it starts is ended by pid, also when it is interrupted.
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';

const root = fileURLToPath(new URL('..', import.meta.url));
const arg = (name, dflt) => { const i = process.argv.indexOf(name); return i > 0 ? Number(process.argv[i + 1]) : dflt; };
const WORKERS = arg('--workers', 2);
const EVERY_MS = arg('--every-ms', 600);
const ROTATIONS = 10;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const dir = mkdtempSync(join(tmpdir(), 'forkd-rotation-'));
const started = [];
const endAll = () => { for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL'); };
process.on('SIGINT', () => { endAll(); rmSync(dir, { recursive: true, force: true }); process.exit(130); });

const ssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
ssl('req', '-x509', ...EC, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=forkd rotation test CA');
const pairs = [];
for (let i = 0; i <= ROTATIONS; i++) {
  ssl('req', '-new', ...EC, '-keyout', `s${i}.key`, '-out', `s${i}.csr`, '-subj', `/CN=localhost`);
  ssl('x509', '-req', '-in', `s${i}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `s${i}.pem`, '-days', '2');
  pairs.push({ cert: join(dir, `s${i}.pem`), key: join(dir, `s${i}.key`), serial: new X509Certificate(readFileSync(join(dir, `s${i}.pem`))).serialNumber });
}
const live = { cert: join(dir, 'live.pem'), key: join(dir, 'live.key') };
copyFileSync(pairs[0].cert, live.cert);
copyFileSync(pairs[0].key, live.key);

function startForkd() {
  const child = spawn(process.execPath, [join(root, 'bin', 'forkd.js'), '-w', String(WORKERS), '-b', '127.0.0.1:0',
    '--certfile', live.cert, '--keyfile', live.key, join(root, 'examples', 'hello.js')], { stdio: ['ignore', 'ignore', 'pipe'] });
  started.push(child);
  let log = '';
  child.stderr.setEncoding('utf8').on('data', (c) => { log += c; });
  return { child, log: () => log };
}

/** The serial a new handshake gets, as openssl s_client sees it. */
function servedSerial(port) {
  const out = execFileSync('sh', ['-c', `openssl s_client -connect 127.0.0.1:${port} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -serial`], { encoding: 'utf8' });
  return /serial=([0-9A-F]+)/.exec(out)?.[1] ?? '';
}

async function run(label, closeEach) {
  const f = startForkd();
  try {
    const deadline = Date.now() + 10_000;
    let m;
    while (!(m = /Ready: .*\n/.exec(f.log())) && Date.now() < deadline) await sleep(25);
    const port = Number(/Listening at: https:\/\/127\.0\.0\.1:(\d+)/.exec(f.log())?.[1]);
    if (!m || !port) throw new Error(`forkd did not start:\n${f.log()}`);
    const seconds = Math.ceil((ROTATIONS * EVERY_MS + 2000) / 1000);
    const wrk = spawn('wrk', ['-t', '2', '-c', '50', '-d', `${seconds}s`, ...(closeEach ? ['-H', 'Connection: close'] : []), `https://127.0.0.1:${port}/`], { stdio: ['ignore', 'pipe', 'pipe'] });
    started.push(wrk);
    let out = '';
    wrk.stdout.setEncoding('utf8').on('data', (c) => { out += c; });
    const wrkDone = new Promise((ok) => wrk.on('close', ok));
    await sleep(1000);
    let seen = 0;
    for (let i = 1; i <= ROTATIONS; i++) {
      copyFileSync(pairs[i].cert, live.cert);
      copyFileSync(pairs[i].key, live.key);
      const until = Date.now() + 5000;
      while (servedSerial(port) !== pairs[i].serial && Date.now() < until) await sleep(50);
      if (servedSerial(port) === pairs[i].serial) seen++;
      await sleep(EVERY_MS);
    }
    await wrkDone;
    const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
    const errors = /Socket errors: (.*)/.exec(out)?.[1] ?? 'none';
    const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
    const rotatedLogged = (f.log().match(/TLS certificate rotated/g) ?? []).length;
    console.log(`${label}: ${requests} requests, socket errors: ${errors}, non-2xx: ${non2xx}; rotations seen by s_client ${seen}/${ROTATIONS}, logged ${rotatedLogged}`);
    return errors === 'none' && non2xx === 0 && seen === ROTATIONS && requests > 0;
  } finally {
    f.child.kill('SIGTERM');
    copyFileSync(pairs[0].cert, live.cert);
    copyFileSync(pairs[0].key, live.key);
    await new Promise((ok) => (f.child.exitCode !== null ? ok() : f.child.on('close', ok)));
  }
}

let good = true;
try {
  good = (await run('keep-alive', false)) && good;
  good = (await run('Connection: close', true)) && good;
} finally {
  endAll();
  rmSync(dir, { recursive: true, force: true });
}
process.exit(good ? 0 : 1);
