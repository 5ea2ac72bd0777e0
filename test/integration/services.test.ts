/** services: run-once processes beside the workers. A real service that writes a heartbeat file
 *  runs once per master across 3 workers, is started again after kill -9, is replaced on HUP
 *  without two copies running at once (and kept when its new code cannot load), is killed and
 *  started again when it hangs, shows in /stats and /metrics, and stops gracefully on TERM. */

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { FIXTURES, isAlive, processTitle, startForkd, tempDir, waitFor, type Forkd } from '../helpers/forkd';
import { request } from '../helpers/http';
import { parseMetrics, sumOf } from '../helpers/metrics';
import { APPS } from '../helpers/forkd';

const heartbeat = join(FIXTURES, 'services', 'heartbeat.js');
const spins = join(FIXTURES, 'services', 'spins.js');
const probe = join(APPS, 'probe.js');

/** The master's children whose title says they run service `name`. */
const servicePids = (f: Forkd, name: string) => f.workers().filter((p) => processTitle(p).startsWith(`forkd: service ${name} `));
const workerPids = (f: Forkd) => f.workers().filter((p) => processTitle(p).startsWith('forkd: worker '));

/** "start PID" and "stop PID" lines, in order. */
const events = (file: string) => { try { return readFileSync(file, 'utf8').trim().split('\n').filter(Boolean); } catch { return []; } };

/** Whether the service's beat file is being written by `pid` (its count moves). */
async function beating(file: string, pid: number): Promise<boolean> {
  const read = () => { try { return readFileSync(`${file}.beat`, 'utf8'); } catch { return ''; } };
  const first = read();
  if (!first.startsWith(`${pid} `)) return false;
  await new Promise((ok) => setTimeout(ok, 250));
  const second = read();
  return second.startsWith(`${pid} `) && second !== first;
}

/** Two copies never ran at once: every start after the first follows the stop of the one before. */
function neverOverlapped(lines: readonly string[]): boolean {
  let running: string | null = null;
  for (const line of lines) {
    const [what, pid] = line.split(' ');
    if (what === 'start') { if (running !== null) return false; running = pid!; } else if (what === 'stop' && running === pid) running = null;
  }
  return true;
}

test('a service runs once beside 3 workers, is started again after kill -9, replaced on HUP stop-then-start, and stopped on TERM', async () => {
  const dir = tempDir();
  const file = join(dir.path, 'beats');
  const f = await startForkd(['-w', '3', '-b', '127.0.0.1:0', '--status-bind', '127.0.0.1:0', '--service', `beat=${heartbeat}`, '-e', `HEARTBEAT_FILE=${file}`, '--name', 'shop', probe]);
  try {
    const status = (await f.waitForLog(/Status at: (http:\/\/\S+)/))[1]!;
    const [first] = await waitFor(() => { const s = servicePids(f, 'beat'); return s.length === 1 ? s : null; }, 'the service to run');
    assert.is(processTitle(first!), 'forkd: service beat [shop]');
    assert.is(workerPids(f).length, 3);
    await waitFor(() => beating(file, first!), 'its heartbeat');
    assert.equal(events(file), [`start ${first}`]);
    const stats = JSON.parse((await request(`${status}/stats`)).body) as { services: { name: string; pid: number; state: string; restarts: number }[] };
    assert.equal(stats.services.map(({ name, pid, state, restarts }) => ({ name, pid, state, restarts })), [{ name: 'beat', pid: first, state: 'running', restarts: 0 }]);
    assert.is(sumOf(parseMetrics((await request(`${status}/metrics`)).body), 'forkd_service_up', { service: 'beat' }), 1);

    // kill -9: started again, once.
    process.kill(first!, 'SIGKILL');
    await f.waitForLog(new RegExp(`Service beat \\(pid:${first}\\) was killed by SIGKILL; starting it again in \\d+ ms`));
    const second = await waitFor(() => { const s = servicePids(f, 'beat').filter((p) => p !== first); return s.length === 1 ? s[0] : null; }, 'a new service process');
    await waitFor(() => beating(file, second), 'the new one\'s heartbeat');
    assert.is(servicePids(f, 'beat').length, 1);
    assert.is(sumOf(parseMetrics((await request(`${status}/metrics`)).body), 'forkd_service_restarts_total', { service: 'beat' }), 1);

    // HUP: the new one loads, the old one stops, then the new one runs: never two at once.
    f.signal('SIGHUP');
    await f.waitForLog(/Reload complete: generation 2/);
    const third = await waitFor(() => { const s = servicePids(f, 'beat').filter((p) => p !== second); return s.length === 1 && !isAlive(second) ? s[0] : null; }, 'the service replaced');
    await waitFor(() => beating(file, third), 'the replacement\'s heartbeat');
    // From the second on (the first was killed, and wrote no stop).
    const lines = events(file).slice(1);
    assert.ok(neverOverlapped(lines), lines.join(', '));
    assert.equal(lines.slice(-3), [`start ${second}`, `stop ${second}`, `start ${third}`]);

    // TERM: its signal aborts and it writes its stop; the master exits 0.
    f.signal('SIGTERM');
    const exit = await f.waitExit(20_000);
    assert.is(exit.code, 0);
    assert.equal(events(file).slice(-1), [`stop ${third}`]);
    assert.match(f.output(), new RegExp(`Service beat \\(pid:${third}\\) stopped`));
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('a reload whose service module cannot load keeps the running service; overlap: true starts the new one first', async () => {
  const dir = tempDir();
  const file = join(dir.path, 'beats');
  const config = (services: unknown) => writeFileSync(join(dir.path, 'forkd.config.json'), JSON.stringify({
    app: probe, bind: ['127.0.0.1:0'], workers: 1, env: { HEARTBEAT_FILE: file }, services, reloadOnConfigChange: false,
  }));
  config([{ name: 'beat', module: heartbeat }]);
  const f = await startForkd([], { cwd: dir.path });
  try {
    const [first] = await waitFor(() => { const s = servicePids(f, 'beat'); return s.length === 1 ? s : null; }, 'the service to run');
    await waitFor(() => beating(file, first!), 'its heartbeat');
    config([{ name: 'beat', module: join(dir.path, 'missing.js') }]);
    f.signal('SIGHUP');
    await f.waitForLog(/Reload: service beat's new code failed to start \(cannot find module \S*missing\.js .*\); the running one carries on/);
    assert.ok(await beating(file, first!), 'the old one beats on');
    assert.equal(events(file), [`start ${first}`]);

    config([{ name: 'beat', module: heartbeat, overlap: true }]);
    f.signal('SIGHUP');
    await waitFor(() => events(file).length === 3, 'the overlapping replacement');
    const lines = events(file);
    // overlap: the new one starts before the old one stops.
    assert.match(lines[1]!, /^start \d+$/);
    assert.is(lines[2], `stop ${first}`);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('a hung service is killed after timeout, its stack logged, and started again', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '-t', '1', '--service', `stuck=${spins}`, probe]);
  try {
    const m = await f.waitForLog(/\[CRITICAL\] SERVICE TIMEOUT \(pid:(\d+)\): service stuck is hung.*stack="spins \(\S*spins\.js:\d+:\d+\)/);
    const pid = Number(m[1]);
    await f.waitForLog(new RegExp(`Service stuck \\(pid:${pid}\\) was killed by SIGKILL; starting it again`));
    await waitFor(() => servicePids(f, 'stuck').some((p) => p !== pid), 'a new one');
    // The workers serve on meanwhile.
    assert.is((await request(`${f.url}/count`)).status, 200);
  } finally {
    await f.kill();
  }
});

test('a service whose module never finishes loading is killed at bootTimeout and started again', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--boot-timeout', '1', '--service', `slow=${join(FIXTURES, 'services', 'hangs-loading.js')}`, probe]);
  try {
    await f.waitForLog(/Service slow \(pid:\d+\) failed: it did not load within 1 s \(bootTimeout\); starting it again in \d+ ms/);
    assert.is((await request(`${f.url}/count`)).status, 200);
  } finally {
    await f.kill();
  }
});

test.run();
