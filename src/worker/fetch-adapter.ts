/** Owns serving a Web-standard fetch handler, `(Request) => Response`, on Node's http server:
 *  the request becomes a Request (body streamed, aborted if the client goes away), and the Response
 *  is written back with backpressure. */

import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { isH2 } from './h2';
import { keepAborter } from './fetch-abort';

export type FetchHandler = (request: Request) => Response | Promise<Response>;

/** The absolute URL of a request: origin-form targets are resolved against Host; absolute-form
 *  targets (`GET http://h/p`) stand as they are; a Host that is not a host falls back to localhost,
 *  so that no client can make the adapter throw. */
function requestUrl(target: string, host: string, scheme: string): string {
  // Joined as text, not resolved: a target of //other/path is a path here, not another host.
  const path = target.startsWith('/') ? target : null;
  try {
    return new URL(path === null ? target : `${scheme}://${host}${path}`).href;
  } catch {
    return new URL(`${scheme}://localhost${path ?? '/'}`).href;
  }
}

function toRequest(req: IncomingMessage, signal: AbortSignal): Request {
  const headers = new Headers();
  const raw = req.rawHeaders;
  // An h2 request's raw headers start with its pseudo-headers (:method, :path, :authority…), which
  // are no headers of a Request.
  for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i]!.charCodeAt(0) !== 0x3a) headers.append(raw[i]!, raw[i + 1]!);
  const host = req.headers.host ?? (req.headers[':authority'] as string | undefined) ?? 'localhost';
  const scheme = (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http';
  const method = req.method ?? 'GET';
  const init: RequestInit & { duplex?: 'half' } = { method, headers, signal };
  if (method !== 'GET' && method !== 'HEAD') {
    init.body = Readable.toWeb(req) as unknown as ReadableStream;
    init.duplex = 'half';
  }
  return new Request(requestUrl(req.url ?? '/', host, scheme), init);
}

/** Headers of a connection, not of a response: h2 has none of them (RFC 9113 §8.2.2), and Node's
 *  h2 refuses them. */
const CONNECTION_HEADERS = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'http2-settings']);

async function writeResponse(response: Response, res: ServerResponse, h2: boolean): Promise<void> {
  res.statusCode = response.status;
  // h2 has no reason phrase (Node warns when one is set).
  if (response.statusText && !h2) res.statusMessage = response.statusText;
  for (const [name, value] of response.headers) {
    if (name !== 'set-cookie' && !(h2 && CONNECTION_HEADERS.has(name))) res.setHeader(name, value);
  }
  const cookies = response.headers.getSetCookie();
  if (cookies.length) res.setHeader('set-cookie', cookies);
  if (!response.body) { res.end(); return; }
  const reader = response.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      if (res.destroyed) { await reader.cancel(); return; }
      if (!res.write(value)) await new Promise<void>((ok) => { res.once('drain', ok); res.once('close', ok); });
    }
    res.end();
  } finally {
    reader.releaseLock();
  }
}

export function fetchListener(handler: FetchHandler): RequestListener {
  return (req, res) => {
    const aborter = new AbortController();
    keepAborter(req, aborter);
    res.once('close', () => { if (!res.writableFinished) aborter.abort(); });
    return Promise.resolve()
      .then(() => handler(toRequest(req, aborter.signal)))
      .then((response) => {
        if (!(response instanceof Response)) {
          throw new TypeError(`the fetch handler returned ${response === undefined ? 'undefined' : typeof response}, not a Response`);
        }
        return writeResponse(response, res, isH2(req));
      });
  };
}
