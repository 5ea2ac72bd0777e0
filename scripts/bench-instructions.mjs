#!/usr/bin/env node
// forkd's own cost per request, counted in instructions rather than seconds: each server runs under
// valgrind's callgrind, which counts the instructions every process executes whatever else the
// machine is doing (wall time here swings by a quarter between runs of the same server). One worker
// each, the same app (scripts/peers/bench-app.cjs); after a warm-up, in each of a few windows the
// counters are zeroed, a fixed number of requests is sent, and the counts are dumped: the worker's
// instructions per request (the mean of the windows), and the master's in the same span (it is
// never in the data path, so that should be near zero).
// V8 optimizes hot functions well after 10,000 requests, and one optimizing compile costs as much as
// thousands of settled hello-world requests: the window after the warm-up is often twice the rest,
// so it is not counted. Every node process runs with V8's --single-threaded, so that compiling
// and marking run on the main thread, inside the window that caused them. Timers count per second,
// not per request, and valgrind makes each request ~50× slower: the master's figure and forkd's
// heartbeats weigh far more here than at full speed.
//
// Servers: forkd · forkd with its access log on (to a file) · the bare pre-fork (a parent that binds,
// children that serve plain http servers on the inherited fd: the ceiling of this architecture).
// A server named "forkd FLAGS…" is forkd with those flags, as in bench.mjs; "peer:FILE" runs FILE,
// a pre-fork script like scripts/peers/bare-prefork.cjs (PORT and WORKERS in, "ready on" out).
// Workloads: ka (keep-alive, 10 connections) and close (Connection: close, 10 at a time).
//
// Usage: npm run build && node scripts/bench-instructions.mjs [--warmup 10000] [--requests 10000] [--windows 4]
//        [--node /path/to/node] [--servers forkd,bare-prefork,...] [--workloads ka,close] [--json out.json]
// Needs valgrind. Two to four minutes a server and workload (two can run at once: counts do not move). Every process it starts is ended, by pid.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const peers = join(root, 'scripts', 'peers');
const app = join(peers, 'bench-app.cjs');
const arg = (name, dflt) => { const i = process.argv.indexOf(name); return i > 0 ? process.argv[i + 1] : dflt; };
const REQUESTS = Number(arg('--requests', 10000));
const WARMUP = Number(arg('--warmup', 10000));
const NODE = resolvePath(arg('--node', process.execPath));
const NODE_VERSION = execFileSync(NODE, ['--version'], { encoding: 'utf8' }).trim();
const SERVER_NAMES = arg('--servers', 'forkd,forkd+accesslog,bare-prefork').split(',');
const WORKLOAD_IDS = arg('--workloads', 'ka,close').split(',');
const JSON_OUT = arg('--json', null);
const CONNECTIONS = 10;
const V8_FLAG = '--single-threaded';
const WINDOWS = Number(arg('--windows', 4));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

try { execFileSync('valgrind', ['--version'], { stdio: 'ignore' }); } catch {
  console.error('valgrind is needed: apt-get install valgrind');
  process.exit(2);
}
const WORKLOADS = { ka: { label: 'keep-alive', keepAlive: true }, close: { label: 'Connection: close', keepAlive: false } };
for (const id of WORKLOAD_IDS) {
  if (!WORKLOADS[id]) { console.error(`unknown workload "${id}"; workloads are ${Object.keys(WORKLOADS).join(', ')}`); process.exit(2); }
}

const tmp = mkdtempSync(join(tmpdir(), 'forkd-instr-'));
const freePort = () => new Promise((ok) => { const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => ok(port)); }); });
const children = (pid) => { try { return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number); } catch { return []; } };

/** How each server starts (argv for NODE, extra environment) and the line that says it serves. */
function serverCommand(name, port) {
  if (name === 'bare-prefork') return { args: [join(peers, 'bare-prefork.cjs')], env: { PORT: String(port), WORKERS: '1' }, ready: /ready on/ };
  // Any other pre-fork script that takes PORT and WORKERS and prints "ready on" (to try a variant).
  if (name.startsWith('peer:')) return { args: [resolvePath(name.slice(5))], env: { PORT: String(port), WORKERS: '1' }, ready: /ready on/ };
  const flags = name === 'forkd+accesslog' ? ['--access-logfile', join(tmp, `access-${port}.log`)]
    : name.startsWith('forkd ') ? name.split(/\s+/).slice(1) : name === 'forkd' ? [] : null;
  if (!flags) { console.error(`unknown server "${name}"; servers are forkd, forkd+accesslog, bare-prefork and "forkd FLAGS…"`); process.exit(2); }
  return {
    args: [join(root, 'bin', 'forkd.js'), '-w', '1', '-b', `127.0.0.1:${port}`, '--boot-timeout', '120', `--node-arg=${V8_FLAG}`, ...flags, app],
    env: {}, ready: /Ready: 1 worker serving/,
  };
}

/** Sends `n` GETs to / over CONNECTIONS lanes, each lane one request at a time. */
async function drive(port, n, keepAlive) {
  const agent = new http.Agent({ keepAlive, maxSockets: CONNECTIONS });
  let left = n;
  const one = () => new Promise((ok, fail) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent, headers: keepAlive ? {} : { connection: 'close' } }, (res) => {
      res.resume();
      res.once('end', () => (res.statusCode === 200 ? ok() : fail(new Error(`status ${res.statusCode}`))));
    });
    req.once('error', fail);
  });
  await Promise.all(Array.from({ length: CONNECTIONS }, async () => { while (left-- > 0) await one(); }));
  agent.destroy();
}

/** Asks callgrind in `pid` to do `what` (zero or dump), and waits until it has. */
function callgrind(what, pid) {
  execFileSync('callgrind_control', [what === 'zero' ? '-z' : '-d', String(pid)], { stdio: 'ignore', timeout: 60_000 });
}

/** The instructions in `pid`'s newest callgrind dump. */
function lastDump(pid) {
  const dumps = readdirSync(tmp).filter((f) => f.startsWith(`cg.${pid}.`)).map((f) => join(tmp, f));
  const newest = dumps.sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
  if (!newest) throw new Error(`callgrind wrote no dump for pid ${pid}`);
  return Number(/^totals:\s+(\d+)/m.exec(readFileSync(newest, 'utf8'))?.[1] ?? NaN);
}

async function measure(name, workload) {
  const port = await freePort();
  const cmd = serverCommand(name, port);
  const child = spawn('valgrind', ['--tool=callgrind', '--trace-children=yes', `--callgrind-out-file=${join(tmp, 'cg.%p')}`,
    '--dump-instr=no', '--dump-line=no', NODE, V8_FLAG, ...cmd.args], { cwd: root, env: { ...process.env, ...cmd.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c) => { out += c; });
  child.stderr.on('data', (c) => { out += c; });
  try {
    for (const t0 = Date.now(); !cmd.ready.test(out); await sleep(50)) {
      if (child.exitCode !== null || Date.now() - t0 > 180_000) throw new Error(`${name} did not start under valgrind:\n${out.slice(-3000)}`);
    }
    const [worker] = children(child.pid);
    if (!worker) throw new Error(`${name}: no worker process`);
    await drive(port, WARMUP, workload.keepAlive);
    // A first window, not counted (V8 is still optimizing: see above), then WINDOWS counted ones;
    // their mean counts, since a full garbage collection falls in one window and not the next.
    const windows = [];
    for (let i = 0; i <= WINDOWS; i++) {
      for (const pid of [child.pid, worker]) callgrind('zero', pid);
      await drive(port, REQUESTS, workload.keepAlive);
      for (const pid of [child.pid, worker]) callgrind('dump', pid);
      if (i > 0) windows.push({ worker: lastDump(worker) / REQUESTS, master: lastDump(child.pid) / REQUESTS });
    }
    const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
    return { worker: mean(windows.map((w) => w.worker)), master: mean(windows.map((w) => w.master)), windows: windows.map((w) => Math.round(w.worker)) };
  } finally {
    for (const pid of [...children(child.pid), child.pid]) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    await new Promise((ok) => (child.exitCode !== null ? ok() : child.once('exit', ok)));
  }
}

const results = {};
try {
  for (const id of WORKLOAD_IDS) {
    for (const name of SERVER_NAMES) {
      process.stderr.write(`${id} ${name}: measuring\n`);
      (results[name] ??= {})[id] = await measure(name, WORKLOADS[id]);
    }
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

const pad = (cells, widths) => cells.map((c, i) => String(c).padEnd(widths[i])).join('  ');
console.log(`\nforkd instructions per request (callgrind; 1 worker; ${WARMUP} requests to warm up, then one window of ${REQUESTS} more and the mean of ${WINDOWS} such windows; `
  + `${CONNECTIONS} connections; node ${NODE_VERSION})`);
for (const id of WORKLOAD_IDS) {
  console.log(`\n${WORKLOADS[id].label}`);
  const base = results['bare-prefork']?.[id]?.worker;
  const header = ['server', 'worker instr/req', '× bare-prefork', 'master instr/req', 'windows'];
  const rows = SERVER_NAMES.map((n) => {
    const r = results[n][id];
    return [n, Math.round(r.worker).toLocaleString('en'), base ? `${(r.worker / base).toFixed(3)}×` : '', Math.round(r.master).toLocaleString('en'),
      r.windows.map((w) => w.toLocaleString('en')).join(' ')];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  console.log(pad(header, widths));
  for (const row of rows) console.log(pad(row, widths));
}
if (JSON_OUT) writeFileSync(JSON_OUT, JSON.stringify({ node: NODE_VERSION, requests: REQUESTS, warmup: WARMUP, results }, null, 2));
