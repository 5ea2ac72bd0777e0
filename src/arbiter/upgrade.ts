/** Owns USR2, the binary upgrade: start a successor master from the code installed now (the CLI
 *  path is looked up again, so a new release behind a symlink is what runs), with the same argv and
 *  working directory, handing it every listening socket as an inherited fd (FORKD_FDS, with what
 *  each is in FORKD_BINDS). The pidfile becomes PIDFILE.oldbin while the successor boots.
 *
 *  The handover, in order: the successor's workers all serve → it says so over IPC, naming the
 *  sockets it kept → this master takes it (no timeout can kill the successor from here on) and
 *  acks → only then does the successor tell systemd MAINPID= and READY=1. If the successor dies or
 *  is not ready in time, it is killed, the pidfile restored, and this master carries on. */

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { HANDOVER_BINDS_ENV, HANDOVER_FDS_ENV, UPGRADE_FROM_ENV } from '../env-names';
import { isFromSuccessor, type ToSuccessor } from '../ipc/messages';
import type { Logger } from '../log/logger';
import type { Listener } from '../net/listeners';
import type { HandedOver } from '../net/inherited';

/** The successor master's own start, on top of its workers' bootTimeout. */
export const SUCCESSOR_START_ALLOWANCE_MS = 5000;

export interface UpgradeRequest {
  readonly log: Logger;
  readonly listeners: readonly Listener[];
  readonly pidfile: string | null;
  readonly cwd: string;
  /** How long the successor has to report ready. */
  readonly readyWithinMs: number;
}

export type UpgradeOutcome =
  | { readonly ok: true; readonly pid: number; readonly kept: readonly string[] }
  | { readonly ok: false; readonly reason: string };

export interface Upgrade {
  readonly child: ChildProcess;
  readonly outcome: Promise<UpgradeOutcome>;
  /** A stop arrived first: kill the successor and put the pidfile back. */
  abort(): void;
}

function movePidfile(from: string, to: string): void {
  try { if (existsSync(from)) renameSync(from, to); } catch { /* the pidfile is a convenience */ }
}

/** Puts PIDFILE back for this master (PIDFILE.oldbin → PIDFILE), unless another live master holds it. */
export function restorePidfile(pidfile: string | null): void {
  if (!pidfile || !existsSync(`${pidfile}.oldbin`)) return;
  let holder = NaN;
  try { holder = Number(readFileSync(pidfile, 'utf8').trim()); } catch { /* none */ }
  let alive = false;
  try { if (holder > 0 && holder !== process.pid) { process.kill(holder, 0); alive = true; } } catch { /* gone */ }
  if (!alive) movePidfile(`${pidfile}.oldbin`, pidfile);
}

function handedOver(l: Listener): HandedOver {
  return l.systemdName !== undefined ? { bind: l.bind, systemd: true, name: l.systemdName } : { bind: l.bind, systemd: false, name: null };
}

/** Starts the successor; its outcome resolves once it has taken over, or fails (after killing it). */
export function startSuccessor(req: UpgradeRequest): Upgrade {
  const { log, listeners } = req;
  if (req.pidfile) movePidfile(req.pidfile, `${req.pidfile}.oldbin`);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    [HANDOVER_FDS_ENV]: listeners.map((_, i) => 3 + i).join(','),
    [HANDOVER_BINDS_ENV]: JSON.stringify(listeners.map(handedOver)),
    [UPGRADE_FROM_ENV]: String(process.pid),
  };
  // process.argv[1] is the CLI path as it was invoked (not resolved through symlinks): spawning it
  // again runs whatever release that path points to now.
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...process.argv.slice(2)], {
    cwd: req.cwd, env, stdio: ['ignore', 'inherit', 'inherit', ...listeners.map((l) => l.fd), 'ipc'],
  });
  log.info(`Upgrade: started successor master (pid:${child.pid})`, { event: 'upgrade.begin', successor: child.pid });
  let settled = false;
  let fail: (reason: string) => void = () => undefined;
  const outcome = new Promise<UpgradeOutcome>((done) => {
    const timer = setTimeout(() => fail(`the successor was not ready within ${req.readyWithinMs / 1000}s`), req.readyWithinMs);
    fail = (reason: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        setTimeout(() => { if (child.exitCode === null) child.kill('SIGKILL'); }, 2000).unref();
      }
      restorePidfile(req.pidfile);
      done({ ok: false, reason });
    };
    child.on('message', (msg) => {
      if (!isFromSuccessor(msg) || settled) return;
      settled = true;
      clearTimeout(timer);
      const ack: ToSuccessor = { type: 'handover' };
      child.send(ack, () => undefined);
      done({ ok: true, pid: msg.pid, kept: msg.kept });
    });
    child.once('exit', (code, signal) => fail(`the successor ${signal ? `was killed by ${signal}` : `exited with code ${code}`} before it was ready`));
    child.once('error', (err) => fail(`the successor could not start: ${err.message}`));
  });
  return { child, outcome, abort: () => fail('a stop arrived first') };
}
