/** The connections a serving unit holds open, each with what the drain and the balance know of it.
 *
 *  A dense array with swap-removal, each connection's record reachable from its socket through a
 *  symbol, rather than a Map or Set keyed by socket. Measured on Node 24, `Connection: close` at
 *  ~18k connections a second: a Map or Set of sockets with an insert and a delete per connection
 *  kept the young generation at its largest (scavenges of ~57 MB instead of ~31 MB) and the worker
 *  at ~205 MB resident instead of ~135 MB, in a bare `http` server too; this array kept it at 135. */

import type { Socket } from 'node:net';

export interface Conn {
  readonly socket: Socket;
  /** Where it is in the array (moves when another is removed). */
  index: number;
  /** The order it was accepted in: a lower one is older. */
  readonly seq: number;
  /** When the drain first saw it idle, and its bytesRead then (-1: not looked at yet). */
  idleSinceMs: number;
  lastBytesRead: number;
  /** Asked to reconnect elsewhere (Connection: close on its next response) by the balance. */
  shed: boolean;
  /** An h2 connection's session, and the responses in flight on it (h2.ts); null: HTTP/1.1. */
  session: import('node:http2').Http2Session | null;
  streams: Set<import('node:http').ServerResponse> | null;
}

const CONN = Symbol('forkd.conn');
type Tagged = Socket & { [CONN]?: Conn };

export class Connections {
  private readonly list: Conn[] = [];
  private seq = 0;

  /** TLS connections accepted whose handshake has not ended yet, by their TCP socket: their
   *  TLSSocket joins the list once it has. A drain waits for them too (drain.ts). A Set here is
   *  one insert and one delete per TLS connection, at handshake rates (a few thousand a second),
   *  not plain connections' (measured with it: TLS with Connection: close 1.00× https servers on the inherited fd, npm run bench). */
  readonly handshaking = new Set<Socket>();

  get size(): number { return this.list.length; }

  add(socket: Socket): void {
    const conn: Conn = { socket, index: this.list.length, seq: ++this.seq, idleSinceMs: 0, lastBytesRead: -1, shed: false, session: null, streams: null };
    (socket as Tagged)[CONN] = conn;
    this.list.push(conn);
  }

  /** Forgets `socket`; false when it was not held. */
  remove(socket: Socket): boolean {
    const conn = (socket as Tagged)[CONN];
    if (!conn || this.list[conn.index] !== conn) return false;
    const last = this.list.pop()!;
    if (last !== conn) { this.list[conn.index] = last; last.index = conn.index; }
    return true;
  }

  /** The seq of the one accepted last. */
  get lastSeq(): number { return this.seq; }

  get(socket: Socket): Conn | undefined {
    const conn = (socket as Tagged)[CONN];
    return conn && this.list[conn.index] === conn ? conn : undefined;
  }

  /** Every one held, for a loop that does not wait: socket.destroy() inside it is safe, as the
   *  socket's 'close' (and so remove()) comes on a later tick. */
  all(): readonly Conn[] { return this.list; }
}
