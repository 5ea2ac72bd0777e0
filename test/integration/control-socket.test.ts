/** The master's checks of the control socket's path before it starts (exit 78, naming the path;
 *  its directory writable by no one else unless sticky), a second master on a live socket, and a
 *  socket file left by a killed master. */

import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ctl, probe, status, withMaster, writeConfig } from '../helpers/ctl';
import { runForkd, startForkd, tempDir } from '../helpers/forkd';

/** forkd started with --control-socket `path`: what it exits with and says. */
async function refused(path: string): Promise<{ code: number | null; out: string }> {
  const r = await runForkd(['-w', '1', '-b', '127.0.0.1:0', '--control-socket', path, probe]);
  return { code: r.code, out: r.stdout + r.stderr };
}

test('the master refuses a control socket path that is a symlink, a file, or in a directory others may write', async () => {
  const dir = tempDir();
  try {
    const link = join(dir.path, 'link.sock');
    const target = join(dir.path, 'target');
    symlinkSync(target, link);
    const l = await refused(link);
    assert.is(l.code, 78, l.out);
    assert.match(l.out, `refusing controlSocket ${link}: it is a symbolic link`);
    assert.not.ok(existsSync(target), 'nothing was created where the link points');

    const file = join(dir.path, 'file.sock');
    writeFileSync(file, 'precious');
    const r = await refused(file);
    assert.is(r.code, 78, r.out);
    assert.match(r.out, `refusing controlSocket ${file}: it exists and is not a socket`);
    assert.is(readFileSync(file, 'utf8'), 'precious');

    const open = join(dir.path, 'open');
    mkdirSync(open);
    chmodSync(open, 0o777);
    const inOpen = join(open, 'ctl.sock');
    const o = await refused(inOpen);
    assert.is(o.code, 78, o.out);
    assert.match(o.out, `refusing controlSocket ${inOpen}: its directory ${open} is writable by others and not sticky`);
    assert.not.ok(existsSync(inOpen));

    // Sticky, as /tmp is: allowed.
    chmodSync(open, 0o1777);
    const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--control-socket', inOpen, probe]);
    try {
      assert.is(statSync(inOpen).mode & 0o777, 0o600);
      assert.is((await ctl(dir.path, ['-s', inOpen, 'status'])).code, 0);
    } finally {
      await f.kill();
    }
  } finally {
    dir.remove();
  }
});

test('the master refuses a socket of another user at the path', async () => {
  const dir = tempDir();
  const server = net.createServer();
  try {
    const path = join(dir.path, 'theirs.sock');
    await new Promise<void>((ok) => server.listen(path, ok));
    chownSync(path, 65534, 65534);
    const r = await refused(path);
    assert.is(r.code, 78, r.out);
    assert.match(r.out, `refusing controlSocket ${path}: it is a socket of another user (uid 65534)`);
    assert.is(lstatSync(path).uid, 65534, 'left as it was');
  } finally {
    server.close();
    dir.remove();
  }
});

test('a second master with the same control socket is refused while the first answers on it', async () => {
  await withMaster({}, async (f, dir) => {
    const second = await runForkd(['-w', '1', '-b', '127.0.0.1:0'], { cwd: dir });
    assert.is(second.code, 1, second.stderr);
    assert.match(second.stdout + second.stderr, `controlSocket ctl.sock: another process answers on it`);
    assert.not.match(second.stdout + second.stderr, /Listening at|Booting worker/, 'refused before it binds or starts a worker');
    const s = await status(dir);
    assert.is(s.master.pid, f.pid, 'the socket is still the first master\'s');
  });
});

test('a stale socket file, left by a master killed with SIGKILL, is replaced', async () => {
  const dir = tempDir();
  writeConfig(dir.path, { workers: 1 });
  const sock = join(dir.path, 'ctl.sock');
  try {
    const first = await startForkd([], { cwd: dir.path });
    try {
      await first.waitForLog(/Control socket at: /);
    } finally {
      await first.kill();
    }
    assert.ok(lstatSync(sock).isSocket(), 'the killed master left its socket file');
    const stale = await ctl(dir.path, ['status']);
    assert.is(stale.code, 1);
    assert.is(stale.stderr, `forkd ctl: cannot reach ${sock}: nothing answers on it (a stale socket: is forkd running?)\n`);

    const second = await startForkd([], { cwd: dir.path });
    try {
      await second.waitForLog(/Control socket at: /);
      assert.is((await status(dir.path)).master.pid, second.pid);
      assert.is(statSync(sock).mode & 0o777, 0o600);
    } finally {
      await second.kill();
    }
  } finally {
    dir.remove();
  }
});

test('a directory its group may write is refused unless sticky', async () => {
  const dir = tempDir();
  try {
    const shared = join(dir.path, 'shared');
    mkdirSync(shared);
    chmodSync(shared, 0o770);
    const path = join(shared, 'ctl.sock');
    const r = await refused(path);
    assert.is(r.code, 78, r.out);
    assert.match(r.out, `refusing controlSocket ${path}: its directory ${shared} is writable by its group and not sticky`);
    assert.not.ok(existsSync(path));

    chmodSync(shared, 0o1770);
    const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--control-socket', path, probe]);
    try {
      await f.waitForLog(/Control socket at: /);
      assert.is((await ctl(dir.path, ['-s', path, 'status'])).code, 0);
    } finally {
      await f.kill();
    }
  } finally {
    dir.remove();
  }
});

test.run();
