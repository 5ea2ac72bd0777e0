/** Owns when a serving unit accepts connections: its servers listening on the inherited fds, the
 *  extra acceptors on spare copies of those fds, the pause at the workerConnections cap (when no
 *  connection can make room, serve.ts) and the listening again below it (on a fresh fd from the
 *  master), and the stop for good when the unit drains. What it accepts is counted in the unit's
 *  Connections, which it reads and never changes.
 *
 *  The balance does not pause: were every unit's view of its share stale at once (connections still
 *  arriving), all would stop and connections would wait for nothing. */

import net from 'node:net';
import type { Socket } from 'node:net';
import type { Connections } from './connections';
import type { ListenTarget, ServeOptions } from './serve';
import type { Logger } from '../log/logger';
import { listenQueues } from '../net/listen-queue';

/** How long a stopping unit goes on accepting what is queued on its listeners, at most. */
const QUEUE_DRAIN_MS = 2000;
const QUEUE_POLL_MS = 10;

export type AcceptingOptions = Pick<ServeOptions, 'backlog' | 'maxConnections' | 'relisten' | 'log'>;

export class Accepting {
  private readonly servers: net.Server[] = [];
  /** Extra fds of the same sockets, each accepting for servers[i]: Node takes one connection per
   *  listening fd each turn of the event loop, these take more (ACCEPT_COPIES, in
   *  arbiter/spawn.ts). */
  private readonly acceptors: net.Server[] = [];
  private paused = false;
  private stopped = false;
  private stopping: Promise<void> | null = null;
  private resuming: Promise<void> | null = null;

  /** `makeRoom` closes a connection to make room for another at the cap, when one may go (false: none). */
  constructor(private readonly sockets: Connections, private readonly opts: AcceptingOptions, private readonly makeRoom: () => boolean = () => false) {}

  /** Listens with `serverFor(i)` on `fds[i]`, and with an acceptor for it on each spare copy. */
  async listen(fds: readonly number[], spareFds: readonly (readonly number[])[], serverFor: (index: number) => net.Server): Promise<void> {
    for (let i = 0; i < fds.length; i++) {
      const server = serverFor(i);
      this.servers.push(server);
      await listenOn(server, { fd: fds[i]! }, this.opts.backlog);
      for (const copy of spareFds) {
        if (copy[i] !== undefined) await listenOn(acceptFor(server, this.acceptors, this.opts.log), { fd: copy[i]! }, this.opts.backlog);
      }
    }
  }

  /** After a connection was added to the unit's Connections. At the cap the unit makes room if it
   *  can, and stops accepting only if it cannot. */
  connectionOpened(): void { if (this.overCap() && (this.stopped || !this.makeRoom())) this.pause(); }

  /** After a connection was removed from the unit's Connections. */
  connectionClosed(): void { if (this.paused && !this.stopped && !this.overCap()) this.resume(); }

  /** Stops accepting for good (the drain); the connections stay. First the connections already
   *  waiting in the listen queue are taken (and served, with Connection: close): closing the last
   *  fd of a socket resets them. Resolves once the listening fds are closed. */
  stop(): Promise<void> {
    if (this.stopping) return this.stopping;
    this.stopped = true;
    // A pause has closed them all already.
    this.stopping = this.paused ? Promise.resolve() : this.acceptQueued().then(() => this.closeAll());
    return this.stopping;
  }

  /** Waits until no TCP listener of the unit has a connection in its queue (the kernel shows it in
   *  /proc; a Unix socket's it does not), for at most QUEUE_DRAIN_MS. The event loop accepts them
   *  meanwhile, as it always does. */
  private async acceptQueued(): Promise<void> {
    const until = performance.now() + QUEUE_DRAIN_MS;
    for (;;) {
      const fds: number[] = [];
      for (const s of [...this.servers, ...this.acceptors]) {
        const fd = (s as net.Server & { _handle?: { fd?: number } | null })._handle?.fd;
        if (typeof fd === 'number' && fd >= 0) fds.push(fd);
      }
      let waiting = 0;
      for (const q of listenQueues(fds).values()) waiting += q;
      if (waiting === 0 || performance.now() > until) return;
      await new Promise((ok) => setTimeout(ok, QUEUE_POLL_MS));
    }
  }

  private overCap(): boolean { return this.opts.maxConnections > 0 && this.sockets.size >= this.opts.maxConnections; }

  // net.Server's close, not http.Server's: the fd goes, the connections stay (idle keep-alive
  // ones too); the socket's queue is the kernel's.
  private closeAll(): void {
    for (const s of this.servers) net.Server.prototype.close.call(s);
    for (const a of this.acceptors.splice(0)) a.close();
  }

  private pause(): void {
    if (this.paused || this.stopped) return;
    this.paused = true;
    this.opts.log.debug('accepting paused', { event: 'worker.pause', connections: this.sockets.size });
    // Spare acceptors are closed for good: a unit that pauses takes one connection at a time.
    this.closeAll();
  }

  private resume(): void {
    if (!this.paused || this.stopped || this.resuming) return;
    this.resuming = this.listenAgain().catch((err: Error) => {
      this.opts.log.error(`cannot accept again: ${err.message}`, { event: 'worker.relistenFailed' });
    }).finally(() => { this.resuming = null; if (!this.paused && this.overCap()) this.pause(); });
  }

  private async listenAgain(): Promise<void> {
    for (let i = 0; i < this.servers.length; i++) {
      const target = await this.opts.relisten(i);
      if (this.stopped) break;
      await listenOn(this.servers[i]!, target, this.opts.backlog);
    }
    // A drain that came meanwhile found the unit paused and closed nothing: close what reopened.
    if (this.stopped) { this.closeAll(); return; }
    this.paused = false;
    this.opts.log.debug('accepting again', { event: 'worker.resume', connections: this.sockets.size });
  }
}

function listenOn(server: net.Server, target: ListenTarget, backlog: number): Promise<void> {
  return new Promise<void>((ok, fail) => {
    const onError = (err: Error) => fail(err);
    server.once('error', onError);
    server.once('listening', () => { server.off('error', onError); ok(); });
    // listen({ fd }) ignores a backlog in the options object; it is read from the second argument.
    // A TCP handle is taken over as it is; listen() would open a Unix one's fd in a second handle,
    // so the server adopts it as Node does a server sent over IPC (never two handles on one fd).
    const adopt = server as net.Server & { _handle?: unknown; _listen2?: (...a: unknown[]) => void };
    if (target.constructor?.name === 'Pipe' && typeof adopt._listen2 === 'function' && !adopt._handle) {
      adopt._handle = target;
      adopt._listen2(null, -1, -1, backlog);
    } else server.listen(target, backlog);
  });
}

/** A plain net.Server on a spare fd that hands what it accepts to `server`, as if `server` had
 *  accepted it: the same socket options, and counted as `server`'s (Node's own accept path
 *  counts a connection on the server that accepted it; an app's server that is watched for
 *  'close' or asked getConnections() must see every one). Joins `acceptors`. */
function acceptFor(server: net.Server, acceptors: net.Server[], log: Logger): net.Server {
  type Internals = net.Server & {
    allowHalfOpen?: boolean; noDelay?: boolean; keepAlive?: boolean; keepAliveInitialDelay?: number;
    highWaterMark?: number; _connections: number;
  };
  const own = server as Internals;
  const acceptor = net.createServer({
    allowHalfOpen: own.allowHalfOpen ?? true, noDelay: own.noDelay ?? true, keepAlive: own.keepAlive ?? false,
    // Node keeps the delay in seconds, and takes it in milliseconds.
    keepAliveInitialDelay: (own.keepAliveInitialDelay ?? 0) * 1000,
    ...(own.highWaterMark ? { highWaterMark: own.highWaterMark } : {}),
  }) as Internals;
  acceptor.on('connection', (socket: Socket) => {
    if (own.maxConnections && own._connections >= own.maxConnections) { socket.destroy(); return; }
    acceptor._connections--;
    own._connections++;
    (socket as Socket & { _server: net.Server; server: net.Server })._server = server;
    (socket as Socket & { server: net.Server }).server = server;
    server.emit('connection', socket);
  });
  acceptor.on('error', (err: Error) => {
    if (!acceptor.listening) return; // listening failed: listenOn reports it
    // Accepting on this copy failed (EMFILE, say): the unit carries on with its other copies.
    log.warning(`stopped accepting on a spare copy of a listener: ${err.message}`, { event: 'worker.acceptorError' });
    acceptor.close();
  });
  acceptors.push(acceptor);
  return acceptor;
}
