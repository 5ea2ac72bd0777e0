import { existsSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writePidfile } from '../../src/arbiter/pidfile';
import { tempDir } from '../helpers/forkd';

test('written whole, removed only while it still holds our pid', () => {
  const dir = tempDir();
  try {
    const path = join(dir.path, 'app.pid');
    const ours = writePidfile(path, 1234);
    assert.is(readFileSync(path, 'utf8'), '1234\n');
    ours.remove();
    assert.not.ok(existsSync(path));
    const again = writePidfile(path, 1234);
    writeFileSync(path, '5678\n'); // a successor took it over
    again.remove();
    assert.is(readFileSync(path, 'utf8'), '5678\n');
  } finally { dir.remove(); }
});

test('a planted symlink is replaced, never written through', () => {
  const dir = tempDir();
  try {
    const victim = join(dir.path, 'victim');
    writeFileSync(victim, 'precious');
    const path = join(dir.path, 'app.pid');
    symlinkSync(victim, path);
    writePidfile(path, 42);
    assert.is(readFileSync(victim, 'utf8'), 'precious');
    assert.is(readFileSync(path, 'utf8'), '42\n');
  } finally { dir.remove(); }
});

test.run();
