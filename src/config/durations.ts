/** Owns turning durations into milliseconds, once, where the config is read: users give them in
 *  seconds (or "500ms", "2m"), timers take milliseconds. Loaded.durationsMs holds every duration
 *  setting in ms, and a worker is given its own in its spec; nothing else multiplies by 1000. */

import { settings, SETTING_NAMES, type Config, type SettingName } from './settings';
import type { DurationParser } from './values';

/** The settings whose parser is a duration, from the settings table. */
export type DurationName = { [K in SettingName]: (typeof settings)[K]['parse'] extends DurationParser ? K : never }[SettingName];

/** Every duration setting, in milliseconds. */
export type DurationsMs = { readonly [K in DurationName]: number };

const DURATION_NAMES = SETTING_NAMES.filter((name): name is DurationName => 'unit' in settings[name].parse);

export function durationsMs(config: Config): DurationsMs {
  return Object.fromEntries(DURATION_NAMES.map((name) => [name, config[name] * 1000])) as DurationsMs;
}
