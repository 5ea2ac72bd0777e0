/** Owns requestDeadline: a response not finished within it is ended by forkd. Swept on a timer
 *  over the unit's responses in flight (no timer per request). When one passes its deadline:
 *  - the app is told first: `'deadline'` is emitted on the request, and a fetch handler's
 *    Request.signal is aborted (a TimeoutError); an app that ends the response then has answered;
 *  - if nothing was written yet, the client gets 503 (504 through a fetch handler) and the
 *    connection closes; if the response had begun, its connection (or h2 stream) is destroyed;
 *  - whatever the app writes to it later is dropped (its methods become no-ops), so that a late
 *    `res.end(…)` or `res.setHeader(…)` cannot throw in the app or kill the worker;
 *  - it is logged once, with method, target (escaped), age and client, and counted. */

import type http from 'node:http';
import type { Connections } from './connections';
import { isH2 } from './h2';
import { describe, forEachInFlight } from './in-flight';
import { abortFetch, keepFetchAborters } from './fetch-abort';
import { ageMs } from './responses';
import type { Logger } from '../log/logger';

const kPassed = Symbol('forkd.deadlinePassed');
type Marked = http.ServerResponse & { [kPassed]?: true };

/** Whether forkd ended `res` because its deadline passed. */
export const deadlinePassed = (res: http.ServerResponse): boolean => (res as Marked)[kPassed] === true;

export interface Deadlines {
  /** Responses ended for their deadline since the last call. */
  take(): number;
  stop(): void;
}

/** Every method through which an app writes a response: no-ops once forkd has ended it. */
const WRITERS = ['setHeader', 'appendHeader', 'removeHeader', 'setHeaders', 'writeHead', 'write', 'end', 'flushHeaders', 'writeContinue', 'writeEarlyHints', 'addTrailers'] as const;

function silence(res: http.ServerResponse): void {
  const r = res as unknown as Record<string, unknown>;
  for (const name of WRITERS) {
    if (typeof r[name] !== 'function') continue;
    // A write's or an end's callback still comes (code awaiting it must not hang), and a write
    // says there is room.
    r[name] = (...args: unknown[]) => {
      const done = args.findLast((a) => typeof a === 'function') as (() => void) | undefined;
      if (done && (name === 'write' || name === 'end')) process.nextTick(done);
      return name === 'write' ? true : res;
    };
  }
  // An error of the ended response (a write the app had queued) has no one to go to.
  res.on('error', () => undefined);
}

function answer(res: http.ServerResponse, status: number): void {
  const h2 = isH2(res.req);
  // None of what the app had set: a Content-Length or Content-Encoding of its own would lie about this body.
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  if (!h2) res.setHeader('connection', 'close');
  res.statusCode = status;
  res.setHeader('content-type', 'text/plain');
  res.end(`${status === 504 ? 'Gateway Timeout' : 'Service Unavailable'}: the request deadline passed\n`);
}

export function watchDeadlines(sockets: Connections, deadlineMs: number, log: Logger): Deadlines {
  keepFetchAborters();
  let passed = 0;
  const sweep = () => {
    const now = performance.now();
    forEachInFlight(sockets, (res) => {
      const age = ageMs(res, now);
      if (age === null || age < deadlineMs || (res as Marked)[kPassed] || res.writableEnded) return;
      (res as Marked)[kPassed] = true;
      passed++;
      const what = describe(res, now);
      const req = res.req;
      // The app first. A listener that throws is logged, not let loose in this timer (it would
      // end the worker and every request in flight).
      let viaFetch = false;
      try {
        req.emit('deadline');
        viaFetch = abortFetch(req);
      } catch (err) {
        log.error('a \'deadline\' listener threw', { event: 'app.error', method: what.method, url: what.path, error: err });
      }
      let done: string;
      if (res.writableEnded) {
        done = 'the app answered it when told';
      } else if (!res.headersSent && !res.destroyed) {
        const status = viaFetch ? 504 : 503;
        answer(res, status);
        done = `answered ${status}`;
      } else {
        res.destroy();
        done = isH2(req) ? 'the response had begun: its stream was reset' : 'the response had begun: its connection was closed';
      }
      if (!done.startsWith('the app')) silence(res);
      log.warning(`request deadline (${deadlineMs / 1000} s) passed: ${what.method} ${what.path}, running ${((what.ageMs ?? 0) / 1000).toFixed(1)} s`
        + `${what.client ? `, client ${what.client}` : ''}: ${done}`, { event: 'request.deadline', method: what.method, path: what.path, ageMs: what.ageMs });
    });
  };
  const timer = setInterval(sweep, Math.max(50, Math.min(1000, deadlineMs / 4)));
  timer.unref();
  return {
    take() { const n = passed; passed = 0; return n; },
    stop() { clearInterval(timer); },
  };
}
