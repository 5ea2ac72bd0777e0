/** Owns which files forkd treats as TypeScript, for config files and apps alike. */

import { extname } from 'node:path';

const TS_EXTS: ReadonlySet<string> = new Set(['.ts', '.mts', '.cts']);

export function isTypeScriptFile(file: string): boolean {
  return TS_EXTS.has(extname(file));
}
