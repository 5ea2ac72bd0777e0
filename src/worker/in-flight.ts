/** Owns reading the requests a serving unit has in flight, from its connections (the response
 *  Node is writing on an HTTP/1.1 connection, the responses on an h2 session's streams): for the
 *  heartbeat's counts, the request deadline, and the list a hung worker's timeout log shows. The
 *  list is also reachable from outside the unit's event loop: the master reads it through the
 *  inspector of a hung worker, while its code is paused (arbiter/stack-capture.ts), by calling
 *  the function registered under IN_FLIGHT_GLOBAL. */

import type http from 'node:http';
import type { Connections } from './connections';
import { responseOn } from './drain';
import { ageMs } from './responses';
import { escapeControl } from '../log/escape';
import type { InFlight } from '../arbiter/stack-capture';

/** The global under which each serving unit (a process, or a thread) registers its list. */
export const IN_FLIGHT_GLOBAL = 'forkd.inFlight';


/** Calls `fn` for each response in flight on `sockets`. */
export function forEachInFlight(sockets: Connections, fn: (res: http.ServerResponse) => void): void {
  for (const conn of sockets.all()) {
    if (conn.streams) { for (const res of conn.streams) fn(res); continue; }
    const res = responseOn(conn.socket);
    if (res) fn(res);
  }
}

export function describe(res: http.ServerResponse, nowMs: number): InFlight {
  const req = res.req as http.IncomingMessage | undefined;
  const target = req?.url ?? '';
  const age = ageMs(res, nowMs);
  return {
    method: escapeControl(req?.method ?? '?'),
    path: escapeControl(target.length > 200 ? `${target.slice(0, 200)}…` : target),
    ageMs: age === null ? null : Math.round(age),
    client: req?.socket?.remoteAddress ?? null,
  };
}

/** The requests in flight, oldest first, at most `max`. */
export function inFlightList(sockets: Connections, max = 20): InFlight[] {
  const now = performance.now();
  const out: InFlight[] = [];
  forEachInFlight(sockets, (res) => { out.push(describe(res, now)); });
  return out.sort((a, b) => (b.ageMs ?? -1) - (a.ageMs ?? -1)).slice(0, max);
}

/** Registers this unit's list for the inspector (one unit per process or thread: its global). */
export function registerInFlight(sockets: Connections): void {
  (globalThis as Record<symbol, unknown>)[Symbol.for(IN_FLIGHT_GLOBAL)] = () => JSON.stringify(inFlightList(sockets));
}
