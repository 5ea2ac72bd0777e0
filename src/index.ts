/** Owns forkd's public API for config files: `defineConfig()` and the types it checks against. */

import type { HookName, Hooks } from './config/hooks';
import type { Config, SettingName } from './config/settings';
import type { ServiceDef } from './config/values';

export type { Config } from './config/settings';
export type { Hooks, MasterInfo, WorkerInfo } from './config/hooks';
/** What a service's function (`services`) is called with. */
export type { ServiceContext } from './service/main';

/** What a config file may give for a setting: durations and counts may also be strings ("2m"), a
 *  service may be "NAME=MODULE" and leave out overlap. */
type Input<T> = T extends number ? number | string
  : T extends Readonly<Record<string, string>> ? Readonly<Record<string, string | number | boolean>> | readonly string[]
    : T extends readonly string[] ? readonly string[] | string
      : T extends readonly ServiceDef[] ? readonly (string | { readonly name: string; readonly module: string; readonly overlap?: boolean })[]
        : T;

export type UserConfig = { readonly [K in Exclude<SettingName, 'config' | HookName>]?: Input<Config[K]> }
  & { readonly [K in HookName]?: Hooks[K] | null };

/** Types a config file: `export default defineConfig({ workers: 4, bind: ['0.0.0.0:8080'] })`. */
export function defineConfig<T extends UserConfig | (() => UserConfig | Promise<UserConfig>)>(config: T): T {
  return config;
}
