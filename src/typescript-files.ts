/** Owns which files forkd treats as TypeScript, and finding the packages that loading them takes:
 *  `typescript` (config files) and `ts-node` (apps). Both are optional peer dependencies, so that a
 *  JavaScript deployment carries neither; each is looked for beside the file first (the app's own),
 *  then beside forkd. */

import { createRequire } from 'node:module';
import { dirname, extname, join } from 'node:path';

const TS_EXTS: ReadonlySet<string> = new Set(['.ts', '.mts', '.cts']);

export function isTypeScriptFile(file: string): boolean {
  return TS_EXTS.has(extname(file));
}

export type TypeScriptTool = 'typescript' | 'ts-node';

export interface TypeScriptTools {
  /** Where the tool's entry is. */
  path(tool: TypeScriptTool): string;
  load<T>(tool: TypeScriptTool): T;
}

/** Finds `tools` for `file`, or says in one line which to install. */
export function typeScriptTools(file: string, tools: readonly TypeScriptTool[]): TypeScriptTools | string {
  const places = [createRequire(join(dirname(file), 'noop.js')), createRequire(__filename)];
  const found = new Map<TypeScriptTool, string>();
  for (const tool of tools) {
    for (const place of places) {
      try { found.set(tool, place.resolve(tool)); break; } catch { /* not there: the next place */ }
    }
  }
  const missing = tools.filter((t) => !found.has(t));
  if (missing.length > 0) {
    const names = missing.length === 1 ? `the ${missing[0]} package` : `the ${missing.join(' and ')} packages`;
    return `${file} is TypeScript, and loading it needs ${names}, which ${missing.length === 1 ? 'is' : 'are'} not installed `
      + `(npm install ${missing.join(' ')})`;
  }
  const path = (tool: TypeScriptTool) => found.get(tool)!;
  return { path, load: <T>(tool: TypeScriptTool) => require(path(tool)) as T };
}
