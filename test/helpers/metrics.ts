/** Reading a Prometheus text exposition (/metrics), for the tests of the status listener. */

export interface Sample { readonly name: string; readonly labels: Record<string, string>; readonly value: number }

/** The samples of a Prometheus text exposition (comments skipped). */
export function parseMetrics(text: string): Sample[] {
  return text.split('\n').filter((l) => l && !l.startsWith('#')).map((line) => {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!]));
    return { name: m[1]!, labels, value: Number(m[3]) };
  });
}

/** The sum of `name`'s samples whose labels include `where` (samples, or an exposition's text). */
export function sumOf(samples: readonly Sample[] | string, name: string, where: Record<string, string> = {}): number {
  return (typeof samples === 'string' ? parseMetrics(samples) : samples)
    .filter((s) => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v))
    .reduce((n, s) => n + s.value, 0);
}
