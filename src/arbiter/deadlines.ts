/** Owns the master's deadlines and limits, checked on one ticker: a worker's boot, its heartbeat,
 *  the kill that follows a stop it did not finish, and (once a second) its memory. A master that
 *  was itself stalled (SIGSTOP, a paused VM, swap) skips one round of checks: the heartbeats that
 *  queued meanwhile are read first, instead of every healthy worker being killed as hung. */

import { readFileSync } from 'node:fs';
import type { Logger } from '../log/logger';
import type { LifecycleEvent } from './events';
import type { Clock, Pool } from './pool';
import { captureStack, type InFlight } from './stack-capture';
import { WORKER_SCRIPT } from './spawn';
import type { WorkerHandle } from './worker-handle';

export const TICK_MS = 100;
const STALL_MS = 5 * TICK_MS;
const STACK_CAPTURE_MS = 2000;
const MEMORY_EVERY_TICKS = 10;

export interface DeadlineDeps {
  readonly pool: Pool;
  readonly log: Logger;
  readonly clock: Clock;
  /** Read on each tick, so that a reload's new values apply. */
  readonly limits: () => { timeoutMs: number; bootTimeoutMs: number; timeoutStack: boolean; maxMemory: number };
  /** worker.timedOut is awaited before the worker is killed (the workerAbort hook runs then). */
  readonly emit: (event: LifecycleEvent) => Promise<void>;
}

/** Resident memory of a process, in bytes, from /proc; null if it cannot be read (it exited). */
export function residentBytes(pid: number): number | null {
  try {
    const kb = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb === undefined ? null : Number(kb) * 1024;
  } catch { return null; }
}

/** A worker's heartbeat is overdue: its stack is captured (timeoutStack), the worker.timedOut event
 *  awaited (the workerAbort hook runs then), and the worker killed. */
function timedOut(deps: DeadlineDeps, h: WorkerHandle, now: number): void {
  const { timeoutMs, timeoutStack } = deps.limits();
  h.timedOut();
  const silentForMs = Math.round(now - h.lastBeatAtMs);
  // A thread is to blame only while the process itself still beats.
  const thread = now - h.lastHeardAtMs < timeoutMs ? h.stalledThread : null;
  const kill = async (stack: string, inFlight: readonly InFlight[] | null) => {
    await deps.emit({ type: 'worker.timedOut', worker: h.info, thread: thread?.index ?? null, silentForMs, stack, inFlight });
    h.signal('SIGKILL');
  };
  if (!timeoutStack || h.inspectPort === null) { void kill('not captured (timeoutStack is off)', null); return; }
  captureStack(h.pid, h.inspectPort, WORKER_SCRIPT, STACK_CAPTURE_MS, thread?.threadId ?? null).then(
    (c) => kill(c.frames.join(' | '), c.inFlight),
    (err: Error) => kill(`unavailable: ${err.message}`, null),
  );
}

/** One worker's deadlines: its boot, its heartbeat, or its kill after a stop it did not finish. */
function check(deps: DeadlineDeps, h: WorkerHandle, now: number): void {
  const { timeoutMs, bootTimeoutMs } = deps.limits();
  if (h.state === 'booting' && h.endReason === null && now - h.spawnedAtMs > bootTimeoutMs) {
    h.bootTimedOut(`it did not boot within ${bootTimeoutMs / 1000}s (bootTimeout)`);
  } else if (h.accepting && timeoutMs > 0 && h.endReason === null && now - h.lastBeatAtMs > timeoutMs) {
    timedOut(deps, h, now);
  } else if (h.killIfOverdue(now)) {
    deps.log.warning(`Worker (pid:${h.pid}) did not stop in time: killing it`, { event: 'worker.kill', nr: h.nr });
  }
}

/** A serving worker above maxMemory is recycled. */
function checkMemory(pool: Pool, maxMemory: number): void {
  for (const h of pool.live()) {
    if (h.state !== 'serving') continue;
    const rss = residentBytes(h.pid);
    if (rss !== null && rss > maxMemory) {
      pool.replace(h, `its resident memory ${Math.round(rss / 2 ** 20)} MiB exceeds maxMemory ${Math.round(maxMemory / 2 ** 20)} MiB`);
    }
  }
}

export function startDeadlines(deps: DeadlineDeps): { stop(): void } {
  const { pool, log, clock } = deps;
  let lastTickAtMs = clock.now();
  let ticks = 0;
  const tick = () => {
    const now = clock.now();
    const gap = now - lastTickAtMs;
    lastTickAtMs = now;
    if (gap > STALL_MS) {
      log.warning(`the master was stalled for ${Math.round(gap)} ms: deadlines resume on the next tick`,
        { event: 'master.stalled' });
      for (const h of pool.live()) h.excuseSilenceUntil(now - TICK_MS);
      return;
    }
    pool.noteStable(now);
    for (const h of pool.live()) check(deps, h, now);
    const { maxMemory } = deps.limits();
    if (maxMemory > 0 && ++ticks % MEMORY_EVERY_TICKS === 0) checkMemory(pool, maxMemory);
  };
  const timer = setInterval(tick, TICK_MS);
  return { stop: () => clearInterval(timer) };
}
