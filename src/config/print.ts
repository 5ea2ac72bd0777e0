/** Owns --print-config: every effective setting, its value, and the layer it came from. */

import { describeOrigin, type Resolved } from './layers';
import { autoWorkers } from './values';
import { SETTING_NAMES } from './settings';

export function renderConfig(resolved: Resolved): string {
  const rows = SETTING_NAMES.map((name) => {
    const raw = resolved.config[name];
    let value = typeof raw === 'function' ? `[function ${raw.name || 'anonymous'}]` : JSON.stringify(raw);
    if (name === 'workers' && resolved.config.workers === 'auto') {
      const auto = autoWorkers();
      value += ` (= ${auto.count}: ${auto.source})`;
    }
    return [name, value, describeOrigin(resolved.origins[name])] as const;
  });
  const w0 = Math.max(...rows.map((r) => r[0].length));
  const w1 = Math.min(48, Math.max(...rows.map((r) => r[1].length)));
  return rows.map(([n, v, o]) => `${n.padEnd(w0)}  ${v.padEnd(w1)}  # ${o}`).join('\n');
}
