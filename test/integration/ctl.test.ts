/** `forkd ctl` run from a shell as an operator would: in the app's directory, the socket found
 *  through the config file there (or given with -s), against a real master. */

import { spawn } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ctl, probe, sorted, status, withMaster, writeConfig, type Status } from '../helpers/ctl';
import { APPS, BIN, cleanEnv, isAlive, publicInstall, startForkd, tempDir, waitFor } from '../helpers/forkd';
import { load, request } from '../helpers/http';

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

test('top: the status again every second until stopped', async () => {
  await withMaster({}, async (f, dir) => {
    const top = spawn('sh', ['-c', 'cd "$0" && exec "$@"', dir, process.execPath, BIN, 'ctl', 'top'], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      let out = '';
      top.stdout.setEncoding('utf8').on('data', (c: string) => { out += c; });
      const started = Date.now();
      await waitFor(() => (out.match(/^master +pid /gm)?.length ?? 0) >= 3, 'three redraws', 15_000);
      assert.ok(Date.now() - started >= 1900, 'a second apart');
      assert.is(out.match(new RegExp(`^master +pid ${f.pid} `, 'gm'))?.length, out.match(/^master /gm)?.length);
      assert.not.match(out, '\x1b[2J', 'no screen clearing when stdout is not a terminal');
    } finally {
      top.kill('SIGKILL');
    }
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

test('stacks 1: the JavaScript stack worker 1 is in; all workers without NR, with the requests each has in flight', async () => {
  await withMaster({}, async (f, dir) => {
    const r = await ctl(dir, ['stacks', '1']);
    assert.is(r.code, 0, r.stderr);
    const one = (await status(dir)).workers.find((w) => w.nr === 1)!;
    assert.match(r.stdout, new RegExp(`^worker 1 \\(pid ${one.pid}, generation 1\\):\\n    at \\S`));
    assert.not.match(r.stdout, 'worker 2');
    const late = request(`${f.url}/late?ms=3000`);
    await waitFor(async () => (await status(dir)).workers.some((w) => w.inFlight === 1), 'the request to be in flight');
    const all = await ctl(dir, ['stacks']);
    assert.is(all.code, 0, all.stderr);
    assert.is(all.stdout.match(/^worker \d \(pid \d+, generation 1\):\n    at /gm)?.length, 2, all.stdout);
    assert.match(all.stdout, /\n  in flight:\n    GET \/late\?ms=3000 \(\d+\.\d s, 127\.0\.0\.1\)(\n|$)/);
    assert.match(all.stdout, /\n  in flight: none(\n|$)/);
    assert.is((await late).status, 200);
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

test('stacks leaves no warning about the inspector behind; a stray USR1 still gets one', async () => {
  await withMaster({}, async (f, dir) => {
    const r = await ctl(dir, ['stacks', '1']);
    assert.is(r.code, 0, r.stderr);
    // A few heartbeats (one a second): each would close an inspector still open, and warn.
    await new Promise((ok) => setTimeout(ok, 3000));
    assert.not.match(f.output(), 'closed the inspector', f.output());
    // The line this test looks for, as a USR1 that is not forkd ctl's makes the worker write it.
    const two = (await status(dir)).workers.find((w) => w.nr === 2)!.pid;
    process.kill(two, 'SIGUSR1');
    await f.waitForLog(/closed the inspector a USR1 opened \(the worker is not hung\)/);
  });
});

test('kill while the worker drains a long request, then INT: the master stops at once, and ctl is told it is stopping', async () => {
  await withMaster({ workers: 1, gracefulTimeout: 30 }, async (f, dir) => {
    const mark = join(dir, 'late');
    const late = request(`${f.url}/late?ms=60000&mark=${encodeURIComponent(mark)}`).then(() => 'answered', (err: Error) => err.message);
    await waitFor(() => existsSync(mark), 'the long request to reach the worker');
    const old = (await status(dir)).workers[0]!.pid;
    const killing = ctl(dir, ['kill', '1'], { timeoutMs: 20_000 });
    // Its replacement serves, and the old worker drains the request (for up to 30 s).
    await waitFor(async () => (await status(dir)).workers.some((w) => w.pid === old && w.state === 'stopping'), 'the old worker to be stopping', 15_000);
    const t0 = Date.now();
    f.signal('SIGINT');
    assert.equal(await f.waitExit(8000), { code: 0, signal: null });
    assert.ok(Date.now() - t0 < 8000, `INT stopped the master in ${Date.now() - t0} ms`);
    const r = await killing;
    assert.is(r.code, 1, r.stdout);
    assert.match(r.stderr, /^forkd ctl: (the master is stopping|the master at \S+ gave no answer|cannot reach \S+: .*)\n$/);
    assert.is(await late, 'socket hang up');
  });
});

test('reload while the master starts is refused at once; once it serves, reload works', async () => {
  const dir = tempDir();
  writeConfig(dir.path, { app: join(APPS, 'slow-boot.js'), workers: 1 });
  try {
    const f = await startForkd([], { cwd: dir.path, wait: 'none', env: { BOOT_MS: '5000' } });
    try {
      await f.waitForLog(/Control socket at: ctl\.sock/);
      const early = await ctl(dir.path, ['reload'], { timeoutMs: 10_000 });
      assert.not.match(f.output(), /Ready: /, 'the master was still starting');
      assert.is(early.code, 1, early.stdout);
      assert.match(early.stderr, /^forkd ctl: the master is starting: reload once it serves/, early.stderr);
      await f.waitForLog(/Ready: 1 worker serving/);
      const r = await ctl(dir.path, ['reload']);
      assert.is(r.code, 0, r.stderr);
      assert.match(r.stdout, /^reloaded: generation 2, 1 workers serving\n$/);
      assert.is((await status(dir.path)).master.generation, 2, 'the refused reload was not done later');
    } finally {
      await f.kill();
    }
  } finally {
    dir.remove();
  }
});

test('--timeout: a master that is stopped (SIGSTOP) never answers, and ctl gives up after that long', async () => {
  await withMaster({}, async (f, dir) => {
    process.kill(f.pid, 'SIGSTOP');
    try {
      const t0 = Date.now();
      const r = await ctl(dir, ['-t', '1', 'status'], { timeoutMs: 10_000 });
      const tookMs = Date.now() - t0;
      assert.is(r.code, 1, r.stdout);
      assert.is(r.stderr, `forkd ctl: no answer from ${join(dir, 'ctl.sock')} within 1s (is the master stopped or hung? --timeout waits longer)\n`);
      assert.ok(tookMs >= 1000 && tookMs < 5000, `gave up after ${tookMs} ms`);
    } finally {
      process.kill(f.pid, 'SIGCONT');
    }
    assert.is((await ctl(dir, ['-t', '1', 'status'])).code, 0, 'and answers once it runs again');
  });
});

test.run();
