/** Owns the PROXY protocol (HAProxy's, versions 1 and 2) on a listener that has it on: each
 *  connection's header is read before HTTP (and before TLS), from a peer proxyAllowIps trusts, and
 *  the connection is then served as if it came from the client the header names: its socket's
 *  remoteAddress, remotePort and remoteFamily are the client's, for the app, the access log and
 *  the balance alike. Node's core does not parse it (nodejs/node#17126).
 *
 *  A connection whose peer is not trusted, whose header is malformed, truncated or missing, or
 *  does not arrive within HEADER_DEADLINE_MS is closed before HTTP sees a byte of it; it is logged
 *  at debug with the peer's address, and counted. A LOCAL header (a proxy's own health check) is
 *  served with the proxy's address. On a Unix listener there is no peer address to check: the
 *  socket file's permissions decide who may connect, and the header is believed. */

import http from 'node:http';
import { isIPv4, isIPv6, type Socket } from 'node:net';

export type ProxyProtocol = 'off' | 'v1' | 'v2' | 'auto';

/** How long a connection has to send its PROXY header. */
export const HEADER_DEADLINE_MS = 5000;

/** v2's signature, the first 12 bytes of its header. */
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** v1's longest header, CRLF included (the spec's 107). */
const V1_MAX = 107;
const V1_PREFIX = Buffer.from('PROXY ');

export interface Client { readonly address: string; readonly port: number; readonly family: 'IPv4' | 'IPv6' }

/** A parsed header: the client it names (null: LOCAL, or a protocol other than TCP over IP), and
 *  how many bytes of the connection it took. */
export interface ProxyHeader { readonly client: Client | null; readonly length: number }

/** What `buf` (the connection's first bytes) says: a header, more bytes needed, or what is wrong. */
export function parseProxyHeader(buf: Buffer, version: Exclude<ProxyProtocol, 'off'>): ProxyHeader | 'more' | { error: string } {
  const v2 = startsWith(buf, V2_SIGNATURE);
  const v1 = startsWith(buf, V1_PREFIX);
  if (v2 === 'more' && v1 === 'more') return 'more';
  if (v1 === true && version !== 'v2') return parseV1(buf);
  if (v2 === true && version !== 'v1') return parseV2(buf);
  if (version !== 'v2' && v1 === 'more') return 'more';
  if (version !== 'v1' && v2 === 'more') return 'more';
  const want = version === 'v1' ? 'PROXY v1 header' : version === 'v2' ? 'PROXY v2 header' : 'PROXY header (v1 or v2)';
  return { error: `no ${want} where the connection starts` };
}

function startsWith(buf: Buffer, prefix: Buffer): boolean | 'more' {
  const n = Math.min(buf.length, prefix.length);
  if (buf.compare(prefix, 0, n, 0, n) !== 0) return false;
  return n === prefix.length ? true : 'more';
}

const PORT = /^(0|[1-9]\d{0,4})$/;

function parseV1(buf: Buffer): ProxyHeader | 'more' | { error: string } {
  const end = buf.indexOf('\r\n');
  if (end < 0) return buf.length >= V1_MAX ? { error: `a PROXY v1 header longer than ${V1_MAX} bytes` } : 'more';
  if (end + 2 > V1_MAX) return { error: `a PROXY v1 header longer than ${V1_MAX} bytes` };
  const line = buf.toString('latin1', 0, end);
  const parts = line.split(' ');
  const length = end + 2;
  if (parts[1] === 'UNKNOWN') return { client: null, length };
  if (parts.length !== 6) return { error: `a malformed PROXY v1 header (${parts.length} fields; 6 expected)` };
  const [, proto, src, , sport, dport] = parts as [string, string, string, string, string, string];
  const family = proto === 'TCP4' ? 'IPv4' : proto === 'TCP6' ? 'IPv6' : null;
  if (!family) return { error: `a PROXY v1 header with protocol ${JSON.stringify(proto.slice(0, 16))} (TCP4, TCP6 or UNKNOWN)` };
  // isIPv6 takes a zone (fe80::1%eth0): text of the proxy's choosing, never an address here.
  if (!(family === 'IPv4' ? isIPv4(src) && isIPv4(parts[3]!) : isIPv6(src) && isIPv6(parts[3]!) && !line.includes('%'))) {
    return { error: `a PROXY v1 header whose addresses are not ${family}` };
  }
  if (!PORT.test(sport) || !PORT.test(dport) || Number(sport) > 65535 || Number(dport) > 65535) {
    return { error: 'a PROXY v1 header with a port outside 0..65535' };
  }
  return { client: { address: src, port: Number(sport), family }, length };
}

function parseV2(buf: Buffer): ProxyHeader | 'more' | { error: string } {
  if (buf.length < 16) return 'more';
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 2) return { error: `a PROXY v2 header of version ${verCmd >> 4}` };
  const command = verCmd & 0x0f;
  if (command > 1) return { error: `a PROXY v2 header with command ${command} (LOCAL or PROXY)` };
  const famProto = buf[13]!;
  const length = 16 + buf.readUInt16BE(14);
  if (buf.length < length) return 'more';
  const family = famProto >> 4;
  const addressBytes = family === 1 ? 12 : family === 2 ? 36 : family === 3 ? 216 : 0;
  if (family > 3 || (famProto & 0x0f) > 2) return { error: `a PROXY v2 header with address family and protocol 0x${famProto.toString(16)}` };
  if (length - 16 < addressBytes) return { error: 'a PROXY v2 header too short for its addresses' };
  // Type-length-value fields follow the addresses: each must fit (their content is not used).
  for (let at = 16 + addressBytes; at < length;) {
    if (at + 3 > length || at + 3 + buf.readUInt16BE(at + 1) > length) return { error: 'a PROXY v2 header with a truncated TLV field' };
    at += 3 + buf.readUInt16BE(at + 1);
  }
  // LOCAL, and PROXY over anything but TCP (or UDP) over IP, keep the connection's own address.
  if (command === 0 || family === 0 || family === 3 || (famProto & 0x0f) === 0) return { client: null, length };
  if (family === 1) {
    const address = `${buf[16]}.${buf[17]}.${buf[18]}.${buf[19]}`;
    return { client: { address, port: buf.readUInt16BE(24), family: 'IPv4' }, length };
  }
  const groups: string[] = [];
  for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(16 + i * 2).toString(16));
  return { client: { address: compactIPv6(groups), port: buf.readUInt16BE(48), family: 'IPv6' }, length };
}

/** An IPv6 address as Node writes one (RFC 5952: the longest run of zero groups as ::, an IPv4-mapped one dotted). */
function compactIPv6(groups: string[]): string {
  if (groups.slice(0, 5).every((g) => g === '0') && groups[5] === 'ffff') {
    const lo = parseInt(groups[6]!, 16);
    const hi = parseInt(groups[7]!, 16);
    return `::ffff:${lo >> 8}.${lo & 255}.${hi >> 8}.${hi & 255}`;
  }
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/** What a listener with the PROXY protocol on needs. */
export interface ProxyOptions {
  readonly version: Exclude<ProxyProtocol, 'off'>;
  /** Whether the peer may send a header (always true on a Unix listener). */
  readonly trusted: (address: string | undefined) => boolean;
  /** A connection closed for its header: why, and the peer. */
  readonly refused: (reason: string, peer: string) => void;
}

type Peered = Socket & { _peername?: { address: string; port: number; family: string }; [PROXIED]?: true };
/** Marks a socket whose peer address came from its PROXY header. */
const PROXIED = Symbol('forkd.proxied');

/** A TLSSocket reads its peer's address from the TCP connection below it: it is given the client
 *  that connection's PROXY header named. */
export function carryClient(raw: Socket, tls: Socket): void {
  const from = raw as Peered;
  if (from[PROXIED] && from._peername) (tls as Peered)._peername = from._peername;
}

/** Takes `server`'s own 'connection' listeners (the HTTP or TLS server's) and gives them each
 *  connection only once its PROXY header is read; closes the others. */
export function requireProxyHeader(server: import('node:net').Server, opts: ProxyOptions): void {
  // An http.Server reads the socket's handle itself, past the stream: the bytes after the header
  // are handed to it as the 'data' event it listens to. Any other server (TLS, h2, h2c) reads what
  // the stream holds first: they are put back there.
  const asData = server instanceof http.Server;
  const serve = server.listeners('connection') as ((socket: Socket) => void)[];
  server.removeAllListeners('connection');
  server.on('connection', (socket: Socket) => {
    const peer = socket.remoteAddress;
    // A Unix socket has no peer address: whoever the socket file lets in is trusted.
    if (peer !== undefined && !opts.trusted(peer)) { refuse(socket, opts, 'a peer outside proxyAllowIps'); return; }
    let buf: Buffer | null = null;
    const timer = setTimeout(() => done({ error: `no PROXY header within ${HEADER_DEADLINE_MS / 1000} s` }), HEADER_DEADLINE_MS);
    const onData = (chunk: Buffer) => {
      buf = buf === null ? chunk : Buffer.concat([buf, chunk]);
      const parsed = parseProxyHeader(buf, opts.version);
      if (parsed !== 'more') done(parsed);
    };
    const onEnd = () => done({ error: buf === null ? 'closed before a PROXY header' : 'a truncated PROXY header' });
    // Closed by the unit meanwhile (the drain, makeRoom): no header is awaited any more.
    const onClose = () => { clearTimeout(timer); stop(); };
    const stop = () => {
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', onEnd);
      socket.off('close', onClose);
    };
    const done = (parsed: ProxyHeader | { error: string }) => {
      clearTimeout(timer);
      stop();
      if ('error' in parsed) { refuse(socket, opts, parsed.error); return; }
      const s = socket as Peered;
      if (parsed.client) {
        s._peername = { address: parsed.client.address, port: parsed.client.port, family: parsed.client.family };
        s[PROXIED] = true;
      }
      const rest = buf!.subarray(parsed.length);
      if (asData) {
        for (const l of serve) l.call(server, socket);
        if (rest.length && !socket.destroyed) socket.emit('data', rest);
      } else {
        socket.pause();
        if (rest.length) socket.unshift(rest);
        for (const l of serve) l.call(server, socket);
      }
    };
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('error', onEnd);
    socket.on('close', onClose);
  });
}

function refuse(socket: Socket, opts: ProxyOptions, reason: string): void {
  opts.refused(reason, socket.remoteAddress ?? 'a Unix socket peer');
  socket.destroy();
}
