/** Owns importing an ES module config from a text, as if it were the file: a module hook answers
 *  for the file's URL (with a query, which makes it a module record of its own) with that text, so
 *  that imports relative to the file, and import.meta.url, are what they were for the file. This is
 *  how a worker runs the config its master read (compile.ts), without the file as it is now, without
 *  writing anything to disk, and without --experimental-vm-modules. */

import { pathToFileURL } from 'node:url';
import { join } from 'node:path';

/** The hooks of module.registerHooks() (Node.js 22.15+, 23.5+; @types/node 20 lacks it). */
interface SyncHooks {
  resolve(specifier: string, context: unknown, next: (specifier: string, context: unknown) => unknown): unknown;
  load(url: string, context: unknown, next: (url: string, context: unknown) => unknown): unknown;
}
interface NodeModuleHooks {
  registerHooks?(hooks: SyncHooks): { deregister(): void };
  register(specifier: string, options: { data: unknown }): void;
}

/** For module.register(): the same hooks, in a module of their own (they run on a hooks thread). */
const HOOKS_MODULE = pathToFileURL(join(__dirname, 'esm-source-hooks.js')).href;

export async function importFromSource(file: string, source: string): Promise<unknown> {
  const url = `${pathToFileURL(file).href}?forkd-snapshot=${process.hrtime.bigint()}`;
  const nodeModule = require('node:module') as NodeModuleHooks;
  if (typeof nodeModule.registerHooks === 'function') {
    // In this thread, and removed once the config is imported.
    const hooks = nodeModule.registerHooks({
      resolve: (specifier, context, next) => (specifier === url ? { url, shortCircuit: true } : next(specifier, context)),
      load: (at, context, next) => (at === url ? { format: 'module', source, shortCircuit: true } : next(at, context)),
    });
    try { return await import(url); } finally { hooks.deregister(); }
  }
  // Older lines: the hooks run on a thread of their own, and stay for the life of the process
  // (answering for this one URL, and passing everything else on).
  nodeModule.register(HOOKS_MODULE, { data: { url, source } });
  return import(url);
}
