/** HTTP clients for tests: one request, one held in flight until told, raw bytes on a socket, and a
 *  bounded load loop. */

import http from 'node:http';
import net from 'node:net';

export interface Reply { readonly status: number; readonly headers: http.IncomingHttpHeaders; readonly body: string }

export function request(url: string, opts: http.RequestOptions & { body?: string } = {}): Promise<Reply> {
  return new Promise((ok, fail) => {
    const req = http.request(url, { agent: false, timeout: 15_000, ...opts }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => ok({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', fail);
    });
    req.on('timeout', () => req.destroy(new Error('request timed out')));
    req.on('error', fail);
    req.end(opts.body);
  });
}

/** A POST to `url` whose body ends only when `finish` is called: in flight until then. */
export function heldRequest(url: string): { finish(): void; reply: Promise<{ status: number; body: string }> } {
  const req = http.request(url, { method: 'POST', agent: false, headers: { 'transfer-encoding': 'chunked' } });
  const reply = new Promise<{ status: number; body: string }>((ok, fail) => {
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => { body += c; }).on('end', () => ok({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', fail);
  });
  reply.catch(() => undefined); // a test that fails first never awaits it
  req.flushHeaders();
  req.write('part');
  return { finish: () => req.end(), reply };
}

/** A TCP port on 127.0.0.1 that was free a moment ago (for a command line that needs one). */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((ok) => s.listen(0, '127.0.0.1', ok));
  const { port } = s.address() as net.AddressInfo;
  await new Promise<void>((ok) => s.close(() => ok()));
  return port;
}

/** `n` distinct TCP ports on 127.0.0.1 that were free a moment ago: each is held until all are
 *  found (freePort twice may hand out the same port). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = Array.from({ length: n }, () => net.createServer());
  try {
    for (const s of servers) await new Promise<void>((ok) => s.listen(0, '127.0.0.1', ok));
    return servers.map((s) => (s.address() as net.AddressInfo).port);
  } finally {
    for (const s of servers) await new Promise<void>((ok) => s.close(() => ok()));
  }
}

/** A request over a Unix socket. */
export function requestUnix(socketPath: string, path = '/'): Promise<Reply> {
  return request(`http://localhost${path}`, { socketPath });
}

/** Sends raw bytes and collects whatever comes back until the server closes or `idleMs` passes. */
export function rawExchange(port: number, bytes: Buffer | string, idleMs = 1500): Promise<{ data: string; closed: boolean }> {
  return new Promise((ok) => {
    const sock = net.connect(port, '127.0.0.1');
    let data = '';
    let closed = false;
    let timer: NodeJS.Timeout;
    const finish = () => { clearTimeout(timer); sock.destroy(); ok({ data, closed }); };
    const arm = () => { clearTimeout(timer); timer = setTimeout(finish, idleMs); };
    sock.on('connect', () => { sock.write(bytes); arm(); });
    sock.setEncoding('latin1');
    sock.on('data', (c: string) => { data += c; arm(); });
    sock.on('end', () => { closed = true; finish(); });
    sock.on('error', () => { closed = true; finish(); });
  });
}

export interface LoadResult {
  sent: number;
  ok: number;
  failed: number;
  statuses: Record<number, number>;
  errors: string[];
  /** Responses per `X-Worker` header value (the responding worker's pid), when the app sets it. */
  byWorker: Record<string, number>;
}

/** `connections` clients send requests back to back until `durationMs` is over (or `until()` says
 *  stop). Keep-alive or `Connection: close`. Every failure is counted, never retried. */
export async function load(url: string, opts: { connections: number; durationMs: number; keepAlive: boolean; until?: (sofar: LoadResult) => boolean }): Promise<LoadResult> {
  const agent = new http.Agent({ keepAlive: opts.keepAlive, maxSockets: opts.connections });
  const result: LoadResult = { sent: 0, ok: 0, failed: 0, statuses: {}, errors: [], byWorker: {} };
  const end = Date.now() + opts.durationMs;
  const one = () => new Promise<void>((done) => {
    result.sent++;
    const req = http.get(url, { agent, headers: opts.keepAlive ? {} : { connection: 'close' }, timeout: 10_000 }, (res) => {
      res.resume();
      res.on('end', () => {
        result.statuses[res.statusCode ?? 0] = (result.statuses[res.statusCode ?? 0] ?? 0) + 1;
        if (res.statusCode === 200) result.ok++; else result.failed++;
        const w = res.headers['x-worker'];
        if (typeof w === 'string') result.byWorker[w] = (result.byWorker[w] ?? 0) + 1;
        done();
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => { result.failed++; if (result.errors.length < 20) result.errors.push(err.message); done(); });
  });
  const client = async () => { while (Date.now() < end && !(opts.until?.(result))) await one(); };
  await Promise.all(Array.from({ length: opts.connections }, client));
  agent.destroy();
  return result;
}
