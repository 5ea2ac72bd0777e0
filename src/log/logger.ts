/** Owns the error log: a winston logger with gunicorn's levels and line shape,
 *  `[2026-11-27 10:00:00 +0000] [1234] [INFO] Listening at: http://127.0.0.1:8000 key=value …`.
 *  Every message and value is escaped; one event is one line. */

import winston from 'winston';
import TransportStream from 'winston-transport';
import type { LogLevel } from '../config/settings';
import { escapeControl, escapeQuoted } from './escape';
import { openLineSink, type LineSink } from './line-sink';

export type Meta = Readonly<Record<string, unknown>>;

export interface Logger {
  critical(message: string, meta?: Meta): void;
  error(message: string, meta?: Meta): void;
  warning(message: string, meta?: Meta): void;
  info(message: string, meta?: Meta): void;
  debug(message: string, meta?: Meta): void;
  /** Reopen the log file under its name (USR1 after logrotate). */
  reopen(): void;
  close(): void;
}

/** winston's key for the finished line (triple-beam's MESSAGE). */
const MESSAGE = Symbol.for('message');

const LEVELS: Record<LogLevel, number> = { critical: 0, error: 1, warning: 2, info: 3, debug: 4 };

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

class SinkTransport extends TransportStream {
  constructor(readonly sink: LineSink) {
    super();
  }

  override log(info: Record<string | symbol, unknown>, next: () => void): void {
    this.sink.write(info[MESSAGE] as string);
    next();
  }
}

/** `target` is a path or "-" (stderr). */
export function createLogger(opts: { target: string; level: LogLevel }): Logger {
  const sink = openLineSink(opts.target, 2);
  const lineFormat = winston.format((info) => {
    const { level, message, [MESSAGE]: _m, ...meta } = info as Record<string | symbol, unknown>;
    for (const sym of Object.getOwnPropertySymbols(meta)) delete (meta as Record<symbol, unknown>)[sym];
    (info as Record<symbol, unknown>)[MESSAGE] = renderLine(String(level), String(message), meta as Meta, new Date(), process.pid);
    return info;
  });
  const w = winston.createLogger({
    levels: LEVELS, level: opts.level, format: lineFormat(), transports: [new SinkTransport(sink)], exitOnError: false,
  });
  const at = (level: LogLevel) => (message: string, meta: Meta = {}) => { w.log({ level, message, ...meta }); };
  return {
    critical: at('critical'), error: at('error'), warning: at('warning'), info: at('info'), debug: at('debug'),
    reopen: () => sink.reopen(),
    close: () => { w.close(); sink.close(); },
  };
}
