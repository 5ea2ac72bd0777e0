/** Owns what a child of the master (a worker, or a service) does to become itself before any of
 *  the app's code runs: its spec from the environment, its user and groups, the port its inspector
 *  opens on should the master need its stack (timeoutStack: SIGUSR1 opens it there); and how it
 *  writes to the master. */

import net from 'node:net';
import type { WorkerSpec } from '../ipc/messages';

/** A port for the inspector, should the master need this process's stack. */
export function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const probe = net.createServer();
    probe.once('error', fail);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => ok(port));
    });
  });
}

/** Becomes the configured user before anything of the app runs: groups first, then gid, then uid
 *  (once the uid is dropped, nothing else may be changed). A master running as root starts its
 *  children as the user already, unless --initgroups asks for the user's groups. */
export function dropPrivileges(identity: WorkerSpec['identity']): void {
  if (!identity || (process.getuid!() === identity.uid && process.getgid!() === identity.gid && process.getuid!() !== 0)) return;
  if (identity.initgroups) (process as unknown as { initgroups(user: string, gid: number): void }).initgroups(identity.user, identity.gid);
  else process.setgroups!([identity.gid]);
  process.setgid!(identity.gid);
  process.setuid!(identity.uid);
}

/** The spec the master put in `envName` (JSON), taken out of the environment so that the app does
 *  not see it; null when there is none, or no IPC channel (started by hand, not by the master). */
export function takeSpec<T>(envName: string): T | null {
  const raw = process.env[envName];
  if (!raw || typeof process.send !== 'function') return null;
  delete process.env[envName];
  return JSON.parse(raw) as T;
}

/** Sends `msg` to the master; resolves once it is written, or at once when the channel is gone. */
export function sendToMaster(msg: object): Promise<void> {
  return new Promise((done) => {
    if (!process.connected) { done(); return; }
    process.send!(msg, undefined, {}, () => done());
  });
}
