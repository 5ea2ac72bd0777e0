/** Owns one serving unit's HTTP (a worker process, or one of its threads): a server per inherited
 *  listening fd, all running the app; timeouts; app errors; the access log; when to stop and start
 *  accepting (workerConnections, and the master's balance); and the graceful drain.
 *
 *  The request path is kept to one listener and no per-request allocation unless the access log or
 *  a hook asks for one: what is known of a request in flight is read from its connection
 *  (`socket._httpMessage`, the response Node is writing there) when it is needed.
 *
 *  Why the drain is not server.close(): Node 20's http close() also destroys every keep-alive
 *  connection idle at that instant, and under load the client's next request is usually already on
 *  its way, so it fails. Instead forkd stops accepting, answers every further request with
 *  `Connection: close`, and only closes connections that have been idle for IDLE_REAP_MS. */

import http from 'node:http';
import net from 'node:net';
import type { Socket } from 'node:net';
import { recordResponses } from './access-record';
import { Connections } from './connections';
import type { LoadedApp } from './app-loader';
import { refusalFor, type RequestLimits } from './request-guard';
import type { AccessFormatter } from '../log/access';
import type { Logger } from '../log/logger';

/** A kept-alive connection idle this long during a drain is closed: long enough that a request the
 *  client already sent has arrived (measured: closing at once failed ~1 request per connection). */
const IDLE_REAP_MS = 500;
const REAP_TICK_MS = 100;
/** How far above its fair share of connections a unit may be before it sheds. */
const SHARE_SLACK = 0.1;

/** Where to listen again after a pause: an fd, or a handle the master sent (taken over). */
export type ListenTarget = { readonly fd: number };

export interface ServeOptions {
  readonly keepAliveMs: number;
  readonly requestTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly backlog: number;
  readonly limits: RequestLimits;
  /** Requests after which `onRecycle` is called once (0: never). */
  readonly maxRequests: number;
  readonly onRecycle: (requests: number) => void;
  /** Most connections at once (0: no cap). At the cap the unit stops accepting; connections wait
   *  in the kernel's backlog for a unit with room. */
  readonly maxConnections: number;
  /** A fresh way to accept on listener `index` again after a pause (the fd was closed). */
  readonly relisten: (index: number) => Promise<ListenTarget>;
  readonly accessLog: { format: AccessFormatter; write: (line: string) => void } | null;
  /** The preRequest and postRequest hooks, when the config file has them. */
  readonly hooks?: {
    readonly preRequest: ((req: http.IncomingMessage) => Promise<void>) | null;
    readonly postRequest: ((req: http.IncomingMessage, res: http.ServerResponse) => void) | null;
  };
  readonly log: Logger;
}

export interface ServingStats { inFlight: number; requests: number; connections: number }

export interface Serving {
  /** Serves on `fds` (one per listener), accepting on each of `spareFds`' copies of them too. */
  listen(fds: readonly number[], spareFds?: readonly (readonly number[])[]): Promise<void>;
  stats(): ServingStats;
  /** The master's fair share of connections for this unit: shed and pause above it. */
  setFairShare(connections: number): void;
  /** Stop accepting, finish what is in flight, close connections; resolves when none is left. */
  drain(): Promise<void>;
}

function checkEveryMs(opts: ServeOptions): number {
  const timeouts = [opts.headersTimeoutMs, opts.requestTimeoutMs].filter((t) => t > 0);
  return timeouts.length ? Math.min(5000, Math.max(250, Math.min(...timeouts) / 4)) : 30_000;
}

/** The response Node is writing on a connection, if one is in flight there. */
const current = (socket: Socket) => (socket as Socket & { _httpMessage?: http.ServerResponse | null })._httpMessage ?? null;

export function createServing(app: LoadedApp, opts: ServeOptions): Serving {
  const access = opts.accessLog;
  const record = access ? recordResponses((entry) => access.write(access.format(entry))) : null;
  const sockets = new Connections();
  const servers: net.Server[] = [];
  /** Extra fds of the same sockets, each accepting for servers[i]: Node takes one connection per
   *  listening fd each turn of the event loop, these take more (see ACCEPT_COPIES). */
  const acceptors: net.Server[] = [];
  let requests = 0;
  let draining = false;
  let recycleAsked = false;
  let drained: (() => void) | null = null;
  let toShed = 0;
  let paused = false;
  let resuming: Promise<void> | null = null;

  const appError = (err: unknown, req: http.IncomingMessage, res: http.ServerResponse) => {
    opts.log.error('app error', { event: 'app.error', method: req.method, url: req.url, error: err });
    if (!res.headersSent) {
      res.statusCode = 500;
      res.setHeader('content-type', 'text/plain');
      res.setHeader('connection', 'close');
      res.end('Internal Server Error\n');
    } else res.destroy();
  };
  const guarded = (listener: http.RequestListener): http.RequestListener => (req, res) => {
    try {
      const r = listener(req, res) as unknown;
      if (r && typeof (r as Promise<unknown>).then === 'function') (r as Promise<unknown>).then(undefined, (err) => appError(err, req, res));
    } catch (err) {
      appError(err, req, res);
    }
  };

  const maybeDone = () => {
    if (draining && sockets.size === 0 && drained) { const d = drained; drained = null; d(); }
  };

  // ---- accepting: stop at the cap (workerConnections), start again below it ----
  // The balance does not pause: were every unit's view of its share stale at once (connections still
  // arriving), all would stop and connections would wait for nothing.
  const overCap = () => opts.maxConnections > 0 && sockets.size >= opts.maxConnections;
  const pause = () => {
    if (paused || draining) return;
    paused = true;
    opts.log.debug('accepting paused', { event: 'worker.pause', connections: sockets.size });
    // net.Server's close: the fd goes, the connections stay; the socket's queue is the kernel's.
    // Spare acceptors are closed for good: a unit that pauses takes one connection at a time.
    stopAccepting();
  };
  const resume = () => {
    if (!paused || draining || resuming) return;
    resuming = (async () => {
      for (let i = 0; i < servers.length; i++) {
        const target = await opts.relisten(i);
        if (draining) break;
        await listenOn(servers[i]!, target);
      }
      // A drain that came meanwhile found the unit paused and closed nothing: close what reopened.
      if (draining) { stopAccepting(); return; }
      paused = false;
      opts.log.debug('accepting again', { event: 'worker.resume', connections: sockets.size });
    })().catch((err: Error) => {
      opts.log.error(`cannot accept again: ${err.message}`, { event: 'worker.relistenFailed' });
    }).finally(() => { resuming = null; if (!paused && overCap()) pause(); });
  };
  // ---- the request path ----
  const toApp: http.RequestListener = app.kind === 'listener' ? guarded(app.listener) : (() => {
    const each = (app.server.listeners('request') as http.RequestListener[]).map(guarded);
    app.server.removeAllListeners('request');
    return (req, res) => { for (const l of each) l(req, res); };
  })();
  const pre = opts.hooks?.preRequest ?? null;
  const post = opts.hooks?.postRequest ?? null;
  const dispatch: http.RequestListener = (req, res) => {
    requests++;
    if (opts.maxRequests > 0 && requests >= opts.maxRequests && !recycleAsked) {
      recycleAsked = true;
      opts.onRecycle(requests);
    }
    if (draining || opts.keepAliveMs === 0) res.shouldKeepAlive = false;
    else if (toShed > 0) {
      const conn = sockets.get(req.socket);
      if (conn && !conn.shed) { conn.shed = true; toShed--; res.shouldKeepAlive = false; }
    }
    if (record) record(res);
    const refusal = refusalFor(req, opts.limits);
    if (refusal !== null) {
      res.statusCode = refusal[0];
      res.setHeader('connection', 'close');
      res.setHeader('content-type', 'text/plain');
      res.end(`${refusal[1]}\n`);
      return;
    }
    if (post) res.once('finish', () => post(req, res));
    if (pre) void pre(req).then(() => toApp(req, res));
    else toApp(req, res);
  };

  // One 'close' listener shared by every connection (no closure or `once` wrapper per connection).
  // A connection's idle clock starts at the first reap() of a drain (lastBytesRead -1 never
  // matches), so it is not read here.
  function onSocketClose(this: Socket): void {
    sockets.remove(this);
    if (paused && !draining && !overCap()) resume();
    maybeDone();
  }
  const onConnection = (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', onSocketClose);
    if (overCap()) pause();
  };

  const configure = (server: net.Server) => {
    if ('keepAliveTimeout' in server) { // http.Server, https.Server
      const h = server as http.Server & { connectionsCheckingInterval: number };
      h.keepAliveTimeout = opts.keepAliveMs;
      h.requestTimeout = opts.requestTimeoutMs;
      h.headersTimeout = opts.headersTimeoutMs;
      // Node checks those two timeouts only every connectionsCheckingInterval (30 s by default),
      // which would let a slow client hold a connection 30 s past them. Read when listening starts.
      h.connectionsCheckingInterval = checkEveryMs(opts);
    }
    server.prependListener('connection', onConnection);
    servers.push(server);
  };

  /** The first fd serves on the app's own server, when it has one; every other fd gets a server
   *  that hands its requests and upgrades to the same handlers. */
  const serverFor = (index: number): net.Server => {
    if (app.kind === 'server' && index === 0) {
      app.server.on('request', dispatch);
      return app.server;
    }
    const server = http.createServer(dispatch);
    if (app.kind === 'server') server.on('upgrade', (req, socket, head) => app.server.emit('upgrade', req, socket, head));
    return server;
  };

  const listenOn = (server: net.Server, target: ListenTarget) => new Promise<void>((ok, fail) => {
    const onError = (err: Error) => fail(err);
    server.once('error', onError);
    server.once('listening', () => { server.off('error', onError); ok(); });
    // listen({ fd }) ignores a backlog in the options object; it is read from the second argument.
    // A TCP handle is taken over as it is; listen() would open a Unix one's fd in a second handle,
    // so the server adopts it as Node does a server sent over IPC (never two handles on one fd).
    const adopt = server as net.Server & { _handle?: unknown; _listen2?: (...a: unknown[]) => void };
    if (target.constructor?.name === 'Pipe' && typeof adopt._listen2 === 'function' && !adopt._handle) {
      adopt._handle = target;
      adopt._listen2(null, -1, -1, opts.backlog);
    } else server.listen(target, opts.backlog);
  });

  /** A plain net.Server on a spare fd that hands what it accepts to `server`, as if `server` had
   *  accepted it: the same socket options, and counted as `server`'s (Node's own accept path
   *  counts a connection on the server that accepted it; an app's server that is watched for
   *  'close' or asked getConnections() must see every one). */
  const acceptFor = (server: net.Server): net.Server => {
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
      opts.log.warning(`stopped accepting on a spare copy of a listener: ${err.message}`, { event: 'worker.acceptorError' });
      acceptor.close();
    });
    acceptors.push(acceptor);
    return acceptor;
  };
  const stopAccepting = () => {
    for (const s of servers) net.Server.prototype.close.call(s);
    for (const a of acceptors.splice(0)) a.close();
  };

  const reap = () => {
    const now = performance.now();
    for (const conn of sockets.all()) {
      const socket = conn.socket;
      if (current(socket)) continue;
      if (socket.bytesRead !== conn.lastBytesRead) { conn.lastBytesRead = socket.bytesRead; conn.idleSinceMs = now; continue; }
      if (now - conn.idleSinceMs >= IDLE_REAP_MS) socket.destroy();
    }
  };

  return {
    async listen(fds, spareFds = []) {
      for (let i = 0; i < fds.length; i++) {
        const server = serverFor(i);
        configure(server);
        await listenOn(server, { fd: fds[i]! });
        for (const copy of spareFds) if (copy[i] !== undefined) await listenOn(acceptFor(server), { fd: copy[i]! });
      }
    },
    stats() {
      let inFlight = 0;
      for (const conn of sockets.all()) if (current(conn.socket)) inFlight++;
      return { inFlight, requests, connections: sockets.size };
    },
    setFairShare(connections) {
      const limit = connections + Math.max(1, Math.ceil(connections * SHARE_SLACK));
      // Above the share: ask that many kept-alive clients to reconnect (Connection: close on their
      // next response). A reconnect goes to whichever unit accepts first, most often the least
      // busy; repeated, this evens the connections out.
      toShed = connections > 0 && sockets.size > limit ? sockets.size - connections : 0;
      for (const conn of sockets.all()) conn.shed = false;
    },
    drain() {
      if (draining) return new Promise<void>((ok) => { const prev = drained; drained = () => { prev?.(); ok(); }; });
      draining = true;
      // net.Server's close, not http.Server's: stop accepting without dropping idle keep-alive sockets.
      if (!paused) stopAccepting(); // a pause has closed them all already
      for (const conn of sockets.all()) {
        const res = current(conn.socket);
        if (res && !res.headersSent) res.shouldKeepAlive = false;
        conn.lastBytesRead = -1;
      }
      const timer = setInterval(reap, REAP_TICK_MS);
      return new Promise<void>((ok) => {
        drained = () => { clearInterval(timer); ok(); };
        maybeDone();
      });
    },
  };
}
