import { existsSync, renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, isAlive, startForkd, tempDir, waitFor, type Forkd } from '../helpers/forkd';
import { load, request, requestUnix } from '../helpers/http';

/** An app whose answer says which version of its code a worker loaded. */
function writeApp(dir: string, version: string, body = ''): void {
  writeFileSync(join(dir, 'app.js'), body || [
    "const fs = require('node:fs');",
    `const version = ${JSON.stringify(version)};`,
    'module.exports = (req, res) => {',
    "  const url = new URL(req.url, 'http://x');",
    "  if (url.searchParams.get('mark')) fs.writeFileSync(url.searchParams.get('mark'), 'in flight');",
    "  const ms = Number(url.searchParams.get('ms') || 0);",
    '  setTimeout(() => res.end(`${version} ${process.pid}`), ms);',
    '};',
  ].join('\n'));
}

function writeConfig(dir: string, config: Record<string, unknown>): void {
  writeFileSync(join(dir, 'forkd.config.js'), `module.exports = ${JSON.stringify({ app: 'app.js', ...config })};\n`);
}

/** Saves the config the way many editors do: a new file renamed over the old one. */
function saveByRename(dir: string, config: Record<string, unknown>): void {
  const tmp = join(dir, '.forkd.config.js.swp');
  writeFileSync(tmp, `module.exports = ${JSON.stringify({ app: 'app.js', ...config })};\n`);
  renameSync(tmp, join(dir, 'forkd.config.js'));
}

async function version(url: string): Promise<string> {
  return (await request(`${url}/`)).body.split(' ')[0]!;
}

function reloads(f: Forkd): number {
  return f.output().match(/Reload complete/g)?.length ?? 0;
}

test('HUP: in-flight requests finish on the old code, new ones reach the new code, capacity never drops', async () => {
  const dir = tempDir();
  writeApp(dir.path, 'v1');
  writeConfig(dir.path, { workers: 2, bind: ['127.0.0.1:0'], gracefulTimeout: 10 });
  const f = await startForkd([], { cwd: dir.path });
  try {
    const old = f.workers();
    const mark = join(dir.path, 'mark');
    const inFlight = request(`${f.url}/?ms=1500&mark=${mark}`);
    await waitFor(() => existsSync(mark), 'a request in flight');
    writeApp(dir.path, 'v2');
    let fewest = Infinity;
    const sampler = setInterval(() => { fewest = Math.min(fewest, f.workers().length); }, 10);
    f.signal('SIGHUP');
    await f.waitForLog(/Reload complete: generation 2, 2 workers/);
    assert.is((await inFlight).body.split(' ')[0], 'v1', 'the in-flight request finished on the old code');
    await waitFor(() => old.every((p) => !isAlive(p)), 'the old generation to exit');
    clearInterval(sampler);
    assert.ok(fewest >= 2, `the worker count dipped to ${fewest}`);
    assert.is(await version(f.url), 'v2');
    assert.is(f.workers().length, 2);
  } finally {
    await f.kill();
    dir.remove();
  }
});

for (const keepAlive of [true, false]) {
  test(`six HUPs under ${keepAlive ? 'keep-alive' : 'Connection: close'} load fail no request`, async () => {
    const dir = tempDir();
    writeApp(dir.path, 'v1');
    writeConfig(dir.path, { workers: 2, bind: ['127.0.0.1:0'] });
    const f = await startForkd([], { cwd: dir.path });
    try {
      let sent = 0;
      const hups = setInterval(() => { if (sent < 6) { sent++; f.signal('SIGHUP'); } }, 700);
      const r = await load(`${f.url}/`, { connections: 16, durationMs: 5500, keepAlive });
      clearInterval(hups);
      // Reloads queue, each at least a second long (the new generation must live one): on a loaded
      // machine the last may end well after the load does.
      await waitFor(() => reloads(f) === 6, 'six reloads', 30_000);
      assert.is(r.failed, 0, `failed ${r.failed} of ${r.sent}: ${JSON.stringify(r.errors)} ${JSON.stringify(r.statuses)}`);
      assert.ok(r.ok > 500, `only ${r.ok} requests`);
    } finally {
      await f.kill();
      dir.remove();
    }
  });
}

test('a broken app on HUP keeps the old generation serving; the fixed app then reloads', async () => {
  const dir = tempDir();
  writeApp(dir.path, 'v1');
  writeConfig(dir.path, { workers: 2, bind: ['127.0.0.1:0'] });
  const f = await startForkd([], { cwd: dir.path });
  try {
    const old = f.workers().sort();
    const sameWorkers = () => JSON.stringify(f.workers().sort()) === JSON.stringify(old);
    writeApp(dir.path, '', 'module.exports = (req, res) => { res.end(\n');
    f.signal('SIGHUP');
    await f.waitForLog(/Reload failed: a new worker failed to boot: SyntaxError: Unexpected end of input; still serving generation 1 as before/);
    await waitFor(sameWorkers, 'the new workers to go and the old ones to serve on');
    assert.is(await version(f.url), 'v1');
    writeApp(dir.path, '', 'throw new Error("no database");\n');
    f.signal('SIGHUP');
    await f.waitForLog(/Reload failed: a new worker failed to boot: Error: no database/);
    await waitFor(sameWorkers, 'the old workers to serve on');
    writeApp(dir.path, 'v2');
    f.signal('SIGHUP');
    await f.waitForLog(/Reload complete: generation 4, 2 workers/);
    await waitFor(() => old.every((p) => !isAlive(p)), 'the old generation to exit');
    assert.is(await version(f.url), 'v2');
    assert.ok(!f.hasExited());
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('a new generation that does not boot in time is abandoned', async () => {
  const dir = tempDir();
  writeApp(dir.path, 'v1');
  writeConfig(dir.path, { workers: 1, bind: ['127.0.0.1:0'], bootTimeout: 1 });
  const f = await startForkd([], { cwd: dir.path });
  try {
    writeApp(dir.path, '', 'const t = Date.now() + 5000; while (Date.now() < t); module.exports = (q, s) => s.end("late");\n');
    f.signal('SIGHUP');
    await f.waitForLog(/Reload failed: a new worker failed to boot: it did not boot within 1s \(bootTimeout\)/);
    assert.is(await version(f.url), 'v1');
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('saving the config file reloads it; an invalid save is logged and ignored; renamed saves count', async () => {
  const dir = tempDir();
  writeApp(dir.path, 'v1');
  writeConfig(dir.path, { workers: 1, bind: ['127.0.0.1:0'] });
  const f = await startForkd([], { cwd: dir.path });
  try {
    writeConfig(dir.path, { workers: 'lots', bind: ['127.0.0.1:0'] });
    await f.waitForLog(/Reload failed: invalid config: invalid workers = "lots" from config file .*forkd\.config\.js: expected "auto" or an integer ≥ 1; still serving generation 1 as before/);
    assert.is(f.workers().length, 1);
    saveByRename(dir.path, { workers: 3, bind: ['127.0.0.1:0'] });
    await f.waitForLog(/Reload complete: generation 2, 3 workers/);
    await waitFor(() => f.workers().length === 3, 'three workers');
    saveByRename(dir.path, { workers: 2, bind: ['127.0.0.1:0'] });
    await f.waitForLog(/Reload complete: generation 3, 2 workers/);
    assert.match(f.output(), /Reloading \(config file \S+forkd\.config\.js changed\)/);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('--no-reload-on-config-change leaves a saved config alone until HUP', async () => {
  const dir = tempDir();
  writeApp(dir.path, 'v1');
  writeConfig(dir.path, { workers: 1, bind: ['127.0.0.1:0'] });
  const f = await startForkd(['--no-reload-on-config-change'], { cwd: dir.path });
  try {
    writeConfig(dir.path, { workers: 2, bind: ['127.0.0.1:0'] });
    await new Promise((r) => setTimeout(r, 1000)); // the debounce is 300 ms: a reload would have begun
    assert.not.match(f.output(), 'Reloading');
    f.signal('SIGHUP');
    await f.waitForLog(/Reload complete: generation 2, 2 workers/);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('a TTIN count lasts until a reload of a config that sets workers', async () => {
  const dir = tempDir();
  writeApp(dir.path, 'v1');
  writeConfig(dir.path, { bind: ['127.0.0.1:0'] });
  const f = await startForkd(['--no-reload-on-config-change'], { cwd: dir.path, env: {} });
  try {
    const auto = f.workers().length;
    f.signal('SIGTTIN');
    await waitFor(() => f.workers().length === auto + 1, 'one more worker');
    f.signal('SIGHUP');
    await f.waitForLog(new RegExp(`Reload complete: generation 2, ${auto + 1} workers`));
    writeConfig(dir.path, { bind: ['127.0.0.1:0'], workers: 1 });
    f.signal('SIGHUP');
    await f.waitForLog(/Reload complete: generation 3, 1 worker/);
    await waitFor(() => f.workers().length === 1, 'one worker');
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('a reload opens added binds and closes removed ones; unchanged ones never close', async () => {
  const dir = tempDir();
  const sock = join(dir.path, 'app.sock');
  writeApp(dir.path, 'v1');
  writeConfig(dir.path, { workers: 1, bind: ['127.0.0.1:0'] });
  const f = await startForkd(['--no-reload-on-config-change'], { cwd: dir.path });
  try {
    const tcp = f.url;
    writeConfig(dir.path, { workers: 1, bind: ['127.0.0.1:0', `unix:${sock}`] });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
    let failures = 0;
    let stop = false;
    const poll = (async () => { while (!stop) await request(`${tcp}/`, { agent }).catch(() => { failures++; }); })();
    f.signal('SIGHUP');
    await f.waitForLog(/Reload complete: generation 2/);
    stop = true;
    await poll;
    agent.destroy();
    assert.is(failures, 0, 'the TCP listener served throughout the reload');
    assert.is((await requestUnix(sock)).body.split(' ')[0], 'v1');
    writeConfig(dir.path, { workers: 1, bind: [`unix:${sock}`] });
    f.signal('SIGHUP');
    await f.waitForLog(/Reload complete: generation 3/);
    await waitFor(() => request(`${tcp}/`).then(() => false, (err: NodeJS.ErrnoException) => err.code === 'ECONNREFUSED'), 'the removed bind to close');
    assert.is((await requestUnix(sock)).status, 200);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('reloads that arrive during a reload queue up, one at a time', async () => {
  const dir = tempDir();
  writeApp(dir.path, 'v1');
  writeConfig(dir.path, { workers: 1, bind: ['127.0.0.1:0'] });
  const f = await startForkd(['--no-reload-on-config-change'], { cwd: dir.path });
  try {
    // Signals of one kind sent together merge into one (Unix does not queue them), so each HUP is
    // sent once the previous reload has begun: it arrives during that reload.
    const begun = (n: number) => waitFor(() => (f.output().match(/Reloading \(HUP\)/g)?.length ?? 0) >= n, `reload ${n} to begin`);
    f.signal('SIGHUP');
    await begun(1);
    f.signal('SIGHUP');
    await begun(2);
    f.signal('SIGHUP');
    await f.waitForLog(/Reload complete: generation 4/);
    const events = f.output().split('\n').filter((l) => /Reloading \(HUP\)|Reload complete/.test(l)).map((l) => (l.includes('Reloading') ? 'begin' : 'done'));
    assert.equal(events, ['begin', 'done', 'begin', 'done', 'begin', 'done']);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('TERM during a slow reload stops at once instead of waiting for it', async () => {
  const dir = tempDir();
  writeApp(dir.path, 'v1');
  writeConfig(dir.path, { workers: 1, bind: ['127.0.0.1:0'], bootTimeout: 30 });
  const f = await startForkd(['--no-reload-on-config-change'], { cwd: dir.path });
  try {
    writeApp(dir.path, '', 'const t = Date.now() + 20000; while (Date.now() < t); module.exports = (q, s) => s.end("late");\n');
    f.signal('SIGHUP');
    await f.waitForLog(/Booting worker with pid: \d+ nr=1 generation=2/);
    const t0 = Date.now();
    f.signal('SIGTERM');
    assert.equal(await f.waitExit(8000), { code: 0, signal: null });
    assert.ok(Date.now() - t0 < 5000, `stopped after ${Date.now() - t0} ms`);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('WINCH stops every worker and keeps the master; TTIN brings one back, HUP the configured count', async () => {
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', join(APPS, 'probe.js')]);
  try {
    f.signal('SIGWINCH');
    await waitFor(() => f.workers().length === 0, 'no workers');
    assert.ok(!f.hasExited());
    f.signal('SIGTTIN');
    await waitFor(() => f.workers().length === 1, 'one worker');
    assert.is((await request(`${f.url}/`)).status, 200);
    f.signal('SIGWINCH');
    await waitFor(() => f.workers().length === 0, 'no workers again');
    f.signal('SIGHUP');
    await f.waitForLog(/Reload complete: generation 2, 2 workers/);
    assert.is(f.workers().length, 2);
  } finally {
    await f.kill();
  }
});

test.run();
