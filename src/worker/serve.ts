/** Owns a worker's HTTP serving: one server per inherited listening fd (all running the app),
 *  timeouts, per-request bookkeeping, app errors, the access log, and the graceful drain.
 *
 *  Why the drain is not server.close(): Node 20's http close() also destroys every keep-alive
 *  connection idle at that instant, and under load the client's next request is usually already on
 *  its way, so it fails. Instead forkd stops accepting, answers every further request with
 *  `Connection: close`, and only closes connections that have been idle for IDLE_REAP_MS. */

import http from 'node:http';
import net from 'node:net';
import type { Socket } from 'node:net';
import type { LoadedApp } from './app-loader';
import { refusalFor, type RequestLimits } from './request-guard';
import type { AccessFormatter } from '../log/access';
import type { Logger } from '../log/logger';

/** A kept-alive connection idle this long during a drain is closed: long enough that a request the
 *  client already sent has arrived (measured: closing at once failed ~1 request per connection). */
const IDLE_REAP_MS = 500;
const REAP_TICK_MS = 100;

export interface ServeOptions {
  readonly keepAliveMs: number;
  readonly requestTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly backlog: number;
  readonly limits: RequestLimits;
  /** Requests after which `onRecycle` is called once (0: never). */
  readonly maxRequests: number;
  readonly onRecycle: (requests: number) => void;
  readonly accessLog: { format: AccessFormatter; write: (line: string) => void } | null;
  /** The preRequest and postRequest hooks, when the config file has them. */
  readonly hooks?: {
    readonly preRequest: ((req: http.IncomingMessage) => Promise<void>) | null;
    readonly postRequest: ((req: http.IncomingMessage, res: http.ServerResponse) => void) | null;
  };
  readonly log: Logger;
}

export interface Serving {
  listen(fds: readonly number[]): Promise<void>;
  stats(): { inFlight: number; requests: number };
  /** Stop accepting, finish what is in flight, close connections; resolves when none is left. */
  drain(): Promise<void>;
}

/** Counts the body bytes an app writes, for %(b)s, when it sets no Content-Length. */
function countBody(res: http.ServerResponse): { bytes: number } {
  const counter = { bytes: 0 };
  const length = (chunk: unknown, enc: unknown) => (typeof chunk === 'string'
    ? Buffer.byteLength(chunk, typeof enc === 'string' ? enc as BufferEncoding : 'utf8')
    : chunk instanceof Uint8Array ? chunk.byteLength : 0);
  const write = res.write;
  const end = res.end;
  res.write = function countedWrite(this: http.ServerResponse, chunk: unknown, ...rest: unknown[]) {
    counter.bytes += length(chunk, rest[0]);
    return (write as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
  } as typeof res.write;
  res.end = function countedEnd(this: http.ServerResponse, chunk?: unknown, ...rest: unknown[]) {
    if (chunk !== undefined && typeof chunk !== 'function') counter.bytes += length(chunk, rest[0]);
    return (end as (...a: unknown[]) => http.ServerResponse).call(this, chunk, ...rest);
  } as typeof res.end;
  return counter;
}

function checkEveryMs(opts: ServeOptions): number {
  const timeouts = [opts.headersTimeoutMs, opts.requestTimeoutMs].filter((t) => t > 0);
  return timeouts.length ? Math.min(5000, Math.max(250, Math.min(...timeouts) / 4)) : 30_000;
}

interface ConnState { busy: number; idleSinceMs: number; lastBytesRead: number }

export function createServing(app: LoadedApp, opts: ServeOptions): Serving {
  const sockets = new Map<Socket, ConnState>();
  const inFlight = new Set<http.ServerResponse>();
  let requests = 0;
  let draining = false;
  let recycleAsked = false;
  let drained: (() => void) | null = null;
  const servers: net.Server[] = [];

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

  const track = (req: http.IncomingMessage, res: http.ServerResponse) => {
    requests++;
    inFlight.add(res);
    const conn = sockets.get(req.socket);
    if (conn) conn.busy++;
    if (draining || opts.keepAliveMs === 0) res.shouldKeepAlive = false;
    const startedAt = opts.accessLog ? new Date() : null;
    const startNs = opts.accessLog ? process.hrtime.bigint() : 0n;
    const body = opts.accessLog ? countBody(res) : null;
    res.once('close', () => {
      inFlight.delete(res);
      if (conn) { conn.busy--; conn.idleSinceMs = performance.now(); }
      if (opts.accessLog && startedAt && body) {
        const durationUs = Number(process.hrtime.bigint() - startNs) / 1000;
        opts.accessLog.write(opts.accessLog.format({ req, res, startedAt, durationUs, bytes: body.bytes }));
      }
    });
    if (opts.maxRequests > 0 && requests >= opts.maxRequests && !recycleAsked) {
      recycleAsked = true;
      opts.onRecycle(requests);
    }
  };

  const onConnection = (socket: Socket) => {
    const conn: ConnState = { busy: 0, idleSinceMs: performance.now(), lastBytesRead: 0 };
    sockets.set(socket, conn);
    socket.once('close', () => { sockets.delete(socket); maybeDone(); });
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
      server.prependListener('request', track);
    }
    server.prependListener('connection', onConnection);
    servers.push(server);
  };

  /** The first fd serves on the app's own server, when it has one; every other fd gets a server
   *  that hands its requests and upgrades to the same handlers. */
  const toApp: http.RequestListener = app.kind === 'listener' ? guarded(app.listener) : (() => {
    const each = (app.server.listeners('request') as http.RequestListener[]).map(guarded);
    app.server.removeAllListeners('request');
    return (req, res) => { for (const l of each) l(req, res); };
  })();
  const pre = opts.hooks?.preRequest ?? null;
  const post = opts.hooks?.postRequest ?? null;
  const dispatch: http.RequestListener = (req, res) => {
    const refusal = refusalFor(req, opts.limits);
    if (refusal === null) {
      if (post) res.once('finish', () => post(req, res));
      if (pre) void pre(req).then(() => toApp(req, res));
      else toApp(req, res);
      return;
    }
    res.statusCode = refusal[0];
    res.setHeader('connection', 'close');
    res.setHeader('content-type', 'text/plain');
    res.end(`${refusal[1]}\n`);
  };
  const serverFor = (index: number): net.Server => {
    if (app.kind === 'server' && index === 0) {
      app.server.on('request', dispatch);
      return app.server;
    }
    const server = http.createServer(dispatch);
    if (app.kind === 'server') server.on('upgrade', (req, socket, head) => app.server.emit('upgrade', req, socket, head));
    return server;
  };

  const listenOn = (server: net.Server, fd: number) => new Promise<void>((ok, fail) => {
    const onError = (err: Error) => fail(err);
    server.once('error', onError);
    // listen({ fd }) ignores a backlog in the options object; it is read from the second argument.
    server.listen({ fd }, opts.backlog, () => { server.off('error', onError); ok(); });
  });

  const reap = () => {
    const now = performance.now();
    for (const [socket, conn] of sockets) {
      if (conn.busy > 0) continue;
      if (socket.bytesRead !== conn.lastBytesRead) { conn.lastBytesRead = socket.bytesRead; conn.idleSinceMs = now; continue; }
      if (now - conn.idleSinceMs >= IDLE_REAP_MS) socket.destroy();
    }
  };

  return {
    async listen(fds) {
      for (let i = 0; i < fds.length; i++) {
        const server = serverFor(i);
        configure(server);
        await listenOn(server, fds[i]!);
      }
    },
    stats: () => ({ inFlight: inFlight.size, requests }),
    drain() {
      if (draining) return new Promise<void>((ok) => { const prev = drained; drained = () => { prev?.(); ok(); }; });
      draining = true;
      // net.Server's close, not http.Server's: stop accepting without dropping idle keep-alive sockets.
      for (const s of servers) net.Server.prototype.close.call(s);
      for (const res of inFlight) if (!res.headersSent) res.shouldKeepAlive = false;
      for (const conn of sockets.values()) conn.lastBytesRead = -1;
      const timer = setInterval(reap, REAP_TICK_MS);
      return new Promise<void>((ok) => {
        drained = () => { clearInterval(timer); ok(); };
        maybeDone();
      });
    },
  };
}
