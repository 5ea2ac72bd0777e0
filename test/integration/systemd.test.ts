import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, mkdirSync, readFileSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, BIN, childrenOf, cleanEnv, publicInstall, runForkd, startForkd, tempDir, waitFor } from '../helpers/forkd';
import { freePort, request, requestUnix } from '../helpers/http';
import { listenForNotify } from '../helpers/notify';
import { certificate } from '../helpers/tls';

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

test('socket activation with certfile: a TCP socket systemd passed (fd://NAME) serves TLS, a Unix one stays plain', async () => {
  const dir = tempDir();
  const port = await freePort();
  const sock = join(dir.path, 'web.sock');
  const { cert, key } = certificate(dir.path, 'server');
  const a = activated(['-l', `127.0.0.1:${port}`, '-l', sock, '--fdname=https:local'],
    ['-w', '1', '-b', 'fd://https', '-b', 'fd://local', '--certfile', cert, '--keyfile', key, probe]);
  try {
    await waitFor(() => a.output().includes(`Listening on 127.0.0.1:${port}`), 'systemd-socket-activate to listen');
    const body = await new Promise<string>((ok, fail) => {
      https.get({ host: '127.0.0.1', port, path: '/', ca: readFileSync(cert), agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c: string) => { text += c; }).on('end', () => ok(`${res.statusCode} ${text}`));
      }).on('error', fail);
    });
    assert.match(body, /^200 /);
    assert.is((await requestUnix(sock)).status, 200, 'the Unix socket is plain');
    assert.match(a.output(), `Listening at: https://127.0.0.1:${port} (${a.child.pid}), from systemd socket https`);
  } finally {
    await endActivated(a);
    dir.remove();
  }
});

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

const ids = (pid: number) => {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(status)![1]!.trim().split(/\s+/).filter(Boolean).map(Number);
  return { uid: field('Uid')[0], gid: field('Gid')[0], groups: field('Groups') };
};

/** A directory and app any user can read, and forkd as any user can run it (a clone of this project
 *  may sit where other users cannot look). */
function publicSetup(): { dir: string; app: string; bin: string; node: string; remove(): void } {
  const dir = tempDir();
  chmodSync(dir.path, 0o755);
  copyFileSync(probe, join(dir.path, 'probe.js'));
  const install = publicInstall();
  return { dir: dir.path, app: join(dir.path, 'probe.js'), bin: install.bin, node: install.node, remove: () => { dir.remove(); install.remove(); } };
}

test('user, group and umask: workers run as the user, the master does not; socket and logs are theirs', async () => {
  const p = publicSetup();
  const sock = join(p.dir, 'app.sock');
  const errors = join(p.dir, 'error.log');
  const f = await startForkd(['-w', '1', '-b', `unix:${sock}`, '-u', 'nobody', '-m', '007', '--error-logfile', errors, p.app],
    { logFile: errors, wait: 'none', cwd: p.dir, bin: p.bin, node: p.node });
  try {
    await waitFor(() => requestUnix(sock).then((r) => r.status === 200, () => false), 'forkd to serve');
    const [worker] = f.workers();
    assert.equal(ids(worker!), { uid: 65534, gid: 65534, groups: [] }, 'nobody, with no supplementary group left from root');
    assert.is(ids(f.pid).uid, 0, 'the master keeps its user, to bind on reload');
    assert.is(statSync(sock).mode & 0o777, 0o660, 'the socket file mode is 0666 less the umask setting (socketMode unset)');
    assert.is(statSync(sock).uid, 65534, 'the socket file is the workers\' user\'s');
    assert.is(statSync(errors).uid, 65534, 'the error log is the workers\' to write');
    assert.match(readFileSync(errors, 'utf8'), `[${worker}] [INFO] Booting worker`);
  } finally {
    await f.kill();
    p.remove();
  }
});

test('--initgroups gives the workers the user\'s supplementary groups, and only then', async () => {
  const p = publicSetup();
  const group = `forkdt${process.pid % 100000}`;
  execFileSync('groupadd', ['--system', group]);
  try {
    execFileSync('gpasswd', ['-a', 'nobody', group], { stdio: 'ignore' });
    const gid = Number(execFileSync('getent', ['group', group], { encoding: 'utf8' }).split(':')[2]);
    for (const initgroups of [true, false]) {
      const g = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '-u', 'nobody', ...(initgroups ? ['--initgroups'] : []), p.app],
        { cwd: p.dir, bin: p.bin, node: p.node });
      try {
        const [worker] = g.workers();
        assert.is(ids(worker!).groups.includes(gid), initgroups, `group ${gid} ${initgroups ? 'with' : 'without'} --initgroups`);
        assert.is(ids(worker!).uid, 65534);
      } finally {
        await g.kill();
      }
    }
  } finally {
    execFileSync('groupdel', [group]);
    p.remove();
  }
});

test('a log path the workers\' user replaced with a symlink: nothing is chowned through it', async () => {
  const p = publicSetup();
  const logs = join(p.dir, 'logs');
  mkdirSync(logs);
  chownSync(logs, 65534, 65534);
  const victim = join(p.dir, 'victim');
  writeFileSync(victim, 'secret', { mode: 0o600 });
  const access = join(logs, 'access.log');
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '-u', 'nobody', '--access-logfile', access, p.app], { cwd: p.dir, bin: p.bin, node: p.node });
  try {
    unlinkSync(access);
    symlinkSync(victim, access);
    f.signal('SIGUSR1');
    await f.waitForLog(/cannot reopen the error log|log files reopened/);
    assert.is(statSync(victim).uid, 0, 'the victim is still root\'s');
    assert.is(statSync(victim).mode & 0o777, 0o600);
  } finally {
    await f.kill();
  }
  const r = await runForkd(['-w', '1', '-b', '127.0.0.1:0', '-u', 'nobody', '--access-logfile', access, p.app], { cwd: p.dir, bin: p.bin, node: p.node });
  assert.is(r.code, 78);
  assert.match(r.stderr, `cannot open accessLog ${access}: it is a symlink`);
  p.remove();
});

test('run as an ordinary user: -u for that user works, any other is refused; systemd hears it through a barrier', async () => {
  const p = publicSetup();
  const socket = join(p.dir, 'notify.sock');
  const notify = await listenForNotify(socket);
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '-u', 'nobody', p.app],
    { cwd: p.dir, bin: p.bin, node: p.node, uid: 65534, gid: 65534, env: { NOTIFY_SOCKET: socket } });
  try {
    assert.is(ids(f.pid).uid, 65534);
    assert.is((await request(`${f.url}/`)).status, 200);
    const ready = await notify.waitFor({ READY: '1' });
    assert.is.not(ready.pid, f.pid, 'not root: systemd-notify sends from its own pid (NotifyAccess=all)');
  } finally {
    await f.kill();
    notify.close();
  }
  const other = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '-u', 'root', p.app], { cwd: p.dir, bin: p.bin, node: p.node, uid: 65534, gid: 65534, wait: 'none' });
  try {
    assert.equal(await other.waitExit(), { code: 78, signal: null });
    assert.match(other.output(), 'cannot run workers as user root (uid 0, gid 0): forkd runs as uid 65534, and only root can switch users');
  } finally {
    await other.kill();
    p.remove();
  }
});

test('without systemd-notify installed, python3 sends the notifications', async () => {
  const dir = tempDir();
  const socket = join(dir.path, 'notify.sock');
  const notify = await listenForNotify(socket);
  const bin = join(dir.path, 'bin');
  mkdirSync(bin);
  // The interpreter itself (a pyenv shim would need the PATH this test takes away).
  symlinkSync(execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim(), join(bin, 'python3'));
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', probe], { env: { NOTIFY_SOCKET: socket, PATH: bin } });
  try {
    await notify.waitFor({ READY: '1', STATUS: '1/1 workers serving, generation 1' });
    f.signal('SIGTERM');
    await notify.waitFor({ STOPPING: '1' });
  } finally {
    await f.kill();
    notify.close();
    dir.remove();
  }
});

test('a worker user who cannot run this node binary is refused with exit 78 naming it, before any spawn', async () => {
  const p = publicSetup();
  // A node under a directory only root may enter, as one installed under /root/.nvm or ~/.cache is.
  const closed = join(p.dir, 'closed');
  mkdirSync(closed, { mode: 0o700 });
  const node = join(closed, 'node');
  copyFileSync(p.node, node);
  chmodSync(node, 0o755);
  try {
    const r = await runForkd(['-w', '1', '-b', '127.0.0.1:0', '-u', 'nobody', p.app], { cwd: p.dir, node, bin: p.bin });
    assert.is(r.code, 78, r.stderr);
    assert.match(r.stderr, `cannot run workers as user nobody (uid 65534, gid 65534): that user cannot execute ${node}`);
    assert.not.match(r.stderr, 'EACCES');
  } finally {
    p.remove();
  }
});

test('an unknown user is refused with exit 78', async () => {
  const r = await runForkd(['-u', 'no-such-user-here', probe]);
  assert.is(r.code, 78);
  assert.match(r.stderr, 'user "no-such-user-here" does not exist');
});

test.run();
