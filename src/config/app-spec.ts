/** Owns the APP grammar: `path/to/module[:export]` or `path/to/module:factory()`. Pure. */

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
