/** Owns what the access log learns of each response, at the least cost a request can bear: when
 *  it started, the body bytes the app wrote, and one call when it is done (finished, or its
 *  connection closed first: gunicorn logs those too). Every response shares one 'close' listener
 *  and keeps its start time in a property (no closure, `once` wrapper or BigInt per response), and
 *  the prototype wrappers that count bytes take fixed arguments (no rest array per call). */

import http from 'node:http';
import type { AccessEntry } from '../log/access';

const kStartMs = Symbol('forkd.startMs');
const kBodyBytes = Symbol('forkd.bodyBytes');
type Tracked = http.ServerResponse & { [kStartMs]?: number; [kBodyBytes]?: number };
type Proto = Record<string | symbol, unknown>;

function byteLength(chunk: unknown, encoding: unknown): number {
  if (typeof chunk === 'string') return Buffer.byteLength(chunk, typeof encoding === 'string' ? encoding as BufferEncoding : 'utf8');
  return chunk instanceof Uint8Array ? chunk.byteLength : 0;
}

/** Counts body bytes as the app writes them: once, on the prototype, in a unit that logs access
 *  (a wrapper made for each response cost a tenth of a hello-world worker's throughput). Node's
 *  write(chunk, encoding, cb) and end(chunk, encoding, cb) read no `arguments.length`, so passing
 *  all three on is the same call. */
function countBodyBytes(): void {
  const proto = http.ServerResponse.prototype as unknown as Proto;
  if (proto[kBodyBytes] !== undefined) return;
  proto[kBodyBytes] = 0;
  const write = proto.write as (this: Tracked, c: unknown, e: unknown, cb: unknown) => boolean;
  const end = proto.end as (this: Tracked, c: unknown, e: unknown, cb: unknown) => unknown;
  proto.write = function countedWrite(this: Tracked, chunk: unknown, encoding?: unknown, cb?: unknown) {
    this[kBodyBytes] = (this[kBodyBytes] ?? 0) + byteLength(chunk, encoding);
    return write.call(this, chunk, encoding, cb);
  };
  proto.end = function countedEnd(this: Tracked, chunk?: unknown, encoding?: unknown, cb?: unknown) {
    if (chunk !== undefined && chunk !== null && typeof chunk !== 'function') this[kBodyBytes] = (this[kBodyBytes] ?? 0) + byteLength(chunk, encoding);
    return end.call(this, chunk, encoding, cb);
  };
}

/** Returns what to call on each response as the request reaches the app; `done` runs once per
 *  response, when it is over. Every response of the unit shares one 'close' listener (a
 *  ServerResponse emits 'close' once: when it has finished, or its connection has gone). The wall
 *  clock start is worked out at the end from the monotonic duration, so a clock stepped in between
 *  moves no line's duration. */
export function recordResponses(done: (entry: AccessEntry) => void): (res: http.ServerResponse) => void {
  countBodyBytes();
  function onClose(this: Tracked): void {
    const durationMs = performance.now() - this[kStartMs]!;
    done({ req: this.req, res: this, startedAtMs: Date.now() - durationMs, durationUs: durationMs * 1000, bytes: this[kBodyBytes] ?? 0 });
  }
  return (res) => {
    (res as Tracked)[kStartMs] = performance.now();
    res.on('close', onClose);
  };
}
