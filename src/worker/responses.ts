/** Owns what a serving unit learns of each response, at the least cost a request can bear: when it
 *  started, and one call when it is over (finished, or its connection closed first: gunicorn logs
 *  those too). Those who want to know (the access log, the request metrics, statsd) are joined into
 *  that one call. Every response shares one 'close' listener and keeps its start time in a property
 *  (no closure, `once` wrapper or BigInt per response). The access log's body bytes are counted by
 *  body-bytes.ts, the one patch of Node's ServerResponse, only when there is an access log. */

import type http from 'node:http';
import type { AccessEntry } from '../log/access';
import { bodyBytes, countBodyBytes } from './body-bytes';

const kStartMs = Symbol('forkd.startMs');
type Tracked = http.ServerResponse & { [kStartMs]?: number };

/** Told of a response once it is over, with how long it took since the request reached the app. */
export type ResponseDone = (res: http.ServerResponse, durationMs: number) => void;

/** Returns what to call on each response as the request reaches the app, or null when nobody
 *  wants to know; `dones` run once per response, in order, when it is over (a ServerResponse emits
 *  'close' once: when it has finished, or its connection has gone). */
export function watchResponses(dones: readonly ResponseDone[]): ((res: http.ServerResponse) => void) | null {
  if (dones.length === 0) return null;
  const [first, second] = dones;
  const done: ResponseDone = dones.length === 1 ? first! : dones.length === 2
    ? (res, ms) => { first!(res, ms); second!(res, ms); }
    : (res, ms) => { for (const d of dones) d(res, ms); };
  function onClose(this: Tracked): void {
    done(this, performance.now() - this[kStartMs]!);
  }
  return (res) => {
    (res as Tracked)[kStartMs] = performance.now();
    res.on('close', onClose);
  };
}

/** How long ago a response that watchResponses saw started, in ms; null when it saw none. */
export function ageMs(res: http.ServerResponse, nowMs: number): number | null {
  const start = (res as Tracked)[kStartMs];
  return start === undefined ? null : nowMs - start;
}

/** The access log's part: one entry per response. The wall clock start is worked out at the end
 *  from the monotonic duration, so a clock stepped in between moves no line's duration. */
export function accessRecorder(write: (entry: AccessEntry) => void): ResponseDone {
  countBodyBytes();
  return (res, durationMs) => {
    write({ req: res.req, res, startedAtMs: Date.now() - durationMs, durationUs: durationMs * 1000, bytes: bodyBytes(res) });
  };
}
