/** Owns a serving unit's request path, from Node's 'request' event to the app: the request count
 *  (and the recycle it triggers), the request checks, the access record, the preRequest and
 *  postRequest hooks, the app's errors, and which responses close their connection (all of them in
 *  a sync unit or once the unit drains; those the balance sheds).
 *
 *  The request path is kept to one listener and no per-request allocation unless the access log or
 *  a hook asks for one. */

import type http from 'node:http';
import { accessRecorder, watchResponses } from './responses';
import type { LoadedApp } from './app-loader';
import type { Connections } from './connections';
import { isH2, trackStream, windDown } from './h2';
import { refusalFor } from './request-guard';
import { deadlinePassed } from './deadline';
import { keepSocket } from '../log/access';
import type { ServeOptions } from './serve';
import type { Logger } from '../log/logger';

/** Marks a connection on which a request was refused. */
const REFUSED = Symbol('forkd.refused');
type Refusing = import('node:net').Socket & { [REFUSED]?: true };
/** Whether a request was refused on `socket` (it closes once the refusal is sent). */
export const refusedOn = (socket: import('node:net').Socket): boolean => (socket as Refusing)[REFUSED] === true;

/** How far above its fair share of connections a unit may be before it sheds. */
const SHARE_SLACK = 0.1;

export type DispatchOptions = Pick<ServeOptions, 'keepAliveMs' | 'limits' | 'maxRequests' | 'onRecycle' | 'accessLog' | 'responseDone' | 'hooks' | 'log'>;

export interface Dispatch {
  /** The listener for every server of the unit. */
  readonly listener: http.RequestListener;
  /** Requests dispatched so far. */
  count(): number;
  /** From now on every response closes its connection (the drain). */
  endKeepAlive(): void;
  /** The master's fair share of connections for this unit: shed above it. */
  setFairShare(connections: number): void;
  /** Connections asked to close for the balance since the last call. */
  takeShed(): number;
}

export function createDispatch(app: LoadedApp, sockets: Connections, opts: DispatchOptions): Dispatch {
  const access = opts.accessLog;
  const record = watchResponses([...(access ? [accessRecorder((entry) => access.write(access.format(entry)))] : []), ...opts.responseDone]);
  const toApp = appListener(app, opts.log);
  const pre = opts.hooks?.preRequest ?? null;
  const post = opts.hooks?.postRequest ?? null;
  let requests = 0;
  let recycleAsked = false;
  /** Off in a sync unit (keepAliveMs 0), and from the drain on. */
  let keepAlive = opts.keepAliveMs !== 0;
  let toShed = 0;
  let shed = 0;

  const dispatch: http.RequestListener = (req, res) => {
    // A request pipelined behind a refused one on its connection: the refusal said
    // Connection: close, so nothing after it is processed (RFC 9112 §9.6); the socket closes
    // once the refusal is sent.
    if ((req.socket as Refusing)[REFUSED] === true) return;
    requests++;
    if (opts.maxRequests > 0 && requests >= opts.maxRequests && !recycleAsked) {
      recycleAsked = true;
      opts.onRecycle(requests);
    }
    const h2 = isH2(req);
    if (h2) h2Stream(req, res);
    else if (!keepAlive) res.shouldKeepAlive = false;
    else if (toShed > 0) {
      const conn = sockets.get(req.socket);
      if (conn && !conn.shed) { conn.shed = true; toShed--; shed++; res.shouldKeepAlive = false; }
    }
    if (record) record(res);
    const refusal = refusalFor(req, res, opts.limits);
    if (refusal !== null) {
      res.statusCode = refusal[0];
      if (!h2) { // h2 has no such header; the stream ends
        res.setHeader('connection', 'close');
        (req.socket as Refusing)[REFUSED] = true;
      }
      res.setHeader('content-type', 'text/plain');
      res.end(`${refusal[1]}\n`);
      return;
    }
    if (post) res.once('finish', () => post(req, res));
    if (pre) void pre(req).then(() => toApp(req, res));
    else toApp(req, res);
  };

  /** An h2 stream is counted in flight on its session, and its session wound down (h2.ts) where an
   *  HTTP/1.1 response would close its connection. */
  function h2Stream(req: http.IncomingMessage, res: http.ServerResponse): void {
    const conn = trackStream(sockets, req, res);
    if (!conn?.session) return;
    if (access) keepSocket(req, conn.socket);
    if (!keepAlive) windDown(conn);
    else if (toShed > 0 && !conn.shed) { conn.shed = true; toShed--; shed++; windDown(conn); }
  }

  return {
    listener: dispatch,
    count: () => requests,
    endKeepAlive() { keepAlive = false; },
    setFairShare(connections) {
      const limit = connections + Math.max(1, Math.ceil(connections * SHARE_SLACK));
      // Above the share: ask that many kept-alive clients to reconnect (Connection: close on their
      // next response). A reconnect goes to whichever unit accepts first, most often the least
      // busy; repeated, this evens the connections out.
      toShed = connections > 0 && sockets.size > limit ? sockets.size - connections : 0;
      for (const conn of sockets.all()) conn.shed = false;
    },
    takeShed() { const n = shed; shed = 0; return n; },
  };
}

/** The app as one request listener, its errors answered: its own, or every 'request' listener of
 *  its server (taken off that server, which dispatches to them through the unit). */
function appListener(app: LoadedApp, log: Logger): http.RequestListener {
  if (app.kind === 'listener') return guarded(app.listener, log);
  const each = (app.server.listeners('request') as http.RequestListener[]).map((l) => guarded(l, log));
  app.server.removeAllListeners('request');
  return (req, res) => { for (const l of each) l(req, res); };
}

function guarded(listener: http.RequestListener, log: Logger): http.RequestListener {
  return (req, res) => {
    try {
      const r = listener(req, res) as unknown;
      if (r && typeof (r as Promise<unknown>).then === 'function') (r as Promise<unknown>).then(undefined, (err) => appError(log, err, req, res));
    } catch (err) {
      appError(log, err, req, res);
    }
  };
}

function appError(log: Logger, err: unknown, req: http.IncomingMessage, res: http.ServerResponse): void {
  // Its deadline passed and forkd ended it: what the app does with it now (an aborted fetch
  // rejecting) is said at debug only, and the response, answered already, is left alone.
  if (deadlinePassed(res)) { log.debug('app error after the request deadline', { event: 'app.error', method: req.method, url: req.url, error: err }); return; }
  log.error('app error', { event: 'app.error', method: req.method, url: req.url, error: err });
  if (res.headersSent) { res.destroy(); return; }
  if (isH2(req)) {
    // Node's h2 takes a connection header (transfer-encoding, keep-alive…) in setHeader and throws
    // only when the headers go out: what the app had set may be why it failed. None of it is sent.
    for (const name of res.getHeaderNames()) res.removeHeader(name);
  } else res.setHeader('connection', 'close');
  res.statusCode = 500;
  res.setHeader('content-type', 'text/plain');
  try { res.end('Internal Server Error\n'); } catch { res.destroy(); }
}
