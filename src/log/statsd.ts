/** Owns forkd's statsd output, with gunicorn's names (`forkd.` where gunicorn says `gunicorn.`),
 *  after statsdPrefix: `forkd.requests` (counter), `forkd.request.duration` (timer, ms) and
 *  `forkd.request.status.<code>` from each worker as its responses end; `forkd.workers` (gauge)
 *  from the master; `forkd.log.critical|error|warning|exception` from whichever process logged.
 *  hot-shots sends them, buffered into packets (flushed at least every second), over UDP or a
 *  Unix datagram socket; a statsd server that is down costs a dropped datagram and nothing else:
 *  send errors are swallowed after the first is logged. Loaded only when statsdHost is set. */

import type { ResponseDone } from '../worker/responses';
import type { Logger, LogLevel, Meta } from './logger';

export interface StatsdTarget {
  /** HOST:PORT, or unix:PATH. */
  readonly host: string;
  readonly prefix: string;
  /** dogstatsd tags, as "key:value" strings. */
  readonly tags: readonly string[];
}

export interface Statsd {
  increment(name: string, n?: number): void;
  gauge(name: string, value: number): void;
  timing(name: string, ms: number): void;
  /** Sends what is buffered, then closes. */
  close(): Promise<void>;
}

const BUFFER_BYTES = 1400;
const FLUSH_EVERY_MS = 1000;
const CLOSE_WITHIN_MS = 1000;

/** Sends nothing: statsd to a Unix socket without the package that can. */
const SILENT: Statsd = { increment() {}, gauge() {}, timing() {}, close: () => Promise.resolve() };

/** Why hot-shots cannot send Unix datagrams here (Node cannot by itself: its optional unix-dgram,
 *  a native addon, is missing or was built for another Node), or null when it can. */
function unixDgramMissing(): string | null {
  try {
    require('unix-dgram');
    return null;
  } catch (err) {
    return String((err as Error).message).split('\n')[0]!.trim();
  }
}

/** A client for `target`; `log` hears of the first failed send only (a down server is normal). */
export function openStatsd(target: StatsdTarget, log: Logger | null): Statsd {
  const { StatsD } = require('hot-shots') as typeof import('hot-shots');
  let warned = false;
  const errorHandler = (err: Error) => {
    if (warned) return;
    warned = true;
    log?.warning(`statsd: cannot send to ${target.host}: ${err.message} (dropping what cannot be sent, and not saying so again)`, { event: 'statsd.error' });
  };
  const where = target.host.startsWith('unix:')
    ? { protocol: 'uds' as const, path: target.host.slice('unix:'.length) }
    : { protocol: 'udp' as const, ...hostPort(target.host)! };
  const missing = where.protocol === 'uds' ? unixDgramMissing() : null;
  if (missing !== null) {
    log?.error(`statsd: ${target.host} needs the optional package unix-dgram, built for Node ${process.version} (${missing}); `
      + 'sending nothing (a HOST:PORT statsd needs no package)', { event: 'statsd.error' });
    return SILENT;
  }
  const client = new StatsD({
    ...where,
    prefix: target.prefix,
    globalTags: [...target.tags],
    maxBufferSize: BUFFER_BYTES,
    bufferFlushInterval: FLUSH_EVERY_MS,
    errorHandler,
    datadog: false,
    includeDataDogTags: false,
    includeDatadogTelemetry: false,
  });
  // A datagram socket must not keep a stopping process alive. hot-shots' unix:PATH transport
  // (unix-dgram) throws from unref instead: a master and its workers end themselves, so it may stay.
  try { (client as unknown as { socket?: { unref?: () => void } }).socket?.unref?.(); } catch { /* unix-dgram */ }
  return {
    increment: (name, n = 1) => client.increment(name, n),
    gauge: (name, value) => client.gauge(name, value),
    timing: (name, ms) => client.timing(name, ms),
    // Bounded: a statsd server that is gone must not hold a stopping process.
    close: () => new Promise<void>((done) => {
      const timer = setTimeout(done, CLOSE_WITHIN_MS);
      client.close(() => { clearTimeout(timer); done(); });
    }),
  };
}

export const STATSD_FORMS = 'HOST:PORT, [IPv6]:PORT or unix:PATH';

/** HOST:PORT or [IPv6]:PORT, the port 8125 when left out; null when it is neither. */
export function hostPort(s: string): { host: string; port: number } | null {
  const m = /^\[([0-9a-fA-F:.]+)\](?::(\d+))?$/.exec(s) ?? /^([^:[\]\s]+)(?::(\d+))?$/.exec(s);
  return m ? { host: m[1]!, port: m[2] ? Number(m[2]) : 8125 } : null;
}

/** The per-response part, for a worker's response watchers. */
export function statsdResponses(statsd: Statsd): ResponseDone {
  return (res, durationMs) => {
    if (!res.writableFinished) return; // its connection went first: no response was sent
    statsd.increment('forkd.requests');
    statsd.timing('forkd.request.duration', durationMs);
    statsd.increment(`forkd.request.status.${res.statusCode}`);
  };
}

const COUNTED: ReadonlySet<LogLevel> = new Set(['critical', 'error', 'warning']);

/** Counts log lines as gunicorn does: forkd.log.critical, .error and .warning by level, and
 *  forkd.log.exception for an error that carries one. */
export function statsdLogCounter(statsd: Statsd): (level: LogLevel, meta: Meta) => void {
  return (level, meta) => {
    if (!COUNTED.has(level)) return;
    statsd.increment(`forkd.log.${level}`);
    if (meta.error instanceof Error) statsd.increment('forkd.log.exception');
  };
}
