/** Owns how many workers the master keeps: the number asked for (workers, TTIN/TTOU, a reload) and
 *  whether it is idle (WINCH: no workers, sockets kept). A change is a scale.changed event. */

import type { EventOf, LifecycleEvent } from './events';

export type ScaleWhy = EventOf<'scale.changed'>['why'];

export class Scale {
  #wanted: number;
  #idle = false;
  readonly #emit: (event: LifecycleEvent) => unknown;

  constructor(wanted: number, emit: (event: LifecycleEvent) => unknown) {
    this.#wanted = wanted;
    this.#emit = emit;
  }

  /** Workers to keep now. */
  get target(): number { return this.#idle ? 0 : this.#wanted; }
  get wanted(): number { return this.#wanted; }
  get idle(): boolean { return this.#idle; }

  set(wanted: number, idle: boolean, why: ScaleWhy): void {
    const before = this.target;
    this.#wanted = wanted;
    this.#idle = idle;
    if (this.target !== before) this.#emit({ type: 'scale.changed', workers: this.target, before, why });
  }

  /** One more worker (TTIN; out of idle, one). */
  grow(): void { this.set(this.#idle ? 1 : this.#wanted + 1, false, 'TTIN'); }

  /** One fewer (TTOU), never below 1; false if it would go below. */
  shrink(): boolean {
    if (this.#idle || this.#wanted <= 1) return false;
    this.set(this.#wanted - 1, false, 'TTOU');
    return true;
  }
}
