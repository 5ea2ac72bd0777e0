/** Owns what the access log learns of each response, at the least cost a request can bear: when
 *  it started, the body bytes the app wrote (counted by body-bytes.ts, the one patch of Node's
 *  ServerResponse), and one call when it is done (finished, or its connection closed first:
 *  gunicorn logs those too). Every response shares one 'close' listener and keeps its start time
 *  in a property (no closure, `once` wrapper or BigInt per response). */

import type http from 'node:http';
import type { AccessEntry } from '../log/access';
import { bodyBytes, countBodyBytes } from './body-bytes';

const kStartMs = Symbol('forkd.startMs');
type Tracked = http.ServerResponse & { [kStartMs]?: number };

/** Returns what to call on each response as the request reaches the app; `done` runs once per
 *  response, when it is over. Every response of the unit shares one 'close' listener (a
 *  ServerResponse emits 'close' once: when it has finished, or its connection has gone). The wall
 *  clock start is worked out at the end from the monotonic duration, so a clock stepped in between
 *  moves no line's duration. */
export function recordResponses(done: (entry: AccessEntry) => void): (res: http.ServerResponse) => void {
  countBodyBytes();
  function onClose(this: Tracked): void {
    const durationMs = performance.now() - this[kStartMs]!;
    done({ req: this.req, res: this, startedAtMs: Date.now() - durationMs, durationUs: durationMs * 1000, bytes: bodyBytes(this) });
  }
  return (res) => {
    (res as Tracked)[kStartMs] = performance.now();
    res.on('close', onClose);
  };
}
