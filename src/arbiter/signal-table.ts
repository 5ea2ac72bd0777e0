/** The signals the master answers to, what each does, and when: the one table that the master's
 *  loop, `forkd --help` and the man page's SIGNALS section are made from. Data only, so that --help
 *  can read it without loading the master. What each signal runs is in arbiter.ts. */

export interface SignalRow {
  readonly signals: readonly string[];
  /** For --help: a few words. */
  readonly summary: string;
  /** For the man page: what happens, in full; `name` marks a setting. */
  readonly doc: string;
  /** Acted on as it arrives, even while a reload runs (otherwise queued, one at a time). */
  readonly atOnce?: true;
  /** Its arrival cuts short the command that is running (a reload stands aside for a stop). */
  readonly interrupts?: true;
}

export const SIGNAL_ROWS = [
  {
    signals: ['SIGTERM'], summary: 'graceful stop', interrupts: true,
    doc: 'Graceful stop: with `shutdownDelay`, /readyz answers 503 at once while the workers serve on for that long (a '
      + 'second TERM skips it); then the connections already queued on the sockets are served, new connections are '
      + 'refused, in-flight requests get `gracefulTimeout` to finish; exit 0.',
  },
  { signals: ['SIGINT', 'SIGQUIT'], summary: 'quick stop', interrupts: true, doc: 'Quick stop: the workers exit at once.' },
  {
    signals: ['SIGHUP'], summary: 'reload config and code',
    doc: 'Reload: read the config again through every layer, start a new generation of workers with it and the code on '
      + 'disk, and retire the old generation once every new worker has served for a second. An invalid config, or new '
      + 'workers that fail to boot, leave the old generation serving as it was.',
  },
  {
    signals: ['SIGTTIN', 'SIGTTOU'], summary: 'one worker more/fewer',
    doc: 'One worker more, one fewer (never below one), until a reload of a config that sets `workers`.',
  },
  {
    signals: ['SIGUSR1'], summary: 'reopen log files', atOnce: true,
    doc: 'Reopen the log files, in the master and every worker (logrotate\'s postrotate); acted on as it arrives, even '
      + 'during a reload.',
  },
  {
    signals: ['SIGUSR2'], summary: 'upgrade to a successor master running the code installed now',
    doc: 'Upgrade: start a successor master from the code installed now, with the same arguments, handing it the '
      + 'sockets. The pidfile is renamed PIDFILE.oldbin meanwhile. When the successor serves, it becomes systemd\'s main '
      + 'process and this master retires (`upgrade` auto) or waits for WINCH and TERM (`upgrade` manual). A successor that '
      + 'fails is killed and the pidfile restored.',
  },
  {
    signals: ['SIGWINCH'], summary: 'stop all workers (keep the sockets)',
    doc: 'Stop every worker, keep the master and its sockets; TTIN brings one back, HUP the configured count.',
  },
] as const satisfies readonly SignalRow[];

export type ManagedSignal = (typeof SIGNAL_ROWS)[number]['signals'][number];
export const MANAGED_SIGNALS: readonly ManagedSignal[] = SIGNAL_ROWS.flatMap((r) => r.signals);

const ROW_OF = new Map<string, SignalRow>(SIGNAL_ROWS.flatMap((r) => r.signals.map((s) => [s, r] as const)));
export const rowOf = (signal: ManagedSignal): SignalRow => ROW_OF.get(signal)!;

/** The signal's name as operators write it (kill -HUP): without SIG. */
export const shortName = (signal: string): string => signal.replace(/^SIG/, '');
