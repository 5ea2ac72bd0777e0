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
    assert.match(printed.stdout, new RegExp(`^workers +"auto" \\(= ${set.length}\\) +# the default$`, 'm'));
    const f = await startForkd(['-b', '127.0.0.1:0', probe], { prefix });
    try {
      assert.match(f.output(), new RegExp(`Ready: ${set.length} workers? serving`));
      assert.is(f.workers().length, set.length);
    } finally {
      await f.kill();
    }
  }
});

test.run();
