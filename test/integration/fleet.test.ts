/** A fleet behind a load balancer, in the short form of scripts/fleet.mjs (whose full runs the
 *  closing note quotes): three forkd hosts on loopback addresses of their own behind Debian's
 *  HAProxy (health-checking /readyz) or nginx, configured from examples/balancers/, with wrk sending
 *  through the balancer at a paced rate (the machine runs other tests beside it). A rolling restart
 *  and a rolling USR2 upgrade cost no request; a host killed with SIGKILL costs no more than one
 *  request per connection open to it or through HAProxy, and nothing once HAProxy has marked it
 *  down. */

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ROOT } from '../helpers/forkd';

interface Step { host: string; outOfPoolMs?: number | null; exitedMs?: number; oldMaster?: number; newMaster?: number }
interface Phase {
  phase: number; requests: number; errors: number; non2xx: number; retries: number;
  steps?: Step[]; openAtKill?: number; failedAfterDown?: number; markedDownMs?: number;
}
interface Run { phases: Phase[]; verdicts: { phase: number; met: boolean; target: string }[]; met: boolean; error: string | null; delay: number }

const SHORT = ['--hosts', '3', '--workers', '1', '--threads', '1', '--connections', '16', '--pause-ms', '5', '--delay', '3', '--steady', '1.5'];

/** Runs scripts/fleet.mjs with `args` and --json; SIGINT (on which it stops what it started) if it
 *  is still running after `withinMs`. */
async function fleet(args: readonly string[], withinMs = 150_000): Promise<Run> {
  const child = spawn(process.execPath, [join(ROOT, 'scripts', 'fleet.mjs'), '--json', ...SHORT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => { out += c; });
  child.stderr.setEncoding('utf8').on('data', (c: string) => { err += c; });
  const exited = new Promise<number | null>((ok) => child.once('exit', ok));
  const deadline = setTimeout(() => child.kill('SIGINT'), withinMs);
  try {
    const code = await exited;
    let run: Run;
    try { run = JSON.parse(out) as Run; } catch { throw new Error(`fleet.mjs exited with ${code}, no result:\n${out}\n${err}`); }
    if (run.error) throw new Error(`fleet.mjs failed: ${run.error}\n${err}`);
    return run;
  } finally {
    clearTimeout(deadline);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGINT');
      await Promise.race([exited, new Promise((ok) => setTimeout(ok, 20_000))]);
    }
  }
}

const summary = (run: Run) => JSON.stringify(run.phases.map(({ phase, requests, errors, non2xx, retries, steps, openAtKill, failedAfterDown }) =>
  ({ phase, requests, errors, non2xx, retries, steps, openAtKill, failedAfterDown })));

test('behind HAProxy: a rolling restart (TERM with shutdownDelay) and a rolling USR2 upgrade fail no request; kill -9 of a host fails at most one request per connection open to it or through HAProxy, none after HAProxy marks it down', async () => {
  const run = await fleet(['--balancer', 'haproxy', '--phases', '1,2,3']);
  const [restart, upgrade, kill] = run.phases;
  assert.is(run.phases.length, 3, summary(run));
  for (const p of run.phases) assert.ok(p.requests > 1000, summary(run));
  assert.is(restart!.errors + restart!.non2xx, 0, summary(run));
  // HAProxy took each host out while it still served: within its shutdownDelay of the TERM.
  for (const s of restart!.steps!) assert.ok(s.outOfPoolMs! < run.delay * 1000, summary(run));
  assert.is(upgrade!.errors + upgrade!.non2xx, 0, summary(run));
  for (const s of upgrade!.steps!) assert.is.not(s.newMaster, s.oldMaster, summary(run));
  assert.ok(kill!.openAtKill! > 0, summary(run));
  // At most one per connection open to the host or through HAProxy (which closes a client's
  // connection when the server connection under it is aborted: haproxy#188).
  assert.ok(kill!.errors + kill!.non2xx <= kill!.openAtKill! + 16, summary(run));
  assert.is(kill!.failedAfterDown, 0, summary(run));
  assert.ok(run.met, JSON.stringify(run.verdicts));
});

test('behind nginx (no health checks: it retries on the next host): a rolling restart and a rolling USR2 upgrade fail no request', async () => {
  const run = await fleet(['--balancer', 'nginx', '--phases', '1,2']);
  assert.is(run.phases.length, 2, summary(run));
  for (const p of run.phases) {
    assert.ok(p.requests > 1000, summary(run));
    assert.is(p.errors + p.non2xx, 0, summary(run));
  }
  assert.ok(run.met, JSON.stringify(run.verdicts));
});

test.run();
