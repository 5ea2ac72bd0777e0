#!/usr/bin/env node
// Drives a running forkd with wrk while it is reloaded: HUPs, a TTIN, a TTOU, an edit of its config
// file, and max-requests recycling, for keep-alive and for `Connection: close` traffic; then, in
// another run, USR2 binary upgrades (each successor master retires the one before). Prints the
// requests sent, socket errors and non-2xx responses of each run, and the same HUPs against a
// node:cluster server that reloads the usual way (fork new workers, disconnect the old ones).
// Usage: npm run build && node scripts/reload-under-load.mjs [--seconds 20] [--hups 10] [--connections 50]
// Needs wrk (Debian: apt-get install wrk). Every process it starts is ended by pid; loopback only.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { needWrk, startWrk } from './lib/wrk.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const arg = (name, dflt) => { const i = process.argv.indexOf(name); return i > 0 ? Number(process.argv[i + 1]) : dflt; };
const SECONDS = arg('--seconds', 20);
const HUPS = arg('--hups', 10);
const CONNECTIONS = arg('--connections', 50);

needWrk();

const freePort = () => new Promise((ok) => { const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => ok(port)); }); });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function start(cmd, args, opts, readyRe) {
  const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c) => { out += c; });
  child.stderr.on('data', (c) => { out += c; });
  const ready = new Promise((ok, fail) => {
    const t = setInterval(() => { if (readyRe.test(out)) { clearInterval(t); ok(); } }, 20);
    setTimeout(() => { clearInterval(t); fail(new Error(`not ready:\n${out}`)); }, 15000);
  });
  return { child, ready, output: () => out };
}

function stop(proc) {
  return new Promise((ok) => {
    if (proc.child.exitCode !== null) { ok(); return; }
    proc.child.once('exit', () => ok());
    proc.child.kill('SIGTERM');
    setTimeout(() => proc.child.kill('SIGKILL'), 10000).unref();
  });
}

function wrk(port, keepAlive) {
  const args = ['-t2', `-c${CONNECTIONS}`, `-d${SECONDS}s`, ...(keepAlive ? [] : ['-H', 'Connection: close']), `http://127.0.0.1:${port}/`];
  return startWrk(args).done;
}

/** Runs wrk for SECONDS while `actions` fire, spread evenly over the first 90 % of the run. */
async function under(port, keepAlive, actions) {
  const run = wrk(port, keepAlive);
  const every = (SECONDS * 900) / actions.length;
  for (const act of actions) { await sleep(every); act(); }
  return run;
}

const APP = "module.exports = (req, res) => res.end('hello\\n');\n";
const config = (workers, extra = {}) => `module.exports = ${JSON.stringify({ app: 'app.js', workers, bind: ['127.0.0.1:PORT'], maxRequests: 4000, maxRequestsJitter: 1000, ...extra })};\n`;

async function forkdRun(keepAlive) {
  const dir = mkdtempSync(join(tmpdir(), 'forkd-reload-'));
  const port = await freePort();
  writeFileSync(join(dir, 'app.js'), APP);
  writeFileSync(join(dir, 'forkd.config.js'), config(2).replace('PORT', port));
  const f = start(process.execPath, [join(root, 'bin', 'forkd.js')], { cwd: dir }, /Ready: 2 workers serving/);
  try {
    await f.ready;
    const sig = (s) => () => f.child.kill(s);
    const actions = [];
    for (let i = 0; i < HUPS; i++) actions.push(sig('SIGHUP'));
    actions.splice(2, 0, sig('SIGTTIN'));
    actions.splice(5, 0, sig('SIGTTOU'));
    actions.splice(8, 0, () => writeFileSync(join(dir, 'forkd.config.js'), config(3).replace('PORT', port)));
    const r = await under(port, keepAlive, actions);
    // Reloads queue (each waits for its workers to prove stable): let the last ones finish.
    const settled = () => (f.output().match(/Reloading \(/g)?.length ?? 0) <= (f.output().match(/Reload (complete|failed)/g)?.length ?? 0);
    for (let waited = 0; waited < 15000 && !settled(); waited += 250) await sleep(250);
    const log = f.output();
    return { ...r, reloads: log.match(/Reload complete/g)?.length ?? 0, failedReloads: log.match(/Reload failed/g)?.length ?? 0,
      recycles: log.match(/\(maxRequests\)/g)?.length ?? 0 };
  } finally {
    await stop(f);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function clusterRun(keepAlive) {
  const port = await freePort();
  const c = start(process.execPath, [join(root, 'scripts', 'peers', 'cluster-reload.cjs')], { env: { ...process.env, PORT: String(port), WORKERS: '2' } }, /ready on/);
  try {
    await c.ready;
    const r = await under(port, keepAlive, Array.from({ length: HUPS }, () => () => c.child.kill('SIGHUP')));
    await sleep(1500);
    return { ...r, reloads: c.output().match(/reload done/g)?.length ?? 0, failedReloads: 0, recycles: 0 };
  } finally {
    await stop(c);
  }
}

/** USR2 upgrades: each goes to whichever master the pidfile names now (the last successor). */
async function upgradeRun(keepAlive, upgrades = 3) {
  const dir = mkdtempSync(join(tmpdir(), 'forkd-upgrade-'));
  const port = await freePort();
  const pidfile = join(dir, 'forkd.pid');
  writeFileSync(join(dir, 'app.js'), APP);
  writeFileSync(join(dir, 'forkd.config.js'), config(2, { pid: pidfile }).replace('PORT', port));
  const f = start(process.execPath, [join(root, 'bin', 'forkd.js')], { cwd: dir }, /Ready: 2 workers serving/);
  const masters = new Set();
  try {
    await f.ready;
    const usr2 = () => { const pid = Number(readFileSync(pidfile, 'utf8')); masters.add(pid); process.kill(pid, 'SIGUSR2'); };
    const r = await under(port, keepAlive, Array.from({ length: upgrades }, () => usr2));
    await sleep(1500);
    const log = f.output();
    return { ...r, reloads: log.match(/Upgrade complete/g)?.length ?? 0, failedReloads: log.match(/Upgrade failed/g)?.length ?? 0, recycles: 0 };
  } finally {
    try { masters.add(Number(readFileSync(pidfile, 'utf8'))); } catch { /* gone */ }
    for (const pid of masters) { try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ } }
    await stop(f);
    await sleep(1000);
    rmSync(dir, { recursive: true, force: true });
  }
}

const rows = [];
for (const keepAlive of [true, false]) {
  rows.push({ server: 'forkd, 3 USR2 upgrades', traffic: keepAlive ? 'keep-alive' : 'Connection: close', ...(await upgradeRun(keepAlive)) });
}
for (const keepAlive of [true, false]) {
  const traffic = keepAlive ? 'keep-alive' : 'Connection: close';
  rows.push({ server: 'forkd', traffic, ...(await forkdRun(keepAlive)) });
  rows.push({ server: 'node:cluster (fork new, disconnect old)', traffic, ...(await clusterRun(keepAlive)) });
}
console.log(`\n${SECONDS} s of wrk -t2 -c${CONNECTIONS} per run; forkd got ${HUPS} HUPs, a TTIN, a TTOU and a config edit, `
  + `with maxRequests 4000 (+ jitter 1000); node:cluster got ${HUPS} HUPs.\n`);
const header = ['server', 'traffic', 'requests', 'req/s', 'socket errors', 'non-2xx', 'reloads done', 'recycles'];
const table = rows.map((r) => [r.server, r.traffic, r.requests, Math.round(r.rps), r.errors, r.non2xx, `${r.reloads}${r.failedReloads ? ` (+${r.failedReloads} failed)` : ''}`, r.recycles]);
const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => String(row[i]).length)));
const line = (cells) => cells.map((c, i) => String(c).padEnd(widths[i])).join('  ');
console.log(line(header));
for (const row of table) console.log(line(row));
for (const r of rows) if (r.errors) console.log(`${r.server}, ${r.traffic}: ${r.errorDetail}`);
