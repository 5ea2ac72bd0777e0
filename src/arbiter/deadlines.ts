/** Owns the master's deadlines and limits, checked on one ticker: a worker's boot, its heartbeat,
 *  the kill that follows a stop it did not finish, and (once a second) its memory. A master that
 *  was itself stalled (SIGSTOP, a paused VM, swap) skips one round of checks: the heartbeats that
 *  queued meanwhile are read first, instead of every healthy worker being killed as hung. */

import { readFileSync } from 'node:fs';
import type { Logger } from '../log/logger';
import type { Clock, Pool } from './pool';
import { captureStack } from './stack-capture';
import { sendSignal, WORKER_SCRIPT, type WorkerHandle } from './worker-handle';

export const TICK_MS = 100;
const STALL_MS = 5 * TICK_MS;
const STACK_CAPTURE_MS = 2000;
const MEMORY_EVERY_TICKS = 10;

export interface DeadlineDeps {
  readonly pool: Pool;
  readonly log: Logger;
  readonly clock: Clock;
  /** Read on each tick, so that a reload's new values apply. */
  readonly limits: () => { timeoutMs: number; bootTimeoutS: number; timeoutStack: boolean; maxMemory: number };
  /** Runs (awaited) before a timed-out worker is killed: the workerAbort hook. */
  readonly beforeKill?: (h: WorkerHandle, stack: string) => Promise<void>;
}

/** Resident memory of a process, in bytes, from /proc; null if it cannot be read (it exited). */
export function residentBytes(pid: number): number | null {
  try {
    const kb = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kb === undefined ? null : Number(kb) * 1024;
  } catch { return null; }
}

export function startDeadlines(deps: DeadlineDeps): { stop(): void } {
  const { pool, log, clock } = deps;
  let lastTickAtMs = clock.now();
  let ticks = 0;

  const timedOut = (h: WorkerHandle, now: number, timeoutStack: boolean) => {
    h.endReason = 'timeout';
    const silentForMs = Math.round(now - h.lastBeatAtMs);
    // A thread is to blame only while the process itself still beats.
    const thread = now - h.lastHeardAtMs < deps.limits().timeoutMs ? h.stalledThread : null;
    const kill = async (stack: string) => {
      log.critical(`WORKER TIMEOUT (pid:${h.pid})${thread ? `: thread ${thread.index} is hung` : ''}`,
        { event: 'worker.timeout', nr: h.nr, ...(thread ? { thread: thread.index } : {}), silentForMs, stack });
      await deps.beforeKill?.(h, stack);
      sendSignal(h, 'SIGKILL');
    };
    if (!timeoutStack || h.inspectPort === null) { kill('not captured (timeoutStack is off)'); return; }
    captureStack(h.pid, h.inspectPort, WORKER_SCRIPT, STACK_CAPTURE_MS, thread?.threadId ?? null).then(
      (frames) => kill(frames.join(' | ')),
      (err: Error) => kill(`unavailable: ${err.message}`),
    );
  };

  const check = (h: WorkerHandle, now: number) => {
    const { timeoutMs, bootTimeoutS, timeoutStack } = deps.limits();
    if (h.state === 'booting' && h.endReason === null && now - h.spawnedAtMs > bootTimeoutS * 1000) {
      h.bootFailure = `it did not boot within ${bootTimeoutS}s (bootTimeout)`;
      h.endReason = 'boot timeout';
      sendSignal(h, 'SIGKILL');
    } else if ((h.state === 'serving' || h.state === 'replacing') && timeoutMs > 0 && h.endReason === null
      && now - h.lastBeatAtMs > timeoutMs) {
      timedOut(h, now, timeoutStack);
    } else if (h.state === 'stopping' && h.killAtMs !== null && now >= h.killAtMs) {
      log.warning(`Worker (pid:${h.pid}) did not stop in time: killing it`, { event: 'worker.kill', nr: h.nr });
      h.killAtMs = null;
      sendSignal(h, 'SIGKILL');
    }
  };

  const checkMemory = (maxMemory: number) => {
    for (const h of pool.live()) {
      if (h.state !== 'serving') continue;
      const rss = residentBytes(h.pid);
      if (rss !== null && rss > maxMemory) {
        pool.replace(h, `its resident memory ${Math.round(rss / 2 ** 20)} MiB exceeds maxMemory ${Math.round(maxMemory / 2 ** 20)} MiB`);
      }
    }
  };

  const tick = () => {
    const now = clock.now();
    const gap = now - lastTickAtMs;
    lastTickAtMs = now;
    if (gap > STALL_MS) {
      log.warning(`the master was stalled for ${Math.round(gap)} ms: deadlines resume on the next tick`,
        { event: 'master.stalled' });
      for (const h of pool.live()) h.lastBeatAtMs = Math.max(h.lastBeatAtMs, now - TICK_MS);
      return;
    }
    pool.noteStable(now);
    for (const h of pool.live()) check(h, now);
    const { maxMemory } = deps.limits();
    if (maxMemory > 0 && ++ticks % MEMORY_EVERY_TICKS === 0) checkMemory(maxMemory);
  };
  const timer = setInterval(tick, TICK_MS);
  return { stop: () => clearInterval(timer) };
}
