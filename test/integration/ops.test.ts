import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, FIXTURES, isAlive, startForkd, tempDir, waitFor } from '../helpers/forkd';
import { load, request } from '../helpers/http';

const probe = join(APPS, 'probe.js');
const lines = (path: string) => (existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter(Boolean) : []);

test('USR1 after logrotate moved the logs: both are reopened, and no access line is lost', async () => {
  const dir = tempDir();
  const access = join(dir.path, 'access.log');
  const errors = join(dir.path, 'error.log');
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--access-logfile', access, '--error-logfile', errors, probe],
    { logFile: errors });
  try {
    const rotate = setTimeout(() => {
      renameSync(access, `${access}.1`);
      renameSync(errors, `${errors}.1`);
      f.signal('SIGUSR1');
    }, 1000);
    const r = await load(`${f.url}/`, { connections: 8, durationMs: 2500, keepAlive: true });
    clearTimeout(rotate);
    assert.is(r.failed, 0);
    const logged = () => lines(access).length + lines(`${access}.1`).length;
    await waitFor(() => logged() === r.ok, `${r.ok} access lines (have ${logged()})`);
    assert.ok(lines(access).length > 0, 'the workers write to the new access log');
    assert.ok(lines(`${access}.1`).length > 0, 'and wrote to the old one before');
    await waitFor(() => lines(errors).some((l) => l.includes('log files reopened')), 'the master to write to the new error log');
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('hooks run where gunicorn runs them; a throwing or hanging hook is logged and harms nothing', async () => {
  const dir = tempDir();
  const trace = join(dir.path, 'trace');
  const f = await startForkd(['-c', join(FIXTURES, 'hooks.config.js')], { cwd: APPS, env: { HOOK_TRACE: trace } });
  const seen = () => lines(trace).map((l) => l.split(' ')[0]);
  try {
    const [worker] = f.workers();
    await waitFor(() => seen().includes('whenReady'), 'whenReady');
    assert.equal(seen().slice(0, 5), ['onStarting', 'preFork', 'postFork', 'postWorkerInit', 'whenReady']);
    assert.ok(lines(trace).includes(`postWorkerInit 1 ${worker}`), 'postWorkerInit ran in the worker');
    await f.waitForLog(/hook postFork threw: Error: postFork always fails/);
    await f.waitForLog(/hook whenReady did not finish within 0\.5s \(hookTimeout\); carrying on/);
    assert.is((await request(`${f.url}/count`)).status, 200);
    await waitFor(() => lines(trace).includes('postRequest /count 200'), 'postRequest');
    assert.ok(lines(trace).includes('preRequest /count'));
    f.signal('SIGTTIN');
    await waitFor(() => lines(trace).includes('nworkersChanged 1->2'), 'nworkersChanged');
    void request(`${f.url}/spin`).catch(() => undefined);
    const abort = await waitFor(() => lines(trace).find((l) => /^workerAbort \d+ spinForever$/.test(l)), 'workerAbort with the stack');
    const hung = Number(abort.split(' ')[1]);
    await waitFor(() => !isAlive(hung) && f.workers().filter(isAlive).length === 2, 'the hung worker replaced');
    const quitter = f.workers().filter(isAlive)[0]!;
    process.kill(quitter, 'SIGQUIT');
    await waitFor(() => lines(trace).includes(`workerInt ${quitter}`) && lines(trace).includes(`workerExit ${quitter}`), 'workerInt, workerExit');
    await waitFor(() => lines(trace).some((l) => l.startsWith(`childExit `) && l.includes(` ${quitter} 0 null`)), 'childExit');
    f.signal('SIGHUP');
    await f.waitForLog(/Reload complete/);
    assert.ok(lines(trace).includes('onReload'));
    f.signal('SIGTERM');
    assert.is((await f.waitExit()).code, 0);
    assert.is(lines(trace).at(-1), 'onExit');
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('maxMemory recycles a worker that grew too big, replacement first, failing no request', async () => {
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--max-memory', '120MB', probe]);
  try {
    const load1 = load(`${f.url}/`, { connections: 8, durationMs: 3000, keepAlive: true });
    const grown = Number((await request(`${f.url}/grow?mb=150`)).headers['x-worker']);
    await f.waitForLog(new RegExp(`Worker \\(pid:${grown}\\) is to be replaced: its resident memory \\d+ MiB exceeds maxMemory 120 MiB`));
    await waitFor(() => !isAlive(grown), 'the big worker to exit');
    const r = await load1;
    assert.is(r.failed, 0, JSON.stringify(r.errors));
    await waitFor(() => f.workers().length === 2, 'two workers');
  } finally {
    await f.kill();
  }
});

test('--reload restarts the workers when an app file changes', async () => {
  const dir = tempDir();
  writeFileSync(join(dir.path, 'app.js'), "module.exports = (req, res) => res.end('one');\n");
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--reload', 'app.js'], { cwd: dir.path });
  try {
    assert.is((await request(`${f.url}/`)).body, 'one');
    const old = f.workers();
    writeFileSync(join(dir.path, 'app.js'), "module.exports = (req, res) => res.end('two');\n");
    await f.waitForLog(/Reloading \(\S+app\.js changed \(--reload\)\)/);
    await f.waitForLog(/Reload complete: generation 2/);
    // The old worker may still take a connection until its stop reaches it: ask once it is gone.
    await waitFor(() => old.every((p) => !isAlive(p)), 'the old worker to exit');
    assert.is((await request(`${f.url}/`)).body, 'two');
  } finally {
    await f.kill();
    dir.remove();
  }
});

test.run();
