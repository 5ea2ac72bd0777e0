/** Owns escaping of text that reaches a log line, so that no client-supplied byte can end a line,
 *  start a forged one, or drive a terminal. */

// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x1f\x7f-\x9f]/g;
// eslint-disable-next-line no-control-regex
const CONTROL_QUOTE_BACKSLASH = /[\x00-\x1f\x7f-\x9f"\\]/g;

function hex(c: string): string {
  return `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
}

/** Control characters (C0, DEL and C1) become \xHH. */
export function escapeControl(s: string): string {
  return s.replace(CONTROL, hex);
}

const NEEDS_QUOTED_ESCAPE = /[\x00-\x1f\x7f-\x9f"\\]/;

/** For a value inside double quotes: control characters become \xHH, `"` and `\` get a backslash.
 *  (Tested first: most values need nothing, and this runs for every field of every access line.) */
export function escapeQuoted(s: string): string {
  if (!NEEDS_QUOTED_ESCAPE.test(s)) return s;
  return s.replace(CONTROL_QUOTE_BACKSLASH, (c) => (c === '"' || c === '\\' ? `\\${c}` : hex(c)));
}
