/** A worker runs its hooks from the snapshot its master kept of the config file, never from the file
 *  as it is when the worker starts: in every config language, with its local modules. */

import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { ConfigSnapshot } from '../../src/config/compile';
import { loadConfigFile } from '../../src/config/file';
import { ROOT, tempDir } from '../helpers/forkd';

/** Config files whose postWorkerInit returns `tag`, each requiring or importing a local module. */
const CONFIGS: Record<string, (tag: string) => string> = {
  'forkd.config.ts': (tag) => `import { base } from './helper';\nconst tag: string = ${JSON.stringify(tag)};\n`
    + 'export default { workers: 1, postWorkerInit: (): string => `${base}:${tag}` };\n',
  'forkd.config.mts': (tag) => `import { base } from './helper.mjs';\nexport default { postWorkerInit: () => \`\${base}:${tag}\` };\n`,
  'forkd.config.cts': (tag) => `const { base } = require('./helper');\nmodule.exports = { postWorkerInit: () => \`\${base}:${tag}\` };\n`,
  'forkd.config.js': (tag) => `const { base } = require('./helper');\nmodule.exports = { postWorkerInit: () => \`\${base}:${tag}\` };\n`,
  'forkd.config.cjs': (tag) => `const { base } = require('./helper.json');\nmodule.exports = () => ({ postWorkerInit: () => \`\${base}:${tag}\` });\n`,
  'forkd.config.mjs': (tag) => `import { base } from './helper.mjs';\nexport default async () => ({ postWorkerInit: () => \`\${base}:${tag}\` });\n`,
};

function writeHelpers(dir: string, base: string): void {
  writeFileSync(join(dir, 'helper.ts'), `export const base: string = ${JSON.stringify(base)};\n`);
  writeFileSync(join(dir, 'helper.json'), JSON.stringify({ base }));
  writeFileSync(join(dir, 'helper.mjs'), `export const base = ${JSON.stringify(base)};\n`);
}

/** What postWorkerInit returns, run from `snapshot` in a process of its own, as a worker runs it
 *  (Node keeps an ES module it loaded, by URL, for the life of a process). */
function hookResult(snapshot: ConfigSnapshot): unknown {
  const compile = JSON.stringify(join(ROOT, 'dist', 'src', 'config', 'compile.js'));
  return JSON.parse(execFileSync(process.execPath, ['-e', `require(${compile}).runSnapshot(JSON.parse(process.env.SNAPSHOT))
    .then((values) => console.log(JSON.stringify(values.postWorkerInit())))`],
  { env: { ...process.env, SNAPSHOT: JSON.stringify(snapshot) }, encoding: 'utf8' })) as unknown;
}

async function snapshotOf(file: string): Promise<ConfigSnapshot> {
  const read = await loadConfigFile({ explicit: file, searchFrom: join(file, '..') });
  assert.ok(read?.snapshot, `${file} has a snapshot`);
  return read.snapshot;
}

test('a snapshot runs the config as it was read: edited since, made invalid, or gone', async () => {
  for (const [name, body] of Object.entries(CONFIGS)) {
    const dir = tempDir();
    try {
      const file = join(dir.path, name);
      writeHelpers(dir.path, 'one');
      writeFileSync(file, body('v1'));
      const snapshot = await snapshotOf(file);
      assert.is(hookResult(snapshot), 'one:v1', name);
      writeFileSync(file, body('v2'));
      assert.is(hookResult(snapshot), 'one:v1', `${name}: edited since`);
      writeFileSync(file, 'export default { postWorkerInit: ( ;\n');
      assert.is(hookResult(snapshot), 'one:v1', `${name}: invalid now`);
      rmSync(file);
      assert.is(hookResult(snapshot), 'one:v1', `${name}: gone`);
    } finally { dir.remove(); }
  }
});

test('local modules the master compiled are in the snapshot; ES modules and packages are Node\'s', async () => {
  const dir = tempDir();
  try {
    writeHelpers(dir.path, 'one');
    const ts = join(dir.path, 'forkd.config.ts');
    const mjs = join(dir.path, 'forkd.config.mjs');
    writeFileSync(ts, CONFIGS['forkd.config.ts']!('v1'));
    writeFileSync(mjs, CONFIGS['forkd.config.mjs']!('v1'));
    const [fromTs, fromMjs] = [await snapshotOf(ts), await snapshotOf(mjs)];
    assert.equal(Object.keys(fromTs.modules).sort(), [ts, join(dir.path, 'helper.ts')].sort());
    assert.equal(fromTs.links, { [ts]: { './helper': join(dir.path, 'helper.ts') } });
    writeHelpers(dir.path, 'two');
    assert.is(hookResult(fromTs), 'one:v1', 'the TypeScript helper as it was');
    assert.is(hookResult(fromMjs), 'two:v1', 'an ES module config\'s imports load as they are now');
    rmSync(join(dir.path, 'helper.ts'));
    assert.is(hookResult(fromTs), 'one:v1', 'the TypeScript helper, gone');
  } finally { dir.remove(); }
});

test('an ES module config run from its snapshot keeps its own URL: relative imports, import.meta.url', async () => {
  // .mjs, a .js in a "type": "module" package, and a typeless .js written as an ES module.
  for (const [name, type] of [['forkd.config.mjs', null], ['forkd.config.js', 'module'], ['forkd.config.js', null]] as const) {
    const dir = tempDir();
    try {
      if (type) writeFileSync(join(dir.path, 'package.json'), JSON.stringify({ type }));
      mkdirSync(join(dir.path, 'lib'));
      writeFileSync(join(dir.path, 'lib', 'where.mjs'), 'export const where = import.meta.url;\n');
      const file = join(dir.path, name);
      writeFileSync(file, "import { where } from './lib/where.mjs';\nexport default { postWorkerInit: () => [where, import.meta.url] };\n");
      const snapshot = await snapshotOf(file);
      writeFileSync(file, 'export default { postWorkerInit: () => "edited" };\n');
      const [where, self] = hookResult(snapshot) as [string, string];
      assert.is(where, pathToFileURL(join(dir.path, 'lib', 'where.mjs')).href, `${name} (${type})`);
      assert.ok(self.startsWith(pathToFileURL(file).href), `${name} (${type}): ${self}`);
    } finally { dir.remove(); }
  }
});

test('JSON and YAML hold no hooks, so no snapshot is kept of them', async () => {
  const dir = tempDir();
  try {
    writeFileSync(join(dir.path, 'forkd.config.json'), '{ "workers": 2 }');
    const read = await loadConfigFile({ explicit: null, searchFrom: dir.path });
    assert.is(read?.snapshot, null);
  } finally { dir.remove(); }
});

test.run();
