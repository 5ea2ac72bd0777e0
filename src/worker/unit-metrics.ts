/** Owns what a serving unit counts for the master's metrics, when they are on (a status listener
 *  or a control socket): its responses by status class and duration (a tally, ipc/tally.ts), and
 *  its event loop's delay (perf_hooks.monitorEventLoopDelay). Both are read and started again at
 *  every heartbeat, so the master gets what happened since the last one. Per response it costs one
 *  call from the shared 'close' listener (responses.ts), a few additions and no allocation. */

import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { emptyTally, observe, type Tally } from '../ipc/tally';
import type { ResponseDone } from './responses';

export interface UnitReport {
  readonly tally: Tally;
  /** The event loop's delay since the last report, p50 and p99, in ms (null: not measured). */
  readonly lagMs: readonly [number, number] | null;
}

export interface UnitMetrics {
  readonly responseDone: ResponseDone;
  /** What was counted since the last call, with what the unit counted itself added: the balance's
   *  closes, the connections closed for their PROXY header, the responses ended at their
   *  deadline; starts again. */
  take(counted: Pick<Tally, 'shed' | 'proxyRefused' | 'deadlines'>): UnitReport;
}

/** The loop delay is sampled every LAG_RESOLUTION_MS. */
const LAG_RESOLUTION_MS = 10;

export function createUnitMetrics(): UnitMetrics {
  let tally = emptyTally();
  const lag: IntervalHistogram = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
  lag.enable();
  return {
    // A response whose connection went before it was sent is no response finished: its status
    // would be the default 200. The access log still has its line.
    responseDone: (res, durationMs) => { if (res.writableFinished) observe(tally, res.statusCode, durationMs); },
    take(counted) {
      const out = tally;
      out.shed += counted.shed;
      out.proxyRefused += counted.proxyRefused;
      out.deadlines += counted.deadlines;
      tally = emptyTally();
      let lagMs: readonly [number, number] | null = null;
      // The histogram records each timer period as it was, the resolution included: subtract it.
      const past = (p: number) => Math.max(0, Math.round(lag.percentile(p) / 1e3 - LAG_RESOLUTION_MS * 1e3) / 1e3);
      if (lag.count > 0) lagMs = [past(50), past(99)];
      lag.reset();
      return { tally: out, lagMs };
    },
  };
}
