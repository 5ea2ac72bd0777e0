import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import net from 'node:net';
import { APPS, ROOT, runForkd, startForkd, tempDir, waitFor } from '../helpers/forkd';
import { request } from '../helpers/http';

const probe = join(APPS, 'probe.js');
const version = (require(join(ROOT, 'package.json')) as { version: string }).version;

test('--version and --help exit 0', async () => {
  const v = await runForkd(['--version']);
  assert.is(v.code, 0);
  assert.match(v.stdout, `forkd ${version}`);
  const h = await runForkd(['--help']);
  assert.is(h.code, 0);
  assert.match(h.stdout, 'Usage: forkd [options] APP');
  assert.match(h.stdout, '--graceful-timeout SECONDS');
});

test('usage errors exit 2 and say what is wrong', async () => {
  const unknown = await runForkd(['--worker', '3', probe]);
  assert.is(unknown.code, 2);
  assert.match(unknown.stderr, 'unknown option --worker; did you mean "--workers"?');
  const noApp = await runForkd(['-w', '1']);
  assert.is(noApp.code, 2);
  assert.match(noApp.stderr, 'no APP to serve');
  const missing = await runForkd(['-b']);
  assert.is(missing.code, 2);
  assert.match(missing.stderr, '-b needs a value (ADDRESS)');
});

test('invalid config exits 78 naming the setting, value, layer and what is allowed', async () => {
  const dir = tempDir();
  try {
    const neg = await runForkd(['-t', '-5', probe]);
    assert.is(neg.code, 78);
    assert.match(neg.stderr, 'forkd: error: invalid timeout = "-5" from the command line (-t): expected 0 (off) or a duration from 1 to 2147483');
    const env = await runForkd([probe], { env: { FORKD_GRACEFUL_TIMEOUT: 'forever' } });
    assert.is(env.code, 78);
    assert.match(env.stderr, 'invalid gracefulTimeout = "forever" from environment variable FORKD_GRACEFUL_TIMEOUT');
    const bind = await runForkd(['-b', 'localhost', probe]);
    assert.is(bind.code, 78);
    assert.match(bind.stderr, 'invalid bind');
    const conf = join(dir.path, 'forkd.config.js');
    writeFileSync(conf, 'module.exports = { wrokers: 2 };\n');
    const typo = await runForkd([probe], { cwd: dir.path });
    assert.is(typo.code, 78);
    assert.match(typo.stderr, `unknown setting "wrokers" in config file ${conf}; did you mean "workers"?`);
    writeFileSync(conf, 'throw new Error("config is broken");\n');
    const throws = await runForkd(['-c', conf, probe]);
    assert.is(throws.code, 78);
    assert.match(throws.stderr, `config file ${conf} failed to load: Error: config is broken`);
    const nofile = await runForkd(['-c', join(dir.path, 'nope.ts'), probe]);
    assert.is(nofile.code, 78);
    assert.match(nofile.stderr, `config file not found: ${join(dir.path, 'nope.ts')}`);
    assert.is(nofile.stdout, '', 'nothing else is printed');
  } finally {
    dir.remove();
  }
});

test('values forkd cannot honour are refused at start, with exit 78', async () => {
  const dir = tempDir();
  try {
    const cases: Array<[string[], string]> = [
      [['--graceful-timeout', '1000h'], 'invalid gracefulTimeout = "1000h"'],
      [['-t', '0.5'], 'invalid timeout = "0.5"'],
      [['-b', '127.0.0.1:8123', '-b', '0.0.0.0:8123'], '127.0.0.1:8123 and 0.0.0.0:8123 claim the same address'],
      [['--access-logfile', '/nonexistent/dir/access.log'], 'cannot open accessLog /nonexistent/dir/access.log: ENOENT'],
      [['--error-logfile', '/nonexistent/dir/error.log'], 'cannot open errorLog /nonexistent/dir/error.log: ENOENT'],
    ];
    for (const [args, message] of cases) {
      const r = await runForkd([...args, probe]);
      assert.is(r.code, 78, args.join(' '));
      assert.match(r.stderr, message);
    }
    const conf = join(dir.path, 'nul.json');
    writeFileSync(conf, JSON.stringify({ env: { A: 'x\u0000y' } }));
    const nul = await runForkd(['-c', conf, probe]);
    assert.is(nul.code, 78);
    assert.match(nul.stderr, 'the value of A holds a NUL byte');
  } finally {
    dir.remove();
  }
});

test('WEB_CONCURRENCY and PORT configure a real master', async () => {
  const blocker = net.createServer();
  await new Promise<void>((ok) => blocker.listen(0, '0.0.0.0', ok));
  const port = (blocker.address() as net.AddressInfo).port;
  await new Promise<void>((ok) => blocker.close(() => ok()));
  const f = await startForkd([probe], { env: { WEB_CONCURRENCY: '3', PORT: String(port) } });
  try {
    assert.is(f.workers().length, 3);
    assert.match(f.output(), `Listening at: http://0.0.0.0:${port}`);
    assert.is((await request(`http://127.0.0.1:${port}/`)).status, 200);
  } finally {
    await f.kill();
  }
});

test('--print-config shows every value and the layer it came from', async () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir.path, 'forkd.config.json'), JSON.stringify({ timeout: 12, keepAlive: 3, workers: 4 }));
    const r = await runForkd(['--print-config', '--keep-alive', '7', probe], { cwd: dir.path, env: { WEB_CONCURRENCY: '6' } });
    assert.is(r.code, 0);
    assert.match(r.stdout, new RegExp(`^timeout\\s+12\\s+# config file ${join(dir.path, 'forkd.config.json')}$`, 'm'));
    assert.match(r.stdout, /^workers\s+6\s+# environment variable WEB_CONCURRENCY$/m);
    assert.match(r.stdout, /^keepAlive\s+7\s+# the command line \(--keep-alive\)$/m);
    assert.match(r.stdout, /^gracefulTimeout\s+30\s+# the default$/m);
  } finally {
    dir.remove();
  }
});

test('--check-config loads the app: 0 when it is good, 78 when it is not', async () => {
  const good = await runForkd(['--check-config', join(APPS, 'express.js')]);
  assert.is(good.code, 0);
  assert.match(good.stdout, 'app OK: request listener');
  const bad = await runForkd(['--check-config', join(APPS, 'throws.js')]);
  assert.is(bad.code, 78);
  assert.match(bad.stderr, 'the app failed to load: this app cannot start: DATABASE_URL is not set');
  const notApp = await runForkd(['--check-config', join(APPS, 'not-an-app.js')]);
  assert.is(notApp.code, 78);
  assert.match(notApp.stderr, 'expected a request listener');
  const badValue = await runForkd(['--check-config', '-w', 'many', join(APPS, 'express.js')]);
  assert.is(badValue.code, 78);
  assert.match(badValue.stderr, 'invalid workers = "many"');
  const withEnv = await runForkd(['--check-config', '-e', 'DATABASE_URL=postgres://x', join(APPS, 'needs-env.js')]);
  assert.is(withEnv.code, 0, withEnv.stderr);
  const hangs = await runForkd(['--check-config', '--boot-timeout', '1', join(APPS, 'hangs.mjs')]);
  assert.is(hangs.code, 78);
  assert.match(hangs.stderr, 'did not finish loading within 1s (bootTimeout)');
});

test('a stop signal during start-up ends forkd at once', async () => {
  const dir = tempDir();
  const mark = join(dir.path, 'loading');
  const f = await startForkd(['--check-config', '--boot-timeout', '60', join(APPS, 'hangs.mjs')], { wait: 'none', env: { MARK_FILE: mark } });
  try {
    await waitFor(() => existsSync(mark), 'the app to start loading');
    f.signal('SIGTERM');
    assert.equal(await f.waitExit(5000), { code: 0, signal: null });
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('an app that fails to load stops forkd with exit 4, naming the module and the error', async () => {
  for (const [app, why] of [['throws.js', 'DATABASE_URL is not set'], ['syntax-error.js', 'SyntaxError'], ['not-an-app.js', 'not-an-app.js: its default export is an object']]) {
    const r = await runForkd(['-w', '2', '-b', '127.0.0.1:0', join(APPS, app!)]);
    assert.is(r.code, 4, app);
    assert.match(r.stderr, /\[CRITICAL\] App failed to load: /);
    assert.match(r.stderr, why!);
    assert.is(r.stderr.match(/Booting worker/g)!.length <= 2, true, 'no respawn loop');
  }
});

test('workers that keep dying at boot are retried with backoff, then forkd exits 3', async () => {
  const crash = await runForkd(['-w', '1', '-b', '127.0.0.1:0', join(APPS, 'crash-at-boot.js')]);
  assert.is(crash.code, 3);
  assert.match(crash.stderr, 'next start in 100 ms');
  assert.match(crash.stderr, 'next start in 800 ms');
  assert.match(crash.stderr, /\[CRITICAL\] Workers failed to boot 5 times in a row; the last: it exited with code 1 before it was ready/);
  const slow = await runForkd(['-w', '1', '-b', '127.0.0.1:0', '--boot-timeout', '300ms', join(APPS, 'slow-boot.js')], { env: { BOOT_MS: '5000' } });
  assert.is(slow.code, 3);
  assert.match(slow.stderr, 'it did not boot within 0.3s (bootTimeout)');
  const dir = tempDir();
  try {
    const crashFile = join(dir.path, 'crash');
    writeFileSync(crashFile, '');
    const young = await runForkd(['-w', '1', '-b', '127.0.0.1:0', join(APPS, 'dies-soon.js')], { env: { CRASH_FILE: crashFile } });
    assert.is(young.code, 3, 'a worker that dies right after it is ready counts as failing to boot');
    assert.match(young.stderr, /after it was ready; next start in 800 ms/);
  } finally {
    dir.remove();
  }
});

test.run();
