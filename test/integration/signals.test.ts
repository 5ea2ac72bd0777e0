import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, isAlive, processTitle, startForkd, tempDir, waitFor } from '../helpers/forkd';
import { load, request } from '../helpers/http';

const probe = join(APPS, 'probe.js');

function refused(url: string): Promise<boolean> {
  return request(url).then(() => false, (err: NodeJS.ErrnoException) => err.code === 'ECONNREFUSED');
}

test('TERM: in-flight requests finish, new connections are refused, the master exits 0', async () => {
  const dir = tempDir();
  const mark = join(dir.path, 'arrived');
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--graceful-timeout', '10', probe]);
  try {
    const workers = f.workers();
    const agent = new http.Agent({ keepAlive: true });
    const inFlight = request(`${f.url}/late?ms=1500&mark=${mark}`, { agent });
    await waitFor(() => existsSync(mark), 'the slow request to reach a worker');
    f.signal('SIGTERM');
    await waitFor(() => refused(`${f.url}/`), 'new connections to be refused');
    const reply = await inFlight;
    assert.is(reply.status, 200);
    assert.match(reply.body, 'late done');
    assert.is(reply.headers.connection, 'close', 'a kept-alive connection is told to close during a drain');
    assert.equal(await f.waitExit(), { code: 0, signal: null });
    await waitFor(() => workers.every((w) => !isAlive(w)), 'workers to exit');
    assert.match(f.output(), 'Handling signal: TERM');
    agent.destroy();
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('TERM: a request longer than gracefulTimeout is cut, and the worker killed', async () => {
  const dir = tempDir();
  const mark = join(dir.path, 'arrived');
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--graceful-timeout', '1', probe]);
  try {
    const inFlight = request(`${f.url}/late?ms=30000&mark=${mark}`).then(() => 'answered', (err: Error) => err.message);
    await waitFor(() => existsSync(mark), 'the request to reach a worker');
    const t0 = Date.now();
    f.signal('SIGTERM');
    assert.is((await f.waitExit()).code, 0);
    assert.ok(Date.now() - t0 < 5000, 'stopped within gracefulTimeout and a little');
    assert.match(await inFlight, 'socket hang up');
  } finally {
    await f.kill();
    dir.remove();
  }
});

test('INT and QUIT stop quickly, without waiting for requests', async () => {
  for (const sig of ['SIGINT', 'SIGQUIT'] as const) {
    const dir = tempDir();
    const mark = join(dir.path, 'arrived');
    const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '--graceful-timeout', '30', probe]);
    try {
      const inFlight = request(`${f.url}/late?ms=20000&mark=${mark}`).then(() => 'answered', (err: Error) => err.message);
      await waitFor(() => existsSync(mark), 'the request to reach a worker');
      const t0 = Date.now();
      f.signal(sig);
      assert.equal(await f.waitExit(), { code: 0, signal: null }, sig);
      assert.ok(Date.now() - t0 < 3000, `${sig} stopped in ${Date.now() - t0} ms`);
      assert.is(await inFlight, 'socket hang up');
    } finally {
      await f.kill();
      dir.remove();
    }
  }
});

test('TTIN and TTOU add and remove one worker, never below one', async () => {
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '-n', 'tt', probe]);
  try {
    f.signal('SIGTTIN');
    await waitFor(() => f.workers().length === 3, 'a third worker');
    await waitFor(() => f.workers().map(processTitle).includes('forkd: worker 3 [tt]'), 'worker 3 titled');
    await f.waitForLog(/Number of workers: 3/);
    f.signal('SIGTTOU');
    await waitFor(() => f.workers().length === 2, 'back to two');
    assert.equal(f.workers().map(processTitle).sort(), ['forkd: worker 1 [tt]', 'forkd: worker 2 [tt]'], 'the highest number retires');
    f.signal('SIGTTOU');
    await waitFor(() => f.workers().length === 1, 'one worker');
    f.signal('SIGTTOU');
    await f.waitForLog(/TTOU ignored: forkd keeps at least 1 worker/);
    assert.is(f.workers().length, 1);
    assert.is((await request(`${f.url}/`)).status, 200);
  } finally {
    await f.kill();
  }
});

for (const keepAlive of [true, false]) {
  test(`TTOU and TTIN under ${keepAlive ? 'keep-alive' : 'Connection: close'} load fail no request`, async () => {
    const f = await startForkd(['-w', '3', '-b', '127.0.0.1:0', probe]);
    try {
      const steps: Array<[number, NodeJS.Signals]> = [[700, 'SIGTTOU'], [1500, 'SIGTTOU'], [2300, 'SIGTTIN']];
      const timers = steps.map(([ms, sig]) => setTimeout(() => f.signal(sig), ms));
      const r = await load(`${f.url}/`, { connections: 16, durationMs: 3500, keepAlive });
      timers.forEach(clearTimeout);
      assert.is(r.failed, 0, `failed ${r.failed} of ${r.sent}: ${JSON.stringify(r.errors)} ${JSON.stringify(r.statuses)}`);
      assert.ok(r.ok > 200, `only ${r.ok} requests`);
      await waitFor(() => f.workers().length === 2, 'two workers at the end');
    } finally {
      await f.kill();
    }
  });
}

test('a worker killed with -9 is replaced under the same number', async () => {
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '-n', 'k9', probe]);
  try {
    const victim = f.workers().find((p) => processTitle(p) === 'forkd: worker 2 [k9]')!;
    process.kill(victim, 'SIGKILL');
    await f.waitForLog(new RegExp(`Worker \\(pid:${victim}\\) was killed by SIGKILL`));
    await waitFor(() => {
      const w = f.workers();
      return w.length === 2 && !w.includes(victim) && w.map(processTitle).includes('forkd: worker 2 [k9]');
    }, 'worker 2 to be replaced');
    assert.is((await request(`${f.url}/`)).status, 200);
  } finally {
    await f.kill();
  }
});

test('stray signals neither stop a worker nor leave an inspector open', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '-t', '2', probe]);
  try {
    const [worker] = f.workers();
    const state = (pid: number) => /^\S+ \(.*\) (\S)/.exec(readFileSync(`/proc/${pid}/stat`, 'utf8'))![1];
    for (const sig of ['SIGTTIN', 'SIGTTOU', 'SIGHUP', 'SIGWINCH', 'SIGUSR2'] as const) process.kill(worker!, sig);
    f.signal('SIGUSR1');
    await f.waitForLog(/log files reopened/);
    assert.is((await request(`${f.url}/`)).status, 200);
    assert.is.not(state(worker!), 'T', 'the worker is not stopped by TTIN/TTOU');
    assert.not.match(f.stdio(), 'Debugger listening', 'USR1 opened no inspector in the master');
    // A USR1 to a worker opens its inspector (kept for reading hung stacks); its next heartbeat closes it.
    process.kill(worker!, 'SIGUSR1');
    const port = Number((await f.waitForLog(/Debugger listening on ws:\/\/127\.0\.0\.1:(\d+)/))[1]);
    await f.waitForLog(/closed the inspector a USR1 opened/);
    await waitFor(() => request(`http://127.0.0.1:${port}/json/list`).then(() => false, () => true), 'the inspector to stop answering');
    assert.equal(f.workers(), [worker]);
  } finally {
    await f.kill();
  }
});

test('--no-timeout-stack: a USR1 never opens a worker\'s inspector', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '-t', '1', '--no-timeout-stack', probe]);
  try {
    const [worker] = f.workers();
    process.kill(worker!, 'SIGUSR1');
    // Nothing to wait for but time: four heartbeats' worth.
    await new Promise((r) => setTimeout(r, 1000));
    assert.is((await request(`${f.url}/`)).status, 200);
    assert.not.match(f.stdio(), 'Debugger listening');
    assert.equal(f.workers(), [worker]);
  } finally {
    await f.kill();
  }
});

test('a master stalled longer than timeout does not kill its healthy workers', async () => {
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', '-t', '1', probe]);
  try {
    const workers = f.workers();
    process.kill(f.pid, 'SIGSTOP');
    await new Promise((r) => setTimeout(r, 2500)); // the stall itself is the scenario
    process.kill(f.pid, 'SIGCONT');
    await f.waitForLog(/the master was stalled for \d+ ms/);
    await new Promise((r) => setTimeout(r, 1500)); // a full timeout after the stall, still no kill
    assert.not.match(f.output(), 'WORKER TIMEOUT');
    assert.equal(f.workers().sort(), workers.sort());
  } finally {
    await f.kill();
  }
});

test('TERM closes idle keep-alive connections promptly', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', '--graceful-timeout', '30', probe]);
  try {
    const agent = new http.Agent({ keepAlive: true });
    assert.is((await request(`${f.url}/`, { agent })).headers.connection, 'keep-alive');
    const t0 = Date.now();
    f.signal('SIGTERM');
    assert.equal(await f.waitExit(5000), { code: 0, signal: null });
    assert.ok(Date.now() - t0 < 2000, `stopped in ${Date.now() - t0} ms with an idle connection open`);
    agent.destroy();
  } finally {
    await f.kill();
  }
});

test('workers exit when their master dies', async () => {
  const f = await startForkd(['-w', '2', '-b', '127.0.0.1:0', probe]);
  try {
    const workers = f.workers();
    process.kill(f.pid, 'SIGKILL');
    await f.waitExit();
    await waitFor(() => workers.every((w) => !isAlive(w)), 'orphaned workers to exit', 10_000);
  } finally {
    await f.kill();
  }
});

test.run();
