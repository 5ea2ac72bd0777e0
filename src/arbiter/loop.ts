/** Owns the master's command loop. Signal listeners only enqueue; this loop runs one command at a
 *  time, in arrival order, so a TTIN that arrives during a stop waits for it instead of interleaving. */

export const MANAGED_SIGNALS = [
  'SIGHUP', 'SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGTTIN', 'SIGTTOU', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH',
] as const;
export type ManagedSignal = (typeof MANAGED_SIGNALS)[number];

export type Command = () => void | Promise<void>;
export type Item = ManagedSignal | Command;

export interface Loop {
  push(item: Item): void;
  /** Told of every item as it arrives, even while a long command runs: a stop that arrives during a
   *  reload can then cut the reload short instead of waiting behind it. */
  onArrival(listener: (item: Item) => void): void;
  /** Starts running items, those queued before included. A later call replaces the runner: the
   *  entry point runs a small one until the master is ready for the rest. */
  start(run: (item: Item) => void | Promise<void>, onError: (err: unknown) => void): void;
}

export function createLoop(): Loop {
  const queue: Item[] = [];
  let runner: ((item: Item) => void | Promise<void>) | null = null;
  let onError: (err: unknown) => void = () => undefined;
  let busy = false;
  let arrival: (item: Item) => void = () => undefined;
  const drain = async () => {
    if (busy || !runner) return;
    busy = true;
    try {
      for (let item = queue.shift(); item !== undefined; item = queue.shift()) {
        try { await runner(item); } catch (err) { onError(err); }
      }
    } finally {
      busy = false;
    }
  };
  return {
    push(item) { queue.push(item); arrival(item); void drain(); },
    onArrival(listener) { arrival = listener; },
    start(run, errors) { runner = run; onError = errors; void drain(); },
  };
}

/** Installs the master's signal listeners; call it before anything slow. A Node process without a
 *  USR1 listener opens the inspector on USR1, and one without TTIN/TTOU listeners is stopped by them. */
export function listenForSignals(loop: Loop): void {
  for (const sig of MANAGED_SIGNALS) process.on(sig, () => loop.push(sig));
}
