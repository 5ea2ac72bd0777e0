/** Owns the sd_notify protocol: telling systemd READY=1, RELOADING=1, STOPPING=1, STATUS=,
 *  WATCHDOG=1 and MAINPID= over the datagram socket named by NOTIFY_SOCKET. Without NOTIFY_SOCKET
 *  everything here is a no-op.
 *
 *  Node cannot send a Unix datagram (dgram knows only UDP), so messages go through systemd's own
 *  `systemd-notify`, which is on every machine that sets NOTIFY_SOCKET, needs no compiler, and
 *  reaches path and abstract ("@name") sockets alike. The npm packages that could send from this
 *  process were no better: unix-dgram needs a compiler, node-unix-socket cannot address an abstract
 *  socket and its lockfile breaks `npm ci` (its platform packages are not all published).
 *  - Run as root (a system service whose master keeps root to bind), systemd-notify sends with the
 *    master's pid, so NotifyAccess=main suffices; it is told --no-block, as its BARRIER=1 would come
 *    from its own pid.
 *  - Run as another user it sends from its own pid, which systemd accepts with NotifyAccess=all (the
 *    shipped units set it; USR2 needs it anyway). It then waits for systemd to take the message
 *    (BARRIER=1), or systemd might find its pid gone before it could tell which service sent it.
 *  Where systemd-notify is not installed, python3 sends them (from its own pid).
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

/** CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants it in MONOTONIC_USEC (libuv's hrtime is
 *  CLOCK_MONOTONIC on Linux). */
export function monotonicUsec(): string {
  return String(process.hrtime.bigint() / 1000n);
}

function render(fields: NotifyFields): string {
  // A newline inside a value would start another field: STATUS text is flattened.
  return Object.entries(fields).map(([k, v]) => `${k}=${String(v).replace(/\n/g, ' ')}`).join('\n');
}

/** The fallback where systemd-notify is not installed (a slim container under an sd_notify-aware
 *  runtime): python3's socket module sends the datagram, from its own pid (NotifyAccess=all). */
const PYTHON_SENDER = [
  'import os, socket, sys',
  'name = os.environ["NOTIFY_SOCKET"]',
  'addr = "\\0" + name[1:] if name.startswith("@") else name',
  's = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)',
  's.sendto(sys.argv[1].encode(), addr)',
].join('\n');

function viaPython(socketName: string): (message: string) => Promise<void> {
  return (message) => run('python3', ['-c', PYTHON_SENDER, message], socketName);
}

function run(cmd: string, args: string[], socketName: string): Promise<void> {
  return new Promise((ok, fail) => {
    const child = spawn(cmd, args, { env: { ...process.env, NOTIFY_SOCKET: socketName }, stdio: 'ignore' });
    child.once('error', fail);
    child.once('exit', (code) => (code === 0 ? ok() : fail(new Error(`${cmd} exited with code ${code}`))));
  });
}

function viaSystemdNotify(socketName: string): (message: string) => Promise<void> {
  const root = process.getuid?.() === 0;
  return (message) => run('systemd-notify', [...(root ? ['--no-block'] : []), ...message.split('\n')], socketName);
}

export function createNotifier(env: Readonly<Record<string, string | undefined>>, log: Warn): Notifier {
  const socketName = env.NOTIFY_SOCKET;
  if (!socketName) return { enabled: false, send: () => undefined, flush: async () => undefined };
  const primary = viaSystemdNotify(socketName);
  const fallback = viaPython(socketName);
  let usePython = false;
  const deliver = async (message: string) => {
    if (!usePython) {
      try { await primary(message); return; } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        usePython = true; // not installed: python3 from here on
      }
    }
    await fallback(message);
  };
  let chain: Promise<void> = Promise.resolve();
  let warned = false;
  return {
    enabled: true,
    send(fields) {
      const message = render(fields);
      chain = chain.then(() => deliver(message)).catch((err: Error) => {
        if (warned) return;
        warned = true;
        log.warning(`cannot notify systemd at ${socketName}: ${err.message}`, { event: 'systemd.notifyFailed' });
      });
    },
    flush: () => chain,
  };
}
