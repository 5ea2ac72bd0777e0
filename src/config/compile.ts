/** Owns running a config file's code: in memory, never from Node's module cache, never writing to
 *  disk. CommonJS and TypeScript (transpiled to CommonJS) are compiled under the file's own name,
 *  with a require() that compiles the file's local modules the same way; an ES module is imported.
 *
 *  A master keeps what it ran (ConfigSnapshot): each file's compiled code and where each local
 *  require() led. A worker runs its hooks from that snapshot (runSnapshot), so that it runs exactly
 *  its generation's config, whatever the file says by the time the worker starts, and even when the
 *  file is invalid then (a save that a reload refused). Packages (node_modules) and local ES modules
 *  are loaded by Node, as the app's are: as they are when the worker starts. */

import { existsSync, readFileSync, statSync } from 'node:fs';
import Module from 'node:module';
import { dirname, resolve } from 'node:path';
import { isEsmJs, isModuleNamespace } from '../module-type';
import { isTypeScriptFile, typeScriptTools } from '../typescript-files';
import { importFromSource } from './esm-source';

/** A TypeScript config without the typescript package: said as it is, not as a load failure. */
export class MissingTool extends Error {}

/** What a config file ran as when its master read it: enough to run it again, the same, without it. */
export interface ConfigSnapshot {
  readonly file: string;
  /** 'commonjs': `file` and its local modules were compiled as CommonJS; 'module': `file` is an ES
   *  module (its own imports are Node's to load). */
  readonly format: 'commonjs' | 'module';
  /** By absolute path: the JavaScript each file compiled to (TypeScript already transpiled), the
   *  text of each local JSON file, or the ES module's source. */
  readonly modules: Readonly<Record<string, string>>;
  /** By file: each relative require() it made, and the file that require led to. */
  readonly links: Readonly<Record<string, Readonly<Record<string, string>>>>;
}

/** What a relative `require()` inside a config file may omit, in the order tried. */
const RESOLVE_EXTS = ['', '.ts', '.mts', '.cts', '.js', '.cjs', '.json', '/index.ts', '/index.js'];

type InternalModule = Module & {
  _compile(code: string, filename: string): void;
  paths: string[];
};
const ModuleStatics = Module as unknown as { _nodeModulePaths(dir: string): string[] };

/** A local module a require() leads to; `code` reads it (only when it is not compiled already). */
interface LocalModule { readonly path: string; code(): string }

/** Where a relative require() from `from` leads, or null when Node's own require() is to load it. */
type Locate = (from: string, id: string) => LocalModule | null;

function transpile(file: string, source: string): string {
  // Loaded only here: typescript is large, optional, and only .ts configs need it.
  const tools = typeScriptTools(file, ['typescript']);
  if (typeof tools === 'string') throw new MissingTool(tools);
  const ts = tools.load<typeof import('typescript')>('typescript');
  const out = ts.transpileModule(source, {
    fileName: file,
    reportDiagnostics: true,
    compilerOptions: {
      module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true, inlineSourceMap: true,
    },
  });
  const diag = out.diagnostics?.[0];
  if (diag) {
    const where = diag.file && diag.start !== undefined ? diag.file.getLineAndCharacterOfPosition(diag.start) : null;
    const text = ts.flattenDiagnosticMessageText(diag.messageText, ' ');
    throw new SyntaxError(where ? `${text} (line ${where.line + 1}, column ${where.character + 1})` : text);
  }
  return out.outputText;
}

/** The JavaScript that `source`, read from `file`, runs as. */
function compiledCode(file: string, source: string): string {
  return isTypeScriptFile(file) ? transpile(file, source) : source;
}

/** Local modules as they are on disk now. `record`, if given, is told each one read and each link. */
function fromDisk(record?: (from: string, id: string, path: string, code?: string) => void): Locate {
  return (from, id) => {
    const base = resolve(dirname(from), id);
    const path = RESOLVE_EXTS.map((ext) => base + ext).find((p) => existsSync(p) && statSync(p).isFile());
    if (!path || path.includes('/node_modules/') || isEsmJs(path)) return null;
    record?.(from, id, path);
    return {
      path,
      code() {
        const text = readFileSync(path, 'utf8');
        const code = path.endsWith('.json') ? text : compiledCode(path, text);
        record?.(from, id, path, code);
        return code;
      },
    };
  };
}

/** Compiles `code` as CommonJS module `file`, with a require() that gives `forkd` (for
 *  defineConfig) even where forkd is not installed, and compiles the local modules `locate` finds
 *  the same way, each once per run. */
function compileCommonJs(file: string, code: string, locate: Locate, seen: Map<string, InternalModule>): unknown {
  const m = new Module(file) as InternalModule;
  m.filename = file;
  m.paths = ModuleStatics._nodeModulePaths(dirname(file));
  seen.set(file, m);
  m.require = ((id: string) => {
    if (id === 'forkd') return require('../index');
    const local = id.startsWith('.') || id.startsWith('/') ? locate(file, id) : null;
    if (!local) return Module.prototype.require.call(m, id);
    const compiled = seen.get(local.path);
    if (compiled) return compiled.exports;
    return local.path.endsWith('.json') ? JSON.parse(local.code()) : compileCommonJs(local.path, local.code(), locate, seen);
  }) as NodeJS.Require;
  m._compile(code, file);
  return m.exports;
}

/** Runs a config fresh and keeps the snapshot of what ran. `seal` ends the recording: a master
 *  hook that requires a module when it runs, later, adds nothing to what workers are given. */
export interface Recorder {
  runCommonJs(file: string, source: string): unknown;
  /** `file` is an ES module, and `source` the text its import is to run. */
  isModule(file: string, source: string): void;
  seal(): ConfigSnapshot | null;
}

export function recorder(): Recorder {
  let snapshot: { file: string; format: ConfigSnapshot['format']; modules: Record<string, string>; links: Record<string, Record<string, string>> } | null = null;
  let sealed = false;
  const record = (from: string, id: string, path: string, code?: string) => {
    if (sealed || !snapshot) return;
    (snapshot.links[from] ??= {})[id] = path;
    if (code !== undefined) snapshot.modules[path] = code;
  };
  return {
    runCommonJs(file, source) {
      const code = compiledCode(file, source);
      snapshot = { file, format: 'commonjs', modules: { [file]: code }, links: {} };
      return compileCommonJs(file, code, fromDisk(record), new Map());
    },
    isModule(file, source) {
      snapshot = { file, format: 'module', modules: { [file]: source }, links: {} };
    },
    seal() { sealed = true; return snapshot; },
  };
}

/** The config a module exports: its default export if it has one, called if it is a function. */
export async function exportedValue(loaded: unknown): Promise<unknown> {
  let value = loaded;
  if (isModuleNamespace(value)) {
    const { default: dflt, __esModule: _marker, ...named } = value as Record<string, unknown>;
    value = dflt !== undefined ? dflt : named;
  }
  if (typeof value === 'function') value = await (value as () => unknown)();
  return value;
}

/** Runs a config again from its snapshot (in a worker) and gives what it exports. A module the
 *  master never required (one a hook requires as it runs) is read from disk, as the master would. */
export async function runSnapshot(snapshot: ConfigSnapshot): Promise<unknown> {
  const source = snapshot.modules[snapshot.file] ?? '';
  if (snapshot.format === 'module') return exportedValue(await importFromSource(snapshot.file, source));
  const disk = fromDisk();
  const locate: Locate = (from, id) => {
    const path = snapshot.links[from]?.[id];
    const code = path === undefined ? undefined : snapshot.modules[path];
    return path !== undefined && code !== undefined ? { path, code: () => code } : disk(from, id);
  };
  return exportedValue(compileCommonJs(snapshot.file, source, locate, new Map()));
}
