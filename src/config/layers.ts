/** Owns the merge of the four layers, later wins: defaults < config file < environment < command
 *  line. Every value is validated where it comes from, so an error names its layer. Pure. */

import { ConfigError, showValue, suggestion } from './errors';
import { settings, SETTING_NAMES, type Config, type SettingName } from './settings';
import { Invalid } from './values';
import { workerClassMeaning } from './worker-class';
import { ENV_PREFIX, envName, INTERNAL_ENV } from '../env-names';
import { overlappingBind } from '../net/address';

export type Origin =
  | { readonly layer: 'default' }
  | { readonly layer: 'file'; readonly file: string }
  | { readonly layer: 'env'; readonly name: string }
  | { readonly layer: 'cli'; readonly flag: string };

export type CliValues = Partial<Record<SettingName, { readonly value: unknown; readonly flag: string }>>;

export interface LayerInputs {
  readonly cli: CliValues;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly file: { readonly path: string; readonly values: Readonly<Record<string, unknown>> } | null;
}

export interface Resolved {
  readonly config: Config;
  readonly origins: Readonly<Record<SettingName, Origin>>;
}

export function describeOrigin(origin: Origin): string {
  switch (origin.layer) {
    case 'default': return 'the default';
    case 'file': return `config file ${origin.file}`;
    case 'env': return `environment variable ${origin.name}`;
    case 'cli': return `the command line (${origin.flag})`;
  }
}

function parseFrom<K extends SettingName>(name: K, raw: unknown, origin: Origin): Config[K] {
  try {
    return settings[name].parse(raw) as Config[K];
  } catch (err) {
    if (!(err instanceof Invalid)) throw err;
    throw new ConfigError(`invalid ${name} = ${showValue(raw)} from ${describeOrigin(origin)}: ${err.message}`);
  }
}

/** The environment's value for a setting: FORKD_<NAME> first, then its aliases in order. */
function fromEnv(name: SettingName, env: LayerInputs['env']): { raw: unknown; origin: Origin } | null {
  if (settings[name].fileOnly) return null;
  const own = env[envName(name)];
  if (own !== undefined && own !== '') return { raw: own, origin: { layer: 'env', name: envName(name) } };
  const def = settings[name];
  for (const alias of def.env ?? []) {
    const v = env[alias.name];
    if (v !== undefined && v !== '') {
      return { raw: alias.map ? alias.map(v) : v, origin: { layer: 'env', name: alias.name } };
    }
  }
  return null;
}

function checkUnknown(inputs: LayerInputs): void {
  if (inputs.file) {
    for (const key of Object.keys(inputs.file.values)) {
      if (!(key in settings)) {
        throw new ConfigError(`unknown setting ${JSON.stringify(key)} in config file ${inputs.file.path}`
          + `${suggestion(key, SETTING_NAMES)} (forkd --help lists every setting)`);
      }
      if (settings[key as SettingName].notInFile) {
        throw new ConfigError(`${key} cannot be set in config file ${inputs.file.path}: it says where that file is;`
          + ' use the command line or the environment');
      }
    }
  }
  const known = SETTING_NAMES.filter((n) => !settings[n].fileOnly).map(envName);
  for (const name of Object.keys(inputs.env)) {
    if (name.startsWith(ENV_PREFIX) && !known.includes(name) && !INTERNAL_ENV.includes(name)) {
      throw new ConfigError(`unknown environment variable ${name}${suggestion(name, known)}`
        + ` (${ENV_PREFIX}<SETTING> variables set settings; forkd --help lists them)`);
    }
  }
}

function checkTogether(config: Config, origins: Resolved['origins']): void {
  if (config.requestTimeout > 0 && config.headersTimeout > config.requestTimeout) {
    throw new ConfigError(`headersTimeout (${config.headersTimeout}s, from ${describeOrigin(origins.headersTimeout)})`
      + ` must not exceed requestTimeout (${config.requestTimeout}s, from ${describeOrigin(origins.requestTimeout)})`);
  }
  if (config.statusBind.length > 0) {
    const clash = overlappingBind([...config.bind, ...config.statusBind]);
    if (clash) {
      throw new ConfigError(`statusBind (from ${describeOrigin(origins.statusBind)}) and bind (from ${describeOrigin(origins.bind)}) overlap: ${clash};`
        + ' the status listener needs an address of its own');
    }
  }
  const { maxThreads } = workerClassMeaning(config);
  if (maxThreads !== null && config.threads > maxThreads) {
    throw new ConfigError(`workerClass "${config.workerClass}" (from ${describeOrigin(origins.workerClass)}) serves one connection at a time`
      + ` in each worker process and cannot have threads (${config.threads}, from ${describeOrigin(origins.threads)});`
      + ' allowed: threads 1 with "sync", or workerClass "async" with any threads (and workerConnections for a cap)');
  }
}

export function resolveLayers(inputs: LayerInputs): Resolved {
  checkUnknown(inputs);
  const config: Record<string, unknown> = {};
  const origins: Record<string, Origin> = {};
  for (const name of SETTING_NAMES) {
    let value: unknown = settings[name].default;
    let origin: Origin = { layer: 'default' };
    if (inputs.file && Object.hasOwn(inputs.file.values, name) && inputs.file.values[name] !== undefined) {
      origin = { layer: 'file', file: inputs.file.path };
      value = parseFrom(name, inputs.file.values[name], origin);
    }
    const env = fromEnv(name, inputs.env);
    if (env) { origin = env.origin; value = parseFrom(name, env.raw, origin); }
    const cli = inputs.cli[name];
    if (cli) { origin = { layer: 'cli', flag: cli.flag }; value = parseFrom(name, cli.value, origin); }
    config[name] = value;
    origins[name] = origin;
  }
  const resolved = { config: config as Config, origins: origins as Record<SettingName, Origin> };
  checkTogether(resolved.config, resolved.origins);
  return resolved;
}
