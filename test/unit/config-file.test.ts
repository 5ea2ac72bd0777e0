import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ConfigError } from '../../src/config/errors';
import { loadConfigFile } from '../../src/config/file';
import { loadConfig } from '../../src/config/load';
import { ROOT, tempDir } from '../helpers/forkd';

const VARIANTS: Record<string, (workers: number) => string> = {
  'forkd.config.ts': (n) => `import { defineConfig } from 'forkd';\nconst n: number = ${n};\nexport default defineConfig({ workers: n });\n`,
  'forkd.config.mts': (n) => `const workers: number = ${n};\nexport default { workers };\n`,
  'forkd.config.cts': (n) => `const workers: number = ${n};\nmodule.exports = { workers };\n`,
  'forkd.config.js': (n) => `module.exports = { workers: ${n} };\n`,
  'forkd.config.cjs': (n) => `module.exports = () => ({ workers: ${n} });\n`,
  'forkd.config.mjs': (n) => `export default async () => ({ workers: ${n} });\n`,
  'forkd.config.json': (n) => `{ "workers": ${n} }\n`,
  'forkd.config.yaml': (n) => `workers: ${n}\n`,
  'forkd.config.yml': (n) => `workers: ${n}\n`,
  '.forkdrc': (n) => `{ "workers": ${n} }\n`,
  '.forkdrc.json': (n) => `{ "workers": ${n} }\n`,
  'package.json': (n) => `{ "name": "app", "forkd": { "workers": ${n} } }\n`,
};

async function workersFrom(dir: string, explicit: string | null = null): Promise<unknown> {
  const file = await loadConfigFile({ explicit, searchFrom: dir });
  return file?.values.workers;
}

async function configErrorOf(promise: Promise<unknown>): Promise<string> {
  try { await promise; } catch (err) {
    assert.instance(err, ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

test('every config file format is found and loaded', async () => {
  for (const [name, body] of Object.entries(VARIANTS)) {
    const dir = tempDir();
    try {
      writeFileSync(join(dir.path, name), body(3));
      assert.is(await workersFrom(dir.path), 3, name);
    } finally { dir.remove(); }
  }
});

test('a .js config in a "type": "module" package loads as ESM', async () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir.path, 'package.json'), '{ "type": "module" }');
    writeFileSync(join(dir.path, 'forkd.config.js'), 'export default { workers: 4 };\n');
    assert.is(await workersFrom(dir.path), 4);
  } finally { dir.remove(); }
});

test('every read is fresh: an edited file is seen on the next load', async () => {
  for (const name of ['forkd.config.ts', 'forkd.config.js', 'forkd.config.cjs', 'forkd.config.mjs', 'forkd.config.json']) {
    const dir = tempDir();
    try {
      const file = join(dir.path, name);
      writeFileSync(file, VARIANTS[name]!(2));
      assert.is(await workersFrom(dir.path), 2, name);
      writeFileSync(file, VARIANTS[name]!(5));
      assert.is(await workersFrom(dir.path), 5, `${name} after an edit`);
      assert.is(await workersFrom(dir.path, file), 5, `${name} given with -c`);
    } finally { dir.remove(); }
  }
});

test('a TypeScript config imports sibling .ts files, fresh each time', async () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir.path, 'shared.ts'), 'export const base: number = 2;\n');
    writeFileSync(join(dir.path, 'forkd.config.ts'), "import { base } from './shared';\nexport default { workers: base * 3 };\n");
    assert.is(await workersFrom(dir.path), 6);
    writeFileSync(join(dir.path, 'shared.ts'), 'export const base: number = 3;\n');
    assert.is(await workersFrom(dir.path), 9);
  } finally { dir.remove(); }
});

/** Makes `dir` read-only for this process: a read-only bind mount, or permissions when not root.
 *  Returns null where neither holds (root without mount rights): then only "writes nothing" is checked. */
function makeReadOnly(dir: string): (() => void) | null {
  try {
    execFileSync('mount', ['--bind', '-o', 'ro', dir, dir], { stdio: 'ignore' });
    return () => execFileSync('umount', [dir]);
  } catch {
    if (process.getuid?.() === 0) return null;
    chmodSync(dir, 0o555);
    return () => chmodSync(dir, 0o755);
  }
}

test('configs load from a read-only directory and write nothing beside themselves', async () => {
  const dir = tempDir();
  const ro = join(dir.path, 'etc');
  mkdirSync(ro);
  writeFileSync(join(ro, 'shared.ts'), 'export const n = 7;\n');
  writeFileSync(join(ro, 'forkd.config.ts'), "import { n } from './shared';\nexport default { workers: n };\n");
  writeFileSync(join(ro, 'other.mjs'), 'export default { workers: 8 };\n');
  const undo = makeReadOnly(ro);
  try {
    if (undo) assert.throws(() => writeFileSync(join(ro, 'probe'), 'x'), /EROFS|EACCES/);
    const before = readdirSync(ro).sort();
    assert.is(await workersFrom(ro), 7);
    assert.is(await workersFrom(ro, join(ro, 'other.mjs')), 8);
    assert.equal(readdirSync(ro).sort(), before);
  } finally {
    undo?.();
    dir.remove();
  }
});

test('errors name the file and what went wrong', async () => {
  const dir = tempDir();
  try {
    const throws = join(dir.path, 'throws.js');
    writeFileSync(throws, "throw new Error('no secrets file');\n");
    const m1 = await configErrorOf(loadConfigFile({ explicit: throws, searchFrom: dir.path }));
    assert.match(m1, `config file ${throws} failed to load: Error: no secrets file`);

    const bad = join(dir.path, 'bad.ts');
    writeFileSync(bad, 'export default { workers: 2 ;\n');
    const m2 = await configErrorOf(loadConfigFile({ explicit: bad, searchFrom: dir.path }));
    assert.match(m2, `config file ${bad} failed to load: SyntaxError`);
    assert.match(m2, 'line 1');

    const arr = join(dir.path, 'arr.json');
    writeFileSync(arr, '[1, 2]');
    const m3 = await configErrorOf(loadConfigFile({ explicit: arr, searchFrom: dir.path }));
    assert.match(m3, 'must export an object of settings (or a function returning one); it exported an array');

    const broken = join(dir.path, 'broken.json');
    writeFileSync(broken, '{\n  "workers": 2,\n  "timeout": \n}\n');
    const m6 = await configErrorOf(loadConfigFile({ explicit: broken, searchFrom: dir.path }));
    assert.match(m6, `config file ${broken} failed to load: JSONError: JSON Error in ${broken}`);
    assert.match(m6, `"timeout": }`, 'the text where it went wrong, on one line');

    const fnThrows = join(dir.path, 'fn.cjs');
    writeFileSync(fnThrows, "module.exports = () => { throw new Error('bad env'); };\n");
    const m4 = await configErrorOf(loadConfigFile({ explicit: fnThrows, searchFrom: dir.path }));
    assert.match(m4, 'its exported function threw Error: bad env');

    const missing = join(dir.path, 'nope.js');
    const m5 = await configErrorOf(loadConfig({ cli: { config: { value: missing, flag: '-c' } }, env: {}, cwd: dir.path }));
    assert.match(m5, `config file not found: ${missing}`);
  } finally { dir.remove(); }
});

test('-c without an extension finds the file in any config language', async () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir.path, 'myapp.config.yaml'), 'workers: 6\n');
    assert.is(await workersFrom(dir.path, join(dir.path, 'myapp.config')), 6);
    writeFileSync(join(dir.path, 'myapp.config.ts'), 'export default { workers: 7 };\n');
    assert.is(await workersFrom(dir.path, join(dir.path, 'myapp.config')), 7, '.ts comes first');
    const missing = await configErrorOf(loadConfigFile({ explicit: join(dir.path, 'other.config'), searchFrom: dir.path }));
    assert.match(missing, `config file not found: ${join(dir.path, 'other.config')}`);
  } finally { dir.remove(); }
});

test('no config file: defaults; a config file is searched in chdir when given', async () => {
  const dir = tempDir();
  try {
    assert.is(await loadConfigFile({ explicit: null, searchFrom: dir.path }), null);
    mkdirSync(join(dir.path, 'app'));
    writeFileSync(join(dir.path, 'app', 'forkd.config.json'), '{ "timeout": 12 }');
    const loaded = await loadConfig({ cli: { chdir: { value: 'app', flag: '--chdir' } }, env: {}, cwd: dir.path });
    assert.is(loaded.config.timeout, 12);
    assert.is(loaded.file, join(dir.path, 'app', 'forkd.config.json'));
  } finally { dir.remove(); }
});

/** loadConfigFile run in a process of its own, in `dir`: what it found, and whether cosmiconfig was
 *  loaded (this process has it loaded already). */
function searchAlone(dir: string): { values: unknown; cosmiconfig: boolean } {
  const file = JSON.stringify(join(ROOT, 'dist', 'src', 'config', 'file.js'));
  return JSON.parse(execFileSync(process.execPath, ['-e', `require(${file}).loadConfigFile({ explicit: null, searchFrom: process.cwd() })
    .then((f) => console.log(JSON.stringify({ values: f?.values ?? null, cosmiconfig: Object.keys(require.cache).some((k) => k.includes('/cosmiconfig/')) })))`],
  { cwd: dir, encoding: 'utf8' })) as { values: unknown; cosmiconfig: boolean };
}

test('nothing to find loads no cosmiconfig; all it would find is still found, bad package.json still said', async () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir.path, 'package.json'), '{ "name": "app", "dependencies": {} }');
    assert.equal(searchAlone(dir.path), { values: null, cosmiconfig: false });
    writeFileSync(join(dir.path, 'package.json'), '{ "name": "app", "forkd": { "workers": 3 } }');
    assert.equal(searchAlone(dir.path), { values: { workers: 3 }, cosmiconfig: true });
    // cosmiconfig's own options (its "meta config", in package.json or .config/) are left to it.
    writeFileSync(join(dir.path, 'package.json'), '{ "name": "app", "cosmiconfig": { "searchPlaces": [] } }');
    assert.equal(searchAlone(dir.path).cosmiconfig, true);
    writeFileSync(join(dir.path, 'package.json'), '{ "name": ');
    assert.match(await configErrorOf(loadConfigFile({ explicit: null, searchFrom: dir.path })), join(dir.path, 'package.json'));
    writeFileSync(join(dir.path, 'package.json'), '{ "name": "app" }');
    mkdirSync(join(dir.path, '.config'));
    writeFileSync(join(dir.path, '.config', 'forkdrc.json'), '{ "workers": 9 }');
    assert.equal(searchAlone(dir.path), { values: { workers: 9 }, cosmiconfig: true });
  } finally { dir.remove(); }
});

test('the example config in config/ is valid', async () => {
  const file = join(ROOT, 'config', 'forkd.config.example.ts');
  const loaded = await loadConfig({ cli: { config: { value: file, flag: '-c' } }, env: {}, cwd: ROOT });
  assert.is(loaded.config.app, 'dist/server.js:createApp()');
  assert.is(loaded.config.maxRequests, 10_000);
  assert.is(loaded.config.timeout, 30);
});

test.run();
