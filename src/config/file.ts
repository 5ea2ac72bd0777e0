/** Owns finding and reading the config file. Every read is fresh (a HUP must see the file as it is
 *  now, never Node's module cache), and nothing is written to disk (a config may sit in a read-only
 *  directory): TypeScript and CommonJS configs are compiled in memory (compile.ts), ESM ones
 *  imported under a new URL each time. Each read keeps a snapshot of what ran, for the workers. */

import { readFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Loader } from 'cosmiconfig';
import { exportedValue, MissingTool, recorder, type ConfigSnapshot, type Recorder } from './compile';
import { ConfigError } from './errors';
import { isEsmJs } from '../module-type';
import { isTypeScriptFile } from '../typescript-files';

const NAMES = ['forkd.config.ts', 'forkd.config.mts', 'forkd.config.cts', 'forkd.config.js', 'forkd.config.mjs',
  'forkd.config.cjs', 'forkd.config.json', 'forkd.config.yaml', 'forkd.config.yml'];
const RC = ['', '.json', '.yaml', '.yml', '.js', '.ts', '.mjs', '.cjs'];
export const SEARCH_PLACES: readonly string[] = [
  ...NAMES, ...RC.map((ext) => `.forkdrc${ext}`), ...RC.map((ext) => `.config/forkdrc${ext}`), 'package.json',
];

export interface ConfigFile {
  readonly path: string;
  readonly values: Readonly<Record<string, unknown>>;
  /** What ran, for workers to run again (null for JSON and YAML, which hold no hooks). */
  readonly snapshot: ConfigSnapshot | null;
}

/** A token that makes each ESM import of a config a new module record (Node never evicts the old
 *  one, so each reload of an ESM config keeps one small module in memory). */
function freshUrl(file: string): string {
  return `${pathToFileURL(file).href}?forkd-load=${process.hrtime.bigint()}`;
}

/** Loads a JavaScript or TypeScript config, keeping in `recording` what ran. (An ES module is
 *  imported from the file, which cosmiconfig has just read as `source`: the two differ only if the
 *  file is saved at that very moment.) */
const loadModule = (recording: Recorder): Loader => async (file, source) => {
  const esm = () => { recording.isModule(file, source); return import(freshUrl(file)); };
  if (isEsmJs(file)) return esm();
  try {
    return recording.runCommonJs(file, source);
  } catch (err) {
    // A .js file written with import/export in a package that is not "type": "module".
    if (err instanceof SyntaxError && /\b(import|export)\b/.test(err.message) && !isTypeScriptFile(file)) return esm();
    throw err;
  }
};

/** JSON (forkd.config.json, .forkdrc.json, package.json's "forkd") with the engine's own parser.
 *  cosmiconfig's loader (parse-json, with @babel/code-frame) costs the master ~5 MB it would keep
 *  for good, so it is asked only to explain a file that does not parse, in the words it always
 *  used (V8's own message quotes the file's text with its newlines). */
const loadJson: Loader = (file, source) => {
  try {
    return JSON.parse(source) as unknown;
  } catch {
    return cosmiconfigModule().defaultLoaders['.json'](file, source);
  }
};

function describeType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'a non-plain object' : `a ${typeof value}`;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (!value || typeof value !== 'object') return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

const CONFIG_EXTS = ['.ts', '.mts', '.cts', '.js', '.mjs', '.cjs', '.json', '.yaml', '.yml'];

/** `-c /etc/forkd/myapp.config` with no such file means the first of myapp.config.ts, .mts, … that
 *  exists: one unit template serves apps whatever language their config is in. */
function withExtension(path: string): string {
  if (existsSync(path) || CONFIG_EXTS.some((e) => path.endsWith(e))) return path;
  return CONFIG_EXTS.map((e) => path + e).find((p) => existsSync(p)) ?? path;
}

/** cosmiconfig, loaded when there is something for it to find: with the crypto, fs/promises and
 *  JSON-error modules it brings, it was ~16 ms of start-up and ~4 MB of the master (measured). */
function cosmiconfigModule(): typeof import('cosmiconfig') {
  return require('cosmiconfig') as typeof import('cosmiconfig');
}

/** Whether a search in `dir` could find anything: one of the search places other than package.json,
 *  a package.json with a "forkd" key, or options for cosmiconfig itself (its "meta config", read
 *  from the working directory: a "cosmiconfig" key in package.json, a package.yaml, files under
 *  .config/). A package.json that cannot be read or parsed is left to cosmiconfig, to report. */
function mayHoldConfig(dir: string): boolean {
  const pkgKeys = (at: string, keys: readonly string[]) => {
    let pkg: unknown;
    try { pkg = JSON.parse(readFileSync(join(at, 'package.json'), 'utf8')); } catch (err) {
      return (err as NodeJS.ErrnoException).code !== 'ENOENT';
    }
    return !!pkg && typeof pkg === 'object' && keys.some((k) => k in pkg);
  };
  const cwd = process.cwd();
  return SEARCH_PLACES.some((place) => place !== 'package.json' && existsSync(join(dir, place)))
    || existsSync(join(dir, '.config')) || existsSync(join(cwd, '.config')) || existsSync(join(cwd, 'package.yaml'))
    || pkgKeys(dir, ['forkd', 'cosmiconfig']) || (cwd !== dir && pkgKeys(cwd, ['cosmiconfig']));
}

/** Loads the config file named with -c, or the first one found in `searchFrom`; null if none. */
export async function loadConfigFile(opts: { explicit: string | null; searchFrom: string }): Promise<ConfigFile | null> {
  const recording = recorder();
  const js = loadModule(recording);
  const loaders = { '.js': js, '.cjs': js, '.mjs': js, '.ts': js, '.mts': js, '.cts': js, '.json': loadJson };
  const where = opts.explicit ? withExtension(resolve(opts.explicit)) : null;
  if (!where && !mayHoldConfig(opts.searchFrom)) return null;
  const explorer = cosmiconfigModule().cosmiconfig('forkd', {
    searchPlaces: [...SEARCH_PLACES], loaders, searchStrategy: 'none', cache: false,
  });
  let found: { filepath: string; config: unknown; isEmpty?: boolean } | null;
  if (where && !existsSync(where)) throw new ConfigError(`config file not found: ${where}`);
  try {
    found = where ? await explorer.load(where) : await explorer.search(opts.searchFrom);
  } catch (err) {
    if (err instanceof MissingTool) throw new ConfigError(err.message);
    const e = err as Error & { filepath?: string };
    const file = e.filepath ?? where ?? opts.searchFrom;
    const frame = /\n\s+at .*?\(?(\/[^)\n]+)\)?/.exec(e.stack ?? '')?.[1];
    throw new ConfigError(`config file ${file} failed to load: ${e.name ?? 'Error'}: ${e.message}`
      + (frame && !e.message.includes(frame) ? ` (at ${frame})` : ''));
  }
  if (!found) return null;
  let values: unknown;
  let snapshot: ConfigSnapshot | null = null;
  try {
    values = found.isEmpty ? {} : await exportedValue(found.config);
  } catch (err) {
    const e = err as Error;
    throw new ConfigError(`config file ${found.filepath} failed to load: its exported function threw ${e.name}: ${e.message}`);
  } finally {
    snapshot = recording.seal();
  }
  if (values === undefined || values === null) values = {};
  if (!isPlainObject(values)) {
    throw new ConfigError(`config file ${found.filepath} must export an object of settings (or a function returning one);`
      + ` it exported ${describeType(values)}`);
  }
  return { path: found.filepath, values, snapshot };
}
