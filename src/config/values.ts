/** Owns the value parsers the settings table is built from. Each takes what a user wrote (a CLI or
 *  environment string, or whatever a config file holds) and returns the typed value, or throws
 *  Invalid saying what is allowed. The layer that called it adds which setting and where from. */

import { isIP } from 'node:net';
import os from 'node:os';
import { overlappingBind, parseBind, type BindSpec } from '../net/address';
import { hostPort, STATSD_FORMS } from '../log/statsd';
import { cgroupCpuLimit, type CpuLimit } from './cpu-limit';

export class Invalid extends Error {
  /** `allowed` completes "expected …": it describes every acceptable value. */
  constructor(readonly allowed: string, readonly detail?: string) {
    super(detail ? `${detail}; expected ${allowed}` : `expected ${allowed}`);
  }
}

export interface Parser<T> {
  (input: unknown): T;
  /** What is allowed, for errors, --help and the man page. */
  readonly allowed: string;
  /** A flag of this kind takes no value on the command line (`--x` / `--no-x`). */
  readonly isBool?: boolean;
  /** Several command-line occurrences accumulate into a list. */
  readonly repeats?: boolean;
}

function parser<T>(allowed: string, fn: (input: unknown) => T, extra: Partial<Parser<T>> = {}): Parser<T> {
  return Object.assign(fn, { allowed, ...extra });
}

const UNITS_S: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600 };

/** Node's timers hold at most 2^31 - 1 ms; a longer one fires after 1 ms instead. */
const MAX_DURATION_S = Math.floor((2 ** 31 - 1) / 1000);

/** A duration's parser, marked so that durations.ts can find every duration setting in the table. */
export interface DurationParser extends Parser<number> {
  readonly unit: 'seconds';
}

/** Seconds as a number, or a string such as "500ms", "30s", "2m", "1h". Returns seconds (durations.ts
 *  gives the milliseconds timers take). `orZero`: 0 is also allowed (it turns the limit off) even
 *  when `min` is above it. */
export function duration(opts: { min?: number; orZero?: boolean } = {}): DurationParser {
  const min = opts.min ?? 0;
  const allowed = `${opts.orZero && min > 0 ? `0 (off) or ` : ''}a duration from ${min} to ${MAX_DURATION_S}: `
    + 'seconds, or a string such as "500ms", "30s", "2m"';
  return Object.assign(parser(allowed, (input) => {
    let secs: number;
    if (typeof input === 'number') secs = input;
    else if (typeof input === 'string') {
      const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(input);
      if (!m) throw new Invalid(allowed);
      secs = Number(m[1]) * UNITS_S[m[2] ?? 's']!;
    } else throw new Invalid(allowed);
    if (opts.orZero && secs === 0) return 0;
    if (!Number.isFinite(secs) || secs < min || secs > MAX_DURATION_S) throw new Invalid(allowed);
    return secs;
  }), { unit: 'seconds' as const });
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2,
  mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3 };

/** Bytes as a number, or a string such as "512MB" or "1.5G" (units are powers of 1024). */
export const byteSize: Parser<number> = parser('bytes, or a size such as "300MB" or "1G" (K, M, G are powers of 1024)', (input) => {
  const allowed = byteSize.allowed;
  if (typeof input === 'number' && Number.isInteger(input) && input >= 0) return input;
  const m = typeof input === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(input) : null;
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new Invalid(allowed);
  return Math.round(Number(m[1]) * unit);
});

export function integer(opts: { min?: number; max?: number } = {}): Parser<number> {
  const min = opts.min ?? 0;
  const allowed = opts.max === undefined ? `an integer ≥ ${min}` : `an integer from ${min} to ${opts.max}`;
  return parser(allowed, (input) => {
    const n = typeof input === 'string' && /^\s*-?\d+\s*$/.test(input) ? Number(input) : input;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < min || (opts.max !== undefined && n > opts.max)) {
      throw new Invalid(allowed);
    }
    return n;
  });
}

const TRUE = new Set(['true', '1', 'yes', 'on']);
const FALSE = new Set(['false', '0', 'no', 'off']);
export const bool: Parser<boolean> = parser('true or false', (input) => {
  if (typeof input === 'boolean') return input;
  if (typeof input === 'string' && TRUE.has(input.toLowerCase())) return true;
  if (typeof input === 'string' && FALSE.has(input.toLowerCase())) return false;
  throw new Invalid('true or false (or 1/0, yes/no, on/off)');
}, { isBool: true });

export function text(allowed = 'a non-empty string'): Parser<string> {
  return parser(allowed, (input) => {
    if (typeof input !== 'string' || input.length === 0) throw new Invalid(allowed);
    return input;
  });
}

/** Null (unset) or a value of `inner`: for settings whose default is "none". */
export function optional<T>(inner: Parser<T>): Parser<T | null> {
  return parser(`${inner.allowed}, or null`, (input) => (input === null ? null : inner(input)), {
    isBool: inner.isBool, repeats: inner.repeats,
  });
}

export function oneOf<const T extends string>(choices: readonly T[]): Parser<T> {
  const allowed = `one of ${choices.map((c) => JSON.stringify(c)).join(', ')}`;
  return parser(allowed, (input) => {
    if (typeof input !== 'string' || !(choices as readonly string[]).includes(input)) throw new Invalid(allowed);
    return input as T;
  });
}

/** An address (IPv4 or IPv6), a CIDR range (ADDRESS/BITS), or `*` for any. */
export const addressRange: Parser<string> = parser('an IP address, a CIDR range such as 10.0.0.0/8 or fd00::/8, or *', (input) => {
  const allowed = addressRange.allowed;
  if (typeof input !== 'string') throw new Invalid(allowed);
  const text = input.trim();
  if (text === '*') return text;
  const [address, bits, extra] = text.split('/');
  const family = isIP(address ?? '');
  if (!family || extra !== undefined) throw new Invalid(allowed);
  if (bits !== undefined && (!/^\d{1,3}$/.test(bits) || Number(bits) > (family === 4 ? 32 : 128))) throw new Invalid(allowed);
  return text;
});

/** Addresses and ranges (addressRange), comma-separated in one value or given as several (a
 *  repeated flag, a list in a config file): gunicorn's forwarded_allow_ips is written "a,b". */
export const addressRanges: Parser<string[]> = parser(`a list of addresses and CIDR ranges, comma-separated (${addressRange.allowed})`, (input) => {
  const items = (Array.isArray(input) ? input : [input]).flatMap((v) => (typeof v === 'string' ? v.split(',') : [v]))
    .map((v) => (typeof v === 'string' ? v.trim() : v)).filter((v) => v !== '');
  if (items.length === 0) throw new Invalid(addressRanges.allowed);
  return items.map((raw) => {
    try { return addressRange(raw); } catch (err) {
      if (err instanceof Invalid) throw new Invalid(addressRanges.allowed, `${JSON.stringify(raw)} is not valid (${err.message})`);
      throw err;
    }
  });
}, { repeats: true });

/** `auto`, or how many worker processes to keep alive. */
export const workerCount: Parser<'auto' | number> = parser('"auto" or an integer ≥ 1', (input) => {
  if (input === 'auto') return 'auto';
  try { return integer({ min: 1 })(input); } catch { throw new Invalid('"auto" or an integer ≥ 1'); }
});

/** A list given as an array (config file), a comma-separated string (environment), or several
 *  command-line flags. Items are validated one by one; the first bad one is named. */
export function list<T>(item: Parser<T>, plural: string): Parser<T[]> {
  const allowed = `a list of ${plural} (${item.allowed})`;
  return parser(allowed, (input) => {
    const items = typeof input === 'string' ? input.split(',').map((s) => s.trim()).filter(Boolean)
      : Array.isArray(input) ? input : null;
    if (items === null) throw new Invalid(allowed);
    return items.map((raw) => {
      try { return item(raw); } catch (err) {
        if (err instanceof Invalid) throw new Invalid(allowed, `${JSON.stringify(raw)} is not valid (${err.message})`);
        throw err;
      }
    });
  }, { repeats: true });
}

const BIND_FORMS = 'HOST:PORT, [IPv6]:PORT, unix:PATH, fd://N or fd://NAME';

/** Listen addresses: each must parse, and no two may claim the same address. */
/** Addresses to listen on; `allowEmpty` for a list that may name none (the status listener). */
function bindsParser(allowEmpty: boolean): Parser<string[]> {
  const one = parser<string>(BIND_FORMS, (input) => {
    if (typeof input !== 'string') throw new Invalid(BIND_FORMS);
    const spec: BindSpec | string = parseBind(input);
    if (typeof spec === 'string') throw new Invalid(BIND_FORMS, spec);
    return input;
  });
  const inner = list(one, 'addresses');
  return parser(inner.allowed, (input) => {
    const out = inner(input);
    if (out.length === 0 && !allowEmpty) throw new Invalid(inner.allowed, 'the list is empty');
    const clash = overlappingBind(out);
    if (clash) throw new Invalid(`${inner.allowed}, each address once`, clash);
    return out;
  }, { repeats: true });
}
export interface SniEntry { readonly servername: string; readonly certfile: string; readonly keyfile: string }

/** SNI certificates: a list of { servername, certfile, keyfile } (a config file's). */
export const sniList: Parser<SniEntry[]> = parser('a list of { servername, certfile, keyfile }', (input) => {
  const allowed = 'a list of { servername, certfile, keyfile }';
  if (!Array.isArray(input)) throw new Invalid(allowed);
  return input.map((e: unknown, i) => {
    const o = e as Partial<Record<keyof SniEntry, unknown>> | null;
    const ok = o && typeof o === 'object' && [o.servername, o.certfile, o.keyfile].every((v) => typeof v === 'string' && v.length > 0);
    if (!ok) throw new Invalid(allowed, `entry ${i + 1} is not one`);
    if (!/^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(o!.servername as string)) {
      throw new Invalid(allowed, `entry ${i + 1}: ${JSON.stringify(o!.servername)} is not a host name (or *.name)`);
    }
    return { servername: (o!.servername as string).toLowerCase(), certfile: o!.certfile as string, keyfile: o!.keyfile as string };
  });
});

/** Client certificates: gunicorn's ssl.CERT_* numbers are taken as their names. */
export const certReqs: Parser<'none' | 'optional' | 'required'> = parser('none, optional or required (or 0, 1, 2)', (input) => {
  const byNumber = ['none', 'optional', 'required'] as const;
  const s = typeof input === 'number' ? String(input) : input;
  if (typeof s === 'string' && /^[012]$/.test(s)) return byNumber[Number(s)]!;
  if (s === 'none' || s === 'optional' || s === 'required') return s;
  throw new Invalid('none, optional or required (or 0, 1, 2)');
});

/** A statsd server: HOST:PORT, [IPv6]:PORT (the port 8125 when left out) or unix:PATH. */
export const statsdAddress: Parser<string> = parser(STATSD_FORMS, (input) => {
  if (typeof input !== 'string' || input.length === 0) throw new Invalid(STATSD_FORMS);
  if (input.startsWith('unix:')) { if (input.length === 5) throw new Invalid(STATSD_FORMS, 'the path is empty'); return input; }
  const where = hostPort(input);
  if (!where) throw new Invalid(STATSD_FORMS);
  if (!(where.port >= 1 && where.port <= 65535)) throw new Invalid(STATSD_FORMS, `port ${where.port} is not 1..65535`);
  return input;
});

/** dogstatsd tags: each KEY:VALUE or a bare KEY; a string (or each string of a repeated flag) may
 *  hold several, comma-separated, as gunicorn's --dogstatsd-tags does. */
const tagItems = list(parser('KEY:VALUE or KEY', (input) => {
  if (typeof input !== 'string' || !/^[^\s,|#]+$/.test(input)) throw new Invalid('KEY:VALUE or KEY, without spaces, commas, | or #');
  return input;
}), 'tags');
export const tagList: Parser<string[]> = parser(tagItems.allowed, (input) => tagItems(
  Array.isArray(input) ? input.flatMap((x) => (typeof x === 'string' ? x.split(',').map((t) => t.trim()).filter(Boolean) : [x])) : input,
), { repeats: true });

export const bindList = bindsParser(false);
/** The status listener's addresses: TCP or a Unix socket of its own (never a socket it is given). */
export const statusBindList: Parser<string[]> = (() => {
  const binds = bindsParser(true);
  const allowed = 'a list of addresses (HOST:PORT, [IPv6]:PORT or unix:PATH)';
  return parser(allowed, (input) => {
    const out = binds(input);
    const given = out.find((b) => { const spec = parseBind(b); return typeof spec !== 'string' && spec.kind !== 'tcp' && spec.kind !== 'unix'; });
    if (given) throw new Invalid(allowed, `${given} is a socket forkd is given; the status listener binds its own`);
    return out;
  }, { repeats: true });
})();

function noNul(key: string, value: string): string {
  if (value.includes('\0')) throw new Invalid('KEY=VALUE pairs (an object in a config file)', `the value of ${key} holds a NUL byte`);
  return value;
}

/** Environment for the workers: an object in a config file, `KEY=VALUE` items elsewhere. */
export const envMap: Parser<Record<string, string>> = parser('KEY=VALUE pairs (an object in a config file)', (input) => {
  const allowed = 'KEY=VALUE pairs (an object in a config file)';
  const out: Record<string, string> = {};
  const items = typeof input === 'string' ? [input] : input;
  if (Array.isArray(items)) {
    for (const item of items) {
      const m = typeof item === 'string' ? /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(item) : null;
      if (!m) throw new Invalid(allowed, `${JSON.stringify(item)} is not KEY=VALUE`);
      out[m[1]!] = noNul(m[1]!, m[2]!);
    }
    return out;
  }
  if (input && typeof input === 'object') {
    for (const [k, v] of Object.entries(input)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new Invalid(allowed, `${JSON.stringify(k)} is not a variable name`);
      if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') {
        throw new Invalid(allowed, `the value of ${k} is not a string`);
      }
      out[k] = noNul(k, String(v));
    }
    return out;
  }
  throw new Invalid(allowed);
}, { repeats: true });

/** What `workers: "auto"` means: one worker per CPU this process may run on. A Node worker
 *  multiplexes I/O on its event loop, so it does not need gunicorn's 2 × CPU + 1 to hide blocking;
 *  measured here, 5 workers on 2 cores served no more than 2 did. */
export function resolveWorkerCount(workers: 'auto' | number): number {
  return workers === 'auto' ? autoWorkers().count : workers;
}

/** What `auto` comes to, and why: the CPUs this process may run on, or its container's CPU quota
 *  when that is smaller (cpu-limit.ts). */
export function autoWorkers(limit: CpuLimit | null = cgroupCpuLimit()): { count: number; source: string } {
  const cpus = Math.max(1, cpusAvailable());
  if (limit && limit.cpus < cpus) return { count: limit.cpus, source: `${limit.source}, rounded up` };
  return { count: cpus, source: `os.availableParallelism()${limit ? `; the cgroup's quota allows ${limit.cpus}` : ''}` };
}

/** os.availableParallelism() (Node 18.14+, 19.4+) counts the CPUs this process may run on (its
 *  affinity, as `taskset` sets it); where it is missing, os.cpus() counts the machine's. Detected,
 *  not assumed from the version, as forkd does wherever Node lines differ. */
function cpusAvailable(): number {
  return typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
}

/** One of `services`: a module run once per master beside the workers (service/main.ts). */
export interface ServiceDef {
  readonly name: string;
  readonly module: string;
  /** At a reload, start the new one before stopping the old (false: stop, then start). */
  readonly overlap: boolean;
}

const SERVICE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** `--service NAME=MODULE` (repeatable), or a config file's list of `{ name, module, overlap? }`. */
export const serviceList: Parser<readonly ServiceDef[]> = parser('NAME=MODULE (repeatable), or a list of { name, module, overlap } in a config file', (input) => {
  const allowed = 'NAME=MODULE (repeatable), or a list of { name, module, overlap } in a config file';
  const items = Array.isArray(input) ? input : [input];
  const out: ServiceDef[] = [];
  for (const item of items) {
    let def: ServiceDef;
    if (typeof item === 'string') {
      const m = /^([^=]+)=(.+)$/s.exec(item);
      if (!m) throw new Invalid(allowed, `${JSON.stringify(item)} is not NAME=MODULE`);
      def = { name: m[1]!, module: m[2]!, overlap: false };
    } else if (item && typeof item === 'object') {
      const { name, module, overlap, ...rest } = item as Record<string, unknown>;
      const extra = Object.keys(rest);
      if (extra.length) throw new Invalid(allowed, `a service has name, module and overlap, not ${extra.join(', ')}`);
      if (typeof name !== 'string' || typeof module !== 'string' || module === '') throw new Invalid(allowed, `${JSON.stringify(item)} needs a name and a module`);
      if (overlap !== undefined && typeof overlap !== 'boolean') throw new Invalid(allowed, `overlap of ${name} is true or false`);
      def = { name, module, overlap: overlap === true };
    } else throw new Invalid(allowed);
    if (!SERVICE_NAME.test(def.name)) throw new Invalid(allowed, `${JSON.stringify(def.name)} is no service name (letters, digits, _ . -; at most 64)`);
    noNul(def.name, def.module);
    if (out.some((d) => d.name === def.name)) throw new Invalid(allowed, `two services are named ${def.name}`);
    out.push(def);
  }
  return out;
}, { repeats: true });
