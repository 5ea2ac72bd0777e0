/** Owns forkd's one patch of Node: `http.ServerResponse.prototype.write` and `.end` are wrapped so
 *  that each response counts the body bytes the app hands it, for the access log's %(b)s and %(B)s
 *  (chunked bodies included, without their framing).
 *
 *  Why a patch and not a listener: a response emits no event per chunk, only 'finish' and 'close',
 *  and what can be read afterwards is not the body: `socket.bytesWritten` holds the headers and the
 *  chunk framing too, and runs on across every response of a kept-alive connection; a streamed
 *  body has no Content-Length. The app's own write() and end() calls are the one place the body is
 *  seen. Why on the prototype and not on each response: a wrapper made for each response cost a
 *  tenth of a hello-world worker's throughput (measured).
 *
 *  What it costs: installed only in a unit that has an access log, and never taken out. From then
 *  every ServerResponse of that process or thread (each worker_thread has its own `http` module),
 *  the app's own servers' too, goes through one more call in each write() and end(), which measures
 *  the chunk (`Buffer.byteLength` reads a string through; a Buffer says its length) and keeps the
 *  count in a property of the response. The wrappers take fixed arguments (no rest array per call):
 *  Node's write(chunk, encoding, cb) and end(chunk, encoding, cb) read no `arguments.length`, so
 *  passing all three on is the same call. */

import http from 'node:http';

const kBodyBytes = Symbol('forkd.bodyBytes');
type Counted = http.ServerResponse & { [kBodyBytes]?: number };
type Proto = Record<string | symbol, unknown>;

function byteLength(chunk: unknown, encoding: unknown): number {
  if (typeof chunk === 'string') return Buffer.byteLength(chunk, typeof encoding === 'string' ? encoding as BufferEncoding : 'utf8');
  return chunk instanceof Uint8Array ? chunk.byteLength : 0;
}

/** Installs the counting wrappers on Node's HTTP/1.1 ServerResponse, or with `h2` on http2's
 *  compatibility Http2ServerResponse (whose write takes the same arguments, and whose end() writes
 *  its chunk through this.write(), so only write is wrapped there); once per process or thread,
 *  however often it is called. */
export function countBodyBytes(h2 = false): void {
  const proto = (h2 ? (require('node:http2') as typeof import('node:http2')).Http2ServerResponse.prototype : http.ServerResponse.prototype) as unknown as Proto;
  if (proto[kBodyBytes] !== undefined) return;
  proto[kBodyBytes] = 0;
  const write = proto.write as (this: Counted, c: unknown, e: unknown, cb: unknown) => boolean;
  proto.write = function countedWrite(this: Counted, chunk: unknown, encoding?: unknown, cb?: unknown) {
    this[kBodyBytes] = (this[kBodyBytes] ?? 0) + byteLength(chunk, encoding);
    return write.call(this, chunk, encoding, cb);
  };
  if (h2) return;
  const end = proto.end as (this: Counted, c: unknown, e: unknown, cb: unknown) => unknown;
  proto.end = function countedEnd(this: Counted, chunk?: unknown, encoding?: unknown, cb?: unknown) {
    if (chunk !== undefined && chunk !== null && typeof chunk !== 'function') this[kBodyBytes] = (this[kBodyBytes] ?? 0) + byteLength(chunk, encoding);
    return end.call(this, chunk, encoding, cb);
  };
}

/** The body bytes written to `res` so far (0 before countBodyBytes() has run). */
export function bodyBytes(res: http.ServerResponse): number {
  return (res as Counted)[kBodyBytes] ?? 0;
}
