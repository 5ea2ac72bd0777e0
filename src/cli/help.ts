/** Owns --help: rendered from the settings, action, signal and exit code tables, never written by hand. */

import { settings, SETTING_NAMES, type Section } from '../config/settings';
import { SIGNAL_ROWS, shortName } from '../arbiter/signal-table';
import { ENV_PREFIX, envName } from '../env-names';
import { EXIT_CODE_MEANINGS } from '../exit-codes';
import { ACTIONS } from './argv';

const WIDTH = 100;
const INDENT = 30;

function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/)) {
    if (line && line.length + 1 + word.length > width) { lines.push(line); line = word; } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines;
}

function entry(left: string, doc: string): string {
  const body = wrap(doc, WIDTH - INDENT);
  const first = left.length < INDENT - 2 ? `  ${left.padEnd(INDENT - 2)}${body.shift() ?? ''}` : `  ${left}`;
  return [first, ...body.map((l) => `${' '.repeat(INDENT)}${l}`)].join('\n');
}

export function renderHelp(version: string): string {
  const out = [
    `forkd ${version}: a pre-fork HTTP server for Node.js apps`,
    '',
    'Usage: forkd [options] APP',
    '       forkd ctl [-s PATH] COMMAND   steer a running master over its control socket (forkd ctl --help)',
    '',
    'APP is MODULE, MODULE:EXPORT or MODULE:FACTORY(). The export may be a request listener (Express),',
    'a Koa app, a Fastify instance, an http.Server, or a fetch handler ((Request) => Response, or an',
    'object with fetch(), as Hono). Settings come from, later winning: defaults < config file <',
    `environment (${ENV_PREFIX}<NAME>) < command line.`,
  ];
  const sections = new Map<Section, string[]>();
  const hooks: string[] = [];
  for (const name of SETTING_NAMES) {
    const def = settings[name];
    if (def.fileOnly && def.section === 'Hooks') { hooks.push(entry(name, def.doc)); continue; }
    if (def.fileOnly) {
      const list = sections.get(def.section) ?? [];
      list.push(entry(`${name} (config file only)`, def.doc));
      sections.set(def.section, list);
      continue;
    }
    if (!def.flags) continue;
    const isBool = def.parse.isBool === true;
    const long = def.flags[def.flags.length - 1]!;
    const left = `${def.flags.join(', ')}${isBool ? `, --no-${long.slice(2)}` : ` ${def.metavar ?? 'VALUE'}`}`;
    const envs = [envName(name), ...(def.env ?? []).map((e) => e.name)].join(', ');
    const file = def.notInFile ? '' : `; file: ${name}`;
    const doc = `${def.doc} [default: ${JSON.stringify(def.default)}; env: ${envs}${file}]`;
    const list = sections.get(def.section) ?? [];
    list.push(entry(left, doc));
    sections.set(def.section, list);
  }
  for (const [section, entries] of sections) out.push('', `${section}:`, ...entries);
  out.push('', 'Hooks (functions in the config file, gunicorn\'s server hooks camelCased):', ...hooks);
  out.push('', 'Actions:', ...Object.values(ACTIONS).map((a) => entry(a.flags.join(', '), a.doc)));
  const signals = SIGNAL_ROWS.map((r) => `${r.signals.map(shortName).join('/')} ${r.summary}`).join(', ');
  out.push('', ...wrap(`Signals to the master: ${signals}.`, WIDTH - 2),
    `Exit codes: ${Object.entries(EXIT_CODE_MEANINGS).map(([code, meaning]) => `${code} ${meaning}`).join(', ')}.`);
  return out.join('\n');
}
