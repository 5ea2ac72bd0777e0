/** Owns the access log line: gunicorn's atoms (`%(h)s %(r)s %(s)s …`) or one JSON object a line.
 *  A format is compiled once into a list of parts; every request-derived value is escaped. */

import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP, type Socket } from 'node:net';
import { escapeQuoted } from './escape';

export interface AccessEntry {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  /** When the request arrived (wall clock ms, for %(t)s). */
  readonly startedAtMs: number;
  readonly durationUs: number;
  /** Body bytes sent. */
  readonly bytes: number;
}

export type AccessFormatter = (entry: AccessEntry) => string;
type Atom = (e: AccessEntry) => string | number | undefined;

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** `[27/Nov/2026:10:00:00 +0000]`, the common log format's time; made once a second. */
const clfCache = { second: -1, text: '' };
function clfTimeAt(ms: number): string {
  const second = Math.floor(ms / 1000);
  if (second !== clfCache.second) { clfCache.second = second; clfCache.text = clfTime(new Date(second * 1000)); }
  return clfCache.text;
}

function clfTime(d: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  const off = -d.getTimezoneOffset();
  const abs = Math.abs(off);
  return `[${p(d.getDate())}/${MONTHS[d.getMonth()]}/${d.getFullYear()}:${p(d.getHours())}:${p(d.getMinutes())}:`
    + `${p(d.getSeconds())} ${off >= 0 ? '+' : '-'}${p(Math.floor(abs / 60))}${p(abs % 60)}]`;
}

function basicAuthUser(req: IncomingMessage): string | undefined {
  const auth = header(req, 'authorization');
  if (!auth || !/^basic /i.test(auth)) return undefined;
  const decoded = Buffer.from(auth.slice(6).trim(), 'base64').toString('latin1');
  const colon = decoded.indexOf(':');
  return colon >= 0 ? decoded.slice(0, colon) : undefined;
}

/** A request header from rawHeaders: reading req.headers would build the whole headers object,
 *  for every request, when the app never did. */
function header(req: IncomingMessage, lowerName: string): string | undefined {
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === lowerName.length && name.toLowerCase() === lowerName) return raw[i + 1];
  }
  return undefined;
}

function path(req: IncomingMessage): string {
  const url = req.url ?? '';
  const q = url.indexOf('?');
  return q >= 0 ? url.slice(0, q) : url;
}

function query(req: IncomingMessage): string {
  const url = req.url ?? '';
  const q = url.indexOf('?');
  return q >= 0 ? url.slice(q + 1) : '';
}

/** The connection a request came on. An h2 request's own socket is a proxy that no longer reaches
 *  the connection once its stream has closed (when the line is written); the unit keeps the
 *  connection on such a request as it arrives (keepSocket). */
const kSocket = Symbol('forkd.socket');
type Kept = IncomingMessage & { [kSocket]?: Socket };
export function keepSocket(req: IncomingMessage, socket: Socket): void {
  void socket.remoteAddress; // read now: Node keeps the peer's address once read, after the socket has gone too
  (req as Kept)[kSocket] = socket;
}
const socketOf = (req: IncomingMessage): Socket => (req as Kept)[kSocket] ?? req.socket;

/** The subject of the client's certificate (mutual TLS), as `CN=…, O=…`; undefined without one. */
function clientSubject(req: IncomingMessage): string | undefined {
  const socket = socketOf(req) as Socket & { getPeerCertificate?: () => { subject?: Record<string, string | string[]> } | null };
  if (typeof socket.getPeerCertificate !== 'function') return undefined;
  const subject = socket.getPeerCertificate()?.subject;
  if (!subject) return undefined;
  return Object.entries(subject).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join('+') : v}`).join(', ');
}

/** Whose X-Forwarded-For, X-Forwarded-Proto and Forwarded headers are believed (forwardedAllowIps);
 *  null: nobody's. Set once per serving unit, before its first request. */
let forwardedTrust: ((address: string | undefined) => boolean) | null = null;
export function trustForwarded(check: ((address: string | undefined) => boolean) | null): void { forwardedTrust = check; }

/** A peer whose forwarded headers are believed: a trusted address, or a Unix socket's (none). */
function fromTrusted(req: IncomingMessage): boolean {
  if (forwardedTrust === null) return false;
  const peer = socketOf(req).remoteAddress;
  return peer === undefined || forwardedTrust(peer);
}

/** The address a Forwarded `for=` or an X-Forwarded-For item names: an IP address (a port, IPv6
 *  brackets and quotes dropped), or null (`unknown`, an obfuscated name, anything else). */
function hopAddress(item: string): string | null {
  let v = item.trim();
  if (v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
  if (v.startsWith('[')) v = v.slice(1, v.indexOf(']') >>> 0);
  else if (v.indexOf(':') === v.lastIndexOf(':')) v = v.split(':')[0]!; // IPv4 with a port
  // A zone (fe80::1%eth0) is the sender's own business, and text of its choosing: never kept.
  return v.indexOf('%') < 0 && isIP(v) ? v : null;
}

/** Every field `lowerName` of a request, joined in order with commas (a proxy adds its own after
 *  the client's: the first alone would be the client's choice). */
function headerAll(req: IncomingMessage, lowerName: string): string | undefined {
  const raw = req.rawHeaders;
  let out: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === lowerName.length && name.toLowerCase() === lowerName) out = out === undefined ? raw[i + 1] : `${out},${raw[i + 1]}`;
  }
  return out;
}

/** The hops a request passed, client first: X-Forwarded-For's items (nginx's and HAProxy's),
 *  else RFC 7239 Forwarded's `for=` (a proxy that writes X-Forwarded-For passes a client's own
 *  Forwarded through untouched: it is read only without X-Forwarded-For); and the scheme the last
 *  proxy says it was reached with. */
function forwardedHops(req: IncomingMessage): { hops: string[]; proto: string | undefined } | null {
  const xff = headerAll(req, 'x-forwarded-for');
  const xfp = headerAll(req, 'x-forwarded-proto');
  if (xff !== undefined) return { hops: xff.split(','), proto: xfp?.split(',').pop()!.trim().toLowerCase() };
  const forwarded = headerAll(req, 'forwarded');
  if (forwarded !== undefined) {
    const hops: string[] = [];
    let proto: string | undefined;
    for (const element of forwarded.split(',')) {
      for (const pair of element.split(';')) {
        const eq = pair.indexOf('=');
        const key = pair.slice(0, eq).trim().toLowerCase();
        if (key === 'for') hops.push(pair.slice(eq + 1));
        else if (key === 'proto') proto = pair.slice(eq + 1).trim().replace(/^"|"$/g, '').toLowerCase();
      }
    }
    return { hops, proto };
  }
  if (xfp === undefined) return null;
  return { hops: [], proto: xfp.split(',').pop()!.trim().toLowerCase() };
}

/** The client's address: the peer's, or from a trusted peer the rightmost forwarded hop that is
 *  not itself a trusted proxy (a hop that is no address stops the walk at the last trusted one). */
function clientOf(req: IncomingMessage): string | undefined {
  const peer = socketOf(req).remoteAddress;
  if (forwardedTrust === null) return peer;
  // The headers first: most requests have none, and reading them costs less than checking the peer.
  const fwd = forwardedHops(req);
  if (!fwd || !fromTrusted(req)) return peer;
  let client = peer;
  for (let i = fwd.hops.length - 1; i >= 0; i--) {
    const hop = hopAddress(fwd.hops[i]!);
    if (hop === null) break;
    client = hop;
    if (!forwardedTrust!(hop)) break;
  }
  return client;
}

function schemeOf(req: IncomingMessage): string {
  if (forwardedTrust !== null) {
    const proto = forwardedHops(req)?.proto;
    if ((proto === 'https' || proto === 'http') && fromTrusted(req)) return proto;
  }
  return (socketOf(req) as Socket & { encrypted?: boolean }).encrypted ? 'https' : 'http';
}

const ATOMS: Record<string, Atom> = {
  h: (e) => clientOf(e.req),
  l: () => '-',
  u: (e) => basicAuthUser(e.req),
  t: (e) => clfTimeAt(e.startedAtMs),
  r: (e) => `${e.req.method} ${e.req.url} HTTP/${e.req.httpVersion}`,
  m: (e) => e.req.method,
  U: (e) => path(e.req),
  q: (e) => query(e.req),
  H: (e) => `HTTP/${e.req.httpVersion}`,
  s: (e) => e.res.statusCode,
  B: (e) => e.bytes,
  b: (e) => (e.bytes > 0 ? e.bytes : '-'),
  f: (e) => header(e.req, 'referer'),
  a: (e) => header(e.req, 'user-agent'),
  T: (e) => Math.floor(e.durationUs / 1e6),
  D: (e) => Math.round(e.durationUs),
  M: (e) => Math.round(e.durationUs / 1000),
  L: (e) => (e.durationUs / 1e6).toFixed(6),
  p: () => `<${process.pid}>`,
  S: (e) => schemeOf(e.req),
  c: (e) => clientSubject(e.req),
};
export const ATOM_NAMES = Object.keys(ATOMS);
/** Atoms whose text neither a client nor the app can choose: numbers, forkd's own text, the
 *  peer's address (as the kernel gives it, or a forwarded one only once net.isIP took it) and the
 *  scheme (one of two words). They skip the escaping scan, which took a quarter of
 *  formatting a line (measured). The method and version are not among them: the app may rewrite
 *  req.method (method-override middleware does, from a header) before the line is written. */
const TRUSTED = new Set(['h', 'l', 't', 's', 'B', 'b', 'T', 'D', 'M', 'L', 'p', 'S']);

function headerValue(v: string | string[] | number | undefined): string | undefined {
  return Array.isArray(v) ? v.join(', ') : v === undefined ? undefined : String(v);
}

/** The atom for `%(NAME)s`, or null when NAME is not one. */
function atomFor(name: string): Atom | null {
  const own = ATOMS[name];
  if (own) return own;
  const m = /^\{([^}]+)\}([ioe])$/.exec(name);
  if (!m) return null;
  const key = m[1]!.toLowerCase();
  if (m[2] === 'i') return (e) => headerValue(e.req.headers[key]); // joined as Node joins repeats
  if (m[2] === 'o') return (e) => headerValue(e.res.getHeader(key));
  const envKey = m[1]!;
  return () => process.env[envKey];
}

function jsonLine(e: AccessEntry): string {
  const line = JSON.stringify({
    time: new Date(e.startedAtMs).toISOString(), remote: clientOf(e.req) ?? null, method: e.req.method,
    url: e.req.url, protocol: `HTTP/${e.req.httpVersion}`, status: e.res.statusCode, bytes: e.bytes,
    referer: header(e.req, 'referer') ?? null, user_agent: header(e.req, 'user-agent') ?? null,
    duration_ms: Math.round(e.durationUs) / 1000, pid: process.pid,
  });
  // JSON escapes C0 controls itself; DEL and C1 controls pass through it, so escape them here.
  return line.replace(/[\x7f-\x9f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

type Part = string | { readonly atom: Atom; readonly trusted: boolean };

/** An atom's value as it appears in the line: `-` for nothing, client-chosen text escaped. */
const plain = (v: string | number | undefined): string | number => (v === undefined || v === '' ? '-' : v);
const quoted = (v: string | number | undefined): string | number =>
  (v === undefined || v === '' ? '-' : typeof v === 'number' ? v : escapeQuoted(v));

/** The line function for `parts`, generated as one expression that calls each atom from a call
 *  site of its own: V8 then inlines every atom, where a loop over the parts calls them all from one
 *  site that sees many functions and inlines none (measured: 5,200 instructions a line in the loop,
 *  3,800 for a function written out by hand). The code is made only from this module's own text,
 *  JSON-quoted literals of the format and indices, never from request data. Where code generation is
 *  turned off (--disallow-code-generation-from-strings), the loop serves. */
function lineFunction(parts: readonly Part[]): AccessFormatter {
  const atoms = parts.flatMap((p) => (typeof p === 'string' ? [] : [p.atom]));
  let i = 0;
  const terms = parts.map((p) => (typeof p === 'string' ? JSON.stringify(p) : `${p.trusted ? 'plain' : 'quoted'}(atoms[${i++}](e))`));
  try {
    // eslint-disable-next-line @typescript-eslint/no-implied-eval
    const make = new Function('atoms', 'plain', 'quoted', `return function accessLine(e) { return '' + ${terms.join(' + ') || "''"}; };`);
    return make(atoms, plain, quoted) as AccessFormatter;
  } catch (err) {
    if (!(err instanceof EvalError)) throw err;
    return (e) => {
      let out = '';
      for (const p of parts) out += typeof p === 'string' ? p : (p.trusted ? plain : quoted)(p.atom(e));
      return out;
    };
  }
}

/** Compiles a format, or returns a sentence naming the unknown atom. */
export function compileAccessFormat(format: string): AccessFormatter | string {
  if (format === 'json') return jsonLine;
  const parts: Part[] = [];
  const re = /%\(([^)]*)\)s/g;
  let last = 0;
  for (let m = re.exec(format); m; m = re.exec(format)) {
    if (m.index > last) parts.push(format.slice(last, m.index));
    const atom = atomFor(m[1]!);
    if (!atom) {
      return `unknown atom %(${m[1]})s; atoms are ${ATOM_NAMES.map((a) => `%(${a})s`).join(' ')}, `
        + '%({header}i)s, %({header}o)s and %({VAR}e)s';
    }
    parts.push({ atom, trusted: TRUSTED.has(m[1]!) });
    last = re.lastIndex;
  }
  if (last < format.length) parts.push(format.slice(last));
  return lineFunction(parts);
}
