/** Owns the master's status listener (statusBind): a small HTTP server of the master's own, apart
 *  from the app's sockets and never handed to workers, answering GET and HEAD:
 *  /livez (200 while the master's loop answers), /readyz (200 while a worker of the serving
 *  generation serves and the master is not stopping, else 503 with the reason), /stats (JSON,
 *  observe.ts) and /metrics (Prometheus text, metrics.ts). Anything else is 404; other methods 405. */

import http from 'node:http';
import { parseBind } from '../net/address';
import { clearStaleSocket } from '../net/listeners';

export interface StatusSources {
  /** Why the master is not ready, or null when it is. */
  notReady(): string | null;
  stats(): unknown;
  metrics(): Promise<{ contentType: string; text: string }>;
}

export class StatusServer {
  readonly #sources: StatusSources;
  readonly #servers: http.Server[] = [];
  readonly #binds = new Map<http.Server, string>();
  #closing = false;

  constructor(sources: StatusSources) {
    this.#sources = sources;
  }

  /** Listens on every bind (on the fd `inherited` has for it, when it has one: a USR2
   *  predecessor's socket); resolves with their URLs, or rejects naming the one that failed
   *  (closing those it opened). */
  async listen(binds: readonly string[], inherited: ReadonlyMap<string, number> = new Map()): Promise<string[]> {
    const urls: string[] = [];
    try {
      for (const bind of binds) urls.push(await this.#listenOn(bind, inherited.get(bind)));
    } catch (err) {
      this.close();
      throw err;
    }
    return urls;
  }

  /** Each listener's bind and, for a TCP one, its fd, to hand to a USR2 successor. A Unix one is
   *  not handed over (closing it here unlinks its file): the successor binds it again. */
  handles(): Array<{ bind: string; fd: number | null }> {
    return this.#servers.flatMap((s) => {
      const bind = this.#binds.get(s);
      if (!bind) return [];
      const fd = (s as http.Server & { _handle?: { fd?: number } })._handle?.fd;
      return [{ bind, fd: typeof s.address() !== 'string' && typeof fd === 'number' && fd >= 0 ? fd : null }];
    });
  }

  async #listenOn(bind: string, fd: number | undefined): Promise<string> {
    const spec = parseBind(bind);
    if (typeof spec === 'string' || (spec.kind !== 'tcp' && spec.kind !== 'unix')) throw new Error(`statusBind ${bind}: a TCP address or unix:PATH`);
    // A socket file a master that died left behind is replaced; one that answers is not.
    if (spec.kind === 'unix' && fd === undefined) await clearStaleSocket(`statusBind ${bind}`, spec.path);
    const server = http.createServer((req, res) => { void this.#answer(req, res); });
    server.keepAliveTimeout = 5000;
    await new Promise<void>((ok, fail) => {
      server.once('error', (err) => fail(new Error(`cannot listen on statusBind ${bind}: ${(err as NodeJS.ErrnoException).code ?? err.message}`)));
      if (fd !== undefined) server.listen({ fd }, ok);
      else if (spec.kind === 'unix') server.listen(spec.path, ok);
      else server.listen({ host: spec.host, port: spec.port }, ok);
    });
    this.#servers.push(server);
    this.#binds.set(server, bind);
    const a = server.address();
    return typeof a === 'string' ? `unix:${a}` : a ? `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : bind;
  }

  /** Stops listening. A request on a connection already open is still answered, with Connection:
   *  close (a USR2 successor accepts on the same socket meanwhile); idle connections are closed. */
  close(): void {
    this.#closing = true;
    for (const s of this.#servers.splice(0)) { s.close(); s.closeIdleConnections(); }
  }

  async #answer(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const send = (status: number, type: string, body: string, extra: Record<string, string> = {}) => {
      res.writeHead(status, {
        'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', ...extra,
        ...(this.#closing ? { connection: 'close' } : {}),
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') { send(405, 'text/plain', 'only GET and HEAD\n', { allow: 'GET, HEAD' }); return; }
    const path = (req.url ?? '/').split('?')[0];
    try {
      switch (path) {
        case '/livez': send(200, 'text/plain', 'ok\n'); return;
        case '/readyz': { const why = this.#sources.notReady(); send(why ? 503 : 200, 'text/plain', `${why ?? 'ready'}\n`); return; }
        case '/stats': send(200, 'application/json', `${JSON.stringify(this.#sources.stats())}\n`); return;
        case '/metrics': { const m = await this.#sources.metrics(); send(200, m.contentType, m.text); return; }
        default: send(404, 'text/plain', 'not found: /metrics, /stats, /livez, /readyz\n');
      }
    } catch (err) {
      send(500, 'text/plain', `${(err as Error).message}\n`);
    }
  }
}
