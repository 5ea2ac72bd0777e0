/** The master's lifecycle as one stream of typed events, each emitted from the one place where it
 *  happens. Log lines, hooks and systemd subscribe to it (subscribers.ts); nothing else calls a
 *  master hook or sd_notify. A subscriber may return a promise (a hook): `emit` resolves once every
 *  subscriber is done, so the code that must wait for a hook (onReload before the config is read,
 *  workerAbort before the kill, onExit before the exit) awaits the event, and the rest do not. */

import type { WorkerInfo } from '../config/hooks';
import type { ExitCode } from '../exit-codes';
import type { MasterStatus } from '../systemd/lifecycle';
import type { InFlight } from './stack-capture';

export type LifecycleEvent =
  /** Before the sockets are bound (the onStarting hook is awaited). */
  | { readonly type: 'master.starting' }
  | { readonly type: 'master.started'; readonly workers: number }
  | { readonly type: 'master.ready'; readonly status: MasterStatus; readonly startupMs: number }
  /** The number of serving workers, the target or the generation changed (STATUS=). */
  | { readonly type: 'master.status'; readonly status: MasterStatus }
  | { readonly type: 'master.stopping'; readonly status: MasterStatus; readonly reason: string }
  | { readonly type: 'master.exiting'; readonly code: ExitCode }
  | { readonly type: 'worker.spawning'; readonly nr: number; readonly generation: number }
  | { readonly type: 'worker.spawned'; readonly worker: WorkerInfo }
  | { readonly type: 'worker.ready'; readonly worker: WorkerInfo; readonly bootMs: number }
  | { readonly type: 'worker.stable'; readonly worker: WorkerInfo; readonly resetFailures: boolean }
  | { readonly type: 'worker.recycling'; readonly worker: WorkerInfo; readonly why: string }
  | { readonly type: 'worker.timedOut'; readonly worker: WorkerInfo; readonly thread: number | null; readonly silentForMs: number; readonly stack: string;
    /** The requests it had in flight, read with its stack (null: not read). */
    readonly inFlight: readonly InFlight[] | null }
  | { readonly type: 'worker.bootFailed'; readonly nr: number; readonly generation: number; readonly failures: number; readonly reason: string; readonly retryInMs: number }
  | {
    readonly type: 'worker.exited'; readonly worker: WorkerInfo; readonly code: number | null; readonly signal: NodeJS.Signals | null;
    /** The master's reason when it ended the worker (its exit was expected), else null: a crash. */
    readonly reason: string | null;
  }
  | { readonly type: 'reload.deferred'; readonly why: string }
  | { readonly type: 'reload.begun'; readonly why: string; readonly status: MasterStatus }
  | { readonly type: 'reload.done'; readonly generation: number; readonly workers: number; readonly status: MasterStatus }
  | { readonly type: 'reload.failed'; readonly reason: string; readonly generation: number; readonly status: MasterStatus }
  | { readonly type: 'upgrade.requested' }
  | { readonly type: 'upgrade.begun'; readonly successor: number }
  | { readonly type: 'upgrade.failed'; readonly reason: string; readonly pidfileRestored: boolean }
  | { readonly type: 'upgrade.handedOver'; readonly successor: number; readonly manual: boolean }
  | { readonly type: 'upgrade.rolledBack'; readonly successor: number; readonly status: MasterStatus }
  | { readonly type: 'scale.changed'; readonly workers: number; readonly before: number; readonly why: 'TTIN' | 'TTOU' | 'WINCH' | 'reload' | 'ctl' }
  | { readonly type: 'logs.reopened' };

export type EventType = LifecycleEvent['type'];
export type EventOf<T extends EventType> = Extract<LifecycleEvent, { type: T }>;
export type Subscriber = (event: LifecycleEvent) => unknown;

export interface EventStream {
  /** Subscribers are told in the order they subscribed. */
  subscribe(subscriber: Subscriber): void;
  /** Tells every subscriber; resolves when the promises they returned have settled. A subscriber
   *  that throws is reported to `onError` and the others are still told. */
  emit(event: LifecycleEvent): Promise<void>;
}

const DONE = Promise.resolve();

export function createEventStream(onError: (err: unknown, event: LifecycleEvent) => void): EventStream {
  const subscribers: Subscriber[] = [];
  return {
    subscribe(subscriber) { subscribers.push(subscriber); },
    emit(event) {
      let waits: Promise<unknown>[] | null = null;
      for (const subscriber of subscribers) {
        try {
          const result = subscriber(event);
          if (result instanceof Promise) (waits ??= []).push(result.catch((err: unknown) => onError(err, event)));
        } catch (err) {
          onError(err, event);
        }
      }
      return waits ? Promise.all(waits).then(() => undefined) : DONE;
    },
  };
}
