/** Owns the master's command loop. Signal listeners only enqueue; this loop runs one command at a
 *  time, in arrival order, so a TTIN that arrives during a stop waits for it instead of interleaving.
 *  The signal table (signal-table.ts) marks the exceptions: a signal acted on at once (USR1) runs
 *  as it arrives, and one that interrupts (a stop) is announced as it arrives, so that a reload in
 *  progress can stand aside for it instead of waiting behind it. */

import { MANAGED_SIGNALS, rowOf, type ManagedSignal } from './signal-table';

export type { ManagedSignal } from './signal-table';

export type Command = () => void | Promise<void>;
export type Item = ManagedSignal | Command;

export interface Loop {
  push(item: Item): void;
  /** Told of every interrupting signal as it arrives, even while a long command runs. */
  onInterrupt(listener: (signal: ManagedSignal) => void): void;
  /** Starts running items, those queued before included. A later call replaces the runner: the
   *  entry point runs a small one until the master is ready for the rest. */
  start(run: (item: Item) => void | Promise<void>, onError: (err: unknown) => void): void;
}

export function createLoop(): Loop {
  const queue: Item[] = [];
  let runner: ((item: Item) => void | Promise<void>) | null = null;
  let onError: (err: unknown) => void = () => undefined;
  let busy = false;
  let interrupt: (signal: ManagedSignal) => void = () => undefined;
  const runOne = async (item: Item) => {
    try { await runner!(item); } catch (err) { onError(err); }
  };
  const drain = async () => {
    if (busy || !runner) return;
    busy = true;
    try {
      for (let item = queue.shift(); item !== undefined; item = queue.shift()) await runOne(item);
    } finally {
      busy = false;
    }
  };
  return {
    push(item) {
      if (typeof item === 'string') {
        const row = rowOf(item);
        if (row.interrupts) interrupt(item);
        if (row.atOnce) { if (runner) void runOne(item); return; }
      }
      queue.push(item);
      void drain();
    },
    onInterrupt(listener) { interrupt = listener; },
    start(run, errors) { runner = run; onError = errors; void drain(); },
  };
}

/** Installs the master's signal listeners; call it before anything slow. A Node process without a
 *  USR1 listener opens the inspector on USR1, and one without TTIN/TTOU listeners is stopped by them. */
export function listenForSignals(loop: Loop): void {
  for (const sig of MANAGED_SIGNALS) process.on(sig, () => loop.push(sig));
}
