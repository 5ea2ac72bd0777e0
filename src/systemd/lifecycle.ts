/** Owns what systemd hears of the master's life: READY=1 once every worker serves, RELOADING=1
 *  (with MONOTONIC_USEC, so Type=notify-reload works) and READY=1 around each reload, STOPPING=1,
 *  a STATUS= line kept current, WATCHDOG=1 at half of WATCHDOG_USEC, and MAINPID= from a successor
 *  master (USR2) as it becomes ready. It subscribes to the arbiter's lifecycle events; outside
 *  systemd it is silent. */

import { monotonicUsec, type Notifier } from './notify';

export interface MasterStatus {
  readonly serving: number;
  readonly wanted: number;
  readonly generation: number;
  /** The last reload's result, if there was one. */
  readonly lastReload: { readonly ok: boolean; readonly reason?: string } | null;
  /** Seconds until the graceful stop while a TERM waits out shutdownDelay; null (or absent): not leaving. */
  readonly leavingS?: number | null;
}

/** Lifecycle events the arbiter reports; every method is optional to call and cheap. */
export interface Lifecycle {
  ready(status: MasterStatus): void;
  reloading(status: MasterStatus): void;
  reloaded(status: MasterStatus): void;
  stopping(status: MasterStatus): void;
  status(status: MasterStatus): void;
  /** A successor master with `pid` serves now (USR2): it speaks to systemd from here on. */
  handOver(pid: number): void;
  /** The successor is gone and this master serves on: it is the main process again. */
  reclaim(status: MasterStatus): void;
  close(): void;
}

export function statusLine(s: MasterStatus): string {
  const reload = s.lastReload === null ? '' : s.lastReload.ok ? '; last reload ok'
    : `; last reload failed: ${s.lastReload.reason ?? 'unknown'}`;
  const leaving = s.leavingS == null ? '' : `leaving: /readyz 503, graceful stop in ${s.leavingS} s (shutdownDelay); `;
  return `${leaving}${s.serving}/${s.wanted} workers serving, generation ${s.generation}${reload}`;
}

/** `successor`: this master was started by USR2; on ready it tells systemd it is the main process. */
export function systemdLifecycle(notifier: Notifier, env: Readonly<Record<string, string | undefined>>,
  opts: { successor?: boolean } = {}): Lifecycle {
  let last = '';
  /** Once a successor is the main process, this master tells systemd nothing more. */
  let muted = false;
  const send = (fields: Record<string, string | number>) => { if (!muted) notifier.send(fields); };
  const status = (s: MasterStatus) => {
    const line = statusLine(s);
    if (line !== last) { last = line; send({ STATUS: line }); }
  };
  let watchdog: NodeJS.Timeout | null = null;
  const usec = Number(env.WATCHDOG_USEC);
  const forUs = !env.WATCHDOG_PID || Number(env.WATCHDOG_PID) === process.pid;
  if (notifier.enabled && usec > 0 && forUs) {
    watchdog = setInterval(() => send({ WATCHDOG: 1 }), Math.max(1, Math.floor(usec / 2000)));
    watchdog.unref();
  }
  return {
    ready(s) {
      last = statusLine(s);
      send(opts.successor ? { MAINPID: process.pid, READY: 1, STATUS: last } : { READY: 1, STATUS: last });
    },
    reloading(s) { last = `reloading; ${statusLine(s)}`; send({ RELOADING: 1, MONOTONIC_USEC: monotonicUsec(), STATUS: last }); },
    reloaded(s) { last = statusLine(s); send({ READY: 1, STATUS: last }); },
    stopping(s) { last = `stopping; ${statusLine(s)}`; send({ STOPPING: 1, STATUS: last }); },
    status,
    handOver() { muted = true; },
    reclaim(st) { muted = false; last = statusLine(st); send({ MAINPID: process.pid, READY: 1, STATUS: last }); },
    close() { if (watchdog) clearInterval(watchdog); },
  };
}

/** No systemd: nothing to tell. */
export const silentLifecycle: Lifecycle = {
  ready: () => undefined, reloading: () => undefined, reloaded: () => undefined, stopping: () => undefined,
  status: () => undefined, handOver: () => undefined, reclaim: () => undefined, close: () => undefined,
};
