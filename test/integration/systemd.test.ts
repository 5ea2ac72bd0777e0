import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, BIN, childrenOf, cleanEnv, runForkd, startForkd, tempDir, waitFor } from '../helpers/forkd';
import { request, requestUnix } from '../helpers/http';
import { listenForNotify } from '../helpers/notify';

const probe = join(APPS, 'probe.js');

test('sd_notify from the master\'s own pid: READY=1, RELOADING=1 + MONOTONIC_USEC then READY=1, STOPPING=1', async () => {
  const dir = tempDir();
  const socket = join(dir.path, 'notify.sock');
  const notify = await listenForNotify(socket);
  writeFileSync(join(dir.path, 'app.js'), "module.exports = (req, res) => res.end('v1');\n");
  writeFileSync(join(dir.path, 'forkd.config.js'), "module.exports = { app: 'app.js', workers: 2, bind: ['127.0.0.1:0'], reloadOnConfigChange: false };\n");
  const f = await startForkd([], { cwd: dir.path, env: { NOTIFY_SOCKET: socket } });
  try {
    const ready = await notify.waitFor({ READY: '1' });
    assert.is(ready.pid, f.pid, 'sent from the master pid (SCM_CREDENTIALS)');
    assert.is(ready.fields.STATUS, '2/2 workers serving, generation 1');
    f.signal('SIGHUP');
    const reloading = await notify.waitFor({ RELOADING: '1' });
    const uptimeUs = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 1e6;
    assert.ok(Math.abs(Number(reloading.fields.MONOTONIC_USEC) - uptimeUs) < 60e6, 'MONOTONIC_USEC is CLOCK_MONOTONIC now');
    const reloaded = await notify.waitFor({ READY: '1', STATUS: '2/2 workers serving, generation 2; last reload ok' });
    assert.ok(notify.messages.indexOf(reloading) < notify.messages.indexOf(reloaded), 'READY=1 follows RELOADING=1');
    writeFileSync(join(dir.path, 'app.js'), 'throw new Error("broken release");\n');
    f.signal('SIGHUP');
    await notify.waitFor({ READY: '1', STATUS: '2/2 workers serving, generation 2; last reload failed: a new worker failed to boot: Error: broken release' });
    assert.is((await request(`${f.url}/`)).body, 'v1', 'the old generation serves on');
    f.signal('SIGTERM');
    const stopping = await notify.waitFor({ STOPPING: '1' });
    assert.is(stopping.pid, f.pid);
    assert.ok(notify.messages.every((m) => m.pid === f.pid), 'every message came from the master');
  } finally {
    await f.kill();
    notify.close();
    dir.remove();
  }
});

test('an abstract NOTIFY_SOCKET works too; workers never see NOTIFY_SOCKET or WATCHDOG_*', async () => {
  const name = `@forkd-test-${process.pid}`;
  const notify = await listenForNotify(name);
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', probe], { env: { NOTIFY_SOCKET: name, WATCHDOG_USEC: '400000' } });
  try {
    const ready = await notify.waitFor({ READY: '1' });
    assert.is(ready.pid, f.pid, 'systemd-notify, run as root, sends with the master pid');
    const t0 = notify.messages.length;
    await notify.waitFor({ WATCHDOG: '1' });
    await new Promise((r) => setTimeout(r, 700));
    const pings = notify.messages.slice(t0).filter((m) => m.fields.WATCHDOG === '1').length;
    assert.ok(pings >= 2, `WATCHDOG=1 every 200 ms (got ${pings} in ~0.7 s)`);
    assert.is((await request(`${f.url}/systemd-env`)).body, '[]');
  } finally {
    await f.kill();
    notify.close();
  }
});

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((ok) => s.listen(0, '127.0.0.1', ok));
  const { port } = s.address() as net.AddressInfo;
  await new Promise<void>((ok) => s.close(() => ok()));
  return port;
}

/** forkd under systemd-socket-activate, which binds, then execs forkd on the first connection. */
function activated(listen: string[], args: string[]): { child: ChildProcess; output: () => string } {
  const child = spawn('systemd-socket-activate', [...listen, process.execPath, BIN, ...args], {
    env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (c: string) => { out += c; });
  child.stderr!.setEncoding('utf8').on('data', (c: string) => { out += c; });
  return { child, output: () => out };
}

async function endActivated(a: { child: ChildProcess }): Promise<void> {
  const pid = a.child.pid!;
  const kids = childrenOf(pid);
  a.child.kill('SIGKILL');
  for (const k of kids) { try { process.kill(k, 'SIGKILL'); } catch { /* gone */ } }
  await waitFor(() => a.child.exitCode !== null || a.child.signalCode !== null, 'forkd to exit');
}

test('socket activation: forkd serves the sockets systemd passed, by name and by address', async () => {
  const dir = tempDir();
  const port = await freePort();
  const sock = join(dir.path, 'web.sock');
  const a = activated(['-l', `127.0.0.1:${port}`, '-l', sock, '--fdname=http:web'], ['-w', '2', '-b', `127.0.0.1:${port}`, '-b', 'fd://web', probe]);
  try {
    await waitFor(() => a.output().includes(`Listening on 127.0.0.1:${port}`), 'systemd-socket-activate to listen');
    // The first connection makes it exec forkd; it is answered once the workers serve.
    assert.is((await request(`http://127.0.0.1:${port}/`)).status, 200);
    assert.is((await requestUnix(sock)).status, 200);
    assert.match(a.output(), `Listening at: http://127.0.0.1:${port} (${a.child.pid}), from systemd socket http`);
    assert.match(a.output(), `Listening at: unix:${sock} (${a.child.pid}), from systemd socket web`);
    assert.is((await request(`http://127.0.0.1:${port}/systemd-env`)).body, '[]', 'workers see no LISTEN_*');
  } finally {
    await endActivated(a);
    dir.remove();
  }
});

test('with bind left at its default, forkd serves only what systemd passed', async () => {
  const port = await freePort();
  const a = activated(['-l', `127.0.0.1:${port}`], ['-w', '1', probe]);
  try {
    await waitFor(() => a.output().includes(`Listening on 127.0.0.1:${port}`), 'systemd-socket-activate to listen');
    assert.is((await request(`http://127.0.0.1:${port}/`)).status, 200);
    assert.not.match(a.output(), '127.0.0.1:8000');
  } finally {
    await endActivated(a);
  }
});

test('user, group, initgroups and umask: workers drop to the user, the master does not', async () => {
  // The app sits where any user can read it (a clone of this project may not be).
  const dir = tempDir();
  chmodSync(dir.path, 0o755);
  copyFileSync(probe, join(dir.path, 'probe.js'));
  const app = join(dir.path, 'probe.js');
  const sock = join(dir.path, 'app.sock');
  const errors = join(dir.path, 'error.log');
  const ids = (pid: number) => {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const field = (name: string) => new RegExp(`^${name}:\\s+(.*)$`, 'm').exec(status)![1]!.trim().split(/\s+/).map(Number);
    return { uid: field('Uid')[0], gid: field('Gid')[0], groups: field('Groups') };
  };
  const f = await startForkd(['-w', '1', '-b', `unix:${sock}`, '-u', 'nobody', '-m', '007', '--error-logfile', errors, app],
    { logFile: errors, wait: 'none', cwd: dir.path });
  try {
    await waitFor(() => requestUnix(sock).then((r) => r.status === 200, () => false), 'forkd to serve');
    const [worker] = f.workers();
    assert.equal(ids(worker!), { uid: 65534, gid: 65534, groups: [65534] });
    assert.is(ids(f.pid).uid, 0, 'the master keeps its user, to bind on reload');
    assert.is(statSync(sock).mode & 0o777, 0o770, 'the socket file mode follows the umask');
    assert.is(statSync(errors).uid, 65534, 'the error log is the workers\' to write');
    assert.match(readFileSync(errors, 'utf8'), `[${worker}] [INFO] Booting worker`);
  } finally {
    await f.kill();
  }
  // A user with supplementary groups, if this machine has one: they reach the workers with --initgroups.
  const member = readFileSync('/etc/group', 'utf8').split('\n').map((l) => l.split(':')).find((g) => g[3]);
  assert.ok(member, 'this machine has a user with supplementary groups');
  const user = member![3]!.split(',')[0]!;
  const supplementary = Number(member![2]);
  try {
    for (const initgroups of [true, false]) {
      const g = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '-u', user, ...(initgroups ? ['--initgroups'] : []), app], { cwd: dir.path });
      try {
        const [worker] = g.workers();
        assert.is(ids(worker!).groups.includes(supplementary), initgroups, `${user}'s group ${supplementary} ${initgroups ? 'with' : 'without'} --initgroups`);
      } finally {
        await g.kill();
      }
    }
  } finally {
    dir.remove();
  }
});

test('an unknown user is refused with exit 78', async () => {
  const r = await runForkd(['-u', 'no-such-user-here', probe]);
  assert.is(r.code, 78);
  assert.match(r.stderr, 'user "no-such-user-here" does not exist');
});

test.run();
