/** Owns the checks a request passes before the app sees it, beyond Node's own parser: gunicorn's
 *  request limits, and the RFC 9112 rules Node's parser lets through (a second Host header, an
 *  HTTP major version other than 1, `*` outside OPTIONS). A refused request gets a 4xx/505 and
 *  `Connection: close`, and never reaches the app. */

import type { IncomingMessage } from 'node:http';

export interface RequestLimits {
  /** Longest request line, in bytes (0: no limit). */
  readonly line: number;
  /** Most header fields (0: no limit). */
  readonly fields: number;
  /** Longest header field line: name, ": ", value and CRLF (0: no limit). */
  readonly fieldSize: number;
}

export type Refusal = readonly [status: number, reason: string];

/** `name` is "host" in any case, without making a lower-case copy for every request. */
function isHost(name: string): boolean {
  return (name.charCodeAt(0) | 0x20) === 0x68 && (name.charCodeAt(1) | 0x20) === 0x6f
    && (name.charCodeAt(2) | 0x20) === 0x73 && (name.charCodeAt(3) | 0x20) === 0x74;
}

export function refusalFor(req: IncomingMessage, limits: RequestLimits): Refusal | null {
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
  let hosts = 0;
  for (let i = first; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 4 && isHost(name)) hosts++;
    if (limits.fieldSize > 0 && name.length + raw[i + 1]!.length + 4 > limits.fieldSize) {
      return [431, `a header field longer than ${limits.fieldSize} bytes (limitRequestFieldSize)`];
    }
  }
  if (hosts > 1) return [400, 'more than one Host header'];
  return null;
}
