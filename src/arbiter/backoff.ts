/** Owns the pool's memory of failed boots: how many in a row, when the next start may be, and
 *  whether any worker has ever run long enough to prove that the app can serve at all. */

/** A worker that dies within this long of being ready counts as dying at boot: an app that crashes
 *  right after it starts must back off like one that cannot start at all. */
export const STABLE_AFTER_MS = 1000;
const BASE_MS = 100;
const MAX_MS = 10_000;

export class Backoff {
  #failures = 0;
  #nextStartAtMs = 0;
  #everStable = false;

  get failures(): number { return this.#failures; }
  /** Some worker has served STABLE_AFTER_MS: the app can run, so failures are no longer fatal. */
  get everStable(): boolean { return this.#everStable; }

  /** One more failure in a row; the delay before the next start (doubling up to MAX_MS). */
  failed(nowMs: number): number {
    this.#failures++;
    const delay = Math.min(MAX_MS, BASE_MS * 2 ** (this.#failures - 1));
    this.#nextStartAtMs = nowMs + delay;
    return delay;
  }

  /** How long until a worker may be started (0: now). */
  waitMs(nowMs: number): number { return Math.max(0, this.#nextStartAtMs - nowMs); }

  /** A worker proved its start: the run of failures ends; true if there was one. */
  succeeded(): boolean {
    const hadFailures = this.#failures > 0;
    this.#everStable = true;
    this.reset();
    return hadFailures;
  }

  /** Forget the run (a reload's own failures are not the serving generation's). */
  reset(): void {
    this.#failures = 0;
    this.#nextStartAtMs = 0;
  }
}
