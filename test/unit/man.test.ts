/** The man pages: generated parts up to date with the settings table, and clean under mandoc's lint. */

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROOT } from '../helpers/forkd';

const page = (name: string) => readFileSync(join(ROOT, 'man', name), 'utf8');

interface Generator { renderForkd1(current: string): string; renderConfig5(): string }
const generator = () => import(pathToFileURL(join(ROOT, 'scripts', 'gen-man.mjs')).href) as Promise<Generator>;

test('the committed pages are what the settings table makes of them (node scripts/gen-man.mjs)', async () => {
  const gen = await generator();
  assert.fixture(page('forkd.1'), gen.renderForkd1(page('forkd.1')));
  assert.fixture(page('forkd.config.5'), gen.renderConfig5());
});

test('every flag and setting is documented', () => {
  const { settings, SETTING_NAMES } = require(join(ROOT, 'dist', 'src', 'config', 'settings.js')) as typeof import('../../src/config/settings');
  const one = page('forkd.1');
  const five = page('forkd.config.5');
  for (const name of SETTING_NAMES) {
    assert.ok(five.includes(`.B ${name}\n`), `forkd.config(5) documents ${name}`);
    for (const flag of settings[name].flags ?? []) assert.ok(one.includes(flag.replace(/-/g, '\\-')), `forkd(1) documents ${flag}`);
  }
});

test('forkd-ctl(1) and forkd ctl --help name every command the control socket takes', () => {
  const { CONTROL_COMMANDS } = require(join(ROOT, 'dist', 'src', 'arbiter', 'control.js')) as typeof import('../../src/arbiter/control');
  const { CTL_USAGE } = require(join(ROOT, 'dist', 'src', 'cli', 'ctl.js')) as typeof import('../../src/cli/ctl');
  const ctl = page('forkd-ctl.1');
  for (const cmd of [...CONTROL_COMMANDS, 'top']) {
    assert.ok([`.TP\n.B ${cmd}\n`, `.TP\n.BR ${cmd} `, `.TP\n.BI ${cmd} `].some((head) => ctl.includes(head)), `forkd-ctl(1) documents ${cmd}`);
    assert.ok(new RegExp(`^  ${cmd}\\b`, 'm').test(CTL_USAGE), `forkd ctl --help lists ${cmd}`);
  }
});

test('mandoc -T lint finds nothing', () => {
  const r = spawnSync('mandoc', ['-T', 'lint', '-W', 'warning', ...['forkd.1', 'forkd-ctl.1', 'forkd.config.5'].map((p) => join(ROOT, 'man', p))], { encoding: 'utf8' });
  assert.ok(!r.error, `mandoc runs (${r.error?.message}); .ci/run installs it`);
  assert.is(`${r.stdout}${r.stderr}`.trim(), '');
  assert.is(r.status, 0);
});

test.run();
