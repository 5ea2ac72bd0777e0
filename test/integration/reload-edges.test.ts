/** The reload cases a review found broken, each as a user would hit it. */

import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isAlive, startForkd, tempDir, waitFor, type Forkd } from '../helpers/forkd';
import { load, request } from '../helpers/http';

const APP_V1 = "module.exports = (req, res) => res.end(`v1 ${process.pid}`);\n";

function setup(config: Record<string, unknown>, app = APP_V1, extra = ''): { dir: ReturnType<typeof tempDir>; write(c: Record<string, unknown>, more?: string): void } {
  const dir = tempDir();
  writeFileSync(join(dir.path, 'app.js'), app);
  const write = (c: Record<string, unknown>, more = '') => writeFileSync(join(dir.path, 'forkd.config.js'),
    `module.exports = { app: 'app.js', bind: ['127.0.0.1:0'], reloadOnConfigChange: false, ...${JSON.stringify(c)}${more} };\n`);
  write(config, extra);
  return { dir, write };
}

const sameSet = (a: number[], b: number[]) => JSON.stringify([...a].sort()) === JSON.stringify([...b].sort());

/** Every old worker exited after every new worker was ready: from the debug log, in order. */
function replacedAfterReady(f: Forkd, generation: number): void {
  const lines = f.output().split('\n');
  const lastReady = lines.reduce((at, l, i) => (new RegExp(`Worker \\d+ ready .*generation=${generation}\\b`).test(l) ? i : at), -1);
  const firstRetired = lines.findIndex((l) => /reason=reloaded/.test(l));
  assert.ok(lastReady >= 0 && firstRetired > lastReady, `old workers retired (line ${firstRetired}) only after every new one was ready (line ${lastReady})`);
}

test('an app that crashes a moment after it starts fails the reload; the old generation serves on', async () => {
  const { dir } = setup({ workers: 2 });
  const f = await startForkd([], { cwd: dir.path });
  try {
    const old = f.workers();
    writeFileSync(join(dir.path, 'app.js'), "setTimeout(() => { throw new Error('lost the database'); }, 300);\nmodule.exports = (q, s) => s.end('v2');\n");
    f.signal('SIGHUP');
    await f.waitForLog(/Reload failed: a new worker failed to boot: it exited with code 1 \d+ ms after it was ready/);
    await waitFor(() => sameSet(f.workers(), old), 'the old workers alone');
    for (let i = 0; i < 10; i++) assert.match((await request(`${f.url}/`)).body, /^v1 /);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('a failed reload that lowered workers leaves every old worker serving', async () => {
  const { dir, write } = setup({ workers: 4 });
  const f = await startForkd([], { cwd: dir.path });
  try {
    const old = f.workers();
    write({ workers: 2 });
    writeFileSync(join(dir.path, 'app.js'), 'module.exports = (req, res) => { res.end(\n');
    f.signal('SIGHUP');
    await f.waitForLog(/Reload failed/);
    await waitFor(() => sameSet(f.workers(), old), 'all four old workers and no others');
    assert.not.match(f.output(), /reason=retired/);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('a reload replaces each worker only after its successor serves; capacity holds under load', async () => {
  const { dir } = setup({ workers: 2 });
  const f = await startForkd(['--log-level', 'debug'], { cwd: dir.path });
  try {
    const r = load(`${f.url}/`, { connections: 8, durationMs: 3000, keepAlive: true });
    f.signal('SIGHUP');
    await f.waitForLog(/Reload complete: generation 2/);
    assert.is((await r).failed, 0);
    replacedAfterReady(f, 2);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('a reload completes even when its new workers are recycled within their first second', async () => {
  const { dir } = setup({ workers: 2, maxRequests: 40 });
  const f = await startForkd([], { cwd: dir.path });
  try {
    let done = false;
    // A new connection for every request, so the new workers take their share the moment they
    // listen (kept-alive connections would stay with the old ones and leave the new idle).
    const r = load(`${f.url}/`, { connections: 8, durationMs: 20_000, keepAlive: false, until: () => done });
    f.signal('SIGHUP');
    await f.waitForLog(/Reload complete: generation 2/, 20_000).finally(() => { done = true; });
    const result = await r;
    assert.is(result.failed, 0, `failed ${result.failed} of ${result.sent}: ${JSON.stringify(result.errors)} ${JSON.stringify(result.statuses)}`);
    const untilDone = f.output().slice(0, f.output().indexOf('Reload complete'));
    assert.ok(/\(maxRequests\)/.test(untilDone.slice(untilDone.indexOf('Reloading'))), `workers were recycled during the reload:\n${f.output()}`);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('a hook that leaves a promise to reject does not take the master down', async () => {
  const { dir } = setup({ workers: 1 }, APP_V1, ", onReload: () => { (async () => { throw new Error('webhook down'); })(); }");
  const f = await startForkd([], { cwd: dir.path });
  try {
    f.signal('SIGHUP');
    await f.waitForLog(/unhandled promise rejection in the master.*webhook down/);
    await f.waitForLog(/Reload complete: generation 2/);
    assert.is((await request(`${f.url}/`)).status, 200);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('a config that never finishes loading fails the reload at bootTimeout, and TERM still works', async () => {
  const { dir } = setup({ workers: 1, bootTimeout: 2 });
  const f = await startForkd([], { cwd: dir.path });
  try {
    writeFileSync(join(dir.path, 'forkd.config.js'), 'module.exports = async () => { await new Promise(() => {}); };\n');
    f.signal('SIGHUP');
    await f.waitForLog(/Reload failed: reading the config did not finish within 2s/);
    f.signal('SIGHUP');
    await f.waitForLog(/Reloading \(HUP\) .*\n(?:.*\n)*?.*Reloading \(HUP\)/);
    f.signal('SIGTERM');
    assert.equal(await f.waitExit(5000), { code: 0, signal: null });
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('moving the config file away is no reload onto defaults; moving it back is one', async () => {
  const { dir } = setup({ workers: 1, reloadOnConfigChange: true });
  const f = await startForkd([], { cwd: dir.path });
  try {
    const url = f.url;
    renameSync(join(dir.path, 'forkd.config.js'), join(dir.path, 'elsewhere.js'));
    f.signal('SIGHUP');
    await f.waitForLog(/Reload failed: the config file \S+forkd\.config\.js is gone/);
    assert.is((await request(`${url}/`)).status, 200, 'still on its configured port');
    renameSync(join(dir.path, 'elsewhere.js'), join(dir.path, 'forkd.config.js'));
    await f.waitForLog(/Reload complete: generation 2/);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('--reload ignores the logs it writes into the app\'s directory', async () => {
  const dir = tempDir();
  writeFileSync(join(dir.path, 'app.js'), APP_V1);
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--reload', '--access-logfile', 'access.log', '--error-logfile', 'forkd.log', 'app.js'],
    { cwd: dir.path, logFile: join(dir.path, 'forkd.log') });
  try {
    for (let i = 0; i < 20; i++) await request(`${f.url}/`);
    await new Promise((r) => setTimeout(r, 800)); // past the 300 ms debounce: a reload would have begun
    assert.not.match(f.output(), 'Reloading');
    writeFileSync(join(dir.path, 'app.js'), APP_V1.replace('v1', 'v2'));
    await f.waitForLog(/Reload complete: generation 2/);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('USR1 works during a reload, in the master and the workers; a reopen that fails harms nothing', async () => {
  const { dir } = setup({ workers: 1, errorLog: 'forkd.log', accessLog: 'access.log' });
  const errors = join(dir.path, 'forkd.log');
  const f = await startForkd([], { cwd: dir.path, logFile: errors });
  try {
    const url = f.url; // the log that says it moves away below
    writeFileSync(join(dir.path, 'app.js'), `const t = Date.now() + 2500; while (Date.now() < t);\n${APP_V1}`);
    f.signal('SIGHUP');
    await f.waitForLog(/Booting worker with pid: \d+ nr=1 generation=2/);
    renameSync(errors, `${errors}.1`);
    f.signal('SIGUSR1');
    await waitFor(() => existsSync(errors) && readFileSync(errors, 'utf8').includes('log files reopened'), 'the master to reopen at once');
    assert.ok(!readFileSync(`${errors}.1`, 'utf8').includes('Reload complete'), 'before the reload completed');
    await waitFor(() => readFileSync(errors, 'utf8').includes('Reload complete'), 'the reload');
    // The old generation drains after "Reload complete": the worker to watch is the one left.
    const [worker] = await waitFor(() => { const w = f.workers(); return w.length === 1 ? w : null; }, 'one worker, of generation 2');
    // A directory where the access log was: the workers keep their file and serve on.
    renameSync(join(dir.path, 'access.log'), join(dir.path, 'access.log.1'));
    mkdirSync(join(dir.path, 'access.log'));
    f.signal('SIGUSR1');
    await waitFor(() => /cannot reopen accessLog: EISDIR/.test(readFileSync(errors, 'utf8')), 'the worker to log the failed reopen');
    assert.is((await request(`${url}/`)).status, 200);
    assert.equal(f.workers(), [worker]);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('a recycle asked for during a failed reload still happens', async () => {
  const { dir } = setup({ workers: 1, maxRequests: 20 });
  const f = await startForkd([], { cwd: dir.path });
  try {
    const [old] = f.workers();
    writeFileSync(join(dir.path, 'app.js'), `const t = Date.now() + 1500; while (Date.now() < t);\nthrow new Error('bad release');\n`);
    f.signal('SIGHUP');
    await f.waitForLog(/Booting worker with pid: \d+ nr=1 generation=2/);
    for (let i = 0; i < 25; i++) await request(`${f.url}/`);
    await f.waitForLog(/Reload failed/);
    writeFileSync(join(dir.path, 'app.js'), APP_V1);
    await waitFor(() => !isAlive(old!), 'the recycled worker to be replaced', 15_000);
    assert.match(f.output(), /is to be replaced: it served \d+ requests \(maxRequests\)/);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('reload errors are precise: an unopenable access log, a missing chdir', async () => {
  const { dir, write } = setup({ workers: 1 });
  const f = await startForkd([], { cwd: dir.path });
  try {
    write({ workers: 1, accessLog: '/nonexistent/dir/a.log' });
    f.signal('SIGHUP');
    await f.waitForLog(/Reload failed: invalid config: cannot open accessLog \/nonexistent\/dir\/a\.log: ENOENT/);
    write({ workers: 1, chdir: '/nonexistent' });
    f.signal('SIGHUP');
    await f.waitForLog(/Reload failed: invalid config: cannot change to directory \/nonexistent \(chdir\)/);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('the same address under another name keeps its socket; TERM mid-reload removes a socket file it added', async () => {
  const { dir, write } = setup({ workers: 1, bind: ['127.0.0.1:0'] });
  const f = await startForkd([], { cwd: dir.path });
  try {
    const port = new URL(f.url).port;
    write({ workers: 1, bind: [`127.0.0.1:${port}`] });
    f.signal('SIGHUP');
    await f.waitForLog(/Reload complete: generation 2/);
    write({ workers: 1, bind: [`localhost:${port}`] });
    f.signal('SIGHUP');
    await f.waitForLog(/Reload complete: generation 3/);
    const sock = join(dir.path, 'added.sock');
    write({ workers: 1, bind: [`localhost:${port}`, `unix:${sock}`] });
    writeFileSync(join(dir.path, 'app.js'), `const t = Date.now() + 20000; while (Date.now() < t);\n${APP_V1}`);
    f.signal('SIGHUP');
    await waitFor(() => existsSync(sock), 'the added socket file');
    f.signal('SIGTERM');
    assert.is((await f.waitExit(8000)).code, 0);
    assert.not.ok(existsSync(sock), 'the socket file it added is gone');
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('WINCH at start-up: no "Ready" with no workers', async () => {
  const dir = tempDir();
  writeFileSync(join(dir.path, 'app.js'), `const t = Date.now() + 1500; while (Date.now() < t);\n${APP_V1}`);
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', 'app.js'], { cwd: dir.path, wait: 'listening' });
  try {
    f.signal('SIGWINCH');
    await f.waitForLog(/Handling signal: WINCH/);
    await waitFor(() => f.workers().length === 0, 'no workers');
    assert.not.match(f.output(), /Ready: 0 workers/);
    f.signal('SIGTTIN');
    await f.waitForLog(/Ready: 1 worker serving/);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('--max-boot-failures sets when forkd gives up at start', async () => {
  const dir = tempDir();
  writeFileSync(join(dir.path, 'app.js'), 'process.exit(1);\n');
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--max-boot-failures', '2', 'app.js'], { cwd: dir.path, wait: 'listening' });
  try {
    assert.equal(await f.waitExit(10_000), { code: 3, signal: null });
    assert.match(f.output(), /Workers failed to boot 2 times in a row/);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test.run();
