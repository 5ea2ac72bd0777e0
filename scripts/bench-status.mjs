#!/usr/bin/env node
// The status listener at scale: forkd with 64 workers (examples/hello.js), every one of which has
// served and reported, scraped on /metrics as Prometheus would. Prints the median time of a whole
// scrape (request to the last byte, over --scrapes scrapes after one to warm up), the exposition's
// size, and the master's resident memory (VmRSS in /proc/PID/status) after the scrapes. Exits 1
// when a target is missed (the targets: a scrape's median under 100 ms, the master under 80 MiB).
// Usage: npm run build && node scripts/bench-status.mjs [--workers 64] [--scrapes 5]
// Loopback only; every process it starts is ended by pid, also when it is interrupted.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const arg = (name, dflt) => { const i = process.argv.indexOf(name); return i > 0 ? Number(process.argv[i + 1]) : dflt; };
const WORKERS = arg('--workers', 64);
const SCRAPES = arg('--scrapes', 5);
const TARGET_SCRAPE_MS = 100;
const TARGET_MASTER_MB = 80;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function children(pid) {
  try { return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number); } catch { return []; }
}
/** The `field` of /proc/PID/status (VmRSS, RssAnon, RssFile, VmHWM), in MiB. */
function statusMb(pid, field) {
  return Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
}
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

/** GET `url` with a fresh connection; resolves with the body and the milliseconds to its end. */
function get(url, headers = {}) {
  return new Promise((ok, fail) => {
    const t0 = performance.now();
    const req = http.get(url, { agent: false, headers, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c) => { body += c; }).on('end', () => ok({ status: res.statusCode, body, ms: performance.now() - t0 }));
    });
    req.on('timeout', () => req.destroy(new Error(`${url}: timed out`)));
    req.on('error', fail);
  });
}

async function waitFor(probe, what, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try { if (await probe()) return; } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

const forkd = spawn(process.execPath, [join(root, 'bin', 'forkd.js'), '-w', String(WORKERS), '-b', '127.0.0.1:0', '--status-bind', '127.0.0.1:0',
  join(root, 'examples', 'hello.js')], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
let out = '';
forkd.stdout.on('data', (c) => { out += c; });
forkd.stderr.on('data', (c) => { out += c; });
const seen = new Set();
function stop() {
  for (const pid of [...children(forkd.pid), ...seen]) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  if (forkd.exitCode === null && forkd.signalCode === null) { try { process.kill(forkd.pid, 'SIGKILL'); } catch { /* gone */ } }
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => { stop(); process.stderr.write(`bench-status: ${sig}: stopped forkd (${forkd.pid}) and its workers\n`); process.exit(1); });
}

let failed = false;
try {
  await waitFor(() => /Ready: \d+ workers serving/.test(out) || forkd.exitCode !== null, `${WORKERS} workers to serve`, 180_000);
  if (forkd.exitCode !== null) throw new Error(`forkd exited:\n${out}`);
  for (const pid of children(forkd.pid)) seen.add(pid);
  const app = /Listening at: (http:\/\/\S+)/.exec(out)[1];
  const status = /Status at: (http:\/\/\S+)/.exec(out)[1];
  const series = (text, name) => text.split('\n').filter((l) => l.startsWith(`${name}{`)).length;
  // Requests over new connections until every worker has served, then one beat for their reports.
  let requests = 0;
  await waitFor(async () => {
    requests += 32;
    await Promise.all(Array.from({ length: 32 }, () => get(`${app}/`, { connection: 'close' })));
    const text = (await get(`${status}/metrics`)).body;
    return series(text, 'forkd_requests_total') === WORKERS * 5 && series(text, 'forkd_worker_resident_memory_bytes') === WORKERS;
  }, 'every worker to serve and report', 120_000);
  await get(`${status}/metrics`);
  const times = [];
  let bytes = 0;
  for (let i = 0; i < SCRAPES; i++) {
    const r = await get(`${status}/metrics`);
    if (r.status !== 200) throw new Error(`/metrics answered ${r.status}`);
    times.push(r.ms);
    bytes = Buffer.byteLength(r.body);
  }
  const scrapeMs = median(times);
  const masterMb = statusMb(forkd.pid, 'VmRSS');
  const [anon, file, peak] = ['RssAnon', 'RssFile', 'VmHWM'].map((f) => statusMb(forkd.pid, f).toFixed(1));
  const verdict = (ok) => (ok ? 'met' : 'MISSED');
  console.log(`workers: ${WORKERS}, all serving and reporting after ${requests} requests; /metrics ${(bytes / 1024).toFixed(0)} KiB, ${times.length} scrapes`);
  console.log(`scrapes (ms): ${times.map((t) => t.toFixed(1)).join(' ')}`);
  console.log(`median scrape: ${scrapeMs.toFixed(1)} ms (target < ${TARGET_SCRAPE_MS} ms: ${verdict(scrapeMs < TARGET_SCRAPE_MS)})`);
  console.log(`master VmRSS: ${masterMb.toFixed(1)} MiB (target < ${TARGET_MASTER_MB} MiB: ${verdict(masterMb < TARGET_MASTER_MB)}); anonymous ${anon}, files ${file}, peak ${peak}`);
  failed = scrapeMs >= TARGET_SCRAPE_MS || masterMb >= TARGET_MASTER_MB;
} catch (err) {
  console.error(`bench-status: ${err.message}`);
  failed = true;
} finally {
  stop();
}
process.exitCode = failed ? 1 : 0;
