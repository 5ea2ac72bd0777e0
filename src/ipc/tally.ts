/** Owns what a worker counts of its requests between two heartbeats (a tally), in the one shape
 *  both sides know: responses by status class, their durations in the buckets of
 *  forkd_request_duration_seconds, and the connections the balance asked to close. A worker sends
 *  what it counted since its last beat (a delta) and starts again from zero; the master adds it to
 *  the totals it keeps for its lifetime (arbiter/totals.ts). Plain arrays of numbers: it crosses
 *  the IPC channel as JSON. */

/** The upper bounds of the duration histogram, in seconds (prom-client's defaults). */
export const DURATION_BUCKETS_S: readonly number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** The `code` label of forkd_requests_total, by index (a status of 100..199 is index 0). */
export const CODE_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;

export interface Tally {
  /** Responses by status class (CODE_CLASSES). */
  readonly codes: number[];
  /** Responses by duration bucket, not cumulative; the last is above the largest bound (+Inf). */
  readonly buckets: number[];
  /** Their durations summed, in seconds. */
  sumS: number;
  /** Connections the balance asked to close (Connection: close on their next response). */
  shed: number;
  /** Connections closed for their PROXY protocol header (untrusted peer, malformed, missing). */
  proxyRefused: number;
  /** Responses forkd ended because their requestDeadline passed. */
  deadlines: number;
}

export function emptyTally(): Tally {
  return { codes: CODE_CLASSES.map(() => 0), buckets: [...DURATION_BUCKETS_S.map(() => 0), 0], sumS: 0, shed: 0, proxyRefused: 0, deadlines: 0 };
}

/** The class index of a status code; one outside 100..599 counts as a 5xx. */
export function codeClass(status: number): number {
  const c = Math.floor(status / 100) - 1;
  return c >= 0 && c < 5 ? c : 4;
}

/** Counts one response of `status` that took `durationMs`. */
export function observe(t: Tally, status: number, durationMs: number): void {
  t.codes[codeClass(status)]!++;
  const s = durationMs / 1000;
  t.sumS += s;
  let i = 0;
  while (i < DURATION_BUCKETS_S.length && s > DURATION_BUCKETS_S[i]!) i++;
  t.buckets[i]!++;
}

/** Adds `from` into `into`. */
export function addTally(into: Tally, from: Tally): void {
  for (let i = 0; i < into.codes.length; i++) into.codes[i]! += from.codes[i] ?? 0;
  for (let i = 0; i < into.buckets.length; i++) into.buckets[i]! += from.buckets[i] ?? 0;
  into.sumS += from.sumS;
  into.shed += from.shed;
  into.proxyRefused += from.proxyRefused ?? 0;
  into.deadlines += from.deadlines ?? 0;
}

/** A tally as it came over a channel, or null when it is not one (a worker is not trusted to
 *  send only numbers). */
export function readTally(x: unknown): Tally | null {
  const t = x as Partial<Tally> | null;
  const nums = (a: unknown, n: number) => Array.isArray(a) && a.length === n && a.every((v) => typeof v === 'number' && v >= 0 && Number.isFinite(v));
  if (!t || typeof t !== 'object' || !nums(t.codes, CODE_CLASSES.length) || !nums(t.buckets, DURATION_BUCKETS_S.length + 1)) return null;
  if (typeof t.sumS !== 'number' || !(t.sumS >= 0) || typeof t.shed !== 'number' || !(t.shed >= 0)) return null;
  // Absent from a master of an earlier release (its totals at a USR2 handover).
  for (const name of ['proxyRefused', 'deadlines'] as const) {
    if (t[name] === undefined) (t as Record<typeof name, number>)[name] = 0;
    else if (typeof t[name] !== 'number' || !(t[name] >= 0)) return null;
  }
  return t as Tally;
}
