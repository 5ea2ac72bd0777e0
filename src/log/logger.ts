/** Owns the error log: gunicorn's levels and line shape,
 *  `[2026-11-27 10:00:00 +0000] [1234] [INFO] Listening at: http://127.0.0.1:8000 key=value …`.
 *  Every message and value is escaped; one event is one line.
 *
 *  The master logs through winston. Workers write the same lines to the same sinks directly:
 *  winston is 87 modules that take ~60 ms to load, a third of a worker's boot, and workers boot on
 *  every reload, respawn and TTIN. */

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
  /** Write to another file, or at another level, from now on (a reload). Throws if it cannot open. */
  reconfigure(opts: { target: string; level: LogLevel }): void;
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

/** `target` is a path or "-" (stderr). `backend` picks winston (the master) or direct writes (workers). */
export function createLogger(opts: { target: string; level: LogLevel; backend?: 'winston' | 'direct' }): Logger {
  const make = (s: LineSink, level: LogLevel) => (opts.backend === 'direct' ? directWriter(s, level) : winstonWriter(s, level));
  let current = { target: opts.target, level: opts.level };
  let sink = openLineSink(opts.target, 2);
  let log = make(sink, opts.level);
  const at = (level: LogLevel) => (message: string, meta: Meta = {}) => log.write(level, message, meta);
  return {
    critical: at('critical'), error: at('error'), warning: at('warning'), info: at('info'), debug: at('debug'),
    reopen: () => sink.reopen(),
    reconfigure(next) {
      if (next.target === current.target && next.level === current.level) return;
      const nextSink = next.target === current.target ? sink : openLineSink(next.target, 2);
      log.close();
      if (nextSink !== sink) sink.close();
      sink = nextSink;
      log = make(sink, next.level);
      current = { ...next };
    },
    close: () => { log.close(); sink.close(); },
  };
}

interface Writer { write(level: LogLevel, message: string, meta: Meta): void; close(): void }

function directWriter(sink: LineSink, level: LogLevel): Writer {
  const max = LEVELS[level];
  return {
    write: (lvl, message, meta) => { if (LEVELS[lvl] <= max) sink.write(renderLine(lvl, message, meta, new Date(), process.pid)); },
    close: () => undefined,
  };
}

function winstonWriter(sink: LineSink, level: LogLevel): Writer {
  // Required here, not at the top: workers never load it (see the note at the top of this file).
  const winston = require('winston') as typeof import('winston');
  const TransportStream = require('winston-transport') as typeof import('winston-transport');
  class SinkTransport extends TransportStream {
    override log(info: Record<string | symbol, unknown>, next: () => void): void {
      sink.write(info[MESSAGE] as string);
      next();
    }
  }
  const lineFormat = winston.format((info) => {
    const { level: lvl, message, ...meta } = info as Record<string | symbol, unknown>;
    for (const sym of Object.getOwnPropertySymbols(meta)) delete (meta as Record<symbol, unknown>)[sym];
    (info as Record<symbol, unknown>)[MESSAGE] = renderLine(String(lvl), String(message), meta as Meta, new Date(), process.pid);
    return info;
  });
  const w = winston.createLogger({
    levels: LEVELS, level, format: lineFormat(), transports: [new SinkTransport()], exitOnError: false,
  });
  return { write: (lvl, message, meta) => { w.log({ level: lvl, message, ...meta }); }, close: () => w.close() };
}
