/** Owns one serving unit's HTTP (a worker process, or one of its threads): a server per inherited
 *  listening fd, all running the app, with their timeouts; the unit's open connections; and the
 *  three parts that share those connections, each the one owner of its own state:
 *  - accepting.ts: when to accept (the workerConnections cap, the spare acceptors, the stop);
 *  - dispatch.ts: the request path, and which responses close their connection;
 *  - drain.ts: the graceful drain, which reaps idle connections until none is left.
 *
 *  What is known of a request in flight is read from its connection (`socket._httpMessage`, the
 *  response Node is writing there) when it is needed, never kept per request. */

import http from 'node:http';
import type net from 'node:net';
import type { Socket } from 'node:net';
import { Accepting } from './accepting';
import { countBodyBytes } from './body-bytes';
import { Connections } from './connections';
import type { LoadedApp } from './app-loader';
import { createDispatch, refusedOn } from './dispatch';
import { createDrain, responseOn } from './drain';
import { refusalFor, type RequestLimits } from './request-guard';
import { ageMs, type ResponseDone } from './responses';
import { watchDeadlines } from './deadline';
import { forEachInFlight, registerInFlight } from './in-flight';
import { createH2Server, trackSessions } from './h2';
import { carryClient, requireProxyHeader, type ProxyOptions } from './proxy-protocol';
import { secureContextOptions, sniContexts, sniLookup, type TlsMaterial } from '../config/tls';
import type { AccessFormatter } from '../log/access';
import type { Logger } from '../log/logger';

/** Where to listen again after a pause: an fd, or a handle the master sent (taken over). */
export type ListenTarget = { readonly fd: number };

export interface ServeOptions {
  readonly keepAliveMs: number;
  readonly requestTimeoutMs: number;
  readonly headersTimeoutMs: number;
  /** A response not finished this long after its request reached the app is ended (deadline.ts; 0: never). */
  readonly requestDeadlineMs: number;
  readonly backlog: number;
  readonly limits: RequestLimits;
  /** Requests after which `onRecycle` is called once (0: never). */
  readonly maxRequests: number;
  readonly onRecycle: (requests: number) => void;
  /** Most connections at once (0: no cap). At the cap the unit makes room (makeRoom) or stops
   *  accepting; connections then wait in the kernel's backlog for a unit with room. */
  readonly maxConnections: number;
  /** At the cap, close the oldest connection still sending its first request (never answered, no
   *  request in flight) to take the new one: slow clients cannot hold every slot. */
  readonly makeRoom?: boolean;
  /** A fresh way to accept on listener `index` again after a pause (the fd was closed). */
  readonly relisten: (index: number) => Promise<ListenTarget>;
  readonly accessLog: { format: AccessFormatter; write: (line: string) => void } | null;
  /** Told of every response once it is over, besides the access log (request metrics, statsd). */
  readonly responseDone: readonly ResponseDone[];
  /** The listeners that serve TLS (by index), and what with; null: none does. */
  readonly tls?: { readonly material: TlsMaterial; readonly listeners: readonly boolean[] } | null;
  /** The PROXY protocol on every listener: which version, and whose header to believe (null: off). */
  readonly proxy?: Pick<ProxyOptions, 'version' | 'trusted'> | null;
  /** The preRequest and postRequest hooks, when the config file has them. */
  readonly hooks?: {
    readonly preRequest: ((req: http.IncomingMessage) => Promise<void>) | null;
    readonly postRequest: ((req: http.IncomingMessage, res: http.ServerResponse) => void) | null;
  };
  readonly log: Logger;
}

export interface ServingStats {
  inFlight: number;
  requests: number;
  connections: number;
  /** How long the oldest request in flight has run, in ms, when responses are watched (null: none). */
  oldestMs: number | null;
}

export interface Serving {
  /** Serves on `fds` (one per listener), accepting on each of `spareFds`' copies of them too. */
  listen(fds: readonly number[], spareFds?: readonly (readonly number[])[]): Promise<void>;
  stats(): ServingStats;
  /** What the unit counted since the last call: connections the balance asked to close, connections
   *  closed for their PROXY header, responses ended at their deadline. */
  takeCounted(): { shed: number; proxyRefused: number; deadlines: number };
  /** The master's fair share of connections for this unit: shed above it (never a pause). */
  setFairShare(connections: number): void;
  /** New certificates for the TLS listeners: new handshakes get them; open connections keep theirs. */
  setTls(material: TlsMaterial): void;
  /** Stop accepting, finish what is in flight, close connections; resolves when none is left. */
  drain(): Promise<void>;
}

function checkEveryMs(opts: ServeOptions): number {
  const timeouts = [opts.headersTimeoutMs, opts.requestTimeoutMs].filter((t) => t > 0);
  return timeouts.length ? Math.min(5000, Math.max(250, Math.min(...timeouts) / 4)) : 30_000;
}

/** Gives an http server the unit's timeouts, and the unit its connections. */
function configure(server: net.Server, opts: ServeOptions, sockets: Connections, onConnection: (socket: Socket) => void, onHandshakeOver: (this: Socket) => void): net.Server {
  if ('headersTimeout' in server) { // http.Server, https.Server, and http2's serving HTTP/1.1 too
    const h = server as http.Server & { connectionsCheckingInterval: number };
    h.keepAliveTimeout = opts.keepAliveMs;
    h.requestTimeout = opts.requestTimeoutMs;
    h.headersTimeout = opts.headersTimeoutMs;
    // Node checks those two timeouts only every connectionsCheckingInterval (30 s by default),
    // which would let a slow client hold a connection 30 s past them. Read when listening starts.
    h.connectionsCheckingInterval = checkEveryMs(opts);
  }
  if (!('setSecureContext' in server)) {
    server.prependListener('connection', onConnection);
    return server;
  }
  // A TLS server's connection is its TLSSocket, on which the response is written (what the drain
  // and the in-flight count read): held once the handshake is done. Until then its TCP socket is
  // held as handshaking, so that a drain waits for it (a unit that left cut the handshake).
  server.prependListener('connection', (raw: Socket) => {
    sockets.handshaking.add(raw);
    raw.on('close', onHandshakeOver);
  });
  server.prependListener('secureConnection', (socket: Socket) => {
    const raw = (socket as Socket & { _parent: Socket })._parent;
    sockets.handshaking.delete(raw);
    if (opts.proxy) carryClient(raw, socket);
    onConnection(socket);
  });
  return server;
}

/** Marks a connection taken over by the app ('upgrade', 'connect'): it is the app's, never closed to make room. */
const TAKEN = Symbol('forkd.taken');
type Taken = Socket & { [TAKEN]?: true };

/** Node's parser emits 'upgrade' and 'connect' on the server, past the dispatch: the request
 *  checks (request-guard.ts) are made here, and nothing behind a refused request on its
 *  connection reaches the app. A refusal is written on the socket, which then closes. */
function guardTakeovers(server: net.Server, limits: RequestLimits): void {
  const emit = server.emit;
  server.emit = function (this: net.Server, event: string | symbol) {
    if (event === 'upgrade' || event === 'connect') {
      // eslint-disable-next-line prefer-rest-params
      const req = arguments[1] as http.IncomingMessage;
      // eslint-disable-next-line prefer-rest-params
      const socket = arguments[2] as Taken;
      socket[TAKEN] = true;
      if (refusedOn(socket)) { socket.destroy(); return true; }
      const refusal = refusalFor(req, null, limits);
      if (refusal) {
        const text = `${refusal[1]}\n`;
        socket.end(`HTTP/1.1 ${refusal[0]} ${http.STATUS_CODES[refusal[0]] ?? ''}\r\nConnection: close\r\nContent-Type: text/plain\r\n`
          + `Content-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`);
        return true;
      }
    }
    // eslint-disable-next-line prefer-rest-params
    return emit.apply(this, arguments as unknown as Parameters<net.Server['emit']>);
  } as net.Server['emit'];
}

/** The unit's SNI contexts, replaced at a rotation; every TLS server of the unit looks names up here. */
interface Sni { byName: ReadonlyMap<string, import('node:tls').SecureContext> }

/** The first fd serves on the app's own server, when it has one (and the listener is plain); every
 *  other fd gets a server that hands its requests and upgrades to the same handlers. */
function serverFor(app: LoadedApp, index: number, dispatch: http.RequestListener, tls: ServeOptions['tls'], secureServers: Set<net.Server>, sni: Sni): net.Server {
  const secure = tls?.listeners[index] ? tls.material : null;
  if (app.kind === 'server' && index === 0 && !secure) {
    app.server.on('request', dispatch);
    return app.server;
  }
  // A TLS listener gets an https server of the unit's own (an http2 one offering h2 and http/1.1,
  // with http2): the worker terminates TLS, and the app sees what Node's https gives it
  // (req.socket.encrypted, getPeerCertificate()).
  let server: net.Server;
  if (secure) {
    const options = { ...secureContextOptions(secure), SNICallback: (name: string, done: (err: Error | null, ctx?: import('node:tls').SecureContext) => void) => done(null, sniLookup(sni.byName, name)) };
    server = secure.http2 ? createH2Server(options, dispatch) : (require('node:https') as typeof import('node:https')).createServer(options, dispatch);
    secureServers.add(server);
  } else server = http.createServer(dispatch);
  if (app.kind === 'server') server.on('upgrade', (req, socket, head) => app.server.emit('upgrade', req, socket, head));
  return server;
}

/** When nobody else watches responses, the deadline needs their start times: a watcher that does nothing else. */
const noteStart: ResponseDone = () => undefined;

export function createServing(app: LoadedApp, opts: ServeOptions): Serving {
  const sockets = new Connections();
  const accepting = new Accepting(sockets, opts, opts.makeRoom ? () => makeRoom() : undefined);
  const watched = opts.requestDeadlineMs > 0 && opts.responseDone.length === 0 && !opts.accessLog;
  const requests = createDispatch(app, sockets, watched ? { ...opts, responseDone: [noteStart] } : opts);
  const deadlines = opts.requestDeadlineMs > 0 ? watchDeadlines(sockets, opts.requestDeadlineMs, opts.log) : null;
  registerInFlight(sockets);
  const drain = createDrain(sockets);
  const secureServers = new Set<net.Server>();
  const sni: Sni = { byName: opts.tls ? sniContexts(opts.tls.material) : new Map() };
  if (opts.accessLog && opts.tls?.material.http2) countBodyBytes(true);
  let refused = 0;
  const proxy: ProxyOptions | null = opts.proxy ? {
    ...opts.proxy,
    refused(reason, peer) {
      refused++;
      opts.log.debug(`connection closed: ${reason}`, { event: 'worker.proxyRefused', peer });
    },
  } : null;

  // One 'close' listener shared by every connection (no closure or `once` wrapper per connection).
  // A connection's idle clock starts at the first reap of a drain (drain.ts), so it is not read here.
  function onSocketClose(this: Socket): void {
    sockets.remove(this);
    accepting.connectionClosed();
    drain.connectionClosed();
  }
  // A TLS connection's TCP socket closes after its handshake failed, or once the connection is over.
  function onHandshakeOver(this: Socket): void {
    if (sockets.handshaking.delete(this)) drain.connectionClosed();
  }
  /** Closes the oldest HTTP/1.1 connection that has had no answer yet and has no request in flight
   *  (a client still sending its first request's headers), other than the one just accepted. */
  function makeRoom(): boolean {
    let oldest: import('./connections').Conn | null = null;
    for (const conn of sockets.all()) {
      const s = conn.socket;
      if (conn.seq === sockets.lastSeq || conn.session || s.bytesWritten > 0 || s.destroyed || responseOn(s) !== null || (s as Taken)[TAKEN]) continue;
      if (oldest === null || conn.seq < oldest.seq) oldest = conn;
    }
    if (!oldest) return false;
    sockets.remove(oldest.socket);
    oldest.socket.destroy();
    return true;
  }
  const onConnection = (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', onSocketClose);
    accepting.connectionOpened();
  };

  return {
    listen: (fds, spareFds = []) => accepting.listen(fds, spareFds, (i) => {
      const bare = serverFor(app, i, requests.listener, opts.tls, secureServers, sni);
      // Before configure: the unit counts a connection at once, and HTTP (or TLS) has it once its header is read.
      if (proxy) requireProxyHeader(bare, proxy);
      guardTakeovers(bare, opts.limits);
      const server = configure(bare, opts, sockets, onConnection, onHandshakeOver);
      if (opts.tls?.listeners[i] && opts.tls.material.http2) trackSessions(server, sockets, opts.keepAliveMs, () => drain.started);
      return server;
    }),
    stats() {
      let inFlight = 0;
      let oldestMs: number | null = null;
      const now = performance.now();
      const count = (res: http.ServerResponse) => {
        inFlight++;
        const age = ageMs(res, now);
        if (age !== null && (oldestMs === null || age > oldestMs)) oldestMs = age;
      };
      forEachInFlight(sockets, count);
      return { inFlight, requests: requests.count(), connections: sockets.size, oldestMs };
    },
    takeCounted() {
      const counted = { shed: requests.takeShed(), proxyRefused: refused, deadlines: deadlines?.take() ?? 0 };
      refused = 0;
      return counted;
    },
    setFairShare: (connections) => requests.setFairShare(connections),
    setTls(material) {
      sni.byName = sniContexts(material);
      for (const s of secureServers) (s as import('node:tls').Server).setSecureContext(secureContextOptions(material));
    },
    async drain() {
      // What brings more work stops first: keep-alive on the open connections, and new connections
      // once those already queued on the listeners are taken (accepting.ts).
      if (!drain.started) {
        requests.endKeepAlive();
        await accepting.stop();
      }
      return drain.run();
    },
  };
}
