/** The upgrade and systemd cases a review found broken, each as an operator would hit them. */

import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BIN, childrenOf, cleanEnv, isAlive, startForkd, tempDir, waitFor } from '../helpers/forkd';
import { freePort, request, requestUnix } from '../helpers/http';
import { listenForNotify } from '../helpers/notify';

const APP = "module.exports = (req, res) => res.end(`${require('node:path').basename(__dirname)} ${process.pid}`);\n";
const readPid = (path: string) => (existsSync(path) ? Number(readFileSync(path, 'utf8').trim()) : null);

/** Kills a master found in the log as a successor, with its workers. */
function killSuccessors(output: string): void {
  for (const m of output.matchAll(/started successor master \(pid:(\d+)\)/g)) {
    const pid = Number(m[1]);
    for (const w of childrenOf(pid)) { try { process.kill(w, 'SIGKILL'); } catch { /* gone */ } }
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
}

test('USR2 under socket activation with bind at its default: the successor serves systemd\'s sockets, and leaves their files', async () => {
  const dir = tempDir();
  const port = await freePort();
  const sock = join(dir.path, 'web.sock');
  writeFileSync(join(dir.path, 'app.js'), APP);
  const child = spawn('systemd-socket-activate', ['-l', `127.0.0.1:${port}`, '-l', sock, '--fdname=http:web', process.execPath, BIN, '-w', '1', 'app.js'],
    { cwd: dir.path, env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => { out += c; });
  child.stderr.setEncoding('utf8').on('data', (c: string) => { out += c; });
  try {
    await waitFor(() => out.includes(`Listening on 127.0.0.1:${port}`), 'systemd-socket-activate');
    assert.is((await request(`http://127.0.0.1:${port}/`)).status, 200);
    await waitFor(() => /Ready: 1 worker serving/.test(out), 'forkd ready');
    process.kill(child.pid!, 'SIGUSR2');
    const successor = Number((await waitFor(() => /the successor master \(pid:(\d+)\) serves/.exec(out), 'the handover'))[1]);
    await waitFor(() => child.exitCode !== null, 'the old master to retire');
    assert.is((await request(`http://127.0.0.1:${port}/`)).status, 200, 'TCP still served, by the successor');
    assert.is((await requestUnix(sock)).status, 200, 'and the Unix socket');
    process.kill(successor, 'SIGTERM');
    await waitFor(() => !isAlive(successor), 'the successor to stop');
    assert.ok(lstatSync(sock).isSocket(), 'systemd\'s socket file is left to systemd');
  } finally {
    for (const w of childrenOf(child.pid!)) { try { process.kill(w, 'SIGKILL'); } catch { /* gone */ } }
    try { process.kill(child.pid!, 'SIGKILL'); } catch { /* gone */ }
    killSuccessors(out);
    dir.remove();
  }
});

test('TERM during an upgrade stops the successor too and puts the pidfile back', async () => {
  const dir = tempDir();
  const pidfile = join(dir.path, 'forkd.pid');
  const sock = join(dir.path, 'app.sock');
  writeFileSync(join(dir.path, 'app.js'), APP);
  const f = await startForkd(['-w', '1', '-b', `unix:${sock}`, '-b', '127.0.0.1:0', '-p', pidfile, 'app.js'], { cwd: dir.path });
  try {
    writeFileSync(join(dir.path, 'app.js'), `const t = Date.now() + 3000; while (Date.now() < t);\n${APP}`);
    f.signal('SIGUSR2');
    const successor = Number((await f.waitForLog(/started successor master \(pid:(\d+)\)/))[1]);
    f.signal('SIGTERM');
    assert.is((await f.waitExit(10_000)).code, 0);
    await waitFor(() => !isAlive(successor), 'the successor to be stopped as well');
    assert.not.ok(existsSync(pidfile) || existsSync(`${pidfile}.oldbin`), 'no pidfile names a master that is gone');
    assert.not.ok(existsSync(sock), 'the socket file went with the master that owned it');
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('upgrade "manual", rolled back: the successor stops and the old master is the main one again', async () => {
  const dir = tempDir();
  const pidfile = join(dir.path, 'forkd.pid');
  const socket = join(dir.path, 'notify.sock');
  const notify = await listenForNotify(socket);
  writeFileSync(join(dir.path, 'app.js'), APP);
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '-p', pidfile, '--upgrade', 'manual', 'app.js'],
    { cwd: dir.path, env: { NOTIFY_SOCKET: socket } });
  try {
    f.signal('SIGUSR2');
    const successor = Number((await f.waitForLog(/the successor master \(pid:(\d+)\) serves\. Send this master WINCH/))[1]);
    await notify.waitFor({ MAINPID: String(successor) });
    process.kill(successor, 'SIGTERM');
    await f.waitForLog(/The successor master \(pid:\d+\) exited: this master is the main one again/);
    await waitFor(() => readPid(pidfile) === f.pid, 'the pidfile to name the old master again');
    const back = await notify.waitFor({ MAINPID: String(f.pid), READY: '1' });
    assert.is(back.pid, f.pid);
    assert.is((await request(`${f.url}/`)).status, 200);
    f.signal('SIGUSR2');
    await f.waitForLog(/Upgrade: the successor master \(pid:\d+\) serves(?![\s\S]*USR2 ignored)/);
  } finally {
    killSuccessors(f.output());
    await f.kill();
    notify.close();
    dir.remove();
  }
});

test('started in a `current` symlink, USR2 runs the release it points to now, app and all', async () => {
  const dir = tempDir();
  for (const v of ['v1', 'v2']) {
    mkdirSync(join(dir.path, 'releases', v), { recursive: true });
    writeFileSync(join(dir.path, 'releases', v, 'app.js'), APP);
  }
  const current = join(dir.path, 'current');
  symlinkSync(join(dir.path, 'releases', 'v1'), current);
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', 'app.js'], { cwd: current, env: { PWD: current } });
  try {
    const url = f.url;
    assert.match((await request(`${url}/`)).body, /^v1 /);
    rmSync(current);
    symlinkSync(join(dir.path, 'releases', 'v2'), current);
    f.signal('SIGUSR2');
    await f.waitForLog(/Upgrade complete/);
    // Until the old worker has drained and gone it may still take a connection (it answers v1).
    await f.waitForLog(/event=worker.exit nr=1 reason=upgraded/);
    assert.match((await request(`${url}/`)).body, /^v2 /);
  } finally {
    killSuccessors(f.output());
    await f.kill();
    dir.remove();
  }
});

test('after an upgrade the successor keeps systemd\'s watchdog fed', async () => {
  const dir = tempDir();
  const socket = join(dir.path, 'notify.sock');
  const notify = await listenForNotify(socket);
  writeFileSync(join(dir.path, 'app.js'), APP);
  // systemd sets WATCHDOG_PID to the main pid: a shell that execs forkd has that pid.
  const child = spawn('sh', ['-c', `export WATCHDOG_PID=$$; exec "${process.execPath}" "${BIN}" -w 1 -b 127.0.0.1:0 app.js`],
    { cwd: dir.path, env: cleanEnv({ NOTIFY_SOCKET: socket, WATCHDOG_USEC: '600000' }), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stderr.setEncoding('utf8').on('data', (c: string) => { out += c; });
  try {
    await notify.waitFor({ READY: '1' });
    await notify.waitFor({ WATCHDOG: '1' });
    process.kill(child.pid!, 'SIGUSR2');
    const handover = await notify.waitFor({ MAINPID: '*', READY: '1' });
    await waitFor(() => child.exitCode !== null, 'the old master to retire');
    const from = notify.messages.length;
    await waitFor(() => notify.messages.slice(from).filter((m) => m.fields.WATCHDOG === '1' && m.pid === handover.pid).length >= 2,
      'WATCHDOG=1 from the successor');
  } finally {
    try { process.kill(child.pid!, 'SIGKILL'); } catch { /* gone */ }
    killSuccessors(out);
    notify.close();
    dir.remove();
  }
});

test('HUP during start-up waits for the first workers: READY=1 comes before RELOADING=1', async () => {
  const dir = tempDir();
  const socket = join(dir.path, 'notify.sock');
  const notify = await listenForNotify(socket);
  writeFileSync(join(dir.path, 'app.js'), `const t = Date.now() + 1500; while (Date.now() < t);\n${APP}`);
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', 'app.js'], { cwd: dir.path, env: { NOTIFY_SOCKET: socket }, wait: 'listening' });
  try {
    await f.waitForLog(/Booting worker/);
    f.signal('SIGHUP');
    await f.waitForLog(/HUP during start-up: reloading once the workers serve/);
    await f.waitForLog(/Reload complete: generation 2/, 20_000);
    const kinds = () => notify.messages.map((m) => (m.fields.RELOADING ? 'RELOADING' : m.fields.READY ? 'READY' : null)).filter(Boolean);
    await waitFor(() => kinds().length >= 3, 'three notifications');
    assert.equal(kinds().slice(0, 3), ['READY', 'RELOADING', 'READY']);
  } finally {
    await f.kill();
    notify.close();
    dir.remove();
  }
});


test.run();
