/** Owns the errors a user's input can cause before anything runs, and how they are worded. */

export class ConfigError extends Error {
  readonly code = 'E_CONFIG';
}

/** The app cannot be loaded (not found, not servable, a TypeScript app without ts-node): exit 4. */
export class AppLoadError extends Error {
  override readonly name = 'AppLoadError';
}

/** A command line forkd cannot parse (unknown flag, missing value): exit 2, not 78. */
export class UsageError extends Error {
  readonly code = 'E_USAGE';
}

/** The closest candidate within a small edit distance, for "did you mean …?". */
export function didYouMean(input: string, candidates: readonly string[]): string | null {
  const norm = (s: string) => s.toLowerCase().replace(/[-_]/g, '');
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(norm(input), norm(c));
    if (d < bestDistance) { best = c; bestDistance = d; }
  }
  return best !== null && bestDistance <= Math.max(2, Math.floor(input.length / 3)) ? best : null;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

export function suggestion(input: string, candidates: readonly string[]): string {
  const near = didYouMean(input, candidates);
  return near ? `; did you mean ${JSON.stringify(near)}?` : '';
}

/** A user's value, quoted and shortened so that an error message stays one readable line. */
export function showValue(value: unknown): string {
  let s: string;
  if (typeof value === 'function') s = `[function ${value.name || 'anonymous'}]`;
  else {
    try { s = JSON.stringify(value) ?? String(value); } catch { s = String(value); }
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}
