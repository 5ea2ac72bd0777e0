/** Owns the command line: flags derived from the settings table, plus the few actions that are not
 *  settings (--help, --version, --check-config, --print-config). Values are kept raw; validation
 *  happens in the layers, where the error can name the flag. */

import { settings, SETTING_NAMES, type SettingName } from '../config/settings';
import { suggestion, UsageError } from '../config/errors';
import type { CliValues } from '../config/layers';

export const ACTIONS = {
  help: { flags: ['-h', '--help'], doc: 'Show this help and exit.' },
  version: { flags: ['-v', '--version'], doc: 'Show the version and exit.' },
  checkConfig: { flags: ['--check-config'], doc: 'Validate the config and load the app, then exit 0 (valid) or 78.' },
  printConfig: { flags: ['--print-config'], doc: 'Print every effective setting with the layer it came from, then exit.' },
} as const;
export type Action = keyof typeof ACTIONS;

export interface ParsedArgv {
  readonly values: CliValues;
  readonly actions: ReadonlySet<Action>;
}

type FlagTarget = { kind: 'setting'; name: SettingName } | { kind: 'action'; name: Action };

function flagTable(): Map<string, FlagTarget> {
  const table = new Map<string, FlagTarget>();
  for (const name of SETTING_NAMES) {
    for (const flag of settings[name].flags ?? []) table.set(flag, { kind: 'setting', name });
  }
  for (const [name, action] of Object.entries(ACTIONS)) {
    for (const flag of action.flags) table.set(flag, { kind: 'action', name: name as Action });
  }
  return table;
}

function isBool(name: SettingName): boolean {
  return settings[name].parse.isBool === true;
}

export function parseArgv(argv: readonly string[]): ParsedArgv {
  const table = flagTable();
  const values: Record<string, { value: unknown; flag: string }> = {};
  const actions = new Set<Action>();
  const positionals: string[] = [];
  const set = (name: SettingName, value: unknown, flag: string) => {
    const prev = values[name];
    if (settings[name].parse.repeats) {
      const list = prev && Array.isArray(prev.value) ? prev.value : [];
      values[name] = { value: [...list, value], flag };
    } else values[name] = { value, flag };
  };

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') { positionals.push(...argv.slice(i + 1)); break; }
    if (!arg.startsWith('-') || arg === '-') { positionals.push(arg); continue; }

    let flag = arg;
    let inline: string | undefined;
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      if (eq > 0) { flag = arg.slice(0, eq); inline = arg.slice(eq + 1); }
    } else if (arg.length > 2) {
      flag = arg.slice(0, 2);
      inline = arg.slice(2);
    }
    let target = table.get(flag);
    let negated = false;
    if (!target && flag.startsWith('--no-')) {
      const positive = table.get(`--${flag.slice(5)}`);
      if (positive?.kind === 'setting' && isBool(positive.name)) { target = positive; negated = true; }
    }
    if (!target) {
      throw new UsageError(`unknown option ${flag}${suggestion(flag, [...table.keys()])} (forkd --help lists them)`);
    }
    if (target.kind === 'action') {
      if (inline !== undefined) throw new UsageError(`${flag} takes no value`);
      actions.add(target.name);
      continue;
    }
    if (isBool(target.name)) {
      if (negated && inline !== undefined) throw new UsageError(`${flag} takes no value`);
      set(target.name, negated ? false : inline ?? true, flag);
      continue;
    }
    const value = inline ?? argv[++i];
    if (value === undefined) {
      throw new UsageError(`${flag} needs a value (${settings[target.name].metavar ?? 'VALUE'})`);
    }
    set(target.name, value, flag);
  }

  if (positionals.length > 1) {
    throw new UsageError(`expected one APP, got ${positionals.length}: ${positionals.join(' ')}`);
  }
  if (positionals.length === 1) values.app = { value: positionals[0], flag: 'APP' };
  return { values: values as CliValues, actions };
}
