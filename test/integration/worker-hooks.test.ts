/** A worker runs exactly its generation's config, hooks included: one that replaces a dead worker
 *  runs the hooks its generation read, not the config file as it is by then (edited without a
 *  reload, or saved invalid). */

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isAlive, startForkd, tempDir, waitFor, type Forkd } from '../helpers/forkd';

const APP = "module.exports = (req, res) => res.end('ok');\n";

/** A config in `name`'s language whose postWorkerInit appends "TAG PID" to $HOOK_MARKS. */
function configText(name: string, tag: string, threads: number): string {
  const settings = `app: 'app.js', bind: ['127.0.0.1:0'], workers: 1, threads: ${threads}, reloadOnConfigChange: false`;
  const hook = `postWorkerInit: (w${name.endsWith('.ts') ? ': { pid: number }' : ''}) => appendFileSync(process.env.HOOK_MARKS${name.endsWith('.ts') ? '!' : ''}, \`${tag} \${w.pid}\\n\`)`;
  return name.endsWith('.js')
    ? `const { appendFileSync } = require('node:fs');\nmodule.exports = { ${settings}, ${hook} };\n`
    : `import { appendFileSync } from 'node:fs';\nexport default { ${settings}, ${hook} };\n`;
}

const marks = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : []);

/** Starts forkd on a config written as `name`, and waits for its worker's hooks to have run. */
async function start(name: string, threads: number): Promise<{ f: Forkd; dir: ReturnType<typeof tempDir>; config: string; hookMarks: string; first: number }> {
  const dir = tempDir();
  const config = join(dir.path, name);
  const hookMarks = join(dir.path, 'marks');
  writeFileSync(join(dir.path, 'app.js'), APP);
  writeFileSync(config, configText(name, 'old', threads));
  const f = await startForkd(['-c', config], { cwd: dir.path, env: { HOOK_MARKS: hookMarks } });
  const [first] = f.workers();
  await waitFor(() => marks(hookMarks).length === threads, `${threads} postWorkerInit marks`).catch(async (err: Error) => {
    await f.kill();
    dir.remove();
    throw err;
  });
  assert.equal(marks(hookMarks), Array(threads).fill(`old ${first}`));
  return { f, dir, config, hookMarks, first: first! };
}

/** Kills the worker with SIGKILL; its replacement, and the marks the replacement's hooks left. */
async function replaceWorker(f: Forkd, first: number, hookMarks: string, threads: number): Promise<{ next: number; left: string[] }> {
  process.kill(first, 'SIGKILL');
  const next = await waitFor(() => f.workers().find((pid) => pid !== first && isAlive(pid)), 'a replacement worker');
  const left = () => marks(hookMarks).filter((l) => l.endsWith(` ${next}`));
  await waitFor(() => left().length === threads, `the replacement's ${threads} marks`);
  return { next, left: left() };
}

for (const [name, threads] of [['forkd.config.js', 1], ['forkd.config.mjs', 2], ['forkd.config.ts', 1]] as const) {
  test(`${name}${threads > 1 ? ` (threads ${threads})` : ''}: a worker replaced after an edit without a reload runs its generation's hooks`, async () => {
    const { f, dir, config, hookMarks, first } = await start(name, threads);
    try {
      writeFileSync(config, configText(name, 'new', threads));
      const { next, left } = await replaceWorker(f, first, hookMarks, threads);
      assert.equal(left, Array(threads).fill(`old ${next}`), `the old hook ran: ${JSON.stringify(marks(hookMarks))}`);
      assert.not.match(f.output(), /Reloading|cannot read hooks/);
    } finally {
      await f.kill();
      dir.remove();
    }
  });

  test(`${name}: a worker replaced while the config file is invalid still runs its generation's hooks`, async () => {
    const { f, dir, config, hookMarks, first } = await start(name, 1);
    try {
      writeFileSync(config, `${configText(name, 'new', 1)}\nexport default { postWorkerInit: ( ;\n`);
      const { next, left } = await replaceWorker(f, first, hookMarks, 1);
      assert.equal(left, [`old ${next}`]);
      assert.not.match(f.output(), /cannot read hooks|hook\.loadFailed/);
    } finally {
      await f.kill();
      dir.remove();
    }
  });
}

test.run();
