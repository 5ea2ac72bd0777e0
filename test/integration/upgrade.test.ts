import { existsSync, lstatSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROOT, childrenOf, isAlive, startForkd, tempDir, waitFor, type Forkd } from '../helpers/forkd';
import { load, request, requestUnix } from '../helpers/http';
import { listenForNotify } from '../helpers/notify';

/** A deployment as operators lay one out: releases/vN/forkd.js, a `current` symlink to the live
 *  one, the app reporting which release its master came from. */
function deployment(config: Record<string, unknown> = {}) {
  const dir = tempDir();
  const release = (name: string) => {
    mkdirSync(join(dir.path, 'releases', name), { recursive: true });
    writeFileSync(join(dir.path, 'releases', name, 'forkd.js'),
      `process.env.RELEASE = ${JSON.stringify(name)};\nrequire(${JSON.stringify(join(ROOT, 'bin', 'forkd.js'))});\n`);
  };
  const point = (name: string) => {
    rmSync(join(dir.path, 'current'), { force: true });
    symlinkSync(join(dir.path, 'releases', name), join(dir.path, 'current'));
  };
  release('v1');
  point('v1');
  writeFileSync(join(dir.path, 'app.js'), "module.exports = (req, res) => res.end(`${process.env.RELEASE} ${process.pid}`);\n");
  writeFileSync(join(dir.path, 'forkd.config.js'), `module.exports = ${JSON.stringify({
    app: 'app.js', workers: 2, bind: ['127.0.0.1:0', `unix:${join(dir.path, 'app.sock')}`], pid: join(dir.path, 'forkd.pid'),
    reloadOnConfigChange: false, ...config,
  })};\n`);
  return { dir, release, point, cli: join(dir.path, 'current', 'forkd.js'), pidfile: join(dir.path, 'forkd.pid'), sock: join(dir.path, 'app.sock') };
}

const readPid = (path: string) => (existsSync(path) ? Number(readFileSync(path, 'utf8').trim()) : null);

async function startAt(d: ReturnType<typeof deployment>, env: Record<string, string> = {}): Promise<Forkd> {
  return startForkd([], { cwd: d.dir.path, env, bin: d.cli });
}

for (const keepAlive of [true, false]) {
  test(`USR2 under ${keepAlive ? 'keep-alive' : 'Connection: close'} load: the new release takes over, no request fails`, async () => {
    const d = deployment();
    const f = await startAt(d);
    try {
      const url = f.url;
      assert.match((await request(`${url}/`)).body, /^v1 /);
      d.release('v2');
      d.point('v2');
      const r = load(`${url}/`, { connections: 16, durationMs: 4000, keepAlive });
      await new Promise((ok) => setTimeout(ok, 500));
      f.signal('SIGUSR2');
      const successor = Number((await f.waitForLog(/Upgrade complete: the successor master \(pid:(\d+)\) serves/))[1]);
      assert.is((await f.waitExit(15_000)).code, 0, 'the old master retires');
      const result = await r;
      assert.is(result.failed, 0, `failed ${result.failed} of ${result.sent}: ${JSON.stringify(result.errors)}`);
      assert.ok(result.ok > 200);
      assert.is(readPid(d.pidfile), successor, 'the pidfile names the successor');
      assert.not.ok(existsSync(`${d.pidfile}.oldbin`));
      assert.match((await request(`${url}/`)).body, /^v2 /, 'the new release serves');
      assert.ok(lstatSync(d.sock).isSocket(), 'the socket file survived the handover');
      assert.match((await requestUnix(d.sock)).body, /^v2 /);
      process.kill(successor, 'SIGTERM');
      await waitFor(() => !isAlive(successor), 'the successor to stop');
      assert.not.ok(existsSync(d.sock), 'the successor removed the socket file it owned at its stop');
    } finally {
      await f.kill();
      d.dir.remove();
    }
  });
}

test('a successor that cannot boot is killed; the old master serves on with its pidfile back', async () => {
  const d = deployment();
  const f = await startAt(d);
  try {
    writeFileSync(join(d.dir.path, 'app.js'), 'throw new Error("release 2 is broken");\n');
    f.signal('SIGUSR2');
    await f.waitForLog(/Upgrade failed: the successor exited with code 4 before it was ready; this master carries on \(pidfile restored\)/);
    assert.is(readPid(d.pidfile), f.pid);
    assert.not.ok(existsSync(`${d.pidfile}.oldbin`));
    assert.match((await request(`${f.url}/`)).body, /^v1 /);
    assert.ok(!f.hasExited());
  } finally {
    await f.kill();
    d.dir.remove();
  }
});

test('one upgrade at a time: a second USR2 meanwhile is logged and ignored', async () => {
  const d = deployment();
  const f = await startAt(d);
  try {
    writeFileSync(join(d.dir.path, 'app.js'), `const t = Date.now() + 2000; while (Date.now() < t);\n${readFileSync(join(d.dir.path, 'app.js'), 'utf8')}`);
    f.signal('SIGUSR2');
    await f.waitForLog(/Upgrade: started successor master/);
    f.signal('SIGUSR2');
    await f.waitForLog(/USR2 ignored: an upgrade is already under way/);
    await f.waitForLog(/Upgrade complete/, 20_000);
    assert.is(f.output().match(/started successor master/g)!.length, 1);
  } finally {
    await f.kill();
    d.dir.remove();
  }
});

test('upgrade "manual": both masters serve until WINCH and TERM retire the old one', async () => {
  const d = deployment({ upgrade: 'manual' });
  const f = await startAt(d);
  try {
    const url = f.url;
    d.release('v2');
    d.point('v2');
    f.signal('SIGUSR2');
    const successor = Number((await f.waitForLog(/the successor master \(pid:(\d+)\) serves\. Send this master WINCH then TERM/))[1]);
    const seen = new Set<string>();
    for (let i = 0; i < 40 && seen.size < 2; i++) seen.add((await request(`${url}/`)).body.split(' ')[0]!);
    assert.equal([...seen].sort(), ['v1', 'v2'], 'both generations accept on the shared sockets');
    f.signal('SIGWINCH');
    await waitFor(() => f.workers().filter((p) => p !== successor).length === 0, 'the old master\'s workers to stop');
    for (let i = 0; i < 10; i++) assert.match((await request(`${url}/`)).body, /^v2 /);
    f.signal('SIGTERM');
    assert.is((await f.waitExit()).code, 0);
    assert.ok(lstatSync(d.sock).isSocket(), 'the old master left the socket file to the successor');
    assert.match((await requestUnix(d.sock)).body, /^v2 /);
    process.kill(successor, 'SIGTERM');
    await waitFor(() => !isAlive(successor), 'the successor to stop');
  } finally {
    await f.kill();
    d.dir.remove();
  }
});

test('under systemd the successor sends MAINPID= and READY=1 from its own pid', async () => {
  const d = deployment();
  const socket = join(d.dir.path, 'notify.sock');
  const notify = await listenForNotify(socket);
  const f = await startAt(d, { NOTIFY_SOCKET: socket });
  try {
    await notify.waitFor({ READY: '1' });
    f.signal('SIGUSR2');
    const handover = await notify.waitFor({ MAINPID: '*', READY: '1' });
    assert.is(handover.pid, Number(handover.fields.MAINPID), 'MAINPID= comes from the successor itself');
    assert.ok(handover.pid !== f.pid);
    assert.is((await f.waitExit()).code, 0);
    assert.not.ok(notify.messages.some((m) => m.pid === f.pid && m.fields.STOPPING), 'the retiring master does not tell systemd it stops');
    process.kill(handover.pid, 'SIGTERM');
    await notify.waitFor({ STOPPING: '1' });
    await waitFor(() => !isAlive(handover.pid) && childrenOf(handover.pid).length === 0, 'the successor to stop');
  } finally {
    await f.kill();
    notify.close();
    d.dir.remove();
  }
});

test.run();
