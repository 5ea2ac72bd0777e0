/** Owns telling an ES module from a CommonJS one, as Node does: by the extension, and for `.js` by
 *  the "type" of the nearest package.json. Used to load a config file fresh and an app quickly. */

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** A JavaScript file that Node loads as an ES module. */
export function isEsmJs(file: string): boolean {
  if (file.endsWith('.mjs')) return true;
  if (!file.endsWith('.js')) return false;
  for (let dir = dirname(file); ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try { return (JSON.parse(readFileSync(pkg, 'utf8')) as { type?: unknown }).type === 'module'; } catch { return false; }
    }
    if (dirname(dir) === dir) return false;
  }
}

/** A module's namespace as `require` or `import` gives it: an ES module's (require(esm), import())
 *  or one compiled from ESM syntax (`__esModule`), rather than a CommonJS `module.exports`. */
export function isModuleNamespace(value: unknown): value is Record<string, unknown> {
  return !!value && typeof value === 'object'
    && (!!(value as { __esModule?: unknown }).__esModule || Object.prototype.toString.call(value) === '[object Module]');
}

/** A JavaScript file that Node loads as CommonJS. */
export function isCommonJs(file: string): boolean {
  return file.endsWith('.cjs') || (file.endsWith('.js') && !isEsmJs(file));
}
