/** Owns the checks a config must pass before workers start with it, at start and on every reload:
 *  what only shows when something is opened (a log path, the working directory). Failing here is
 *  one precise error instead of workers that die at boot. */

import { closeSync, fchownSync, fstatSync, openSync, statSync } from 'node:fs';
import { ConfigError } from './errors';
import { resolveIdentity, type Identity } from './identity';
import type { Config } from './settings';

/** Opens (creating) a log file; when workers run as another user, makes it theirs, as gunicorn
 *  does, or they could not write it. */
export function ensureLogFile(setting: string, path: string, identity: Identity | null): void {
  let fd: number;
  try { fd = openSync(path, 'a', 0o644); } catch (err) {
    throw new ConfigError(`cannot open ${setting} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    if (identity && fstatSync(fd).isFile()) fchownSync(fd, identity.uid, identity.gid);
  } catch (err) {
    throw new ConfigError(`cannot give ${setting} ${path} to uid ${identity!.uid}: ${(err as NodeJS.ErrnoException).code}`);
  } finally {
    closeSync(fd);
  }
}

/** Checks `config` for workers that will run in `cwd` (chdir, resolved) and returns who they run as. */
export function preflight(config: Config, cwd: string): Identity | null {
  let isDir = false;
  try { isDir = statSync(cwd).isDirectory(); } catch { /* reported below */ }
  if (!isDir) throw new ConfigError(`cannot change to directory ${config.chdir ?? cwd} (chdir): no such directory`);
  const identity = resolveIdentity(config.user, config.group);
  if (config.errorLog !== '-') ensureLogFile('errorLog', config.errorLog, identity);
  if (config.accessLog && config.accessLog !== '-') ensureLogFile('accessLog', config.accessLog, identity);
  return identity;
}
