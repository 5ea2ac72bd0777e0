/** Owns the checks a config must pass before workers start with it, at start and on every reload:
 *  what only shows when something is opened (a log path, the working directory). Failing here is
 *  one precise error instead of workers that die at boot. */

import { spawnSync } from 'node:child_process';
import { closeSync, constants, fchownSync, fstatSync, openSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError } from './errors';
import { resolveGroup, resolveIdentity, type Identity } from './identity';
import { describeOrigin, type Resolved } from './layers';
import { reusePortUnsupported } from '../net/handles';

const APPEND = constants.O_WRONLY | constants.O_APPEND | constants.O_NOFOLLOW | constants.O_NONBLOCK;

/** Opens (creating) a log file. When workers run as another user, a file the master creates is
 *  made theirs (as gunicorn does), or they could not write it; an existing file is made theirs only
 *  at start, and only if it is a plain root-owned file with one link: never through a symlink or a
 *  hard link that the workers' user could have planted to have the master chown something else. */
export function ensureLogFile(setting: string, path: string, identity: Identity | null, opts: { existing?: boolean } = {}): void {
  let fd: number;
  let created = false;
  const code = (err: unknown) => (err as NodeJS.ErrnoException).code ?? (err as Error).message;
  try {
    fd = openSync(path, APPEND | constants.O_CREAT | constants.O_EXCL, 0o644);
    created = true;
  } catch (err) {
    if (code(err) !== 'EEXIST') throw new ConfigError(`cannot open ${setting} ${path}: ${code(err)}`);
    try { fd = openSync(path, APPEND); } catch (again) {
      throw new ConfigError(`cannot open ${setting} ${path}: ${code(again) === 'ELOOP' ? 'it is a symlink' : code(again)}`);
    }
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return;
    const plain = st.uid === 0 && st.nlink === 1;
    if (identity && (created || (opts.existing !== false && plain)) && (st.uid !== identity.uid || st.gid !== identity.gid)) {
      fchownSync(fd, identity.uid, identity.gid);
    }
  } catch (err) {
    throw new ConfigError(`cannot give ${setting} ${path} to uid ${identity!.uid}: ${code(err)}`);
  } finally {
    closeSync(fd);
  }
}

/** The worker entry, which the workers' user must be able to read (as src/arbiter spawns it). */
const WORKER_ENTRY = join(__dirname, '..', 'worker', 'main.js');

/** A root master starts workers as their user directly (worker-handle.ts): that user must be able
 *  to run this node binary and read forkd's code, or every spawn fails with EACCES. A Node from
 *  ~/.nvm or ~/.cache under /root is the usual cause. Asked of the kernel, as that user. */
function checkRunnableBy(identity: Identity): void {
  const probe = spawnSync('/bin/sh', ['-c', 'test -x "$1" || exit 3; test -r "$2" || exit 4', 'sh', process.execPath, WORKER_ENTRY],
    { uid: identity.uid, gid: identity.gid, stdio: 'ignore' });
  if (probe.status === 0 || probe.error) return; // no /bin/sh to ask: the spawn will tell
  const what = probe.status === 3 ? `execute ${process.execPath}` : `read ${WORKER_ENTRY}`;
  throw new ConfigError(`cannot run workers as user ${identity.user} (uid ${identity.uid}, gid ${identity.gid}): `
    + `that user cannot ${what} (a directory on its path is closed to it); install Node.js and forkd where `
    + 'that user can reach them, or choose another user');
}

/** reusePort needs a Node that passes SO_REUSEPORT to the socket (22.12+, 23.1+). A probe asks the
 *  running one, so that a backport, or a build without it, is seen as it is. Also for --check-config. */
export function checkReusePort({ config, origins }: Resolved): void {
  if (!config.reusePort) return;
  const why = reusePortUnsupported();
  if (why === null) return;
  const setting = `reusePort = true from ${describeOrigin(origins.reusePort)}`;
  if ('probeFailed' in why) {
    throw new ConfigError(`cannot honour ${setting}: could not tell whether Node.js ${process.version} binds with SO_REUSEPORT `
      + `(probing on 127.0.0.1 failed: ${why.probeFailed}); set reusePort off, or run where 127.0.0.1 can be bound`);
  }
  throw new ConfigError(`cannot honour ${setting}: Node.js ${process.version} `
    + `cannot bind with SO_REUSEPORT (${why.unsupported}); it needs Node.js 22.12 or later (23.1+ on 23), or reusePort off`);
}

/** Checks a config for workers that will run in `cwd` (chdir, resolved) and returns who they run as. */
export function preflight(resolved: Resolved, cwd: string): Identity | null {
  const { config } = resolved;
  let isDir = false;
  try { isDir = statSync(cwd).isDirectory(); } catch { /* reported below */ }
  if (!isDir) throw new ConfigError(`cannot change to directory ${config.chdir ?? cwd} (chdir): no such directory`);
  const identity = resolveIdentity(config.user, config.group);
  if (identity && process.getuid?.() !== 0 && (identity.uid !== process.getuid?.() || identity.gid !== process.getgid?.())) {
    throw new ConfigError(`cannot run workers as user ${identity.user} (uid ${identity.uid}, gid ${identity.gid}): `
      + `forkd runs as uid ${process.getuid?.()}, and only root can switch users`);
  }
  if (identity && process.getuid?.() === 0 && identity.uid !== 0 && !config.initgroups) checkRunnableBy(identity);
  checkReusePort(resolved);
  if (config.socketGroup !== null) resolveGroup(config.socketGroup, 'socketGroup');
  if (config.errorLog !== '-') ensureLogFile('errorLog', config.errorLog, identity);
  if (config.accessLog && config.accessLog !== '-') ensureLogFile('accessLog', config.accessLog, identity);
  return identity;
}
