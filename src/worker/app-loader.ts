/** Owns turning APP into something to serve: finds the module, loads it (CommonJS, ESM, or
 *  TypeScript through ts-node), picks the export, calls a factory, and recognises the app's shape.
 *  Runs in a worker (and once in --check-config), never in a serving master. */

import http from 'node:http';
import net from 'node:net';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { APP_EXTENSIONS, findAppModule, parseAppSpec } from '../config/app-spec';
import { AppLoadError } from '../config/errors';
import { isCommonJs, isModuleNamespace } from '../module-type';
import { isTypeScriptFile, typeScriptTools } from '../typescript-files';
import type { FetchHandler } from './fetch-adapter';

/** The fetch adapter, loaded for the apps that need it. */
const fetchListener = (handler: FetchHandler): http.RequestListener =>
  (require('./fetch-adapter') as typeof import('./fetch-adapter')).fetchListener(handler);

export type LoadedApp =
  | { readonly kind: 'listener'; readonly listener: http.RequestListener; readonly shape: string; readonly http1Only?: string }
  | { readonly kind: 'server'; readonly server: net.Server; readonly shape: string; readonly http1Only?: undefined };

export { AppLoadError };

export function findModule(spec: string, cwd: string): string {
  const found = findAppModule(spec, cwd);
  if (found) return found;
  throw new AppLoadError(`cannot find module ${spec} (looked for ${resolve(cwd, spec)} with ${APP_EXTENSIONS.filter(Boolean).join(', ')})`);
}

/** TypeScript apps load through ts-node, transpile-only and as CommonJS whatever the project says:
 *  startup stays near 300 ms, and import/export in .ts files just works. ts-node and typescript are
 *  optional peers: the app's own are used, else any beside forkd. */
function registerTsNode(file: string): void {
  const tools = typeScriptTools(file, ['ts-node', 'typescript']);
  if (typeof tools === 'string') throw new AppLoadError(tools);
  tools.load<typeof import('ts-node')>('ts-node').register({
    compiler: tools.path('typescript'),
    transpileOnly: true,
    compilerOptions: { module: 'commonjs', moduleResolution: 'node', esModuleInterop: true, allowJs: false },
    moduleTypes: { '**/*.ts': 'cjs', '**/*.mts': 'cjs', '**/*.cts': 'cjs' },
  });
}

/** What `require` gave, as a namespace: `default` plus named exports. An ES module's namespace
 *  (require(esm)) and a module compiled from ESM (`__esModule`) already are one. */
function asNamespace(exp: unknown): Record<string, unknown> {
  if (isModuleNamespace(exp)) return exp;
  return { ...(exp && typeof exp === 'object' ? exp : {}), default: exp };
}

/** Whether the worker's Node was given module hooks (--import, --loader) that may transform or
 *  watch the app's own file: those see a file that is import()ed, not one that is required. */
function moduleHooksGiven(): boolean {
  const hookFlag = /(?:^|\s)--(?:import|(?:experimental-)?loader)\b/;
  return hookFlag.test(process.env.NODE_OPTIONS ?? '') || process.execArgv.some((a) => hookFlag.test(a));
}

/** Whether `file` can be required rather than imported: CommonJS, where require() also takes a .js
 *  file with ES module syntax in a package with no "type" (require(esm) and syntax detection; where
 *  require(esm) is off, only .cjs), and no module hooks wait for the app's file. */
function requirable(file: string): boolean {
  if (!isCommonJs(file) || moduleHooksGiven()) return false;
  return file.endsWith('.cjs') || process.features.require_module === true;
}

/** The module's exports as a namespace-like record: `default` plus named exports. CommonJS is
 *  required (import() of the first module starts Node's ES module loader: 3–4 ms of every worker's
 *  start on Node 20, measured); ES modules are imported, and so is a .js file that turns out to be
 *  an ES module with top-level await (require() refuses it before running any of it). */
export async function loadModule(file: string): Promise<Record<string, unknown>> {
  if (isTypeScriptFile(file)) {
    registerTsNode(file);
    return asNamespace(require(file));
  }
  if (requirable(file)) {
    // Whole stacks while the app loads, to tell below whether any of its code ran.
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = Infinity;
    try { return asNamespace(require(file)); } catch (err) {
      // A module the app requires refused the same way means the app has run (a frame of the
      // stack is in its file): never run it twice. Otherwise the app's own graph has top-level
      // await, and require() refused it before running any of it.
      const ranApp = ((err as Error).stack ?? '').split('\n').some((line) => /^\s+at /.test(line) && line.includes(`${file}:`));
      if ((err as NodeJS.ErrnoException).code !== 'ERR_REQUIRE_ASYNC_MODULE' || ranApp) throw err;
    } finally {
      Error.stackTraceLimit = limit;
    }
  }
  return (await import(pathToFileURL(file).href)) as Record<string, unknown>;
}

function describe(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (value === null) return 'null';
  if (typeof value === 'function') return `a function of ${value.length} parameter(s)`;
  if (typeof value === 'object') {
    const keys = Object.keys(value).slice(0, 8);
    const name = (value as object).constructor?.name;
    return `${name && name !== 'Object' ? `a ${name}` : 'an object'}${keys.length ? ` with keys ${keys.join(', ')}` : ''}`;
  }
  return `a ${typeof value} (${JSON.stringify(value)})`;
}

const EXPECTED = 'a request listener (req, res) => …, an Express app, a Koa app (callback()), a Fastify instance, '
  + 'an http.Server, a fetch handler (request) => Response, or an object with fetch(request) (Hono)';

type Shaped = { kind: 'listener'; listener: http.RequestListener; shape: string; http1Only?: string } | { kind: 'server'; server: net.Server; shape: string };

/** Recognises what the export is. A one-parameter function, or an export named `fetch`, is a
 *  fetch handler; any other function is a Node request listener. */
async function shapeOf(value: unknown, exportName: string | null): Promise<Shaped | null> {
  if (value instanceof net.Server) return { kind: 'server', server: value, shape: 'http.Server' };
  if (typeof value === 'function') {
    if (exportName === 'fetch' || value.length === 1) {
      return { kind: 'listener', listener: fetchListener(value as FetchHandler), shape: 'fetch handler' };
    }
    const fn = value as unknown as Record<string, unknown>;
    if (typeof fn.handle === 'function' && typeof fn.set === 'function' && typeof fn.use === 'function' && typeof fn.engine === 'function') {
      return {
        kind: 'listener', listener: value as http.RequestListener, shape: 'request listener',
        // Express (4 and 5) gives each request http.IncomingMessage's prototype, whose stream
        // methods fail on an h2 stream (an uncaught TypeError in the worker).
        http1Only: 'Express cannot run on Node\'s HTTP/2 compatibility API',
      };
    }
    return { kind: 'listener', listener: value as http.RequestListener, shape: 'request listener' };
  }
  if (!value || typeof value !== 'object') return null;
  const obj = value as Record<string, unknown>;
  if (typeof obj.ready === 'function' && typeof obj.routing === 'function') {
    await (obj.ready as () => Promise<unknown>).call(obj);
    const routing = obj.routing as http.RequestListener;
    return { kind: 'listener', listener: (req, res) => routing.call(obj, req, res), shape: 'Fastify instance' };
  }
  if (typeof obj.callback === 'function') {
    return { kind: 'listener', listener: (obj.callback as () => http.RequestListener).call(obj), shape: 'Koa app' };
  }
  if (typeof obj.fetch === 'function') {
    const f = obj.fetch as FetchHandler;
    return { kind: 'listener', listener: fetchListener((req) => f.call(obj, req)), shape: 'object with fetch()' };
  }
  return null;
}

/** Servers the app tried to listen() on while loading: forkd ignores those calls (the workers
 *  listen on forkd's sockets) and, if the module exports nothing else it can serve, serves the
 *  server the app built. */
async function withListenCaptured<T>(fn: () => Promise<T>): Promise<{ result: T; captured: net.Server[] }> {
  const original = net.Server.prototype.listen;
  const captured: net.Server[] = [];
  net.Server.prototype.listen = function captureListen(this: net.Server, ...args: unknown[]) {
    captured.push(this);
    const cb = args[args.length - 1];
    if (typeof cb === 'function') this.once('listening', cb as () => void);
    return this;
  } as typeof original;
  try {
    return { result: await fn(), captured };
  } finally {
    net.Server.prototype.listen = original;
  }
}

export interface AppLoadResult {
  readonly app: LoadedApp;
  readonly file: string;
  /** Said once in the log: e.g. that a listen() call of the app's was ignored. */
  readonly notes: readonly string[];
}

export async function loadApp(appText: string, cwd: string): Promise<AppLoadResult> {
  const spec = parseAppSpec(appText);
  if (typeof spec === 'string') throw new AppLoadError(`APP ${JSON.stringify(appText)}: ${spec}`);
  const file = findModule(spec.module, cwd);
  const { result, captured } = await withListenCaptured(async () => {
    const ns = await loadModule(file);
    let value: unknown = spec.exportName === null ? (ns.default ?? ns.app)
      : ns[spec.exportName] ?? (ns.default as Record<string, unknown> | undefined)?.[spec.exportName];
    if (spec.call) {
      if (typeof value !== 'function') {
        throw new AppLoadError(`${file}: ${spec.exportName}() is not a function: the export is ${describe(value)}`);
      }
      value = await (value as () => unknown)();
    } else if (value && typeof (value as Promise<unknown>).then === 'function') {
      value = await value;
    }
    return { value, shaped: await shapeOf(value, spec.exportName), ns };
  });
  const notes: string[] = [];
  if (result.shaped) {
    if (captured.length) notes.push(`the app called listen() on ${captured.length} server(s) while loading; forkd ignored it and serves its own sockets`);
    return { app: result.shaped, file, notes };
  }
  const server = captured.find((s) => s instanceof http.Server);
  if (server && captured.length === 1) {
    notes.push('the app called listen() while loading; forkd serves that server on its own sockets instead');
    return { app: { kind: 'server', server, shape: 'http.Server (from listen())' }, file, notes };
  }
  const which = spec.exportName === null ? 'its default export' : `export ${JSON.stringify(spec.exportName)}`;
  const names = Object.keys(result.ns).filter((k) => k !== 'default' && k !== 'module.exports');
  if (result.value === undefined && !spec.call) {
    throw new AppLoadError(`${file} has no ${which}; ${names.length ? `it exports: ${names.join(', ')}` : 'it exports nothing'}`
      + ` (name one as ${spec.module}:NAME)`);
  }
  throw new AppLoadError(`${file}: ${which}${spec.call ? '()' : ''} is ${describe(result.value)}; expected ${EXPECTED}`
    + (names.length ? ` (the module exports: ${names.join(', ')})` : ''));
}
