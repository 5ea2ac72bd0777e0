/** `forkd ctl` run from a shell as an operator would: in the app's directory, the socket found
 *  through the config file there (or given with -s), against a real master; and the checks the
 *  master makes of the control socket's path before it starts. */

import { spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, BIN, cleanEnv, isAlive, publicInstall, runForkd, startForkd, tempDir, waitFor, type Forkd } from '../helpers/forkd';
import { load, request } from '../helpers/http';

const probe = join(APPS, 'probe.js');

interface Ran { readonly code: number | null; readonly stdout: string; readonly stderr: string }

/** `cd DIR && node forkd.js ctl ARGS` in a shell; the shell execs node, so the pid is node's. */
function ctl(dir: string, args: readonly string[], opts: { uid?: number; node?: string; bin?: string; timeoutMs?: number } = {}): Promise<Ran> {
  return new Promise((ok, fail) => {
    const child = spawn('sh', ['-c', 'cd "$0" && exec "$@"', dir, opts.node ?? process.execPath, opts.bin ?? BIN, 'ctl', ...args], {
      env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'], ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.uid } : {}),
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c; });
    child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
    const timer = setTimeout(() => {
      try { process.kill(child.pid!, 'SIGKILL'); } catch { /* gone */ }
      fail(new Error(`forkd ctl ${args.join(' ')} did not exit; stderr:\n${stderr}`));
    }, opts.timeoutMs ?? 30_000);
    child.once('close', (code) => { clearTimeout(timer); ok({ code, stdout, stderr }); });
  });
}

/** A `forkd.config.js` in `dir` serving the probe app, its control socket `ctl.sock` beside it. */
function writeConfig(dir: string, extra: Record<string, unknown> = {}): void {
  writeFileSync(join(dir, 'forkd.config.js'), `module.exports = ${JSON.stringify({
    app: probe, bind: ['127.0.0.1:0'], workers: 2, controlSocket: 'ctl.sock', ...extra,
  }, null, 2)};\n`);
}

interface Status { master: { pid: number; generation: number; workers: number }; workers: { nr: number; pid: number; generation: number; state: string }[] }

async function status(dir: string): Promise<Status> {
  const r = await ctl(dir, ['status', '--json']);
  assert.is(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Status;
}

/** A master serving the probe app from `dir` with its config there; `fn` runs while it does. */
async function withMaster(extra: Record<string, unknown>, fn: (f: Forkd, dir: string) => Promise<void>): Promise<void> {
  const dir = tempDir();
  writeConfig(dir.path, extra);
  const logFile = typeof extra.errorLog === 'string' ? join(dir.path, extra.errorLog) : undefined;
  try {
    const f = await startForkd([], { cwd: dir.path, ...(logFile ? { logFile } : {}) });
    try {
      await f.waitForLog(/Control socket at: ctl\.sock/);
      await fn(f, dir.path);
    } finally {
      await f.kill();
    }
  } finally {
    dir.remove();
  }
}

const sorted = (pids: number[]) => [...pids].sort((a, b) => a - b);

test('status: the master and a row per worker, as a table and as JSON; the socket is 0600', async () => {
  await withMaster({}, async (f, dir) => {
    assert.is(statSync(join(dir, 'ctl.sock')).mode & 0o777, 0o600);
    assert.ok(lstatSync(join(dir, 'ctl.sock')).isSocket());
    const r = await ctl(dir, ['status']);
    assert.is(r.code, 0, r.stderr);
    assert.is(r.stderr, '');
    const lines = r.stdout.trimEnd().split('\n');
    assert.match(lines[0]!, new RegExp(`^master +pid ${f.pid} +running .* generation 1 +workers 2/2 `));
    assert.match(lines[1]!, `listen   ${f.url}`);
    assert.match(lines[2]!, /^reload +none$/);
    const header = lines.findIndex((l) => l.startsWith('NR '));
    assert.equal(lines[header]!.split(/\s+/), ['NR', 'PID', 'GEN', 'STATE', 'AGE', 'REQS', 'INFL', 'OLDEST', 'CONNS', 'RSS', 'LAG99', 'BEAT']);
    const rows = lines.slice(header + 1).map((l) => l.split(/\s+/));
    assert.is(rows.length, 2, r.stdout);
    assert.equal(rows.map((c) => c[0]), ['1', '2']);
    assert.equal(sorted(rows.map((c) => Number(c[1]))), sorted(f.workers()));
    for (const c of rows) {
      assert.equal(c.slice(2, 4), ['1', 'serving'], c.join(' '));
      assert.is(c.length, 13, `12 columns, the last "N ago": ${c.join(' ')}`);
    }

    const s = JSON.parse((await ctl(dir, ['-s', join(dir, 'ctl.sock'), 'status', '--json'])).stdout) as Status;
    assert.is(s.master.pid, f.pid);
    assert.equal(sorted(s.workers.map((w) => w.pid)), sorted(f.workers()));
    assert.equal(s.workers.map((w) => [w.nr, w.state]), [[1, 'serving'], [2, 'serving']]);
  });
});

test('scale 3, then scale -1: the answer comes once the master has that many children', async () => {
  await withMaster({}, async (f, dir) => {
    const up = await ctl(dir, ['scale', '3']);
    assert.is(up.code, 0, up.stderr);
    assert.match(up.stdout, '3 workers serving');
    assert.is(f.workers().length, 3);
    assert.is((await status(dir)).workers.length, 3);
    const before = f.workers();

    const down = await ctl(dir, ['scale', '-1']);
    assert.is(down.code, 0, down.stderr);
    assert.match(down.stdout, '2 workers serving');
    assert.is(f.workers().length, 2);
    assert.ok(f.workers().every((p) => before.includes(p)), 'no worker started for a scale down');
    const s = await status(dir);
    assert.equal(s.workers.map((w) => w.state), ['serving', 'serving']);
    assert.is(s.master.workers, 2);

    const zero = await ctl(dir, ['scale', '0']);
    assert.is(zero.code, 1);
    assert.match(zero.stderr, 'forkd keeps at least 1 worker');
    assert.is(f.workers().length, 2);
  });
});

test('kill 1: worker 1 is replaced by a new pid, the others keep theirs', async () => {
  await withMaster({}, async (f, dir) => {
    const before = await status(dir);
    const one = before.workers.find((w) => w.nr === 1)!.pid;
    const two = before.workers.find((w) => w.nr === 2)!.pid;
    const r = await ctl(dir, ['kill', '1']);
    assert.is(r.code, 0, r.stderr);
    const after = await status(dir);
    const next = after.workers.find((w) => w.nr === 1)!.pid;
    assert.is.not(next, one);
    assert.match(r.stdout, `worker 1 replaced: pid ${one} stopped, pid ${next} serves`);
    assert.is(after.workers.find((w) => w.nr === 2)!.pid, two);
    assert.not.ok(isAlive(one), 'the old worker 1 has exited');
    assert.equal(sorted(f.workers()), sorted([next, two]));

    const none = await ctl(dir, ['kill', '7']);
    assert.is(none.code, 1);
    assert.match(none.stderr, 'no worker 7 is serving');
  });
});

test('reload answers once generation 2 serves', async () => {
  await withMaster({}, async (f, dir) => {
    const r = await ctl(dir, ['reload']);
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stdout, /^reloaded: generation 2, 2 workers serving\n$/);
    const s = await status(dir);
    assert.is(s.master.generation, 2);
    assert.ok(s.workers.filter((w) => w.state === 'serving').every((w) => w.generation === 2), JSON.stringify(s.workers));
    await f.waitForLog(/Reload complete: generation 2/);
  });
});

test('reload with a broken config file: non-zero with the reason, and the old generation serves on', async () => {
  await withMaster({}, async (f, dir) => {
    const config = join(dir, 'forkd.config.js');
    writeFileSync(config, 'module.exports = { app: \n');
    const traffic = load(`${f.url}/`, { connections: 4, durationMs: 1500, keepAlive: false });
    const r = await ctl(dir, ['-s', 'ctl.sock', 'reload']);
    assert.is(r.code, 1, r.stdout);
    assert.is(r.stdout, '');
    assert.match(r.stderr, `forkd ctl: reload failed: invalid config: config file ${config} failed to load: SyntaxError`);
    assert.match(r.stderr, 'still serving generation 1 as before');
    assert.is(r.stderr.split('\n').length, 2, `one line: ${r.stderr}`);
    const served = await traffic;
    assert.is(served.failed, 0, JSON.stringify(served.errors));
    assert.ok(served.ok > 0);
    assert.is((await request(`${f.url}/`)).status, 200);
    const table = await ctl(dir, ['-s', 'ctl.sock', 'status']);
    assert.match(table.stdout, /^reload +failed: invalid config: /m);
    assert.match(table.stdout, / generation 1 /);

    // Without -s, ctl reads the same broken file: it says so in one line, rather than crashing.
    const lost = await ctl(dir, ['reload']);
    assert.is(lost.code, 1);
    assert.match(lost.stderr, `forkd ctl: cannot read controlSocket from the config (give -s PATH): config file ${config} failed to load`);
    assert.is(lost.stderr.split('\n').length, 2, `one line: ${lost.stderr}`);

    // The same for a JSON config that does not parse (its parser's message spans lines).
    rmSync(config);
    writeFileSync(join(dir, 'forkd.config.json'), '{ "app": ');
    const json = await ctl(dir, ['-s', 'ctl.sock', 'reload']);
    assert.is(json.code, 1);
    assert.match(json.stderr, `forkd ctl: reload failed: invalid config: config file ${join(dir, 'forkd.config.json')} failed to load: JSONError`);
    assert.is(json.stderr.split('\n').length, 2, `one line: ${json.stderr}`);
    assert.is((await request(`${f.url}/`)).status, 200);
    const s = JSON.parse((await ctl(dir, ['-s', 'ctl.sock', 'status', '--json'])).stdout) as Status;
    assert.is(s.master.generation, 1);
    assert.equal(sorted(s.workers.map((w) => w.pid)), sorted(f.workers()));
  });
});

test('reopen answers once the logs are reopened', async () => {
  const errors = 'error.log';
  await withMaster({ errorLog: errors }, async (f, dir) => {
    const log = join(dir, errors);
    renameSync(log, `${log}.1`);
    const r = await ctl(dir, ['reopen']);
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stdout, /^log files reopened\n$/);
    assert.ok(existsSync(log), 'a new error log was opened by the time the answer came');
    await waitFor(() => readFileSync(log, 'utf8').includes('log files reopened'), 'the master to write to the new error log');
    assert.not.match(readFileSync(`${log}.1`, 'utf8'), 'log files reopened');
  });
});

test('stacks 1: the JavaScript stack worker 1 is in; all workers without NR', async () => {
  await withMaster({}, async (f, dir) => {
    const r = await ctl(dir, ['stacks', '1']);
    assert.is(r.code, 0, r.stderr);
    const one = (await status(dir)).workers.find((w) => w.nr === 1)!;
    assert.match(r.stdout, new RegExp(`^worker 1 \\(pid ${one.pid}, generation 1\\):\\n    at \\S`));
    assert.not.match(r.stdout, 'worker 2');
    const all = await ctl(dir, ['stacks']);
    assert.is(all.code, 0, all.stderr);
    assert.is(all.stdout.match(/^worker \d \(pid \d+, generation 1\):\n    at /gm)?.length, 2, all.stdout);
  });
});

test('stacks is refused when timeoutStack is off', async () => {
  await withMaster({ timeoutStack: false }, async (f, dir) => {
    const r = await ctl(dir, ['stacks', '1']);
    assert.is(r.code, 1);
    assert.is(r.stdout, '');
    assert.is(r.stderr, 'forkd ctl: stacks needs timeoutStack, which is off\n');
  });
});

test('stop: ctl returns once the master and its workers have exited, with 0', async () => {
  await withMaster({}, async (f, dir) => {
    const workers = f.workers();
    const r = await ctl(dir, ['stop']);
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stdout, `stopping: master pid ${f.pid}`);
    assert.not.ok(isAlive(f.pid), 'the master is gone when ctl returns');
    assert.ok(workers.every((p) => !isAlive(p)), 'and so are its workers');
    assert.equal(await f.waitExit(), { code: 0, signal: null });
    assert.not.ok(existsSync(join(dir, 'ctl.sock')), 'the socket file is removed');
  });
});

test('stop --quick', async () => {
  await withMaster({}, async (f, dir) => {
    const r = await ctl(dir, ['-s', join(dir, 'ctl.sock'), 'stop', '--quick']);
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stdout, `stopping (quick): master pid ${f.pid}`);
    assert.not.ok(isAlive(f.pid));
    assert.is((await f.waitExit()).code, 0);
  });
});

test('an unknown command: did you mean, and exit 1', async () => {
  const dir = tempDir();
  try {
    const r = await ctl(dir.path, ['stauts']);
    assert.is(r.code, 1);
    assert.is(r.stdout, '');
    assert.match(r.stderr, /^forkd ctl: unknown command "stauts"; did you mean "status"\? \(one of status, .*\)\n$/);
  } finally {
    dir.remove();
  }
});

test('no master: the message names the socket tried, and exit 1', async () => {
  const dir = tempDir();
  try {
    const given = join(dir.path, 'nothing.sock');
    const r = await ctl(dir.path, ['-s', given, 'status']);
    assert.is(r.code, 1);
    assert.is(r.stderr, `forkd ctl: cannot reach ${given}: no such socket (is forkd running with controlSocket set?)\n`);

    writeConfig(dir.path);
    const fromConfig = await ctl(dir.path, ['status']);
    assert.is(fromConfig.code, 1);
    assert.match(fromConfig.stderr, `forkd ctl: cannot reach ${join(dir.path, 'ctl.sock')}: no such socket`);

    writeFileSync(join(dir.path, 'forkd.config.js'), `module.exports = { app: ${JSON.stringify(probe)} };\n`);
    const unset = await ctl(dir.path, ['status']);
    assert.is(unset.code, 1);
    assert.match(unset.stderr, `forkd ctl: no control socket: give -s PATH, or set controlSocket in ${join(dir.path, 'forkd.config.js')}`);
  } finally {
    dir.remove();
  }
});

test('another user cannot use the socket: permission denied', async () => {
  const install = publicInstall();
  await withMaster({}, async (f, dir) => {
    // The directory open to all, the config readable: only the socket's own mode stands in the way.
    chmodSync(dir, 0o755);
    chmodSync(join(dir, 'forkd.config.js'), 0o644);
    const r = await ctl(dir, ['status'], { uid: 65534, node: install.node, bin: install.bin });
    assert.is(r.code, 1, r.stdout);
    assert.is(r.stderr, `forkd ctl: cannot reach ${join(dir, 'ctl.sock')}: permission denied (the socket is its owner's only, mode 0600)\n`);
    assert.is((await ctl(dir, ['status'])).code, 0, 'its owner still can');
  });
});

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
    assert.is.not(second.code, 0);
    assert.match(second.stdout + second.stderr, `controlSocket ctl.sock: another process answers on it`);
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

test.run();
