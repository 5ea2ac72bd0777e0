/** Owns what each `forkd ctl` command does in the master. Every command that changes something is
 *  pushed onto the command loop, behind the signals that came first, and answers once it is done:
 *  a reload with its outcome after the new generation serves or the reload failed; a scale or a
 *  kill once the workers are as asked; an upgrade once the successor serves or failed. */

import type { Config } from '../config/settings';
import type { Answer, ControlActions } from './control';
import type { MasterContext } from './context';
import type { Loop } from './loop';
import type { Observability } from './observe';
import type { Reloader } from './reload';
import { captureStack, inFlightText } from './stack-capture';
import { WORKER_SCRIPT } from './spawn';
import type { Upgrader } from './upgrade';
import type { ToWorker } from '../ipc/messages';

export interface ControlDeps {
  readonly ctx: MasterContext;
  readonly loop: Loop;
  readonly observe: () => Observability;
  readonly reloader: Reloader;
  readonly upgrader: Upgrader;
  /** True once `cond` holds (checked after each lifecycle event), false after `ms`. */
  until(cond: () => boolean, ms: number): Promise<boolean>;
  /** Keep `n` workers; false when the master is stopping. */
  resize(n: number): boolean;
  reopenLogs(): void;
  timeoutStack(): boolean;
}

const STACK_CAPTURE_MS = 3000;

/** Runs `fn` as a command of the loop, resolving with what it returns once it has run. */
function queued<T>(loop: Loop, fn: () => T | Promise<T>): Promise<T> {
  return new Promise((ok, fail) => {
    loop.push(async () => { try { ok(await fn()); } catch (err) { fail(err as Error); } });
  });
}

export function controlActions(d: ControlDeps): ControlActions {
  const { ctx } = d;
  const config = (): Config => ctx.generations.config;
  /** How long workers may take to be as asked: a boot, and a drain. */
  const settleMs = () => ctx.generations.current.durationsMs.bootTimeout + ctx.generations.gracefulMs + 1000;
  const settled = (n: number) => ctx.pool.serving().length === n && ctx.pool.live().length === n;
  const notStopping = () => { if (ctx.phase() === 'stopping') throw new Error('the master is stopping'); };
  /** Waits until `done` holds; a stop meanwhile, or settleMs passing, is an error. */
  const settle = async (done: () => boolean, late: string) => {
    if (!(await d.until(() => done() || ctx.phase() === 'stopping', settleMs()))) throw new Error(late);
    notStopping();
  };

  return {
    status: (): Answer => ({ text: '', data: d.observe().stats() }),

    reload: () => queued(d.loop, async (): Promise<Answer> => {
      notStopping();
      // During start-up a reload would only be put off until the workers serve: say so instead.
      if (ctx.phase() === 'starting') throw new Error('the master is starting: reload once it serves (forkd ctl status says when)');
      const before = ctx.generations.lastReload;
      await d.reloader.run('forkd ctl');
      const after = ctx.generations.lastReload;
      if (after === before || after === null) throw new Error(`no reload: the master is ${ctx.phase()}`);
      if (!after.ok) throw new Error(`reload failed: ${after.reason ?? 'unknown'}; still serving generation ${ctx.generations.current.id} as before`);
      return { text: `reloaded: generation ${ctx.generations.current.id}, ${ctx.pool.serving().length} workers serving` };
    }),

    // The loop only starts a scale, a kill or an upgrade; waiting for its end happens outside it,
    // so that a signal (a stop above all) is not held behind a boot or a drain.
    scale: async (to): Promise<Answer> => {
      const n = await queued(d.loop, () => {
        notStopping();
        const want = /^[+-]/.test(to) ? ctx.scale.wanted + Number(to) : Number(to);
        if (!Number.isInteger(want) || want < 1) throw new Error(`scale ${to}: forkd keeps at least 1 worker (it has ${ctx.scale.wanted})`);
        d.resize(want);
        return want;
      });
      await settle(() => settled(n), `scaled to ${n}, but ${ctx.pool.serving().length} serve after ${settleMs() / 1000}s`);
      return { text: `${n} workers serving` };
    },

    kill: async (nr): Promise<Answer> => {
      const h = await queued(d.loop, () => {
        notStopping();
        const w = ctx.pool.live().find((x) => x.nr === nr && x.state === 'serving');
        if (!w) throw new Error(`no worker ${nr} is serving (workers: ${ctx.pool.serving().map((x) => x.nr).join(', ') || 'none'})`);
        ctx.pool.replace(w, 'forkd ctl kill');
        return w;
      });
      await settle(() => h.state === 'exited' && ctx.pool.serving().some((w) => w.nr === nr && w !== h),
        `worker ${nr} (pid ${h.pid}) was not replaced within ${settleMs() / 1000}s`);
      const next = ctx.pool.serving().find((w) => w.nr === nr)!;
      return { text: `worker ${nr} replaced: pid ${h.pid} stopped, pid ${next.pid} serves` };
    },

    reopen: () => queued(d.loop, (): Answer => { d.reopenLogs(); return { text: 'log files reopened' }; }),

    // As the signal itself, so that a stop interrupts a reload under way rather than waiting for it.
    stop: async (quick): Promise<Answer> => {
      d.loop.push(quick ? 'SIGQUIT' : 'SIGTERM');
      return { text: `stopping${quick ? ' (quick)' : ''}: master pid ${process.pid}`, data: { pid: process.pid } };
    },

    upgrade: async (): Promise<Answer> => {
      const started = await queued(d.loop, () => { notStopping(); return { outcome: d.upgrader.run() }; });
      const result = await started.outcome;
      if (!result.ok) throw new Error(`upgrade failed: ${result.reason}`);
      return { text: `upgraded: master pid ${result.pid} serves now${config().upgrade === 'manual' ? ' (upgrade manual: this master serves on until stopped)' : ''}` };
    },

    stacks: async (nr): Promise<Answer> => {
      if (!d.timeoutStack()) throw new Error('stacks needs timeoutStack, which is off');
      const workers = ctx.pool.live().filter((h) => h.accepting && (nr === null || h.nr === nr));
      if (workers.length === 0) throw new Error(nr === null ? 'no worker is serving' : `no worker ${nr} is serving`);
      const parts = await Promise.all(workers.map(async (h) => {
        const head = `worker ${h.nr} (pid ${h.pid}, generation ${h.generation})`;
        if (h.inspectPort === null) return `${head}: no inspector port`;
        try {
          // Told first, so that its heartbeat leaves the inspector open for the capture, unwarned.
          if (h.child.connected) await new Promise<void>((ok) => { h.child.send({ type: 'stackCapture', forMs: STACK_CAPTURE_MS + 1000 } satisfies ToWorker, () => ok()); });
          const { frames, inFlight } = await captureStack(h.pid, h.inspectPort, WORKER_SCRIPT, STACK_CAPTURE_MS);
          const requests = inFlight === null ? '  in flight: not known'
            : inFlight.length === 0 ? '  in flight: none' : `  in flight:\n${inFlight.map((r) => `    ${inFlightText(r)}`).join('\n')}`;
          return `${head}:\n${frames.map((f) => `    at ${f}`).join('\n')}\n${requests}`;
        } catch (err) {
          return `${head}: ${(err as Error).message}`;
        }
      }));
      return { text: parts.join('\n\n') };
    },
  };
}
