/** Owns the master's status listener (statusBind): a small HTTP server of the master's own, apart
 *  from the app's sockets and never handed to workers, answering GET and HEAD:
 *  /livez (200 while the master's loop answers), /readyz (200 while a worker of the serving
 *  generation serves and the master is not stopping, else 503 with the reason), /stats (JSON) and
 *  /metrics (Prometheus text, metrics.ts). Anything else is 404; other methods 405. */

import http from 'node:http';
import { parseBind } from '../net/address';
import type { MasterContext } from './context';
import type { Metrics } from './metrics';

export class StatusServer {
  readonly #ctx: MasterContext;
  readonly #metrics: Metrics;
  readonly #startedAt = Date.now();
  readonly #servers: http.Server[] = [];

  constructor(ctx: MasterContext, metrics: Metrics) {
    this.#ctx = ctx;
    this.#metrics = metrics;
  }

  /** Listens on every bind; resolves with their URLs, or rejects naming the one that failed. */
  async listen(binds: readonly string[]): Promise<string[]> {
    const urls: string[] = [];
    for (const bind of binds) {
      const spec = parseBind(bind);
      if (typeof spec === 'string' || (spec.kind !== 'tcp' && spec.kind !== 'unix')) throw new Error(`statusBind ${bind}: a TCP address or unix:PATH`);
      const server = http.createServer((req, res) => { void this.#answer(req, res); });
      await new Promise<void>((ok, fail) => {
        server.once('error', (err) => fail(new Error(`cannot listen on statusBind ${bind}: ${(err as NodeJS.ErrnoException).code ?? err.message}`)));
        if (spec.kind === 'unix') server.listen(spec.path, ok);
        else server.listen({ host: spec.host, port: spec.port }, ok);
      });
      this.#servers.push(server);
      const a = server.address();
      urls.push(typeof a === 'string' ? `unix:${a}` : a ? `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : bind);
    }
    return urls;
  }

  close(): void {
    for (const s of this.#servers.splice(0)) { s.close(); s.closeAllConnections(); }
  }

  /** Why the master is not ready, or null when it is. During a reload the old generation serves
   *  until the new one does, so either counts. */
  #notReady(): string | null {
    if (this.#ctx.phase() === 'stopping') return 'the master is stopping';
    if (!this.#ctx.pool.live().some((h) => h.accepting)) return 'no worker serves';
    return null;
  }

  #stats(): unknown {
    const { generations, scale, sockets } = this.#ctx;
    return {
      master: { pid: process.pid, uptimeS: Math.round((Date.now() - this.#startedAt) / 1000), phase: this.#ctx.phase(), generation: generations.current.id, workers: scale.target },
      listeners: sockets.all().map((l) => l.url),
      lastReload: generations.lastReload,
      workers: this.#ctx.pool.live().map((h) => ({
        nr: h.nr, pid: h.pid, generation: h.generation, state: h.state, requests: h.requests, inFlight: h.inFlight, connections: h.connections,
      })),
    };
  }

  async #answer(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const send = (status: number, type: string, body: string, extra: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), ...extra });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') { send(405, 'text/plain', 'only GET and HEAD\n', { allow: 'GET, HEAD' }); return; }
    const path = (req.url ?? '/').split('?')[0];
    try {
      switch (path) {
        case '/livez': send(200, 'text/plain', 'ok\n'); return;
        case '/readyz': { const why = this.#notReady(); send(why ? 503 : 200, 'text/plain', `${why ?? 'ready'}\n`); return; }
        case '/stats': send(200, 'application/json', `${JSON.stringify(this.#stats())}\n`); return;
        case '/metrics': send(200, this.#metrics.registry.contentType, await this.#metrics.registry.metrics()); return;
        default: send(404, 'text/plain', 'not found: /metrics, /stats, /livez, /readyz\n');
      }
    } catch (err) {
      send(500, 'text/plain', `${(err as Error).message}\n`);
    }
  }
}
