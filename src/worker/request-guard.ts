/** Owns the checks a request passes before the app sees it, beyond Node's own parser: gunicorn's
 *  request limits, and the RFC 9110/9112 rules Node's parser lets through: an HTTP major version
 *  other than 1, `*` outside OPTIONS, a second field of a kind Node keeps only the first of (Host,
 *  Content-Type…), a name with `_` that means a framing field to a server mapping `_` to `-`,
 *  Transfer-Encoding in HTTP/1.0, and (once the body ends) a trailer field that may not be one. A
 *  refused request gets a 4xx/505 and `Connection: close`, and never reaches the app; a forbidden
 *  trailer fails the body the app is reading, as a malformed chunk does. */

import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';

export interface RequestLimits {
  /** Longest request line, in bytes (0: no limit). */
  readonly line: number;
  /** Most header fields (0: no limit). */
  readonly fields: number;
  /** Longest header field line: name, ": ", value and CRLF (0: no limit). */
  readonly fieldSize: number;
  /** Largest request body, in bytes (0: no limit). */
  readonly body: number;
}

export type Refusal = readonly [status: number, reason: string];

/** Fields a request has at most one of (RFC 9110 §5.3) and of which Node keeps only the first:
 *  a proxy that keeps the last would disagree with the app about what was sent. */
const SINGLE = ['host', 'content-type', 'content-length', 'authorization', 'proxy-authorization', 'from', 'referer',
  'user-agent', 'max-forwards', 'if-modified-since', 'if-unmodified-since'];
const TRANSFER_ENCODING = SINGLE.length;
const CONTENT_LENGTH = SINGLE.indexOf('content-length');
/** The names looked for (SINGLE's, by index, and transfer-encoding's), listed by length: a header
 *  name is compared only with those of its own length, by character code, with no lower-cased copy. */
const NAMES = [...SINGLE, 'transfer-encoding'];
const BY_LENGTH: (number[] | undefined)[] = [];
NAMES.forEach((name, i) => (BY_LENGTH[name.length] ??= []).push(i));

/** `name` equals `lower` (lower-case letters and `-`) in any case. */
function sameName(name: string, lower: string): boolean {
  for (let i = 0; i < lower.length; i++) if ((name.charCodeAt(i) | 0x20) !== lower.charCodeAt(i)) return false;
  return true;
}

/** What a name with `_` must not become when `_` is read as `-` (CGI, WSGI, PHP): a framing field or Host. */
const NO_UNDERSCORE = new Set(['content-length', 'transfer-encoding', 'host']);
/** Trailer fields RFC 9110 §6.5.1 forbids: framing, routing, request modifiers, authentication and
 *  content processing, which a recipient must not take from after the body. */
const NOT_TRAILERS = new Set(['host', 'content-length', 'transfer-encoding', 'trailer', 'te', 'content-type',
  'content-encoding', 'content-range', 'authorization', 'proxy-authorization', 'cookie', 'expect', 'range',
  'max-forwards', 'cache-control', 'if-match', 'if-none-match', 'if-modified-since', 'if-unmodified-since', 'if-range']);

/** Why `req` is refused (its response `res` not begun; null for an upgrade, which has none), or null. A request that passes with a body
 *  of unknown length (chunked, or h2 without Content-Length) has that body counted against the
 *  body limit as it arrives. */
export function refusalFor(req: IncomingMessage, res: ServerResponse | null, limits: RequestLimits): Refusal | null {
  // An h2 stream (the http2 setting, by ALPN) is version 2; a request line saying HTTP/2.0 is not.
  if (req.httpVersionMajor !== 1 && !('stream' in req)) return [505, 'HTTP version not supported'];
  const url = req.url ?? '';
  const method = req.method ?? '';
  if (limits.line > 0 && method.length + url.length + 10 > limits.line) {
    return [414, `request line longer than ${limits.line} bytes (limitRequestLine)`];
  }
  if (url === '*' && method !== 'OPTIONS') return [400, 'the request target * is only for OPTIONS'];
  const raw = req.rawHeaders;
  // An h2 request's raw headers start with its pseudo-headers (:method, :path…), which are no fields.
  let first = 0;
  while (first < raw.length && raw[first]!.charCodeAt(0) === 0x3a) first += 2;
  if (limits.fields > 0 && (raw.length - first) / 2 > limits.fields) {
    return [431, `more than ${limits.fields} header fields (limitRequestFields)`];
  }
  let seen = 0; // a bit per SINGLE field
  let chunked = false;
  let length = -1; // Content-Length
  for (let i = first; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (limits.fieldSize > 0 && name.length + raw[i + 1]!.length + 4 > limits.fieldSize) {
      return [431, `a header field longer than ${limits.fieldSize} bytes (limitRequestFieldSize)`];
    }
    if (name.indexOf('_') >= 0 && NO_UNDERSCORE.has(name.toLowerCase().replace(/_/g, '-'))) {
      return [400, `the header name ${name} reads as a framing field where _ means - (RFC 9110 §5.1)`];
    }
    const candidates = BY_LENGTH[name.length];
    if (candidates === undefined) continue;
    let which = -1;
    for (const c of candidates) if (sameName(name, NAMES[c]!)) { which = c; break; }
    if (which < 0) continue;
    if (which === TRANSFER_ENCODING) { chunked = true; continue; }
    if (seen & (1 << which)) return [400, `more than one ${name} header (RFC 9110 §5.3)`];
    seen |= 1 << which;
    if (which === CONTENT_LENGTH) length = Number(raw[i + 1]);
  }
  // RFC 9112 §6.1: Transfer-Encoding is HTTP/1.1's; in an HTTP/1.0 message the framing is faulty.
  if (chunked && req.httpVersionMinor === 0 && !('stream' in req)) return [400, 'Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)'];
  if (limits.body > 0) {
    if (length > limits.body) return [413, `a body of ${length} bytes, over ${limits.body} (limitRequestBody)`];
    if (length < 0 && res !== null && (chunked || 'stream' in req)) countBody(req, res, limits.body);
  }
  if (chunked) watchTrailers(req);
  return null;
}

/** Counts a body of unknown length as Node pushes it to the app: the chunk that would take it over
 *  `limit` is never pushed. The client gets 413 when the response has not begun, and the
 *  connection (an h2 stream) is closed; the app's body stream errors. */
function countBody(req: IncomingMessage, res: ServerResponse, limit: number): void {
  let bytes = 0;
  req.push = function (chunk: unknown, encoding?: BufferEncoding) {
    if (chunk !== null && (bytes += (chunk as Buffer).length) > limit) {
      if (!this.destroyed) overLimit(this, res, limit);
      return false;
    }
    return Readable.prototype.push.call(this, chunk, encoding);
  };
}

function overLimit(req: IncomingMessage, res: ServerResponse, limit: number): void {
  const err = Object.assign(new Error(`the request body is over ${limit} bytes (limitRequestBody)`), { code: 'ERR_FORKD_BODY_LIMIT', status: 413 });
  const stream = (req as IncomingMessage & { stream?: import('node:http2').ServerHttp2Stream }).stream;
  if (stream) {
    // h2: the 413 ends the stream, and RST_STREAM NO_ERROR tells the client to stop sending
    // (RFC 9113 §8.1); other streams of the session go on.
    if (!res.headersSent) {
      res.statusCode = 413;
      res.end(`${err.message}\n`, () => stream.close());
    } else stream.close();
    // An h2 request emits 'error' with no listener too (an uncaught exception): only to an app that listens.
    req.destroy(req.listenerCount('error') > 0 ? err : undefined);
    return;
  }
  const socket = req.socket;
  const text = `${err.message}\n`;
  if (!res.headersSent && (socket as typeof socket & { _httpMessage?: unknown })._httpMessage === res && socket.writable) {
    // Written on the socket, and the response destroyed: what the app writes after it goes nowhere.
    socket.write(`HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`);
    res.statusCode = 413;
  }
  res.destroy();
  req.destroy(req.listenerCount('error') > 0 ? err : undefined);
}

/** Node adds a chunked body's trailer fields to the request just before its end: one RFC 9110
 *  §6.5.1 forbids fails the request instead, as a malformed chunk does (the app's body stream
 *  errors, the client gets a 400 when nothing was sent yet, and the connection closes). */
function watchTrailers(req: IncomingMessage): void {
  type Adding = IncomingMessage & { _addHeaderLines(headers: string[], n: number): void };
  const r = req as Adding;
  const add = r._addHeaderLines;
  if (typeof add !== 'function') return;
  r._addHeaderLines = function (headers, n) {
    if (this.complete) {
      for (let i = 0; i < n; i += 2) {
        const name = headers[i]!;
        if (!NOT_TRAILERS.has(name.toLowerCase())) continue;
        const err = Object.assign(new Error(`the trailer field ${name} is forbidden (RFC 9110 §6.5.1)`), { code: 'HPE_FORBIDDEN_TRAILER' });
        // The socket's error is Node's path for a bad request: a 400 unless the response has
        // begun, then the connection closes. The request destroyed then never ends.
        this.socket.emit('error', err);
        this.destroy(this.listenerCount('error') > 0 ? err : undefined);
        return;
      }
    }
    add.call(this, headers, n);
  };
}
