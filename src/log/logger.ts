/** Owns the error log: gunicorn's levels and line shape,
 *  `[2026-11-27 10:00:00 +0000] [1234] [INFO] Listening at: http://127.0.0.1:8000 key=value …`.
 *  Every message and value is escaped; one event is one line.
 *
 *  The master and every worker render each line here and write it straight to its sink. (The master
 *  logged through winston until it was measured: 87 modules, ~60 ms to load and ~8.5 MB of the
 *  master's resident memory, for lines this module renders itself and one synchronous write.) */

import { escapeControl, escapeQuoted } from './escape';
import { openLineSink } from './line-sink';

export type Meta = Readonly<Record<string, unknown>>;

export interface Logger {
  critical(message: string, meta?: Meta): void;
  error(message: string, meta?: Meta): void;
  warning(message: string, meta?: Meta): void;
  info(message: string, meta?: Meta): void;
  debug(message: string, meta?: Meta): void;
  /** Reopen the log file under its name (USR1 after logrotate). */
  reopen(): void;
  /** Write to another file, or at another level, from now on (a reload). Throws if it cannot open. */
  reconfigure(opts: { target: string; level: LogLevel }): void;
  /** `counter` hears of every line asked for, written or not, from now on (statsd's forkd.log.*). */
  countLines(counter: ((level: LogLevel, meta: Meta) => void) | null): void;
  close(): void;
}

/** gunicorn's levels, most severe first: a logger at one writes it and every level before it. */
export const LOG_LEVELS = ['critical', 'error', 'warning', 'info', 'debug'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const LEVELS = Object.fromEntries(LOG_LEVELS.map((level, i) => [level, i])) as Record<LogLevel, number>;

function pad(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

/** Local time with its UTC offset, as gunicorn writes it. */
export function formatLogTime(d: Date): string {
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? '+' : '-';
  const abs = Math.abs(off);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} `
    + `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${sign}${pad(Math.floor(abs / 60))}${pad(abs % 60)}`;
}

function renderValue(value: unknown): string {
  let s: string;
  if (typeof value === 'string') s = value;
  else if (value instanceof Error) s = value.stack ?? String(value);
  else {
    try { s = JSON.stringify(value) ?? String(value); } catch { s = String(value); }
  }
  return /^[^\s"=\\\x00-\x1f\x7f-\x9f]+$/.test(s) ? s : `"${escapeQuoted(s)}"`;
}

export function renderLine(level: string, message: string, meta: Meta, now: Date, pid: number): string {
  let line = `[${formatLogTime(now)}] [${pid}] [${level.toUpperCase()}] ${escapeControl(message)}`;
  for (const [k, v] of Object.entries(meta)) {
    if (v !== undefined) line += ` ${k}=${renderValue(v)}`;
  }
  return line;
}

/** `target` is a path or "-" (stderr). */
export function createLogger(opts: { target: string; level: LogLevel }): Logger {
  let current = { target: opts.target, level: opts.level };
  let sink = openLineSink(opts.target, 2);
  let max = LEVELS[opts.level];
  let counter: ((level: LogLevel, meta: Meta) => void) | null = null;
  const at = (level: LogLevel) => (message: string, meta: Meta = {}) => {
    if (LEVELS[level] <= max) sink.write(renderLine(level, message, meta, new Date(), process.pid));
    if (counter) counter(level, meta);
  };
  return {
    critical: at('critical'), error: at('error'), warning: at('warning'), info: at('info'), debug: at('debug'),
    reopen: () => sink.reopen(),
    reconfigure(next) {
      if (next.target === current.target && next.level === current.level) return;
      if (next.target !== current.target) {
        const nextSink = openLineSink(next.target, 2);
        sink.close();
        sink = nextSink;
      }
      max = LEVELS[next.level];
      current = { ...next };
    },
    countLines(c) { counter = c; },
    close: () => sink.close(),
  };
}
