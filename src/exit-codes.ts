/** Owns forkd's exit codes: a contract with operators and with systemd (RestartPreventExitStatus=78). */

export const ExitCode = {
  Ok: 0,
  /** Something failed that has no code of its own, e.g. a listener could not be bound. */
  Failure: 1,
  Usage: 2,
  /** Workers kept failing to boot at start. */
  BootFailed: 3,
  /** The app could not be loaded (a worker's exit code too). */
  AppLoadFailed: 4,
  /** EX_CONFIG: the configuration is invalid. */
  ConfigInvalid: 78,
} as const;

export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** What each code tells an operator, for --help and the man page. */
export const EXIT_CODE_MEANINGS: Readonly<Record<ExitCode, string>> = {
  0: 'stopped',
  1: 'failure (e.g. an address in use)',
  2: 'usage error',
  3: 'workers kept failing to boot at start',
  4: 'the app failed to load',
  78: 'invalid config',
};
