/** The first thing the CLI does, before any slow module loads: install the master's signal
 *  listeners (a signal that arrived before its listener would take its default action: TTIN would
 *  stop the process, USR1 open the inspector). Until the master runs, a stop signal ends start-up,
 *  undoing what was set up so far (sockets, pidfile); other signals are dropped. */

import { createLoop, listenForSignals, type Loop } from '../arbiter/loop';
import { rowOf } from '../arbiter/signal-table';

export interface Early {
  readonly loop: Loop;
  /** What a stop during start-up undoes, last set up first undone. */
  undoOnStop(undo: () => void): void;
}

export function catchSignalsEarly(): Early {
  const loop = createLoop();
  const undos: Array<() => void> = [];
  listenForSignals(loop);
  loop.start((item) => {
    if (typeof item === 'string' && rowOf(item).interrupts) {
      for (const undo of undos.reverse()) undo();
      process.exit(0);
    }
  }, () => undefined);
  return { loop, undoOnStop: (undo) => { undos.push(undo); } };
}
