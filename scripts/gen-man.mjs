#!/usr/bin/env node
// Writes man/forkd.config.5, and the OPTIONS, SIGNALS and EXIT STATUS sections of man/forkd.1, from
// the settings, signal and exit code tables, so that the pages never disagree with --help. Usage: npm run build && node scripts/gen-man.mjs [--check]
// With --check it writes nothing and exits 1 if a committed page is out of date.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);
const { settings, SETTING_NAMES } = require(join(root, 'dist/src/config/settings.js'));
const { ENV_PREFIX, envName } = require(join(root, 'dist/src/env-names.js'));
const { ACTIONS } = require(join(root, 'dist/src/cli/argv.js'));
const { EXIT_CODE_MEANINGS } = require(join(root, 'dist/src/exit-codes.js'));
const { SIGNAL_ROWS, shortName } = require(join(root, 'dist/src/arbiter/signal-table.js'));
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

/** The date the pages carry: changed by hand when their text changes, not by each build. */
const DATE = '2026-11-27';
const begin = (block) => `.\\" BEGIN GENERATED ${block} (scripts/gen-man.mjs)`;
const end = (block) => `.\\" END GENERATED ${block}`;

/** Text for roff: backslashes doubled, hyphens and leading dots/quotes made literal. */
function roff(text) {
  return String(text).replace(/\\/g, '\\e').replace(/-/g, '\\-').replace(/^([.'])/gm, '\\&$1');
}

function defaultOf(name) {
  const d = settings[name].default;
  return d === null ? 'unset' : JSON.stringify(d);
}

function optionEntries() {
  const out = [];
  for (const [name, action] of Object.entries(ACTIONS)) {
    out.push('.TP', `.B ${action.flags.map(roff).join(', ')}`, roff(action.doc));
    void name;
  }
  for (const name of SETTING_NAMES) {
    const def = settings[name];
    if (!def.flags) continue;
    const long = def.flags[def.flags.length - 1];
    const flags = def.parse.isBool ? `${def.flags.join(', ')}, --no-${long.slice(2)}` : def.flags.join(', ');
    out.push('.TP', def.parse.isBool ? `.B ${roff(flags)}` : `.BI "${roff(flags)} " ${def.metavar ?? 'VALUE'}`,
      `${roff(def.doc)} Default: ${roff(defaultOf(name))}; environment: ${roff(envName(name))}${def.notInFile ? '' : `; config file: ${roff(name)}`}.`);
  }
  return out.join('\n');
}

function exitStatus() {
  return Object.entries(EXIT_CODE_MEANINGS).flatMap(([code, meaning]) => ['.TP', `.B ${code}`, `${roff(meaning)}.`]).join('\n');
}

/** A signal's text, with the settings it names (in backquotes) in bold. */
function signalDoc(doc) {
  return roff(doc).replace(/`([A-Za-z]+)`/g, (_, word) => {
    if (!SETTING_NAMES.includes(word)) throw new Error(`the signal table names \`${word}\`, which is no setting`);
    return `\\fB${word}\\fR`;
  });
}

function signals() {
  return SIGNAL_ROWS.flatMap((row) => {
    const names = row.signals.map(shortName);
    return ['.TP', names.length === 1 ? `.B ${names[0]}` : `.BR ${names.join(' ", " ')}`, signalDoc(row.doc)];
  }).join('\n');
}

/** Replaces what is between a block's markers in `page`. */
function fill(page, block, body) {
  const start = page.indexOf(begin(block));
  const stop = page.indexOf(end(block));
  if (start < 0 || stop < start) throw new Error(`man/forkd.1 has no generated ${block} markers`);
  return `${page.slice(0, start)}${begin(block)}\n${body}\n${page.slice(stop)}`;
}

export function renderForkd1(current) {
  const page = current.replace(/^\.TH .*$/m, `.TH FORKD 1 ${DATE} "forkd ${version}" "User Commands"`);
  return fill(fill(fill(page, 'OPTIONS', optionEntries()), 'SIGNALS', signals()), 'EXIT STATUS', exitStatus());
}

export function renderConfig5() {
  const lines = [
    `.TH FORKD.CONFIG 5 ${DATE} "forkd ${version}" "File Formats"`,
    '.SH NAME',
    'forkd.config \\- configuration of the forkd pre\\-fork HTTP server',
    '.SH SYNOPSIS',
    '.IR forkd.config. { ts , mts , cts , js , mjs , cjs , json , yaml , yml },',
    '.BR .forkdrc *,',
    'or the',
    '.B forkd',
    'key of',
    '.I package.json',
    '.SH DESCRIPTION',
    'forkd reads its settings in layers, later winning: defaults, then the config file, then the',
    'environment',
    `.RB ( ${ENV_PREFIX} <NAME>,`,
    'plus',
    '.B WEB_CONCURRENCY',
    'and',
    '.BR PORT ),',
    'then the command line.',
    'The config file is the one given with',
    '.BR \\-c ,',
    'or the first of the names above in the working directory (or',
    '.BR \\-\\-chdir ).',
    'A',
    '.B \\-c',
    'path without an extension means the first of its',
    '.BR .ts ", " .mts ", " .cts ", " .js ", " .mjs ", " .cjs ", " .json ", " .yaml ", " .yml',
    'files that exists.',
    '.PP',
    'A JavaScript or TypeScript config file exports an object of settings, or a function (possibly',
    'async) returning one; TypeScript files may use',
    '.B defineConfig()',
    'from',
    '.B forkd',
    'for types.',
    'The file is read afresh on every reload, and saving it reloads forkd',
    '.RB ( reloadOnConfigChange ).',
    'Durations are seconds, or strings such as "500ms", "30s", "2m".',
    'An unknown setting or an invalid value is refused with one message naming the setting, the value,',
    'where it came from and what is allowed: exit 78 at start, the old config kept on a reload.',
    '.PP',
    'The config file, a function it exports, and the hooks marked [master] run in the master, which',
    'runs no hot code and so runs without V8\\(aqs optimizing compilers: heavy computing belongs in',
    'a worker hook or in the app.',
    'The hooks marked [worker] run in each worker as its generation read the file: a worker started',
    'after the file was edited without a reload, or saved invalid, runs the hooks of the config it was',
    'started with (the file and the local modules it requires, as they were; packages and ES modules',
    'it imports load as they are when the worker starts, as the app\\(aqs do).',
    '.SH SETTINGS',
  ];
  let section = '';
  for (const name of SETTING_NAMES) {
    const def = settings[name];
    if (def.section !== section) { section = def.section; lines.push(`.SS ${roff(section)}`); }
    const where = def.fileOnly ? 'config file only'
      : `${def.flags ? `command line: ${def.flags.join(', ')}; ` : def.positional ? `command line: ${def.positional}; ` : ''}`
        + `environment: ${[envName(name), ...(def.env ?? []).map((e) => e.name)].join(', ')}`;
    lines.push('.TP', `.B ${roff(name)}`, roff(def.doc), '.br',
      `Allowed: ${roff(def.parse.allowed)}. Default: ${roff(defaultOf(name))}.`, '.br', roff(`${where}.`));
  }
  lines.push('.SH EXAMPLE', '.EX',
    ...roff(readFileSync(join(root, 'config', 'forkd.config.example.ts'), 'utf8').trimEnd()).split('\n'),
    '.EE', '.SH SEE ALSO', '.BR forkd (1)');
  return `${lines.join('\n')}\n`;
}

const isMain = process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1];
if (isMain) {
  const check = process.argv.includes('--check');
  const pages = [
    [join(root, 'man', 'forkd.1'), (cur) => renderForkd1(cur)],
    [join(root, 'man', 'forkd.config.5'), () => renderConfig5()],
  ];
  let stale = 0;
  for (const [path, render] of pages) {
    let current = '';
    try { current = readFileSync(path, 'utf8'); } catch { /* new */ }
    const next = render(current);
    if (next === current) continue;
    if (check) { console.error(`${path} is out of date: run node scripts/gen-man.mjs`); stale++; } else writeFileSync(path, next);
  }
  process.exitCode = stale ? 1 : 0;
}
