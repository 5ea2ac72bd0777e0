import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, startForkd, tempDir } from '../helpers/forkd';
import { request } from '../helpers/http';
import { listenForNotify } from '../helpers/notify';

const probe = join(APPS, 'probe.js');

test('sd_notify from the master\'s own pid: READY=1, RELOADING=1 + MONOTONIC_USEC then READY=1, STOPPING=1', async () => {
  const dir = tempDir();
  const socket = join(dir.path, 'notify.sock');
  const notify = await listenForNotify(socket);
  writeFileSync(join(dir.path, 'app.js'), "module.exports = (req, res) => res.end('v1');\n");
  writeFileSync(join(dir.path, 'forkd.config.js'), "module.exports = { app: 'app.js', workers: 2, bind: ['127.0.0.1:0'], reloadOnConfigChange: false };\n");
  const f = await startForkd([], { cwd: dir.path, env: { NOTIFY_SOCKET: socket } });
  try {
    const ready = await notify.waitFor({ READY: '1' });
    assert.is(ready.pid, f.pid, 'sent from the master pid (SCM_CREDENTIALS)');
    assert.is(ready.fields.STATUS, '2/2 workers serving, generation 1');
    f.signal('SIGHUP');
    const reloading = await notify.waitFor({ RELOADING: '1' });
    const uptimeUs = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 1e6;
    assert.ok(Math.abs(Number(reloading.fields.MONOTONIC_USEC) - uptimeUs) < 60e6, 'MONOTONIC_USEC is CLOCK_MONOTONIC now');
    const reloaded = await notify.waitFor({ READY: '1', STATUS: '2/2 workers serving, generation 2; last reload ok' });
    assert.ok(notify.messages.indexOf(reloading) < notify.messages.indexOf(reloaded), 'READY=1 follows RELOADING=1');
    writeFileSync(join(dir.path, 'app.js'), 'throw new Error("broken release");\n');
    f.signal('SIGHUP');
    await notify.waitFor({ READY: '1', STATUS: '2/2 workers serving, generation 2; last reload failed: a new worker failed to boot: Error: broken release' });
    assert.is((await request(`${f.url}/`)).body, 'v1', 'the old generation serves on');
    f.signal('SIGTERM');
    const stopping = await notify.waitFor({ STOPPING: '1' });
    assert.is(stopping.pid, f.pid);
    assert.ok(notify.messages.every((m) => m.pid === f.pid), 'every message came from the master');
  } finally {
    await f.kill();
    notify.close();
    dir.remove();
  }
});

test('an abstract NOTIFY_SOCKET works too; workers never see NOTIFY_SOCKET or WATCHDOG_*', async () => {
  const name = `@forkd-test-${process.pid}`;
  const notify = await listenForNotify(name);
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', probe], { env: { NOTIFY_SOCKET: name, WATCHDOG_USEC: '400000' } });
  try {
    const ready = await notify.waitFor({ READY: '1' });
    assert.is(ready.pid, f.pid, 'systemd-notify, run as root, sends with the master pid');
    const t0 = notify.messages.length;
    await notify.waitFor({ WATCHDOG: '1' });
    await new Promise((r) => setTimeout(r, 700));
    const pings = notify.messages.slice(t0).filter((m) => m.fields.WATCHDOG === '1').length;
    assert.ok(pings >= 2, `WATCHDOG=1 every 200 ms (got ${pings} in ~0.7 s)`);
    assert.is((await request(`${f.url}/systemd-env`)).body, '[]');
  } finally {
    await f.kill();
    notify.close();
  }
});

test.run();
