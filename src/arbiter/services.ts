/** Owns the config's `services`: modules run once per master, each in a process of its own beside
 *  the workers (service/main.ts), serving no HTTP. For each it keeps the process that runs it, and
 *  during a reload the one that will replace it:
 *  - a service that dies is started again, after 100 ms, 200, 400 … up to 10 s while it keeps dying
 *    young (the workers' backoff, backoff.ts);
 *  - one silent for `timeout` is killed (its stack logged first, with timeoutStack) and started again;
 *  - a reload replaces each stop-then-start, so two never run at once: the new process loads the
 *    module and waits; once it has loaded, the old one is stopped, and when it has exited the new one
 *    runs. If the new one cannot load, the old one runs on. `overlap: true` starts the new one first
 *    and stops the old one once the new one runs;
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
  killTimer: NodeJS.Timeout | null = null;
  readonly exited: Promise<void>;
  exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  failure: string | null = null;
  timedOut = false;
  /** The master stopped it (a reload, a removal, the master's stop): not a death. */
  stopAsked = false;
  /** When its function began to run (null: it never did). */
  runningAtMs: number | null = null;

  constructor(readonly child: ChildProcess, readonly generation: number) {
    this.exited = new Promise((ok) => child.once('exit', (code, signal) => { this.state = 'exited'; this.exit = { code, signal }; ok(); }));
  }

  get pid(): number { return this.child.pid ?? -1; }

  send(msg: ToService): void { if (this.child.connected) this.child.send(msg, () => undefined); }

  /** TERM (its signal aborts), then a kill after `gracefulMs`. */
  stop(gracefulMs: number): Promise<void> {
    if (this.state !== 'exited' && this.state !== 'stopping') {
      this.state = 'stopping';
      this.stopAsked = true;
      this.child.kill('SIGTERM');
      this.killTimer = setTimeout(() => this.child.kill('SIGKILL'), gracefulMs);
    }
    return this.exited.then(() => { if (this.killTimer) clearTimeout(this.killTimer); });
  }
}

interface Entry {
  def: ServiceDef;
  current: Proc | null;
  /** Its replacement while a reload brings it in. */
  next: Proc | null;
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
  readonly upS: number | null;
}

export class Services {
  readonly #log: Logger;
  readonly #entries = new Map<string, Entry>();
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
    return n;
  }

  /** Starts the services of `gen`. */
  start(gen: Generation): void {
    this.#gen = gen;
    for (const def of gen.config.services) {
      const entry: Entry = { def, current: null, next: null, backoff: new Backoff(), restarts: 0, retry: null, retired: false };
      this.#entries.set(def.name, entry);
      entry.current = this.#launch(entry, false);
    }
    if (gen.config.services.length > 0 && !this.#timer) this.#timer = setInterval(() => this.#check(), CHECK_EVERY_MS);
  }

  /** A reload committed `gen`: each service is replaced with the new code, new ones start, removed ones stop. */
  reload(gen: Generation): void {
    this.#gen = gen;
    const wanted = new Set(gen.config.services.map((d) => d.name));
    for (const [name, entry] of this.#entries) {
      if (wanted.has(name)) continue;
      entry.retired = true;
      if (entry.retry) clearTimeout(entry.retry);
      void entry.current?.stop(gen.durationsMs.gracefulTimeout);
      void entry.next?.stop(gen.durationsMs.gracefulTimeout);
      this.#entries.delete(name);
      this.#log.info(`Service ${name} removed from the config: stopping it`, { event: 'service.removed', service: name });
    }
    for (const def of gen.config.services) {
      const entry = this.#entries.get(def.name);
      if (!entry) {
        const fresh: Entry = { def, current: null, next: null, backoff: new Backoff(), restarts: 0, retry: null, retired: false };
        this.#entries.set(def.name, fresh);
        fresh.current = this.#launch(fresh, false);
        continue;
      }
      entry.def = def;
      this.#replace(entry);
    }
    if (gen.config.services.length > 0 && !this.#timer) this.#timer = setInterval(() => this.#check(), CHECK_EVERY_MS);
  }

  /** The master stops: every service is stopped gracefully; resolves once all have exited. */
  stopAll(gracefulMs: number): Promise<void> {
    this.#stopping = true;
    const all: Promise<void>[] = [];
    for (const entry of this.#entries.values()) {
      entry.retired = true;
      if (entry.retry) { clearTimeout(entry.retry); entry.retry = null; }
      for (const p of [entry.current, entry.next]) if (p) all.push(p.stop(gracefulMs));
    }
    return Promise.all(all).then(() => { if (this.#timer) { clearInterval(this.#timer); this.#timer = null; } });
  }

  reopenLogs(): void {
    for (const e of this.#entries.values()) for (const p of [e.current, e.next]) p?.send({ type: 'reopenLogs' });
  }

  rows(): ServiceRow[] {
    const now = performance.now();
    return [...this.#entries.values()].map((e) => {
      const p = e.current;
      return {
        name: e.def.name, module: e.def.module, pid: p && p.state !== 'exited' ? p.pid : null,
        state: p && p.state !== 'exited' ? p.state : 'waiting', generation: p?.generation ?? null, restarts: e.restarts,
        upS: p && p.state === 'running' ? Math.round((now - p.startedAtMs) / 100) / 10 : null,
      };
    });
  }

  /** Starts a process for `entry` (held: it loads and waits for a go). */
  #launch(entry: Entry, hold: boolean): Proc {
    const gen = this.#gen!;
    const identity = gen.identity ? { ...gen.identity, initgroups: gen.config.initgroups } : null;
    const spec: ServiceSpec = {
      service: entry.def.name, module: entry.def.module, generation: gen.id, name: gen.name, hold,
      beatIntervalMs: beatIntervalMs(gen.durationsMs), timeoutStack: gen.config.timeoutStack,
      errorLog: gen.config.errorLog, logLevel: gen.config.logLevel, identity,
    };
    const child = spawn(process.execPath, [...gen.config.nodeArgs, SERVICE_SCRIPT], {
      ...startAs(identity), cwd: gen.cwd, env: childEnv(gen.config, identity, { [SERVICE_SPEC_ENV]: JSON.stringify(spec) }),
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'json',
    });
    const proc = new Proc(child, gen.id);
    child.on('error', (err) => { proc.failure = `it could not be started: ${err.message}`; });
    child.on('message', (msg: unknown) => { if (isFromService(msg)) this.#onMessage(entry, proc, msg); });
    void proc.exited.then(() => this.#onExit(entry, proc));
    this.#log.info(`Starting service ${entry.def.name} (pid:${proc.pid})`, { event: 'service.start', service: entry.def.name, generation: gen.id });
    return proc;
  }

  #onMessage(entry: Entry, proc: Proc, msg: FromService): void {
    proc.lastBeatAtMs = performance.now();
    switch (msg.type) {
      case 'loaded':
        proc.inspectPort = msg.inspectPort;
        if (proc.state === 'loading') proc.state = 'loaded';
        // A held replacement: the old one goes now; the new one runs once it has exited.
        if (entry.next === proc && !entry.def.overlap) {
          const old = entry.current;
          void (old ? old.stop(this.#gen!.durationsMs.gracefulTimeout) : Promise.resolve()).then(() => {
            if (entry.next !== proc || proc.state === 'exited') return;
            entry.current = proc;
            entry.next = null;
            proc.send({ type: 'go' });
          });
        }
        break;
      case 'running':
        if (proc.state === 'loading' || proc.state === 'loaded') proc.state = 'running';
        proc.runningAtMs = performance.now();
        if (entry.next === proc && entry.def.overlap) {
          const old = entry.current;
          entry.current = proc;
          entry.next = null;
          void old?.stop(this.#gen!.durationsMs.gracefulTimeout);
        }
        break;
      case 'failed': proc.failure = msg.reason; break;
      case 'beat': break;
    }
  }

  /** A reload's replacement of `entry`: held (stop-then-start) unless the service overlaps. */
  #replace(entry: Entry): void {
    if (entry.next) void entry.next.stop(0);
    // Not running (waiting out its backoff, or gone): the new code simply starts.
    if (!entry.current || entry.current.state === 'exited' || entry.current.state === 'stopping') {
      if (entry.retry) { clearTimeout(entry.retry); entry.retry = null; }
      entry.backoff.reset();
      entry.current = this.#launch(entry, false);
      return;
    }
    entry.next = this.#launch(entry, !entry.def.overlap);
  }

  #onExit(entry: Entry, proc: Proc): void {
    this.#changed();
    const name = entry.def.name;
    const how = proc.exit?.signal ? `was killed by ${proc.exit.signal}` : `exited with code ${proc.exit?.code}`;
    if (entry.next === proc) {
      // A replacement that never ran: the one it was to replace serves on.
      entry.next = null;
      if (!proc.stopAsked) {
        this.#log.error(`Reload: service ${name}'s new code failed to start (${proc.failure ?? how}); the running one carries on`,
          { event: 'service.reloadFailed', service: name });
      }
      return;
    }
    if (proc.stopAsked) {
      this.#log.info(`Service ${name} (pid:${proc.pid}) stopped`, { event: 'service.stopped', service: name });
      return;
    }
    if (entry.current !== proc || entry.retired || this.#stopping) return;
    // It ran long enough to have started: a run of failures ends.
    if (proc.runningAtMs !== null && performance.now() - proc.runningAtMs >= STABLE_AFTER_MS) entry.backoff.reset();
    const delay = entry.backoff.failed(performance.now());
    entry.restarts++;
    this.#log.error(`Service ${name} (pid:${proc.pid}) ${proc.failure ? `failed: ${proc.failure}` : how}; starting it again in ${delay} ms`,
      { event: 'service.died', service: name, restarts: entry.restarts });
    entry.retry = setTimeout(() => {
      entry.retry = null;
      if (!entry.retired && !this.#stopping && entry.current === proc) entry.current = this.#launch(entry, false);
    }, delay);
  }

  /** A running service silent for `timeout` is killed (its stack logged first) and started again. */
  #check(): void {
    const gen = this.#gen;
    if (!gen || this.#stopping) return;
    const timeoutMs = gen.durationsMs.timeout;
    if (timeoutMs <= 0) return;
    const now = performance.now();
    for (const entry of this.#entries.values()) {
      const p = entry.current;
      if (!p || p.state !== 'running' || p.timedOut || now - p.lastBeatAtMs <= timeoutMs) continue;
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
