/** forkd as a package people install into their app: packed as npm would publish it, installed into
 *  a new app beside express (from the local npm cache), run with npx as a user would. */

import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROOT, childrenOf, isAlive, tempDir, waitFor } from '../helpers/forkd';
import { request } from '../helpers/http';

/** Installed, forkd and everything it depends on stay below this (measured: about 4 MB). */
const MAX_INSTALLED_BYTES = 8 * 2 ** 20;

// npm, npx and the app's forkd run on the node running this test.
const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${dirname(process.execPath)}${delimiter}${process.env.PATH ?? ''}`, npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' };
for (const k of Object.keys(env)) if (k.startsWith('FORKD_') || k === 'PORT' || k === 'WEB_CONCURRENCY') delete env[k];

function npm(args: readonly string[], cwd: string): string {
  return execFileSync('npm', args, { cwd, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 180_000 });
}

function bytesUnder(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) n += bytesUnder(p);
    else if (e.isFile()) n += statSync(p).size;
  }
  return n;
}

/** forkd's installed packages: it and its dependencies, found as Node would from each. */
function dependencyClosure(app: string, name: string): Map<string, string> {
  const seen = new Map<string, string>();
  const visit = (pkg: string, from: string) => {
    for (let dir = from; ; dir = dirname(dir)) {
      const candidate = join(dir, 'node_modules', pkg);
      try { statSync(join(candidate, 'package.json')); } catch {
        if (dir === app || dirname(dir) === dir) return;
        continue;
      }
      if (seen.has(candidate)) return;
      seen.set(candidate, pkg);
      const manifest = JSON.parse(readFileSync(join(candidate, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
      for (const dep of Object.keys(manifest.dependencies ?? {})) visit(dep, candidate);
      return;
    }
  };
  visit(name, app);
  return seen;
}

const app = tempDir();
let tarball = '';

test.before(() => {
  const packed = JSON.parse(npm(['pack', '--ignore-scripts', '--json', '--pack-destination', app.path], ROOT)) as Array<{ filename: string; files: Array<{ path: string }> }>;
  tarball = join(app.path, packed[0]!.filename);
  writeFileSync(join(app.path, 'package.json'), JSON.stringify({ name: 'my-app', version: '1.0.0', private: true }));
  npm(['install', '--prefer-offline', '--no-package-lock', tarball, 'express'], app.path);
});
test.after(() => app.remove());

test('the tarball holds what users run and read, and nothing of the tests', () => {
  const files = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).split('\n').filter(Boolean).map((f) => f.replace(/^package\//, ''));
  for (const f of ['bin/forkd.js', 'dist/src/cli/main.js', 'dist/src/worker/main.js', 'dist/src/worker/thread.js', 'dist/src/index.d.ts',
    'man/forkd.1', 'man/forkd.config.5', 'systemd/forkd.service', 'config/forkd.config.example.ts', 'README.md', 'LICENSE', 'package.json']) {
    assert.ok(files.includes(f), `${f} is in the package`);
  }
  assert.equal(files.filter((f) => /^(test|src|scripts|dist\/test)\/|\.map$|\.tgz$/.test(f)), [], 'no tests, sources, scripts or maps');
  const manifest = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as Record<string, unknown>;
  assert.not.ok('private' in manifest, 'it can be published');
});

test('installed without TypeScript: no typescript, ts-node or @types, and small', () => {
  const modules = join(app.path, 'node_modules');
  for (const absent of ['typescript', 'ts-node', '@types/node']) {
    assert.not.ok(existsSync(join(modules, absent)), `${absent} is not installed`);
  }
  const closure = dependencyClosure(app.path, 'forkd');
  const bytes = [...closure.keys()].reduce((n, dir) => n + bytesUnder(dir), 0);
  assert.ok(closure.size > 1, 'its dependencies were found');
  assert.ok(bytes < MAX_INSTALLED_BYTES, `forkd and its ${closure.size - 1} dependencies take ${(bytes / 2 ** 20).toFixed(1)} MB installed`);
});

test('npx forkd serves an Express app; TERM stops it with exit 0', async () => {
  writeFileSync(join(app.path, 'server.js'), [
    "const express = require('express');",
    'const app = express();',
    "app.get('/', (req, res) => res.send(`hello from express in ${process.pid}`));",
    'module.exports = app;',
  ].join('\n'));
  const child = spawn('npx', ['forkd', '-w', '2', '-b', '127.0.0.1:0', 'server.js'], { cwd: app.path, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => { out += c; });
  child.stderr.setEncoding('utf8').on('data', (c: string) => { out += c; });
  const exited = new Promise<number | null>((ok) => child.once('exit', (code) => ok(code)));
  const tree = new Set<number>();
  const collect = (pid: number) => { for (const c of childrenOf(pid)) { tree.add(c); collect(c); } };
  try {
    const url = (await waitFor(() => /Listening at: (http:\/\/\S+)/.exec(out), `forkd to listen; output:\n${out}`, 30_000))[1]!;
    await waitFor(() => /Ready: 2 workers serving/.test(out), 'two workers serving', 30_000);
    collect(child.pid!);
    const r = await request(`${url}/`);
    assert.is(r.status, 200);
    assert.match(r.body, /^hello from express in \d+$/);
    assert.ok(tree.has(Number(r.body.split(' ').pop())), 'served by one of the workers npx started');
    const master = Number(/\[(\d+)\] \[INFO\] Starting forkd/.exec(out)![1]);
    process.kill(master, 'SIGTERM');
    await waitFor(() => !isAlive(master), 'the master to exit');
    assert.is(await exited, 0, out);
  } finally {
    collect(child.pid!);
    for (const pid of [child.pid!, ...tree]) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  }
});

test('import and require of forkd, with types, from .ts, .mts, .mjs and .cjs config files', () => {
  const configs: Record<string, string> = {
    'forkd.config.ts': "import { defineConfig } from 'forkd';\nexport default defineConfig({ workers: 3, app: 'server.js' });\n",
    'forkd.config.mts': "import { defineConfig } from 'forkd';\nexport default defineConfig({ workers: 4, app: 'server.js' });\n",
    'forkd.config.mjs': "// @ts-check\nimport { defineConfig } from 'forkd';\nexport default defineConfig({ workers: 5, app: 'server.js' });\n",
    'forkd.config.cjs': "// @ts-check\nconst { defineConfig } = require('forkd');\nmodule.exports = defineConfig({ workers: 6, app: 'server.js' });\n",
  };
  for (const [name, text] of Object.entries(configs)) writeFileSync(join(app.path, name), text);
  const tsc = (files: string[]) => spawnSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '--noEmit', '--strict',
    '--module', 'node16', '--moduleResolution', 'node16', '--allowJs', '--checkJs', '--skipLibCheck', '--types', 'node',
    '--typeRoots', join(ROOT, 'node_modules', '@types'), ...files], { cwd: app.path, encoding: 'utf8' });
  const ok = tsc(Object.keys(configs));
  assert.is(ok.status, 0, `tsc type-checks every config against the installed forkd's types:\n${ok.stdout}${ok.stderr}`);
  writeFileSync(join(app.path, 'wrong.config.mts'), "import { defineConfig } from 'forkd';\nexport default defineConfig({ workers: true });\n");
  const wrong = tsc(['wrong.config.mts']);
  assert.is(wrong.status, 2, 'a wrong value is a type error');
  assert.match(wrong.stdout, /wrong\.config\.mts\(2,\d+\): error TS2322/);
  // At run time: the JavaScript ones need nothing more.
  const forkd = join(app.path, 'node_modules', '.bin', 'forkd');
  for (const [name, workers] of [['forkd.config.mjs', 5], ['forkd.config.cjs', 6]] as const) {
    const r = spawnSync(forkd, ['--print-config', '-c', name], { cwd: app.path, env, encoding: 'utf8' });
    assert.is(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`workers\\s+${workers}\\s`));
  }
});

test('TypeScript without its packages: one line naming what to install (78 for a config, 4 for an app); then it works', async () => {
  const forkd = join(app.path, 'node_modules', '.bin', 'forkd');
  const run = (args: string[]) => spawnSync(forkd, args, { cwd: app.path, env, encoding: 'utf8', timeout: 30_000 });
  const config = run(['--print-config', '-c', 'forkd.config.ts']);
  assert.is(config.status, 78);
  assert.is(config.stderr, `forkd: error: ${join(app.path, 'forkd.config.ts')} is TypeScript, and loading it needs the typescript package, `
    + 'which is not installed (npm install typescript)\n');
  writeFileSync(join(app.path, 'server.ts'), "export default (req: unknown, res: { end(s: string): void }) => res.end('typed');\n");
  const appRun = run(['-w', '1', '-b', '127.0.0.1:0', '-c', 'forkd.config.cjs', 'server.ts']);
  assert.is(appRun.status, 4);
  assert.is(appRun.stderr, `forkd: error: ${join(app.path, 'server.ts')} is TypeScript, and loading it needs the ts-node and typescript packages, `
    + 'which are not installed (npm install ts-node typescript)\n');
  npm(['install', '--prefer-offline', '--no-package-lock', 'typescript@~5.9', 'ts-node@10'], app.path);
  const loaded = run(['--print-config', '-c', 'forkd.config.ts']);
  assert.is(loaded.status, 0, loaded.stderr);
  assert.match(loaded.stdout, /workers\s+3\s/);
  const checked = run(['--check-config', '-c', 'forkd.config.cjs', 'server.ts']);
  assert.is(checked.status, 0, checked.stderr);
  assert.match(checked.stdout, 'app OK: request listener');
});

test.run();
