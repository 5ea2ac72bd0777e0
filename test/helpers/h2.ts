/** An HTTP/2 load for the tests, made with Node's http2 client as a browser or a gRPC channel
 *  behaves: each client holds one session at a time with several streams in flight on it; a
 *  session that got GOAWAY takes no new stream, and the client's next request opens a new session.
 *
 *  A stream counts as failed when it did not get its 200 and its whole body: a reset, an error of
 *  its session, or another status. Two cases are no failure, and the request is sent again on a
 *  new session, as browsers and curl do: a request the client could not start because its session
 *  had just been told to go away (never sent), and a stream the server refused, which RFC 9113
 *  §8.7 guarantees was not processed (REFUSED_STREAM, or above the last stream id of a GOAWAY:
 *  one sent as the GOAWAY was on its way). Those are counted apart. */

import http2 from 'node:http2';

export interface H2LoadResult {
  ok: number;
  failed: number;
  /** The first few failures, for an assertion's message. */
  readonly errors: string[];
  /** Sessions opened, and how many of them were told to go away (GOAWAY). */
  sessions: number;
  goaways: number;
  /** Requests sent again: streams the server refused (not processed), and requests not started on
   *  a session told to go away. */
  refused: number;
  notStarted: number;
}

export async function h2Load(origin: string, opts: { clients: number; streams: number; durationMs: number; ca: string; path?: string }): Promise<H2LoadResult> {
  const result: H2LoadResult = { ok: 0, failed: 0, errors: [], sessions: 0, goaways: 0, refused: 0, notStarted: 0 };
  const until = performance.now() + opts.durationMs;
  const fail = (why: string) => { result.failed++; if (result.errors.length < 10) result.errors.push(why); };

  async function client(): Promise<void> {
    let session: http2.ClientHttp2Session | null = null;
    const usable = () => {
      if (session && !session.closed && !session.destroyed && !(session as { goneAway?: boolean }).goneAway) return session;
      const s = http2.connect(origin, { ca: opts.ca });
      result.sessions++;
      s.on('goaway', () => { (s as { goneAway?: boolean }).goneAway = true; result.goaways++; });
      s.on('error', () => undefined); // each stream in flight reports it
      s.on('close', () => undefined);
      session = s;
      return s;
    };
    const one = (): Promise<void> => new Promise((done) => {
      let stream: http2.ClientHttp2Stream;
      try {
        stream = usable().request({ ':path': opts.path ?? '/' });
      } catch {
        // Told to go away between the check and the request: nothing was sent; a new session next.
        if (session) (session as { goneAway?: boolean }).goneAway = true;
        result.notStarted++;
        done();
        return;
      }
      let status = 0;
      let ended = false;
      let error = '';
      stream.on('response', (headers) => { status = Number(headers[':status']); });
      stream.resume();
      stream.on('end', () => { ended = true; });
      stream.on('error', (err: Error & { code?: string }) => { error = `${err.code ?? ''} ${err.message}`; });
      // Counted once, when the stream is over: ok only with its 200 and its whole body.
      stream.on('close', () => {
        if (ended && status === 200 && !error) result.ok++;
        else if (stream.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM && status === 0) result.refused++;
        else fail(error || `status ${status}, rst code ${stream.rstCode}, ended ${ended}`);
        done();
      });
    });
    const lanes = Array.from({ length: opts.streams }, async () => {
      while (performance.now() < until) await one();
    });
    await Promise.all(lanes);
    (session as http2.ClientHttp2Session | null)?.close();
  }

  await Promise.all(Array.from({ length: opts.clients }, client));
  return result;
}
