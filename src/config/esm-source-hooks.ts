/** Owns the module hooks that esm-source.ts registers with module.register() on Node.js lines
 *  without module.registerHooks(): they answer for a config snapshot's URL with its source, and
 *  pass everything else on. They run on Node's hooks thread, and get their data through
 *  initialize(); the map is this module's only state because that thread's instance of it is
 *  where a registration's data can live (one entry a registration, a few per worker at most). */

interface Answer { readonly url: string; readonly source: string }

const sources = new Map<string, string>();

export function initialize(data: Answer): void {
  sources.set(data.url, data.source);
}

export function resolve(specifier: string, context: unknown, next: (specifier: string, context: unknown) => unknown): unknown {
  return sources.has(specifier) ? { url: specifier, shortCircuit: true } : next(specifier, context);
}

export function load(url: string, context: unknown, next: (url: string, context: unknown) => unknown): unknown {
  const source = sources.get(url);
  return source !== undefined ? { format: 'module', source, shortCircuit: true } : next(url, context);
}
