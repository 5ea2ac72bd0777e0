/** The shipped systemd units pass `systemd-analyze verify` without a single warning (it exits 0 on
 *  warnings, so any output fails), and say what forkd's behaviour needs. */

import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { settings } from '../../src/config/settings';
import { ROOT, tempDir } from '../helpers/forkd';

const UNITS = join(ROOT, 'systemd');

function verify(...files: string[]): { status: number | null; output: string } {
  const r = spawnSync('systemd-analyze', ['verify', '--man=no', ...files], { encoding: 'utf8' });
  return { status: r.status, output: `${r.stdout}${r.stderr}`.trim() };
}

test('systemd-analyze is here, and its check can fail', () => {
  execFileSync('systemd-analyze', ['--version']);
  const dir = tempDir();
  try {
    const bad = join(dir.path, 'bad.service');
    writeFileSync(bad, '[Service]\nExecStart=/bin/true\nNoSuchKey=1\n');
    assert.ok(verify(bad).output.length > 0, 'an unknown key is reported');
  } finally { dir.remove(); }
});

test('the service and socket units verify cleanly', () => {
  const r = verify(join(UNITS, 'forkd.service'), join(UNITS, 'forkd.socket'));
  assert.is(r.output, '');
  assert.is(r.status, 0);
});

test('an instance of the template verifies cleanly', () => {
  const dir = tempDir();
  try {
    copyFileSync(join(UNITS, 'forkd@.service'), join(dir.path, 'forkd@.service'));
    copyFileSync(join(UNITS, 'forkd@.service'), join(dir.path, 'forkd@demo.service'));
    const r = verify(join(dir.path, 'forkd@demo.service'));
    assert.is(r.output, '');
    assert.is(r.status, 0);
  } finally { dir.remove(); }
});

test('the units carry what forkd relies on', () => {
  for (const name of ['forkd.service', 'forkd@.service']) {
    const unit = readFileSync(join(UNITS, name), 'utf8');
    for (const line of ['Type=notify', 'NotifyAccess=all', 'ExecReload=/bin/kill -HUP $MAINPID', 'KillMode=mixed',
      'RestartPreventExitStatus=78', 'NoNewPrivileges=true', 'ProtectSystem=strict', 'PrivateTmp=true']) {
      assert.ok(unit.split('\n').includes(line), `${name} has ${line}`);
    }
    const stop = Number(/^TimeoutStopSec=(\d+)$/m.exec(unit)?.[1]);
    assert.ok(stop > (settings.gracefulTimeout.default as number), `${name}: TimeoutStopSec ${stop} is above gracefulTimeout`);
  }
  assert.match(readFileSync(join(UNITS, 'forkd@.service'), 'utf8'), '-c /etc/forkd/%i.config');
  assert.match(readFileSync(join(UNITS, 'forkd.socket'), 'utf8'), 'FileDescriptorName=http');
});

test.run();
