/** Owns a serving unit's graceful drain, once it has stopped accepting: the responses in flight
 *  are told to close their connections, connections left idle are reaped, and the drain ends when
 *  the unit's Connections is empty, TLS handshakes under way included.
 *
 *  Why the drain is not server.close(): Node 20's http close() also destroys every keep-alive
 *  connection idle at that instant, and under load the client's next request is usually already on
 *  its way, so it fails. Instead forkd stops accepting, answers every further request with
 *  `Connection: close`, and only closes connections that have been idle for IDLE_REAP_MS. */

import type http from 'node:http';
import type { Socket } from 'node:net';
import type { Connections } from './connections';
import { windDown } from './h2';

/** A kept-alive connection idle this long during a drain is closed: long enough that a request the
 *  client already sent has arrived (measured: closing at once failed ~1 request per connection). */
const IDLE_REAP_MS = 500;
const REAP_TICK_MS = 100;

/** The response Node is writing on a connection, if one is in flight there. */
export const responseOn = (socket: Socket) => (socket as Socket & { _httpMessage?: http.ServerResponse | null })._httpMessage ?? null;

export interface Drain {
  /** Whether run() has been called. */
  readonly started: boolean;
  /** Drains; resolves when no connection is left. A second call waits for the same end. The caller
   *  stops accepting and ends keep-alive first. */
  run(): Promise<void>;
  /** After a connection was removed from the unit's Connections. */
  connectionClosed(): void;
}

export function createDrain(sockets: Connections): Drain {
  let draining = false;
  let drained: (() => void) | null = null;

  const maybeDone = () => {
    if (draining && sockets.size === 0 && sockets.handshaking.size === 0 && drained) { const d = drained; drained = null; d(); }
  };
  /** Each handshake the drain has looked at: its bytes read then, and since when they stand. */
  const quietHandshakes = new WeakMap<Socket, { bytes: number; sinceMs: number }>();
  // A connection's idle clock starts at the first reap (lastBytesRead -1 never matches), so that
  // one accepted during the drain gets its IDLE_REAP_MS too.
  const reap = () => {
    const now = performance.now();
    for (const conn of sockets.all()) {
      const socket = conn.socket;
      // An h2 session winds down by itself (h2.ts windDown, which says why it is not reaped here).
      if (conn.session || responseOn(socket)) continue;
      if (socket.bytesRead !== conn.lastBytesRead) { conn.lastBytesRead = socket.bytesRead; conn.idleSinceMs = now; continue; }
      if (now - conn.idleSinceMs >= IDLE_REAP_MS) socket.destroy();
    }
    // A TLS handshake is waited for while its client sends; one silent as long (a TCP check that
    // never says hello) goes as an idle connection does.
    for (const raw of sockets.handshaking) {
      const seen = quietHandshakes.get(raw);
      if (!seen || raw.bytesRead !== seen.bytes) quietHandshakes.set(raw, { bytes: raw.bytesRead, sinceMs: now });
      else if (now - seen.sinceMs >= IDLE_REAP_MS) raw.destroy();
    }
  };

  return {
    get started() { return draining; },
    run() {
      if (draining) return new Promise<void>((ok) => { const prev = drained; drained = () => { prev?.(); ok(); }; });
      draining = true;
      for (const conn of sockets.all()) {
        if (conn.session) { windDown(conn); continue; }
        const res = responseOn(conn.socket);
        if (res && !res.headersSent) res.shouldKeepAlive = false;
        conn.lastBytesRead = -1;
      }
      const timer = setInterval(reap, REAP_TICK_MS);
      return new Promise<void>((ok) => {
        drained = () => { clearInterval(timer); ok(); };
        maybeDone();
      });
    },
    connectionClosed: maybeDone,
  };
}
