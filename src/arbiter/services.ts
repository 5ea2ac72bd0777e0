/** Owns the config's `services`: modules run once per master, each in a process of its own beside
 *  the workers (service/main.ts), serving no HTTP. For each it keeps the process that runs it, and
 *  during a reload the one that will replace it:
 *  - a service that dies is started again, after 100 ms, 200, 400 … up to 10 s while it keeps dying
 *    young (the workers' backoff, backoff.ts);
 *  - one silent for `timeout` is killed (its stack logged first, with timeoutStack) and started again;
 *  - a reload replaces each stop-then-start, so two never run at once: the new process loads the
 *    module and waits; once it has loaded, the old one is stopped, and when it has exited the new one
 *    runs. If the new one cannot load, the old one runs on. `overlap: true` starts the new one first
 *    and stops the old one once the new one runs (at its first heartbeat after its function began);
 *  - the master's stop stops them gracefully (their signal aborts, gracefulTimeout, then a kill). */

import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { ServiceDef } from '../config/values';
import { SERVICE_SPEC_ENV } from '../env-names';
import { isFromService, type FromService, type ServiceSpec, type ToService } from '../ipc/messages';
import type { Logger } from '../log/logger';
import { Backoff, STABLE_AFTER_MS } from './backoff';
import { beatIntervalMs, type Generation } from './pool';
import { childEnv, startAs } from './spawn';
import { captureStack } from './stack-capture';

/** The service entry, as the inspector names it (see stack-capture.ts). */
export const SERVICE_SCRIPT = join(__dirname, '..', 'service', 'main.js');
const STACK_CAPTURE_MS = 2000;
const CHECK_EVERY_MS = 250;

type State = 'loading' | 'loaded' | 'running' | 'stopping' | 'exited';

class Proc {
  state: State = 'loading';
  readonly startedAtMs = performance.now();
  lastBeatAtMs = performance.now();
  inspectPort: number | null = null;
  #killTimer: NodeJS.Timeout | null = null;
  #killAtMs = Infinity;
  readonly exited: Promise<void>;
  exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  failure: string | null = null;
  timedOut = false;
  /** The master stopped it (a reload, a removal, the master's stop): not a death. */
  stopAsked = false;
  /** When its function began to run (null: it never did). */
  runningAtMs: number | null = null;

  constructor(readonly child: ChildProcess, readonly generation: number) {
    this.exited = new Promise((ok) => {
      const over = (code: number | null, signal: NodeJS.Signals | null) => {
        if (this.state === 'exited') return;
        this.state = 'exited';
        this.exit = { code, signal };
        if (this.#killTimer) clearTimeout(this.#killTimer);
        ok();
      };
      child.once('exit', over);
      // A process that could not be started (ENOENT, EAGAIN…) emits 'error' and no 'exit'.
      child.once('error', (err) => { if (child.pid === undefined) { this.failure = `it could not be started: ${err.message}`; over(null, null); } });
    });
  }

  get pid(): number { return this.child.pid ?? -1; }

  send(msg: ToService): void { if (this.child.connected) this.child.send(msg, () => undefined); }

  /** TERM (its signal aborts), then a kill after `gracefulMs`; a later stop may only bring the kill nearer. */
  stop(gracefulMs: number): Promise<void> {
    if (this.state === 'exited') return this.exited;
    if (this.state !== 'stopping') {
      this.state = 'stopping';
      this.stopAsked = true;
      this.child.kill('SIGTERM');
    }
    const killAt = performance.now() + gracefulMs;
    if (killAt < this.#killAtMs) {
      this.#killAtMs = killAt;
      if (this.#killTimer) clearTimeout(this.#killTimer);
      this.#killTimer = setTimeout(() => this.child.kill('SIGKILL'), gracefulMs);
    }
    return this.exited;
  }
}

interface Entry {
  def: ServiceDef;
  /** The process that runs it (or is starting to). */
  current: Proc | null;
  /** Its replacement while a reload brings it in. */
  next: Proc | null;
  /** One more for each reload's replacement: what a replacement waits for is dropped once another came. */
  epoch: number;
  readonly backoff: Backoff;
  restarts: number;
  retry: NodeJS.Timeout | null;
  /** Removed from the config, or the master stops: not started again. */
  retired: boolean;
}

/** A service as /stats, `forkd ctl status` and /metrics show it. */
export interface ServiceRow {
  readonly name: string;
  readonly module: string;
  readonly pid: number | null;
  readonly state: State | 'waiting';
  readonly generation: number | null;
  readonly restarts: number;
  /** How long its function has run, in seconds (null: it does not run). */
  readonly upS: number | null;
}

export class Services {
  readonly #log: Logger;
  readonly #entries = new Map<string, Entry>();
  /** Processes being stopped that are no entry's any more (replaced, removed): the master's stop waits for them too. */
  readonly #leaving = new Set<Proc>();
  #gen: Generation | null = null;
  #stopping = false;
  #timer: NodeJS.Timeout | null = null;
  readonly #changed: () => void;

  /** `changed` is called when one of its processes exits (the master's stop waits for them). */
  constructor(log: Logger, changed: () => void) { this.#log = log; this.#changed = changed; }

  /** Processes still running (the master's stop waits for none). */
  get size(): number {
    let n = 0;
    for (const e of this.#entries.values()) for (const p of [e.current, e.next]) if (p && p.state !== 'exited') n++;
    for (const p of this.#leaving) if (p.state !== 'exited') n++;
    return n;
  }

  /** Starts the services of `gen`. */
  start(gen: Generation): void {
    this.#gen = gen;
    for (const def of gen.config.services) this.#add(def);
    this.#watch();
  }

  /** A reload committed `gen`: each service is replaced with the new code, new ones start, removed ones stop. */
  reload(gen: Generation): void {
    if (this.#stopping) return;
    this.#gen = gen;
    const wanted = new Set(gen.config.services.map((d) => d.name));
    for (const [name, entry] of this.#entries) {
      if (wanted.has(name)) continue;
      entry.retired = true;
      if (entry.retry) clearTimeout(entry.retry);
      for (const p of [entry.current, entry.next]) if (p) this.#retire(p);
      this.#entries.delete(name);
      this.#log.info(`Service ${name} removed from the config: stopping it`, { event: 'service.removed', service: name });
    }
    for (const def of gen.config.services) {
      const entry = this.#entries.get(def.name);
      if (!entry) { this.#add(def); continue; }
      entry.def = def;
      this.#replace(entry);
    }
    this.#watch();
  }

  /** The master stops: every service is stopped (TERM, a kill after `gracefulMs`); resolves once all have exited. */
  stopAll(gracefulMs: number): Promise<void> {
    this.#stopping = true;
    const all: Promise<void>[] = [];
    for (const entry of this.#entries.values()) {
      entry.retired = true;
      if (entry.retry) { clearTimeout(entry.retry); entry.retry = null; }
      for (const p of [entry.current, entry.next]) if (p) all.push(p.stop(gracefulMs));
    }
    for (const p of this.#leaving) all.push(p.stop(gracefulMs));
    return Promise.all(all).then(() => { if (this.#timer) { clearInterval(this.#timer); this.#timer = null; } });
  }

  reopenLogs(): void {
    for (const e of this.#entries.values()) for (const p of [e.current, e.next]) p?.send({ type: 'reopenLogs' });
  }

  rows(): ServiceRow[] {
    const now = performance.now();
    return [...this.#entries.values()].map((e) => {
      const p = e.current && e.current.state !== 'exited' ? e.current : null;
      return {
        name: e.def.name, module: e.def.module, pid: p ? p.pid : null, state: p ? p.state : 'waiting', generation: p?.generation ?? null,
        restarts: e.restarts, upS: p && p.state === 'running' && p.runningAtMs !== null ? Math.round((now - p.runningAtMs) / 100) / 10 : null,
      };
    });
  }

  #watch(): void {
    if (this.#entries.size > 0 && !this.#timer) this.#timer = setInterval(() => this.#check(), CHECK_EVERY_MS);
  }

  #add(def: ServiceDef): void {
    const entry: Entry = { def, current: null, next: null, epoch: 0, backoff: new Backoff(), restarts: 0, retry: null, retired: false };
    this.#entries.set(def.name, entry);
    entry.current = this.#launch(entry, false);
  }

  /** Stops a process no entry keeps any more; the master's stop still waits for it. */
  #retire(p: Proc): void {
    this.#leaving.add(p);
    void p.stop(this.#gen!.durationsMs.gracefulTimeout).then(() => { this.#leaving.delete(p); this.#changed(); });
  }

  /** Starts a process for `entry` (held: it loads and waits for a go); null when it could not be
   *  spawned, and then it is tried again after the backoff. */
  #launch(entry: Entry, hold: boolean): Proc | null {
    const gen = this.#gen!;
    const identity = gen.identity ? { ...gen.identity, initgroups: gen.config.initgroups } : null;
    const spec: ServiceSpec = {
      service: entry.def.name, module: entry.def.module, generation: gen.id, name: gen.name, hold,
      beatIntervalMs: beatIntervalMs(gen.durationsMs), timeoutStack: gen.config.timeoutStack,
      errorLog: gen.config.errorLog, logLevel: gen.config.logLevel, identity,
    };
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, [...gen.config.nodeArgs, SERVICE_SCRIPT], {
        ...startAs(identity), cwd: gen.cwd, env: childEnv(gen.config, identity, { [SERVICE_SPEC_ENV]: JSON.stringify(spec) }),
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'json',
      });
    } catch (err) {
      this.#died(entry, null, `it could not be started: ${(err as Error).message}`);
      return null;
    }
    const proc = new Proc(child, gen.id);
    child.on('message', (msg: unknown) => { if (isFromService(msg)) this.#onMessage(entry, proc, msg); });
    void proc.exited.then(() => this.#onExit(entry, proc));
    this.#log.info(`Starting service ${entry.def.name} (pid:${proc.pid})`, { event: 'service.start', service: entry.def.name, generation: gen.id });
    return proc;
  }

  #onMessage(entry: Entry, proc: Proc, msg: FromService): void {
    proc.lastBeatAtMs = performance.now();
    switch (msg.type) {
      case 'loaded': {
        proc.inspectPort = msg.inspectPort;
        if (proc.state === 'loading') proc.state = 'loaded';
        if (entry.next !== proc || entry.def.overlap) break;
        // A held replacement: the old one goes now, and the new one runs once it has exited.
        const epoch = entry.epoch;
        const handOver = () => {
          if (entry.epoch !== epoch || entry.next !== proc || proc.state === 'exited' || proc.stopAsked) return;
          entry.current = proc;
          entry.next = null;
          proc.send({ type: 'go' });
        };
        const old = entry.current;
        if (old && old.state !== 'exited') void old.stop(this.#gen!.durationsMs.gracefulTimeout).then(handOver);
        else handOver();
        break;
      }
      case 'running':
        if (proc.state === 'loading' || proc.state === 'loaded') proc.state = 'running';
        proc.runningAtMs = performance.now();
        break;
      case 'failed': proc.failure = msg.reason; break;
      case 'beat':
        // An overlapping replacement takes over at its first beat once it runs: its function has
        // begun by then ('running' is said just before it is called).
        if (entry.next === proc && entry.def.overlap && proc.state === 'running') {
          const old = entry.current;
          entry.current = proc;
          entry.next = null;
          if (old) this.#retire(old);
        }
        break;
    }
  }

  /** A reload's replacement of `entry`: held (stop-then-start) unless the service overlaps. */
  #replace(entry: Entry): void {
    entry.epoch++;
    if (entry.retry) { clearTimeout(entry.retry); entry.retry = null; }
    entry.backoff.reset();
    // A replacement that was still loading or held is superseded (a held one exits at once).
    if (entry.next) { const superseded = entry.next; entry.next = null; this.#retire(superseded); }
    const old = entry.current;
    if (!old || old.state === 'exited') { entry.current = this.#launch(entry, false); return; }
    if (old.stopAsked) {
      // A hand-over under way: the one it stops is going; the new code starts once it has gone.
      const epoch = entry.epoch;
      void old.exited.then(() => { if (entry.epoch === epoch && !entry.retired && !this.#stopping) entry.current = this.#launch(entry, false); });
      return;
    }
    entry.next = this.#launch(entry, !entry.def.overlap);
  }

  #onExit(entry: Entry, proc: Proc): void {
    this.#changed();
    const name = entry.def.name;
    const how = proc.failure ?? (proc.exit?.signal ? `was killed by ${proc.exit.signal}` : `exited with code ${proc.exit?.code}`);
    if (proc.stopAsked) {
      this.#log.info(`Service ${name} (pid:${proc.pid}) stopped`, { event: 'service.stopped', service: name });
      return;
    }
    if (entry.next === proc) {
      entry.next = null;
      const old = entry.current;
      if (old && !old.stopAsked && old.state !== 'exited') {
        this.#log.error(`Reload: service ${name}'s new code failed to start (${how}); the running one carries on`, { event: 'service.reloadFailed', service: name });
        return;
      }
      // The hand-over had begun (the old one is being stopped): the service is down, and starts again.
      this.#died(entry, proc, how);
      return;
    }
    if (entry.current !== proc) return;
    // It ran long enough to have started: a run of failures ends.
    if (proc.runningAtMs !== null && performance.now() - proc.runningAtMs >= STABLE_AFTER_MS) entry.backoff.reset();
    this.#died(entry, proc, how);
  }

  /** `entry`'s process died (or could not be spawned): started again after the backoff, once the
   *  one a hand-over was stopping has gone. */
  #died(entry: Entry, proc: Proc | null, how: string): void {
    if (entry.retired || this.#stopping) return;
    const delay = entry.backoff.failed(performance.now());
    entry.restarts++;
    const who = proc ? ` (pid:${proc.pid})` : '';
    this.#log.error(`Service ${entry.def.name}${who} ${proc?.failure ? `failed: ${proc.failure}` : how}; starting it again in ${delay} ms`,
      { event: 'service.died', service: entry.def.name, restarts: entry.restarts });
    const epoch = entry.epoch;
    if (entry.retry) clearTimeout(entry.retry);
    entry.retry = setTimeout(() => {
      entry.retry = null;
      const start = () => { if (entry.epoch === epoch && !entry.retired && !this.#stopping) entry.current = this.#launch(entry, false); };
      const old = entry.current;
      if (old && old !== proc && old.state !== 'exited') void old.exited.then(start);
      else start();
    }, delay);
  }

  /** A running service silent for `timeout` is killed (its stack logged first) and started again. */
  #check(): void {
    const gen = this.#gen;
    if (!gen || this.#stopping) return;
    const timeoutMs = gen.durationsMs.timeout;
    const now = performance.now();
    for (const entry of this.#entries.values()) {
      // One whose module never finishes loading (its top level hangs) has bootTimeout, as a worker has.
      for (const q of [entry.current, entry.next]) {
        if (!q || q.state !== 'loading' || q.timedOut || now - q.startedAtMs <= gen.durationsMs.bootTimeout) continue;
        q.timedOut = true;
        q.failure = `it did not load within ${gen.durationsMs.bootTimeout / 1000} s (bootTimeout)`;
        q.child.kill('SIGKILL');
      }
      const p = entry.current;
      if (timeoutMs <= 0 || !p || p.state !== 'running' || p.timedOut || now - p.lastBeatAtMs <= timeoutMs) continue;
      p.timedOut = true;
      const silentForMs = Math.round(now - p.lastBeatAtMs);
      const kill = (stack: string) => {
        this.#log.critical(`SERVICE TIMEOUT (pid:${p.pid}): service ${entry.def.name} is hung`, { event: 'service.timeout', service: entry.def.name, silentForMs, stack });
        p.child.kill('SIGKILL');
      };
      if (!gen.config.timeoutStack || p.inspectPort === null) { kill('not captured (timeoutStack is off)'); continue; }
      captureStack(p.pid, p.inspectPort, SERVICE_SCRIPT, STACK_CAPTURE_MS).then(
        (c) => kill(c.frames.join(' | ')),
        (err: Error) => kill(`unavailable: ${err.message}`),
      );
    }
  }
}
