/** Owns the counts behind forkd's counters, for the master's lifetime: responses by worker number
 *  and status class, the duration histogram, the balance's closes (each added from the tallies
 *  the workers send with their heartbeats, ipc/tally.ts), worker exits by reason and reloads by
 *  result (from the lifecycle events). A worker that exits leaves what it reported here, so no
 *  count ever goes down while the master lives; a USR2 successor adopts its predecessor's totals
 *  (upgrade.ts), so none goes down across an upgrade either. Plain JSON, for that handover. */

import { addTally, emptyTally, type Tally } from '../ipc/tally';
import type { LifecycleEvent } from './events';

export interface TotalsJSON {
  /** By worker number: responses by status class. */
  readonly requests: Record<string, number[]>;
  /** Every worker's durations together (the histogram has no worker label). */
  readonly durations: Tally;
  readonly exits: Record<string, number>;
  readonly reloads: { ok: number; failed: number };
}

export class Totals {
  readonly #requests = new Map<number, number[]>();
  readonly #all: Tally = emptyTally();
  readonly #exits = new Map<string, number>();
  readonly #reloads = { ok: 0, failed: 0 };

  /** Adds what worker `nr` counted since its last beat. */
  add(nr: number, t: Tally): void {
    let codes = this.#requests.get(nr);
    if (!codes) { codes = t.codes.map(() => 0); this.#requests.set(nr, codes); }
    for (let i = 0; i < codes.length; i++) codes[i]! += t.codes[i]!;
    addTally(this.#all, t);
  }

  /** Counts exits and reloads from the lifecycle events. */
  follow(e: LifecycleEvent): void {
    if (e.type === 'worker.exited') this.countExit(exitReason(e));
    else if (e.type === 'reload.done') this.#reloads.ok++;
    else if (e.type === 'reload.failed') this.#reloads.failed++;
  }

  /** One worker exit, counted under `reason` (exitReason, as its master said it). */
  countExit(reason: string): void {
    this.#exits.set(reason, (this.#exits.get(reason) ?? 0) + 1);
  }

  /** Each count raised to `other`'s where that is larger: an old master taking back what its
   *  successor counted at a rollback. The successor had this master's totals at the handover and
   *  every delta since (forwarded), so its counts are this master's and more; one this master has
   *  and the successor never heard of (the last moments) is kept. No count goes down. */
  raiseTo(other: TotalsJSON): void {
    for (const [nr, codes] of Object.entries(other.requests)) {
      const mine = this.#requests.get(Number(nr)) ?? codes.map(() => 0);
      this.#requests.set(Number(nr), mine.map((n, i) => Math.max(n, codes[i] ?? 0)));
    }
    const d = other.durations;
    d.codes.forEach((n, i) => { this.#all.codes[i] = Math.max(this.#all.codes[i]!, n); });
    d.buckets.forEach((n, i) => { this.#all.buckets[i] = Math.max(this.#all.buckets[i]!, n); });
    this.#all.sumS = Math.max(this.#all.sumS, d.sumS);
    this.#all.shed = Math.max(this.#all.shed, d.shed);
    this.#all.proxyRefused = Math.max(this.#all.proxyRefused, d.proxyRefused ?? 0);
    this.#all.deadlines = Math.max(this.#all.deadlines, d.deadlines ?? 0);
    for (const [reason, n] of Object.entries(other.exits)) this.#exits.set(reason, Math.max(this.#exits.get(reason) ?? 0, n));
    this.#reloads.ok = Math.max(this.#reloads.ok, other.reloads.ok);
    this.#reloads.failed = Math.max(this.#reloads.failed, other.reloads.failed);
  }

  /** The predecessor's totals, added to this master's (a USR2 successor, at the handover). */
  adopt(from: TotalsJSON): void {
    for (const [nr, codes] of Object.entries(from.requests)) this.add(Number(nr), { ...emptyTally(), codes: [...codes] });
    addTally(this.#all, { ...from.durations, codes: emptyTally().codes });
    for (const [reason, n] of Object.entries(from.exits)) this.#exits.set(reason, (this.#exits.get(reason) ?? 0) + n);
    this.#reloads.ok += from.reloads.ok;
    this.#reloads.failed += from.reloads.failed;
  }

  toJSON(): TotalsJSON {
    return {
      requests: Object.fromEntries([...this.#requests].map(([nr, codes]) => [String(nr), [...codes]])),
      durations: { ...this.#all, codes: [...this.#all.codes], buckets: [...this.#all.buckets] },
      exits: Object.fromEntries(this.#exits),
      reloads: { ...this.#reloads },
    };
  }

  /** Responses by worker number and status class index. */
  requests(): ReadonlyMap<number, readonly number[]> { return this.#requests; }
  /** Responses of every worker by duration bucket (not cumulative), their sum, the closes. */
  all(): Readonly<Tally> { return this.#all; }
  exits(): ReadonlyMap<string, number> { return this.#exits; }
  reloads(): Readonly<{ ok: number; failed: number }> { return this.#reloads; }
  /** Responses of worker `nr`, every class. */
  requestsOf(nr: number): number { return (this.#requests.get(nr) ?? []).reduce((a, b) => a + b, 0); }
}

/** The word an exit is counted under: the master's reason when it ended the worker (the log's
 *  reason=), else the signal that killed it, else "crash". */
export function exitReason(e: Extract<LifecycleEvent, { type: 'worker.exited' }>): string {
  return e.reason ?? e.signal ?? 'crash';
}
