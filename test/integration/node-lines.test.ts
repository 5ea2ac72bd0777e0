/** What differs between the Node.js lines forkd supports (20, 22, 24, 26), each difference tested on
 *  whichever line runs this file: require(esm) for chokidar, os.availableParallelism for
 *  `workers: auto`, SO_REUSEPORT for --reuse-port, and that forkd prints no warning of its own
 *  with every deprecation turned into an error. */

import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, ROOT, runForkd, startForkd, tempDir, waitFor } from '../helpers/forkd';
import { freePort, request } from '../helpers/http';

const probe = join(APPS, 'probe.js');
/** Answers with its worker's pid. */
const hello = join(ROOT, 'examples', 'hello.js');

function nodeWith(nodeOptions: string, args: readonly string[]): ReturnType<typeof spawnSync> {
  return spawnSync(process.execPath, args, { env: { ...process.env, NODE_OPTIONS: nodeOptions }, encoding: 'utf8' });
}

function writeConfig(dir: string, config: Record<string, unknown>): void {
  writeFileSync(join(dir, 'forkd.config.js'), `module.exports = ${JSON.stringify(config)};\n`);
}

test('without require(esm) chokidar loads too: a config file save and --reload both reload', async () => {
  const flag = '--no-experimental-require-module';
  const switchable = spawnSync(process.execPath, [flag, '-e', '0']).status === 0;
  if (switchable) {
    // The flag works from NODE_OPTIONS on this line, so forkd below has no require(esm).
    assert.is(String(nodeWith(flag, ['-p', 'process.features.require_module']).stdout).trim(), 'false');
  } else {
    // A line that refuses the flag always has require(esm): chokidar is required, as below.
    assert.is(process.features.require_module, true);
  }
  const dir = tempDir();
  // The app in a directory of its own, so that --reload does not see the config file's saves.
  const app = join(dir.path, 'app', 'app.js');
  mkdirSync(dirname(app));
  copyFileSync(hello, app);
  writeConfig(dir.path, { app, workers: 1, bind: ['127.0.0.1:0'], reload: true });
  const f = await startForkd([], { cwd: dir.path, env: switchable ? { NODE_OPTIONS: flag } : {} });
  try {
    writeConfig(dir.path, { app, workers: 2, bind: ['127.0.0.1:0'], reload: true });
    await f.waitForLog(/Reloading \(config file \S+forkd\.config\.js changed\)/);
    await f.waitForLog(/Reload complete: generation 2, 2 workers/);
    writeFileSync(app, "module.exports = (req, res) => res.end('changed');\n");
    await f.waitForLog(/Reloading \(\S+app\.js changed \(--reload\)\)/);
    await f.waitForLog(/Reload complete: generation 3, 2 workers/);
    assert.not.match(f.output(), /file watcher|ERR_REQUIRE_ESM/);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('apps load with or without require(esm): ES module syntax in a typeless .js, CommonJS; no warning', async () => {
  const flag = '--no-experimental-require-module';
  const switchable = spawnSync(process.execPath, [flag, '-e', '0']).status === 0;
  for (const options of switchable ? ['', flag] : ['']) {
    for (const app of ['typeless/esm-syntax.js', 'typeless/top-level-await.js', 'probe.js']) {
      const r = await runForkd(['--check-config', '-b', '127.0.0.1:0', join(APPS, app)], { env: options ? { NODE_OPTIONS: options } : {} });
      assert.is(r.code, 0, `${app} with NODE_OPTIONS=${options}: ${r.stderr}`);
      assert.not.match(r.stderr, /Warning|\(node:\d+\)/, `${app} with NODE_OPTIONS=${options}`);
    }
  }
});

test('module hooks given with --import see the app\'s own file load', async () => {
  const dir = tempDir();
  const loads = join(dir.path, 'loads.txt');
  const hook = join(ROOT, 'test', 'fixtures', 'hooks', 'mark-loads.mjs');
  try {
    writeFileSync(loads, '');
    const r = await runForkd(['--check-config', '-b', '127.0.0.1:0', probe],
      { env: { NODE_OPTIONS: `--import=${hook}`, MARK_LOADS_FILE: loads } });
    assert.is(r.code, 0, r.stderr);
    assert.match(readFileSync(loads, 'utf8'), '/fixtures/apps/probe.js', 'the hook saw the app');
  } finally { dir.remove(); }
});

/** The CPUs this process may run on, from the kernel (Cpus_allowed_list: "0-3,6"). */
function allowedCpus(): number[] {
  const list = /^Cpus_allowed_list:\s*(\S+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]!;
  return list.split(',').flatMap((part) => {
    const [a, b = a] = part.split('-').map(Number) as [number, number?];
    return Array.from({ length: b - a + 1 }, (_, i) => a + i);
  });
}

test('workers auto is one per CPU forkd may run on: taskset to one CPU gives one worker', async () => {
  const cpus = allowedCpus();
  const cases = cpus.length >= 2 ? [[cpus[0]!], cpus.slice(0, 2)] : [[cpus[0]!]];
  for (const set of cases) {
    const prefix = ['taskset', '-c', set.join(',')];
    const printed = await runForkd(['--print-config', probe], { prefix });
    assert.is(printed.code, 0, printed.stderr);
    assert.match(printed.stdout, new RegExp(`^workers +"auto" \\(= ${set.length}: os\\.availableParallelism\\(\\)\\) +# the default$`, 'm'));
    const f = await startForkd(['-b', '127.0.0.1:0', probe], { prefix });
    try {
      assert.match(f.output(), new RegExp(`Ready: ${set.length} workers? serving`));
      assert.is(f.workers().length, set.length);
    } finally {
      await f.kill();
    }
  }
});

/** Whether this Node sets SO_REUSEPORT, asked through net's public listen() rather than forkd's
 *  own probe: two servers listening with reusePort on one port. */
async function nodeSetsReusePort(): Promise<boolean> {
  const listen = (port: number) => new Promise<net.Server | null>((ok) => {
    const s = net.createServer();
    s.once('error', () => ok(null));
    s.listen({ host: '127.0.0.1', port, reusePort: true } as net.ListenOptions, () => ok(s));
  });
  const a = (await listen(0))!;
  const b = await listen((a.address() as net.AddressInfo).port);
  for (const s of [a, b]) s?.close();
  return b !== null;
}

const REFUSED = /^forkd: error: cannot honour reusePort = true from (.+): Node\.js v[\d.]+ cannot bind with SO_REUSEPORT \(.+\); it needs Node\.js 22\.12 or later \(23\.1\+ on 23\), or reusePort off\n$/;

test('--reuse-port: two masters on one port both serve; where Node cannot set it, exit 78 (--check-config too)', async () => {
  const port = await freePort();
  const args = ['--reuse-port', '-w', '1', '-b', `127.0.0.1:${port}`, hello];
  const checked = await runForkd(['--check-config', ...args]);
  if (!(await nodeSetsReusePort())) {
    const r = await runForkd(args);
    assert.is(r.code, 78, r.stderr);
    assert.match(r.stderr, REFUSED);
    assert.is(REFUSED.exec(r.stderr)![1], 'the command line (--reuse-port)');
    assert.is(r.stdout, '');
    assert.is(checked.code, 78, 'and --check-config says so');
    assert.match(checked.stderr, REFUSED);
    return;
  }
  assert.is(checked.code, 0, checked.stderr);
  const first = await startForkd(args);
  const second = await startForkd(args).catch(async (err) => { await first.kill(); throw err; });
  try {
    const workers = [first.workers(), second.workers()];
    const seen = new Map<number, number>();
    // The kernel picks a socket by each connection's addresses: new connections reach both.
    for (let i = 0; i < 60; i++) {
      const pid = Number(/worker (\d+)/.exec((await request(`http://127.0.0.1:${port}/`)).body)![1]);
      seen.set(pid, (seen.get(pid) ?? 0) + 1);
    }
    const served = workers.map((pids) => pids.reduce((n, pid) => n + (seen.get(pid) ?? 0), 0));
    assert.is(served[0]! + served[1]!, 60, `answers from others: ${JSON.stringify([...seen])}`);
    assert.ok(served[0]! > 0 && served[1]! > 0, `split ${served.join('/')}`);
  } finally {
    await first.kill();
    await second.kill();
  }
});

test('without --reuse-port a second master cannot bind the port: exit 1, address already in use', async () => {
  const port = await freePort();
  const first = await startForkd(['-w', '1', '-b', `127.0.0.1:${port}`, hello]);
  try {
    const r = await runForkd(['-w', '1', '-b', `127.0.0.1:${port}`, hello]);
    assert.is(r.code, 1, r.stderr);
    assert.match(r.stderr, `cannot bind 127.0.0.1:${port}: address already in use`);
  } finally {
    await first.kill();
  }
});

test('a reload that turns reusePort on: refused where Node cannot set it, else new sockets get it', async () => {
  const dir = tempDir();
  const port = await freePort();
  writeConfig(dir.path, { app: hello, workers: 1, bind: ['127.0.0.1:0'] });
  const f = await startForkd([], { cwd: dir.path });
  const others: Array<Awaited<ReturnType<typeof startForkd>>> = [];
  try {
    const kept = f.url.replace('http://', '');
    const before = f.workers();
    writeConfig(dir.path, { app: hello, workers: 1, bind: ['127.0.0.1:0', `127.0.0.1:${port}`], reusePort: true });
    f.signal('SIGHUP');
    if (!(await nodeSetsReusePort())) {
      const m = await f.waitForLog(/Reload failed: invalid config: (.*); still serving generation 1 as before/);
      assert.match(`forkd: error: ${m[1]}\n`, REFUSED);
      assert.equal(f.workers(), before);
      assert.is((await request(`${f.url}/`)).status, 200);
      const refused = await request(`http://127.0.0.1:${port}/`).then(() => 'answered', (err: NodeJS.ErrnoException) => err.code);
      assert.is(refused, 'ECONNREFUSED', 'the new bind was not opened');
      return;
    }
    await f.waitForLog(/Reload complete: generation 2/);
    // The socket opened by the reload has SO_REUSEPORT: another forkd shares its port.
    others.push(await startForkd(['--reuse-port', '-w', '1', '-b', `127.0.0.1:${port}`, hello]));
    // The one it kept is as it was bound, without: sharing its port fails.
    const r = await runForkd(['--reuse-port', '-w', '1', '-b', kept, hello]);
    assert.is(r.code, 1, r.stderr);
    assert.match(r.stderr, `cannot bind ${kept}: address already in use`);
  } finally {
    for (const o of others) await o.kill();
    await f.kill();
    dir.remove();
  }
});

test('no warning from forkd with every deprecation an error: TypeScript config, ESM app, HUP, USR1, TTIN, TTOU, TERM', async () => {
  const options = '--pending-deprecation --throw-deprecation';
  // Both options are taken from NODE_OPTIONS on this line, and a pending deprecation then throws.
  const check = nodeWith(options, ['-e', 'Buffer(1)']);
  assert.is(check.status, 1);
  assert.match(String(check.stderr), 'DEP0005');
  const dir = tempDir();
  writeFileSync(join(dir.path, 'forkd.config.ts'), [
    "import { defineConfig } from 'forkd';",
    'const workers: number = 1;',
    `export default defineConfig({ app: ${JSON.stringify(join(APPS, 'esm.mjs'))}, workers, bind: ['127.0.0.1:0'], accessLog: '-' });`,
  ].join('\n'));
  const f = await startForkd([], { cwd: dir.path, env: { NODE_OPTIONS: options } });
  try {
    const environ = readFileSync(`/proc/${f.workers()[0]}/environ`, 'utf8').split('\0');
    assert.ok(environ.includes(`NODE_OPTIONS=${options}`), 'the workers run with the options too');
    assert.is((await request(`${f.url}/`)).body, 'esm ok');
    f.signal('SIGHUP');
    await f.waitForLog(/Reload complete: generation 2, 1 worker/);
    f.signal('SIGUSR1');
    await f.waitForLog(/log files reopened/);
    f.signal('SIGTTIN');
    await f.waitForLog(/Number of workers: 2/);
    await waitFor(() => f.workers().length === 2, 'a second worker');
    f.signal('SIGTTOU');
    await f.waitForLog(/Number of workers: 1/);
    await waitFor(() => f.workers().length === 1, 'one worker again');
    assert.is((await request(`${f.url}/`)).body, 'esm ok');
    f.signal('SIGTERM');
    assert.equal(await f.waitExit(), { code: 0, signal: null });
    // "unrecognized flag": V8 no longer knows one that bin/forkd.js sets for the master.
    assert.not.match(f.output(), /Warning|DeprecationWarning|ExperimentalWarning|\(node:\d+\)|unrecognized flag/);
  } finally {
    await f.kill();
    dir.remove();
  }
});

test.run();
