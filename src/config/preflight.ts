/** Owns the checks a config must pass before workers start with it, at start and on every reload:
 *  what only shows when something is opened (a log path, the working directory). Failing here is
 *  one precise error instead of workers that die at boot. */

import { closeSync, openSync, statSync } from 'node:fs';
import { ConfigError } from './errors';
import type { Config } from './settings';

function openable(setting: string, path: string): void {
  try { closeSync(openSync(path, 'a', 0o644)); } catch (err) {
    throw new ConfigError(`cannot open ${setting} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** `cwd` is where the workers will run (chdir, resolved). */
export function preflight(config: Config, cwd: string): void {
  let isDir = false;
  try { isDir = statSync(cwd).isDirectory(); } catch { /* reported below */ }
  if (!isDir) throw new ConfigError(`cannot change to directory ${config.chdir ?? cwd} (chdir): no such directory`);
  if (config.errorLog !== '-') openable('errorLog', config.errorLog);
  if (config.accessLog && config.accessLog !== '-') openable('accessLog', config.accessLog);
}
