#!/usr/bin/env node
// Measures forkd's lifecycle on this machine: start to all workers serving, requests during a
// TTOU and a TTIN, and a kill -9 of a worker, under keep-alive and Connection: close load.
// Usage: npm run build && node scripts/lifecycle.mjs [--workers N] [--seconds S]
// Every forkd it starts is killed by pid at the end; traffic stays on 127.0.0.1.
import { join } from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { startForkd, APPS, waitFor } = require('../dist/test/helpers/forkd.js');
const { load, request } = require('../dist/test/helpers/http.js');

const arg = (name, dflt) => { const i = process.argv.indexOf(name); return i > 0 ? Number(process.argv[i + 1]) : dflt; };
const workers = arg('--workers', 2);
const seconds = arg('--seconds', 4);
const probe = join(APPS, 'probe.js');

async function startup() {
  const rows = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    const f = await startForkd(['-w', String(workers), '-b', '127.0.0.1:0', probe]);
    const ready = performance.now() - t0;
    const first = await request(`${f.url}/`).then(() => performance.now() - t0);
    const logged = Number(/startupMs=(\d+)/.exec(f.output())[1]);
    rows.push({ ready, first, logged });
    await f.kill();
  }
  const med = (k) => rows.map((r) => r[k]).sort((a, b) => a - b)[2].toFixed(0);
  console.log(`start → "Ready: ${workers} workers serving" (spawn of forkd to log line): median ${med('ready')} ms of 5`);
  console.log(`  master start → all workers ready (startupMs in the log): median ${med('logged')} ms`);
}

async function under(label, keepAlive, act) {
  const f = await startForkd(['-w', String(workers + 1), '-b', '127.0.0.1:0', probe]);
  try {
    const timer = setTimeout(() => act(f), (seconds * 1000) / 3);
    const r = await load(`${f.url}/`, { connections: 32, durationMs: seconds * 1000, keepAlive });
    clearTimeout(timer);
    console.log(`${label} (${keepAlive ? 'keep-alive' : 'Connection: close'}, 32 connections, ${seconds} s): `
      + `${r.sent} sent, ${r.ok} ok, ${r.failed} failed${r.errors.length ? ` (${[...new Set(r.errors)].join('; ')})` : ''}`);
  } finally {
    await f.kill();
  }
}

await startup();
for (const keepAlive of [true, false]) {
  await under('TTOU then TTIN', keepAlive, (f) => { f.signal('SIGTTOU'); setTimeout(() => f.signal('SIGTTIN'), 500); });
  await under('kill -9 of a worker', keepAlive, (f) => process.kill(f.workers()[0], 'SIGKILL'));
}
await waitFor(() => true, 'nothing');
