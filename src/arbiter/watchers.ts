/** Owns the file watchers that ask the master to reload: the config file (reloadOnConfigChange)
 *  and, in development (--reload), the app's directory. chokidar follows a file through the ways
 *  editors save it (written in place, renamed over, deleted and written again). Changes are
 *  debounced, so a save that touches several files is one reload. */

import { dirname, resolve } from 'node:path';
import type { FSWatcher } from 'chokidar' with { 'resolution-mode': 'import' };
import { parseAppSpec } from '../config/app-spec';
import type { Config } from '../config/settings';
import type { Logger } from '../log/logger';

type Chokidar = typeof import('chokidar', { with: { 'resolution-mode': 'import' } });

const DEBOUNCE_MS = 300;
/** What --reload reacts to: code and data the app loads, not logs, pidfiles or sockets beside it. */
const CODE = /\.(?:[cm]?[jt]sx?|json)$/;

export interface Watchers {
  /** Watch what `config` asks for (called at start and after each reload). */
  update(config: Config, configFile: string | null, cwd: string): void;
  close(): void;
}

/** chokidar 5 is ESM-only. Where require(esm) is on (the default from Node 20.19 and 22.12; off in
 *  22.0-22.11 and under --no-experimental-require-module) it loads at once; elsewhere through
 *  import(), which module node16 leaves a real import() in this CommonJS file. */
function loadChokidar(): Chokidar | Promise<Chokidar> {
  return process.features.require_module ? require('chokidar') as Chokidar : import('chokidar');
}

function debounced(fn: (why: string) => void): (why: string) => void {
  let timer: NodeJS.Timeout | null = null;
  return (why) => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => { timer = null; fn(why); }, DEBOUNCE_MS);
  };
}

/** `onChange`: reload; `onCertificates`: the certificate or key file changed (a rotation, no reload). */
export function createWatchers(log: Logger, onChange: (why: string) => void, onCertificates: (why: string) => void = () => undefined): Watchers {
  const fire = debounced(onChange);
  const fireCertificates = debounced(onCertificates);
  /** A key's entry exists from open() on; its watcher may come later, when chokidar is imported. */
  const active = new Map<string, { watcher: FSWatcher | null }>();
  let chokidar: Chokidar | Promise<Chokidar> | null = null;

  const open = (key: string, paths: string | string[], options: { ignored?: (p: string, stats?: { isFile(): boolean }) => boolean },
    why: (p: string) => string, fireWith: (why: string) => void = fire) => {
    if (active.has(key)) return;
    const entry: { watcher: FSWatcher | null } = { watcher: null };
    active.set(key, entry);
    const start = ({ watch }: Chokidar) => {
      if (active.get(key) !== entry) return; // closed while chokidar was being imported
      const w = watch(paths, { ignoreInitial: true, ...options });
      // A file that disappears is not a save (an editor's rename sends add/change right after).
      w.on('all', (event, path) => { if (event !== 'unlink' && event !== 'unlinkDir') fireWith(why(path)); });
      w.on('error', (err) => log.warning(`file watcher: ${(err as Error).message}`, { event: 'watch.error', key }));
      entry.watcher = w;
    };
    chokidar ??= loadChokidar();
    if (chokidar instanceof Promise) {
      chokidar.then(start, (err: Error) => {
        log.error(`file watcher: cannot load chokidar: ${err.message}`, { event: 'watch.error', key });
      });
    } else start(chokidar);
  };
  const close = (key: string) => {
    void active.get(key)?.watcher?.close();
    active.delete(key);
  };

  return {
    update(config, configFile, cwd) {
      const fileKey = `config:${configFile}`;
      for (const key of active.keys()) if (key.startsWith('config:') && key !== fileKey) close(key);
      if (config.reloadOnConfigChange && configFile) open(fileKey, configFile, {}, () => `config file ${configFile} changed`);
      else close(fileKey);

      const pair = config.certfile && config.keyfile
        ? [config.certfile, config.keyfile, ...config.sni.flatMap((e) => [e.certfile, e.keyfile])].map((p) => resolve(cwd, p)) : null;
      const certKey = `certs:${pair?.join('|')}`;
      for (const key of active.keys()) if (key.startsWith('certs:') && key !== certKey) close(key);
      if (pair) open(certKey, pair, {}, (p) => `${p} changed`, fireCertificates);

      const spec = config.app ? parseAppSpec(config.app) : null;
      const appDir = spec && typeof spec !== 'string' ? dirname(resolve(cwd, spec.module)) : null;
      const appKey = `app:${appDir}`;
      for (const key of active.keys()) if (key.startsWith('app:') && key !== appKey) close(key);
      if (config.reload && appDir) {
        open(appKey, appDir, {
          ignored: (p, stats) => /(^|\/)(node_modules|\.[^/]+)(\/|$)/.test(p.slice(appDir.length)) || (stats?.isFile() === true && !CODE.test(p)),
        }, (p) => `${p} changed (--reload)`);
      } else close(appKey);
    },
    close() {
      for (const key of [...active.keys()]) close(key);
    },
  };
}
