/** Owns the sd_notify protocol: telling systemd READY=1, RELOADING=1, STOPPING=1, STATUS=,
 *  WATCHDOG=1 and MAINPID= over the datagram socket named by NOTIFY_SOCKET. Without NOTIFY_SOCKET
 *  everything here is a no-op.
 *
 *  Node cannot send a Unix datagram itself (dgram knows only UDP). What a user installing from npm
 *  can rely on, without a compiler:
 *  1. node-unix-socket, an optional dependency with prebuilt binaries (N-API, no build step): it
 *     sends from this process, so systemd sees the master's own pid and NotifyAccess=main is
 *     enough. It cannot address an abstract socket ("@name").
 *  2. Otherwise, or for an abstract socket, systemd's own `systemd-notify`, which is wherever
 *     systemd is. Run as root it sends with the master's pid; as another user, with its own pid,
 *     which systemd accepts only with NotifyAccess=all (the shipped units set it, and USR2 needs it).
 *  Messages are sent one at a time, in order: RELOADING=1 must never overtake the READY=1 before it. */

import { spawn } from 'node:child_process';

export type NotifyFields = Readonly<Record<string, string | number>>;

export interface Notifier {
  readonly enabled: boolean;
  send(fields: NotifyFields): void;
  /** Resolves once every message queued so far has been handed to the socket. */
  flush(): Promise<void>;
}

interface Warn { warning(message: string, meta?: Readonly<Record<string, unknown>>): void }

interface DgramSocketLike {
  sendTo(buf: Buffer, offset: number, length: number, path: string, cb?: (err?: Error) => void): void;
  close(): void;
}

/** CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants it in MONOTONIC_USEC (libuv's hrtime is
 *  CLOCK_MONOTONIC on Linux). */
export function monotonicUsec(): string {
  return String(process.hrtime.bigint() / 1000n);
}

function render(fields: NotifyFields): string {
  // A newline inside a value would start another field: STATUS text is flattened.
  return Object.entries(fields).map(([k, v]) => `${k}=${String(v).replace(/\n/g, ' ')}`).join('\n');
}

function viaAddon(path: string): ((message: string) => Promise<void>) | null {
  let socket: DgramSocketLike;
  try {
    const { DgramSocket } = require('node-unix-socket') as { DgramSocket: new () => DgramSocketLike };
    socket = new DgramSocket();
  } catch {
    return null;
  }
  return (message) => new Promise((ok, fail) => {
    const buf = Buffer.from(message);
    socket.sendTo(buf, 0, buf.length, path, (err) => (err ? fail(err) : ok()));
  });
}

function viaSystemdNotify(socketName: string): (message: string) => Promise<void> {
  return (message) => new Promise((ok, fail) => {
    // --no-block: no BARRIER=1 round trip, which would come from systemd-notify's own pid.
    const child = spawn('systemd-notify', ['--no-block', ...message.split('\n')], {
      env: { ...process.env, NOTIFY_SOCKET: socketName }, stdio: 'ignore',
    });
    child.once('error', fail);
    child.once('exit', (code) => (code === 0 ? ok() : fail(new Error(`systemd-notify exited with code ${code}`))));
  });
}

export function createNotifier(env: Readonly<Record<string, string | undefined>>, log: Warn): Notifier {
  const socketName = env.NOTIFY_SOCKET;
  if (!socketName) return { enabled: false, send: () => undefined, flush: async () => undefined };
  const addon = socketName.startsWith('/') ? viaAddon(socketName) : null;
  const fallback = viaSystemdNotify(socketName);
  let chain: Promise<void> = Promise.resolve();
  let warned = false;
  const deliver = async (message: string) => {
    try {
      if (addon) { await addon(message); return; }
    } catch { /* try systemd-notify */ }
    try { await fallback(message); } catch (err) {
      if (!warned) {
        warned = true;
        log.warning(`cannot notify systemd at ${socketName}: ${(err as Error).message}`, { event: 'systemd.notifyFailed' });
      }
    }
  };
  return {
    enabled: true,
    send(fields) {
      const message = render(fields);
      chain = chain.then(() => deliver(message));
    },
    flush: () => chain,
  };
}
