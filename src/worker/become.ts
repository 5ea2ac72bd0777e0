/** Owns what a child of the master (a worker, or a service) does to become itself before any of
 *  the app's code runs: its user and groups, and the port its inspector opens on should the master
 *  need its stack (timeoutStack: SIGUSR1 opens it there). */

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
