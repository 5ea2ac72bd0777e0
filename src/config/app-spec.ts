/** Owns the APP grammar: `path/to/module[:export]` or `path/to/module:factory()`, and where the
 *  module named so is. */

import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';

export interface AppSpec {
  readonly module: string;
  /** The export to use; null means the module's default export. */
  readonly exportName: string | null;
  /** `:name()`: call the export (sync or async) once per worker and serve what it returns. */
  readonly call: boolean;
}

const IDENT = /^[A-Za-z_$][\w$]*$/;

/** Returns the parts of APP, or a sentence saying what is wrong. */
export function parseAppSpec(input: string): AppSpec | string {
  const s = input.trim();
  if (s.length === 0) return 'APP is empty';
  const colon = s.lastIndexOf(':');
  if (colon <= 0) return { module: s, exportName: null, call: false };
  const tail = s.slice(colon + 1);
  const call = tail.endsWith('()');
  const name = call ? tail.slice(0, -2) : tail;
  if (!IDENT.test(name)) {
    return `${JSON.stringify(tail)} after ":" is not an export name (as in app.js:server or app.js:createApp())`;
  }
  return { module: s.slice(0, colon), exportName: name, call };
}

/** What APP's module may omit, in the order tried. */
export const APP_EXTENSIONS: readonly string[] = ['', '.js', '.mjs', '.cjs', '.ts', '.mts', '.cts', '/index.js', '/index.mjs', '/index.ts'];

/** The file APP's `module` names, from `cwd`: a path (with or without its extension), or a package
 *  name resolved from there. Null if there is none. */
export function findAppModule(module: string, cwd: string): string | null {
  const base = resolve(cwd, module);
  for (const ext of APP_EXTENSIONS) {
    const p = base + ext;
    if (existsSync(p) && statSync(p).isFile()) return p;
  }
  if (!module.startsWith('.') && !module.startsWith('/')) {
    try { return createRequire(resolve(cwd, 'package.json')).resolve(module); } catch { /* none */ }
  }
  return null;
}
