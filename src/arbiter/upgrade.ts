/** Owns USR2, the binary upgrade: start a successor master from the code installed now (the CLI
 *  path is looked up again, so a new release behind a symlink is what runs), with the same argv and
 *  working directory, handing it every listening socket as an inherited fd (FORKD_FDS). The
 *  pidfile becomes PIDFILE.oldbin while the successor boots. When the successor serves, it says so
 *  over IPC and tells systemd MAINPID=; this master then retires (upgrade 'auto') or waits for WINCH
 *  and TERM (unicorn's 'manual'). If the successor dies or is not ready in time, it is killed, the
 *  pidfile restored, and this master carries on as if nothing had happened. */

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, renameSync } from 'node:fs';
import { isFromSuccessor } from '../ipc/messages';
import type { Logger } from '../log/logger';
import type { Listener } from '../net/listeners';
import { HANDOVER_BINDS_ENV, HANDOVER_FDS_ENV } from '../net/inherited';

export const UPGRADE_FROM_ENV = 'FORKD_SUCCESSOR_OF';

export interface UpgradeRequest {
  readonly log: Logger;
  readonly listeners: readonly Listener[];
  readonly pidfile: string | null;
  readonly cwd: string;
  /** How long the successor has to report ready. */
  readonly readyWithinMs: number;
}

export type UpgradeOutcome = { readonly ok: true; readonly pid: number } | { readonly ok: false; readonly reason: string };

function movePidfile(from: string, to: string): void {
  try { if (existsSync(from)) renameSync(from, to); } catch { /* the pidfile is a convenience */ }
}

/** Starts the successor and resolves when it serves, or fails (after killing it). */
export function startSuccessor(req: UpgradeRequest): { child: ChildProcess; outcome: Promise<UpgradeOutcome> } {
  const { log, listeners } = req;
  if (req.pidfile) movePidfile(req.pidfile, `${req.pidfile}.oldbin`);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    [HANDOVER_FDS_ENV]: listeners.map((_, i) => 3 + i).join(','),
    [HANDOVER_BINDS_ENV]: JSON.stringify(listeners.map((l) => l.bind)),
    [UPGRADE_FROM_ENV]: String(process.pid),
  };
  // process.argv[1] is the CLI path as it was invoked (not resolved through symlinks): spawning it
  // again runs whatever release that path points to now.
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...process.argv.slice(2)], {
    cwd: req.cwd, env, stdio: ['ignore', 'inherit', 'inherit', ...listeners.map((l) => l.fd), 'ipc'],
  });
  log.info(`Upgrade: started successor master (pid:${child.pid})`, { event: 'upgrade.begin', successor: child.pid });
  const outcome = new Promise<UpgradeOutcome>((done) => {
    const fail = (reason: string) => {
      clearTimeout(timer);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        setTimeout(() => { if (child.exitCode === null) child.kill('SIGKILL'); }, 5000).unref();
      }
      if (req.pidfile) movePidfile(`${req.pidfile}.oldbin`, req.pidfile);
      done({ ok: false, reason });
    };
    const timer = setTimeout(() => fail(`the successor was not ready within ${req.readyWithinMs / 1000}s`), req.readyWithinMs);
    child.on('message', (msg) => {
      if (!isFromSuccessor(msg)) return;
      clearTimeout(timer);
      child.removeAllListeners('exit');
      done({ ok: true, pid: msg.pid });
    });
    child.once('exit', (code, signal) => fail(`the successor ${signal ? `was killed by ${signal}` : `exited with code ${code}`} before it was ready`));
    child.once('error', (err) => fail(`the successor could not start: ${err.message}`));
  });
  return { child, outcome };
}
