/** Owns forkd's one use of Node's internals for sockets: net's `_createServerHandle`, which binds a
 *  TCP or Unix socket without listening on it (as node:cluster does), or wraps an fd this process
 *  was given; libuv's SO_REUSEPORT flag for it, and the probe that tells whether this Node passes
 *  that flag on. listeners.ts decides what to bind; this says how. */

import net from 'node:net';
import { closeSync } from 'node:fs';
import { getSystemErrorName } from 'node:util';

export class BindError extends Error {}

/** The part of a libuv TCP/Pipe handle this module uses. */
export interface RawHandle {
  readonly fd: number;
  getsockname?(out: Record<string, unknown>): number;
  listen(backlog: number): number;
  close(): void;
}

export type CreateServerHandle = (address: string, port: number, addressType: number, fd?: number, flags?: number)
  => RawHandle | number;

/** libuv's UV_TCP_REUSEPORT, which net's _createServerHandle passes on to bind() and bind6() in the
 *  Node lines that know it; the others drop it. */
export const UV_TCP_REUSEPORT = 2;

export function createServerHandle(): CreateServerHandle {
  const fn = (net as unknown as { _createServerHandle?: CreateServerHandle })._createServerHandle;
  if (typeof fn !== 'function') throw new BindError('this Node.js has no net._createServerHandle; forkd needs Node 20');
  return fn;
}

export function fail(bind: string, errno: number, hint = ''): never {
  const name = getSystemErrorName(errno);
  const why = name === 'EADDRINUSE' ? 'address already in use' : name === 'EACCES' ? 'permission denied' : name;
  throw new BindError(`cannot bind ${bind}: ${why}${hint}`);
}

export function portOf(handle: RawHandle): unknown {
  const out: Record<string, unknown> = {};
  handle.getsockname?.(out);
  return out.port;
}

/** Null if binds here get SO_REUSEPORT, else why not. Asked of the kernel, not of the version (Node
 *  20's bind() ignores flags; 22.12 and 23.1 pass them on): a socket bound with the flag listens,
 *  and a second one bound with it to the same port must hold that port. The first must listen
 *  because libuv binds with SO_REUSEADDR, and on Linux that lets any two sockets bind one port
 *  as long as neither listens. It all happens in one tick: no connection is ever accepted. */
export function reusePortUnsupported(): { readonly unsupported: string } | { readonly probeFailed: string } | null {
  const make = createServerHandle();
  const opened: RawHandle[] = [];
  const open = (port: number) => {
    const h = make('127.0.0.1', port, 4, undefined, UV_TCP_REUSEPORT);
    if (typeof h !== 'number') opened.push(h);
    return h;
  };
  try {
    const first = open(0);
    if (typeof first === 'number') return { probeFailed: `cannot bind 127.0.0.1: ${getSystemErrorName(first)}` };
    const err = first.listen(1);
    if (err !== 0) return { probeFailed: `cannot listen on 127.0.0.1: ${getSystemErrorName(err)}` };
    const port = portOf(first);
    const second = open(port as number);
    return typeof second !== 'number' && portOf(second) === port ? null
      : { unsupported: 'a second socket bound with it to a port in use did not get that port' };
  } finally {
    for (const h of opened) h.close();
  }
}

/** A handle on a socket this process was given as an fd, made only when a worker needs one sent;
 *  it then owns the fd, and `close` closes it through the handle. */
export function lazyHandle(fd: number): { get(): object; close(): void } {
  let handle: RawHandle | null = null;
  return {
    get() {
      if (!handle) {
        const made = createServerHandle()(null as unknown as string, 0, 0, fd);
        if (typeof made === 'number') throw new BindError(`cannot hand fd ${fd} to a worker: ${getSystemErrorName(made)}`);
        handle = made;
      }
      return handle;
    },
    close() {
      if (handle) handle.close(); else { try { closeSync(fd); } catch { /* already closed */ } }
    },
  };
}
