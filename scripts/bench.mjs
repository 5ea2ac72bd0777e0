#!/usr/bin/env node
// The benchmark: forkd beside the servers Node users run today, on this machine, in one run, with
// the same app (scripts/peers/bench-app.cjs) and worker count, all on loopback, with wrk.
//   forkd · forkd with its access log on (to a file) · forkd with its status listener on (scraped
//   every second) · a bare pre-fork (one bound socket, plain
//   http servers on the inherited fd: the ceiling of forkd's architecture) · node:cluster
//   round-robin · node:cluster SCHED_NONE · PM2 cluster mode (private PM2_HOME) · one node process
// Workloads: hello with keep-alive at 50 and 200 connections, hello with Connection: close, and a
// route doing ~2 ms of synchronous work, and an I/O-bound route that waits 10 ms before answering.
// Each run is repeated in rounds (every server once per round, the order rotating); the median
// counts, and each ratio to forkd is the median of the ratios within a round (paired: both ran
// within seconds of each other on this shared machine), with its lowest and highest.
// Prints requests/s, the workers' CPU time per request (from /proc), p50/p99 latency, errors, the
// busiest/least busy worker ratio, RSS of master and workers, start-up time (median of --starts
// cold starts each), forkd's HUP reload time, and, last, forkd's targets against the bare
// pre-fork with whether each is met.
//
// Usage: npm run build && node scripts/bench.mjs [--workers 2] [--duration 5] [--repeat 3]
//        [--servers forkd,cluster-rr,...] [--workloads ka50,close,...] [--starts 5]
//        [--node /path/to/node] [--json out.json]
// --node runs every server (forkd, its workers, each peer, PM2's daemon and workers) on that
// Node binary; by default, the one running this script.
// A server named "forkd FLAGS…" is forkd with those flags after the defaults, to compare forkd's
// own settings in one run:  --servers 'forkd,forkd -w 1 --threads 2,forkd -k sync,forkd -w 5'
// Needs wrk (apt-get install wrk). Every process it starts is ended, PM2 with `pm2 kill`.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve as resolvePath } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const peers = join(root, 'scripts', 'peers');
const app = join(peers, 'bench-app.cjs');
const arg = (name, dflt) => { const i = process.argv.indexOf(name); return i > 0 ? process.argv[i + 1] : dflt; };
const WORKERS = Number(arg('--workers', 2));
const DURATION = Number(arg('--duration', 5));
const REPEAT = Number(arg('--repeat', 3));
const ONLY_SERVERS = arg('--servers', null)?.split(',');
const ONLY_WORKLOADS = arg('--workloads', null)?.split(',');
const JSON_OUT = arg('--json', null);
const STARTS = Number(arg('--starts', 5));
const NODE = resolvePath(arg('--node', process.execPath));
const NODE_VERSION = execFileSync(NODE, ['--version'], { encoding: 'utf8' }).trim();
const TICK_US = 1e6 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

try { execFileSync('wrk', ['--version'], { stdio: 'ignore' }); } catch (err) {
  if (err.code === 'ENOENT') { console.error('wrk is not installed (apt-get install wrk)'); process.exit(2); }
}

const ALL_WORKLOADS = [
  { id: 'ka50', label: 'hello, keep-alive, 50 conns', path: '/', connections: 50, keepAlive: true },
  { id: 'ka200', label: 'hello, keep-alive, 200 conns', path: '/', connections: 200, keepAlive: true },
  { id: 'close', label: 'hello, Connection: close, 50 conns', path: '/', connections: 50, keepAlive: false },
  { id: 'cpu', label: '~2 ms CPU/request, keep-alive, 50 conns', path: '/cpu', connections: 50, keepAlive: true },
  { id: 'io', label: '10 ms wait/request (I/O-bound), keep-alive, 200 conns', path: '/io', connections: 200, keepAlive: true },
];
for (const id of ONLY_WORKLOADS ?? []) {
  if (!ALL_WORKLOADS.some((w) => w.id === id)) {
    console.error(`unknown workload "${id}"; workloads are ${ALL_WORKLOADS.map((w) => w.id).join(', ')}`);
    process.exit(2);
  }
}
const WORKLOADS = ALL_WORKLOADS.filter((w) => !ONLY_WORKLOADS || ONLY_WORKLOADS.includes(w.id));

const freePort = () => new Promise((ok) => { const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => ok(port)); }); });

function children(pid) {
  try { return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number); } catch { return []; }
}
/** CPU time a process has used so far (user + system), in microseconds. */
function cpuUs(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * TICK_US;
  } catch { return NaN; }
}
function rssMb(pid) {
  try { return Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024; } catch { return NaN; }
}

/** Every process `launch` started that has not exited (an interrupted bench kills them). */
const launched = new Set();

/** Starts a process and resolves once its output matches `ready`. */
function launch(cmd, args, opts, ready) {
  const t0 = performance.now();
  const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] });
  launched.add(child.pid);
  child.once('exit', () => launched.delete(child.pid));
  let out = '';
  child.stdout.on('data', (c) => { out += c; });
  child.stderr.on('data', (c) => { out += c; });
  const started = new Promise((ok, fail) => {
    const t = setInterval(() => {
      if (ready.test(out)) { clearInterval(t); ok(performance.now() - t0); }
      if (child.exitCode !== null) { clearInterval(t); fail(new Error(`${cmd} exited:\n${out}`)); }
    }, 5);
    setTimeout(() => { clearInterval(t); fail(new Error(`${cmd} not ready:\n${out}`)); }, 20000);
  });
  return { child, started, output: () => out };
}

async function stopTree(pid) {
  const all = [pid, ...children(pid)];
  for (const p of all) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
  await sleep(200);
}

async function waitHttp(port, scheme = 'http') {
  for (let i = 0; i < 400; i++) {
    try { execFileSync('curl', ['-ksf', '-o', '/dev/null', `${scheme}://127.0.0.1:${port}/`], { stdio: 'ignore' }); return; } catch { await sleep(25); }
  }
  throw new Error(`nothing answers on ${port}`);
}

/** Each server: how to start it, its processes (for RSS), and how to stop it. */
const SERVERS = {
  forkd: async (port, extra = []) => {
    const p = launch(NODE, [join(root, 'bin', 'forkd.js'), '-w', String(WORKERS), '-b', `127.0.0.1:${port}`, ...extra, app],
      { cwd: root }, /Ready: \d+ workers? serving/);
    const startMs = await p.started;
    return { startMs, master: p.child.pid, workers: () => children(p.child.pid), stop: () => stopTree(p.child.pid), forkd: p };
  },
  'forkd+accesslog': async (port) => {
    const dir = mkdtempSync(join(tmpdir(), 'forkd-bench-log-'));
    const s = await SERVERS.forkd(port, ['--access-logfile', join(dir, 'access.log')]);
    return { ...s, stop: async () => { await s.stop(); rmSync(dir, { recursive: true, force: true }); } };
  },
  // The status listener on, and scraped every second as Prometheus would, for the whole run.
  'forkd+metrics': async (port) => {
    const statusPort = await freePort();
    const s = await SERVERS.forkd(port, ['--status-bind', `127.0.0.1:${statusPort}`]);
    const scrape = () => new Promise((done) => {
      http.get({ host: '127.0.0.1', port: statusPort, path: '/metrics' }, (res) => { res.resume(); res.on('end', done); }).on('error', done);
    });
    await scrape();
    const timer = setInterval(scrape, 1000);
    return { ...s, stop: async () => { clearInterval(timer); await s.stop(); } };
  },
  // TLS, terminated by forkd's workers, against https servers on the inherited fd (a certificate made
  // with openssl for the run).
  'forkd+tls': async (port) => {
    const { cert, key } = benchCertificate();
    return { ...(await SERVERS.forkd(port, ['--certfile', cert, '--keyfile', key])), scheme: 'https' };
  },
  'bare-https': async (port) => {
    const { cert, key } = benchCertificate();
    return { ...(await peer(port, 'bare-prefork.cjs', { CERT: cert, KEY: key })), scheme: 'https' };
  },
  'bare-prefork': (port) => peer(port, 'bare-prefork.cjs', {}),
  'cluster-rr': (port) => peer(port, 'cluster.cjs', { NODE_CLUSTER_SCHED_POLICY: 'rr' }),
  'cluster-none': (port) => peer(port, 'cluster.cjs', { NODE_CLUSTER_SCHED_POLICY: 'none' }),
  pm2: async (port) => {
    const home = mkdtempSync(join(tmpdir(), 'forkd-bench-pm2-'));
    // PM2's CLI run by NODE starts its daemon, and so its cluster workers, on NODE too.
    const pm2 = (args) => execFileSync(NODE, [join(root, 'node_modules', 'pm2', 'bin', 'pm2'), ...args], { env, stdio: 'ignore' });
    const env = { ...process.env, PM2_HOME: home, PORT: String(port) };
    const t0 = performance.now();
    pm2(['start', join(peers, 'pm2-app.cjs'), '-i', String(WORKERS), '--name', 'bench', '--interpreter', NODE]);
    await waitHttp(port);
    const startMs = performance.now() - t0;
    const daemon = Number(readFileSync(join(home, 'pm2.pid'), 'utf8'));
    return {
      startMs, master: daemon, workers: () => children(daemon),
      stop: async () => { try { pm2(['kill']); } catch { /* gone */ } await stopTree(daemon); rmSync(home, { recursive: true, force: true }); },
    };
  },
  single: (port) => peer(port, 'single.cjs', {}, 1),
};

let certificateMade = null;
/** A self-signed certificate for the TLS servers, made once a run, removed as the run ends. */
function benchCertificate() {
  if (!certificateMade) {
    const dir = mkdtempSync(join(tmpdir(), 'forkd-bench-tls-'));
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert,
      '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
    certificateMade = { dir, cert, key };
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  return certificateMade;
}

async function peer(port, script, env, workers = WORKERS) {
  const p = launch(NODE, [join(peers, script)], { env: { ...process.env, ...env, PORT: String(port), WORKERS: String(workers) } }, /ready on/);
  const startMs = await p.started;
  return { startMs, master: p.child.pid, workers: () => children(p.child.pid), stop: () => stopTree(p.child.pid) };
}

/** One wrk run: requests/s, p50/p99 (ms), errors, requests per worker, and the CPU time the
 *  server's processes (master and workers) spent per request, in microseconds. */
function wrk(port, w, pids = [], scheme = 'http') {
  const cpuBefore = pids.map(cpuUs);
  return new Promise((ok) => {
    const args = ['-t2', `-c${w.connections}`, `-d${DURATION}s`, '--latency', '-s', join(root, 'scripts', 'bench-workers.lua'),
      ...(w.keepAlive ? [] : ['-H', 'Connection: close']), `${scheme}://127.0.0.1:${port}${w.path}`];
    const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c) => { out += c; });
    child.on('exit', () => {
      const ms = (re) => { const m = re.exec(out); if (!m) return NaN; const v = Number(m[1]); return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v; };
      const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
      const perWorker = Object.fromEntries([...(/^WORKERS(.*)$/m.exec(out)?.[1] ?? '').matchAll(/(\S+)=(\d+)/g)].map((m) => [m[1], Number(m[2])]));
      const total = Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN);
      const cpu = pids.reduce((sum, pid, i) => sum + (cpuUs(pid) - cpuBefore[i]), 0);
      ok({
        rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN),
        cpuUsPerReq: pids.length ? cpu / total : NaN,
        p50: ms(/^\s+50%\s+([\d.]+)(us|ms|s)/m),
        p99: ms(/^\s+99%\s+([\d.]+)(us|ms|s)/m),
        errors: (socket ? socket.slice(1).reduce((a, b) => a + Number(b), 0) : 0) + Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
        perWorker,
      });
    });
  });
}

const median = (runs) => [...runs].sort((a, b) => a.rps - b.rps)[Math.floor(runs.length / 2)];
const spread = (perWorker) => {
  const counts = Object.values(perWorker);
  return counts.length < 2 ? 1 : Math.max(...counts) / Math.min(...counts);
};

async function hupReloadMs(s) {
  const before = s.forkd.output().match(/Reload complete/g)?.length ?? 0;
  const t0 = performance.now();
  process.kill(s.master, 'SIGHUP');
  while ((s.forkd.output().match(/Reload complete/g)?.length ?? 0) === before) {
    if (performance.now() - t0 > 30000) return NaN;
    await sleep(5);
  }
  return performance.now() - t0;
}

// All servers run at once, each on its own port, and the runs are interleaved (round r runs every
// server once, starting with a different one each round), so that drift in this shared machine's
// speed falls on all of them alike.
const results = {};
const running = {};
// Interrupted (Ctrl-C, a kill), the bench stops what it started before it goes, by pid.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    const pids = [...launched, ...Object.values(running).map(({ s }) => s.master)];
    for (const p of pids.flatMap((pid) => [pid, ...children(pid)])) { try { process.kill(p, 'SIGKILL'); } catch { /* gone */ } }
    for (const { s } of Object.values(running)) void s.stop();
    process.stderr.write(`bench: ${sig}: stopped the servers it started (${pids.join(" ")})\n`);
    setTimeout(() => process.exit(1), 500);
  });
}
for (const name of ONLY_SERVERS ?? []) {
  if (!name.startsWith('forkd ') && !SERVERS[name]) {
    console.error(`unknown server "${name}"; servers are ${Object.keys(SERVERS).join(', ')} and "forkd FLAGS…"`);
    process.exit(2);
  }
}
try {
  for (const name of ONLY_SERVERS ?? Object.keys(SERVERS)) {
    const port = await freePort();
    process.stderr.write(`${name}: starting\n`);
    const flags = name.startsWith('forkd ') ? name.split(/\s+/).slice(1) : null;
    running[name] = { port, s: await (flags ? SERVERS.forkd(port, flags) : SERVERS[name](port)) };
    await waitHttp(port, running[name].s.scheme);
    results[name] = { startMs: running[name].s.startMs, workloads: {} };
  }
  for (const w of WORKLOADS) {
    const runs = Object.fromEntries(Object.keys(running).map((n) => [n, []]));
    const entries = Object.entries(running);
    for (let i = 0; i < REPEAT; i++) {
      // Each round starts with the next server: a server run right after another one measured lower
      // here (up to 15 %, whichever it was), so a fixed order would favour the first.
      for (const [name, { port }] of [...entries.slice(i % entries.length), ...entries.slice(0, i % entries.length)]) {
        if (['forkd+accesslog', 'forkd+metrics', 'forkd+tls', 'bare-https'].includes(name) && !['ka50', 'close'].includes(w.id)) continue;
        const { s } = running[name];
        runs[name].push(await wrk(port, w, [s.master, ...s.workers()], s.scheme));
      }
    }
    for (const [name, list] of Object.entries(runs)) {
      if (!list.length) continue;
      results[name].workloads[w.id] = { ...median(list), runs: list };
      process.stderr.write(`  ${w.id} ${name}: ${list.map((x) => Math.round(x.rps)).join(' / ')} req/s\n`);
    }
  }
  for (const [name, { s }] of Object.entries(running)) {
    results[name].masterMb = rssMb(s.master);
    results[name].workerMb = s.workers().map(rssMb);
    if (name === 'forkd') results[name].hupMs = await hupReloadMs(s);
  }
} finally {
  for (const { s } of Object.values(running)) await s.stop();
}

// Cold starts, one server at a time and alternating, to the moment every worker serves: the
// figure the targets compare (one start each is too noisy here).
const STARTED = ['forkd', 'bare-prefork'].filter((n) => results[n]);
const starts = Object.fromEntries(STARTED.map((n) => [n, []]));
for (let i = 0; i < STARTS && STARTED.length; i++) {
  for (const name of i % 2 ? [...STARTED].reverse() : STARTED) {
    const s = await SERVERS[name](await freePort());
    starts[name].push(s.startMs);
    await s.stop();
  }
}
const mid = (xs) => { const v = [...xs].sort((a, b) => a - b); return v.length ? v[Math.floor(v.length / 2)] : NaN; };
for (const name of STARTED) if (starts[name].length) results[name].startMs = mid(starts[name]);

// ---- the table ----
const names = Object.keys(results);
/** `name`'s figure over forkd's within each round: the median, lowest and highest. */
function paired(name, wid, key = 'rps', against = 'forkd') {
  const mine = results[name]?.workloads[wid]?.runs;
  const theirs = results[against]?.workloads[wid]?.runs;
  if (!mine || !theirs) return null;
  const r = mine.map((x, i) => x[key] / theirs[i]?.[key]).filter(Number.isFinite);
  return r.length ? { median: mid(r), low: Math.min(...r), high: Math.max(...r) } : null;
}
const fmt = (p) => (p ? `${p.median.toFixed(2)}× (${p.low.toFixed(2)}–${p.high.toFixed(2)})` : '');
const pad = (cells, widths) => cells.map((c, i) => String(c).padEnd(widths[i])).join('  ');
const table = (header, rows) => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  console.log(pad(header, widths));
  for (const row of rows) console.log(pad(row, widths));
};
console.log(`\nforkd benchmark: ${WORKERS} workers, wrk -t2, ${DURATION} s runs, ${REPEAT} rounds (median; × forkd is the median of`
  + ` each round's ratio, lowest–highest in brackets); node ${NODE_VERSION}, ${readFileSync('/proc/cpuinfo', 'utf8').match(/^processor/gm).length} CPUs`);
for (const w of WORKLOADS) {
  console.log(`\n${w.label} (${w.path})`);
  table(['server', 'req/s', '× forkd', 'CPU µs/req', 'p50 ms', 'p99 ms', 'errors', 'busiest/least'],
    names.filter((n) => results[n].workloads[w.id]).map((n) => {
      const x = results[n].workloads[w.id];
      return [n, Math.round(x.rps), fmt(paired(n, w.id)), Number.isFinite(x.cpuUsPerReq) ? mid(x.runs.map((r) => r.cpuUsPerReq)).toFixed(1) : '',
        x.p50.toFixed(2), x.p99.toFixed(2), x.runs.reduce((n2, r) => n2 + r.errors, 0), spread(x.perWorker).toFixed(2)];
    }));
}
console.log('\nprocesses');
table(['server', 'start ms', 'master MB', 'workers MB', 'HUP reload ms'],
  names.map((n) => [n, Math.round(results[n].startMs) + (starts[n]?.length ? ` (median of ${starts[n].length})` : ''), results[n].masterMb.toFixed(1),
    results[n].workerMb.map((m) => m.toFixed(1)).join(' '), results[n].hupMs ? Math.round(results[n].hupMs) : '']));

// ---- forkd's targets, against the bare pre-fork of the same run ----
const targets = [];
const target = (what, value, ok, shown) => targets.push([what, shown, value === null || !Number.isFinite(value) ? 'not measured' : ok ? 'met' : 'NOT MET']);
for (const [wid, min] of [['ka50', 0.97], ['ka200', 0.97], ['close', 1.0]]) {
  const p = paired('forkd', wid, 'rps', 'bare-prefork');
  target(`${wid}: forkd req/s ≥ ${min.toFixed(2)} × bare-prefork`, p?.median ?? null, p && p.median >= min, fmt(p));
}
for (const wid of ['ka50', 'close']) {
  const p = paired('forkd+accesslog', wid);
  target(`${wid}: access log on ≥ 0.90 × forkd without it`, p?.median ?? null, p && p.median >= 0.9, fmt(p));
}
for (const wid of ['ka50', 'close']) {
  const p = paired('forkd+metrics', wid);
  target(`${wid}: status listener on, scraped every second, ≥ 0.97 × forkd without it`, p?.median ?? null, p && p.median >= 0.97, fmt(p));
}
for (const wid of ['ka50', 'close']) {
  const p = paired('forkd+tls', wid, 'rps', 'bare-https');
  target(`${wid}: TLS, forkd ≥ 0.95 × https servers on the inherited fd`, p?.median ?? null, p && p.median >= 0.95, fmt(p));
}
const masterMb = results.forkd?.masterMb;
const bareMb = results['bare-prefork']?.masterMb;
target('forkd master RSS ≤ 50 MB', masterMb ?? null, masterMb <= 50,
  Number.isFinite(masterMb) ? `${masterMb.toFixed(1)} MB (bare parent ${Number.isFinite(bareMb) ? bareMb.toFixed(1) : '?'} MB)` : '');
const startRatio = results.forkd && results['bare-prefork'] ? results.forkd.startMs / results['bare-prefork'].startMs : null;
target('start to every worker serving ≤ 1.3 × bare-prefork', startRatio, startRatio <= 1.3,
  startRatio ? `${startRatio.toFixed(2)}× (${Math.round(results.forkd.startMs)} ms against ${Math.round(results['bare-prefork'].startMs)} ms)` : '');
console.log('\ntargets');
table(['target', 'measured', ''], targets);
if (JSON_OUT) writeFileSync(JSON_OUT, JSON.stringify({ node: NODE_VERSION, workers: WORKERS, duration: DURATION, rounds: REPEAT, results }, null, 2));
