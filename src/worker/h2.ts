/** Owns what HTTP/2 changes in a serving unit (the `http2` setting, TLS listeners only): the server
 *  that offers h2 and http/1.1 by ALPN, each h2 session on its connection's record, the streams in
 *  flight there, and how a session is wound down.
 *
 *  An HTTP/1.1 connection carries at most one response, found from its socket (drain.ts
 *  responseOn); an h2 session carries many streams, and Node's compatibility API does not show
 *  them on the socket. So each h2 connection's record holds its session and the responses in
 *  flight on it: what the drain, the in-flight count and the heartbeat's oldest request read.
 *
 *  Winding down (the drain, the balance's shed, a sync unit's one request per connection) is
 *  Node's session.close(): a GOAWAY that names the last stream taken, then the session ends once
 *  its streams are done. A stream the client sent as the GOAWAY was on its way is not taken, and
 *  the GOAWAY tells the client so: by RFC 9113 §8.7 it was not processed, and a client may send it
 *  again on a new connection (browsers and curl do). Why not the two-step GOAWAY of §6.8 (first
 *  the highest stream id, later the real one): Node sends only plain GOAWAYs, and nghttp2 takes no
 *  new stream after any plain one, so the first step would only make the client wait to learn. */

import type http from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse, Http2Session, SecureServerOptions } from 'node:http2';
import type { Socket } from 'node:net';
import type { Conn, Connections } from './connections';

/** A response on an h2 stream (Node's compatibility API), not on an HTTP/1.1 connection. */
export const isH2 = (req: http.IncomingMessage): boolean => req.httpVersionMajor === 2 && 'stream' in req;

/** The https-and-h2 server of a TLS listener: h2 by ALPN, HTTP/1.1 to every other client. */
export function createH2Server(options: SecureServerOptions, listener: http.RequestListener): import('node:net').Server {
  const http2 = require('node:http2') as typeof import('node:http2');
  return http2.createSecureServer({ ...options, allowHTTP1: true }, listener as unknown as (req: Http2ServerRequest, res: Http2ServerResponse) => void);
}

/** Tells the client of `conn`'s session to open no more streams, and closes the session once its
 *  streams are done. The connection then goes when the client closes its side: destroyed sooner,
 *  with the client's frames unread, it resets, and a client busy enough not to have read the GOAWAY
 *  yet loses it and fails the streams that GOAWAY refused instead of sending them again (measured
 *  under a CPU-bound h2 load through HUPs: destroying such connections 0.5 to 5 s after their
 *  session ended failed 8 to 80 streams in 55,000; none when left to the client). A client that
 *  never closes holds a draining unit until gracefulTimeout, as a request that never ends does. */
export function windDown(conn: Conn): void {
  const session = conn.session;
  if (session && !session.closed && !session.destroyed) session.close();
}

/** The connection (by its record) an h2 session runs on, from the unit's Connections. */
function connOf(sockets: Connections, session: Http2Session): Conn | undefined {
  // session.socket is a proxy of the TLSSocket that reads its properties through, symbols too.
  return sockets.get(session.socket as Socket);
}

/** Joins each new h2 session to its connection's record; idle for `keepAliveMs` (no stream in
 *  flight), or arriving while `draining()`, it is wound down. */
export function trackSessions(server: import('node:net').Server, sockets: Connections, keepAliveMs: number, draining: () => boolean): void {
  server.on('session', (session: Http2Session) => {
    const conn = connOf(sockets, session);
    if (!conn) return;
    conn.session = session;
    conn.streams = new Set();
    if (draining()) { windDown(conn); return; }
    if (keepAliveMs > 0) {
      // A session's timer fires once per quiet spell; one with streams in flight is looked at again.
      const idle = () => {
        if (conn.streams!.size === 0) windDown(conn);
        else session.setTimeout(keepAliveMs, idle);
      };
      session.setTimeout(keepAliveMs, idle);
    }
  });
}

const kConn = Symbol('forkd.h2Conn');
const kRes = Symbol('forkd.h2Res');
type Tracked = Http2ServerRequest['stream'] & { [kConn]?: Conn; [kRes]?: http.ServerResponse };

// On the stream, not the response: Node's compatibility response emits no 'close' for a HEAD
// stream the client cancelled before the app answered; the stream always closes.
function streamClosed(this: Tracked): void {
  this[kConn]?.streams?.delete(this[kRes]!);
}

/** Counts `res` in flight on its connection until its stream closes; returns the connection's record. */
export function trackStream(sockets: Connections, req: http.IncomingMessage, res: http.ServerResponse): Conn | undefined {
  const stream = (req as unknown as Http2ServerRequest).stream as Tracked;
  const conn = stream.session ? connOf(sockets, stream.session) : undefined;
  if (!conn?.streams) return conn;
  conn.streams.add(res);
  stream[kConn] = conn;
  stream[kRes] = res;
  stream.once('close', streamClosed);
  return conn;
}
