/** Owns how the request deadline (deadline.ts) reaches a fetch handler: the AbortController
 *  behind each Request's signal is kept on the request, only while a deadline is on (no cost per
 *  request otherwise), so that the deadline can abort it. */

import type { IncomingMessage } from 'node:http';

const kAborter = Symbol('forkd.fetchAborter');
type WithAborter = IncomingMessage & { [kAborter]?: AbortController };

let kept = false;

/** From now on each fetch request's controller is kept (the unit has a requestDeadline). */
export function keepFetchAborters(): void { kept = true; }

/** Called by the fetch adapter for each request. */
export function keepAborter(req: IncomingMessage, aborter: AbortController): void {
  if (kept) (req as WithAborter)[kAborter] = aborter;
}

/** The request deadline passed: aborts a fetch handler's Request.signal with a TimeoutError.
 *  False when `req` was not served by a fetch handler. */
export function abortFetch(req: IncomingMessage): boolean {
  const aborter = (req as WithAborter)[kAborter];
  if (!aborter) return false;
  aborter.abort(new DOMException('the request deadline passed', 'TimeoutError'));
  return true;
}
