/** Owns reading the whole configuration: where the config file is, reading it, merging the layers.
 *  Called at start and again on every reload, so it reads everything afresh each time. */

import { resolve } from 'node:path';
import type { ConfigSnapshot } from './compile';
import { durationsMs, type DurationsMs } from './durations';
import { loadConfigFile } from './file';
import { resolveLayers, type CliValues, type Resolved } from './layers';
import { readTls } from './tls';

export interface LoadInputs {
  readonly cli: CliValues;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** The directory forkd was started in: relative paths on the command line are relative to it. */
  readonly cwd: string;
}

export interface Loaded extends Resolved {
  /** The config file that was read, if any. */
  readonly file: string | null;
  /** Every duration setting, in milliseconds: converted here, and nowhere else. */
  readonly durationsMs: DurationsMs;
  /** The config file as it ran in this read: what workers run their own hooks from. */
  readonly snapshot: ConfigSnapshot | null;
  /** The TLS material certfile/keyfile/caCerts name, read and checked in this read (null: no TLS). */
  readonly tls: ReturnType<typeof readTls>;
}

export async function loadConfig(inputs: LoadInputs): Promise<Loaded> {
  // Where the file is can only come from the command line or the environment.
  const early = resolveLayers({ cli: inputs.cli, env: inputs.env, file: null }).config;
  const searchFrom = early.chdir ? resolve(inputs.cwd, early.chdir) : inputs.cwd;
  const explicit = early.config ? resolve(inputs.cwd, early.config) : null;
  const file = await loadConfigFile({ explicit, searchFrom });
  const resolved = resolveLayers({ cli: inputs.cli, env: inputs.env, file });
  const tls = readTls(resolved.config);
  return { ...resolved, file: file?.path ?? null, durationsMs: durationsMs(resolved.config), snapshot: file?.snapshot ?? null, tls };
}
