/** The PROXY protocol header parser (HAProxy's spec, versions 1 and 2) and the allow lists. */

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseProxyHeader } from '../../src/worker/proxy-protocol';
import { allowList } from '../../src/net/allow-list';

const SIG = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');

function v2(verCmd: number, famProto: number, body: Buffer): Buffer {
  const len = Buffer.alloc(2);
  len.writeUInt16BE(body.length);
  return Buffer.concat([SIG, Buffer.from([verCmd, famProto]), len, body]);
}

function ipv4Body(src: number[], dst: number[], sport: number, dport: number, tlvs = Buffer.alloc(0)): Buffer {
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(sport, 0);
  ports.writeUInt16BE(dport, 2);
  return Buffer.concat([Buffer.from(src), Buffer.from(dst), ports, tlvs]);
}

test('v1: TCP4, TCP6 and UNKNOWN; the bytes after the header are left', () => {
  const text = 'PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /';
  assert.equal(parseProxyHeader(Buffer.from(text), 'v1'), { client: { address: '192.0.2.1', port: 56324, family: 'IPv4' }, length: text.length - 5 });
  assert.equal(parseProxyHeader(Buffer.from('PROXY TCP6 2001:db8::1 ::1 1 2\r\n'), 'auto'), { client: { address: '2001:db8::1', port: 1, family: 'IPv6' }, length: 32 });
  assert.equal(parseProxyHeader(Buffer.from('PROXY UNKNOWN ffff\r\n'), 'v1'), { client: null, length: 20 });
});

test('v1: a partial header waits for more; malformed, too long or of the wrong version is refused', () => {
  assert.is(parseProxyHeader(Buffer.from('PRO'), 'v1'), 'more');
  assert.is(parseProxyHeader(Buffer.from('PROXY TCP4 1.2.3.4'), 'v1'), 'more');
  const refused = (text: string | Buffer, version: 'v1' | 'v2' | 'auto' = 'v1') => {
    const r = parseProxyHeader(Buffer.isBuffer(text) ? text : Buffer.from(text), version);
    return typeof r === 'object' && 'error' in r ? r.error : `not refused: ${JSON.stringify(r)}`;
  };
  assert.match(refused('GET / HTTP/1.1\r\n'), /no PROXY v1 header/);
  assert.match(refused('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n', 'v2'), /no PROXY v2 header/);
  assert.match(refused('PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n'), /5 fields; 6 expected/);
  assert.match(refused('PROXY TCP4 ::1 ::1 1 2\r\n'), /not IPv4/);
  assert.match(refused('PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n'), /port outside/);
  assert.match(refused('PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n'), /port outside/);
  assert.match(refused('PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n'), /protocol "UDP4"/);
  assert.match(refused(`PROXY TCP4 ${'1'.repeat(120)}`), /longer than 107 bytes/);
  assert.match(refused(v2(0x21, 0x11, ipv4Body([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)), 'v1'), /no PROXY v1 header/);
});

test('v2: PROXY over TCP4 and TCP6 (TLVs skipped), LOCAL, and the rest of the stream left', () => {
  const tlv = Buffer.from([0x02, 0x00, 0x04, ...Buffer.from('host')]);
  const four = v2(0x21, 0x11, ipv4Body([203, 0, 113, 9], [10, 0, 0, 1], 40000, 80, tlv));
  assert.equal(parseProxyHeader(Buffer.concat([four, Buffer.from('GET')]), 'v2'), { client: { address: '203.0.113.9', port: 40000, family: 'IPv4' }, length: four.length });
  const six = Buffer.alloc(36);
  six.write('20010db8000000000000000000000001', 0, 'hex');
  six.write('00000000000000000000000000000001', 16, 'hex');
  six.writeUInt16BE(1234, 32);
  six.writeUInt16BE(443, 34);
  assert.equal(parseProxyHeader(v2(0x21, 0x21, six), 'auto'), { client: { address: '2001:db8::1', port: 1234, family: 'IPv6' }, length: 52 });
  const mapped = Buffer.alloc(36);
  mapped.write('00000000000000000000ffffc0000201', 0, 'hex');
  assert.is((parseProxyHeader(v2(0x21, 0x21, mapped), 'v2') as { client: { address: string } }).client.address, '::ffff:192.0.2.1');
  assert.equal(parseProxyHeader(v2(0x20, 0x00, Buffer.alloc(0)), 'v2'), { client: null, length: 16 });
});

test('v2: truncated, wrong version or command, bad family, short addresses and broken TLVs', () => {
  const body = ipv4Body([1, 2, 3, 4], [5, 6, 7, 8], 1, 2);
  const whole = v2(0x21, 0x11, body);
  assert.is(parseProxyHeader(whole.subarray(0, 10), 'v2'), 'more');
  assert.is(parseProxyHeader(whole.subarray(0, whole.length - 1), 'v2'), 'more');
  const error = (b: Buffer) => (parseProxyHeader(b, 'v2') as { error?: string }).error ?? 'none';
  assert.match(error(v2(0x11, 0x11, body)), /version 1/);
  assert.match(error(v2(0x22, 0x11, body)), /command 2/);
  assert.match(error(v2(0x21, 0x41, body)), /family and protocol 0x41/);
  assert.match(error(v2(0x21, 0x21, body)), /too short for its addresses/);
  assert.match(error(v2(0x21, 0x11, Buffer.concat([body, Buffer.from([0x01, 0x00, 0x09, 0x41])]))), /truncated TLV/);
});

test('allow lists: addresses, CIDR ranges of both families, IPv4-mapped peers, and *', () => {
  const allowed = allowList(['127.0.0.1', '::1', '10.0.0.0/8', 'fd00::/8']);
  assert.ok(allowed('127.0.0.1'));
  assert.ok(allowed('::ffff:127.0.0.1'));
  assert.ok(allowed('10.200.3.4'));
  assert.ok(allowed('fd12::5'));
  assert.ok(allowed('::1'));
  assert.not.ok(allowed('127.0.0.2'));
  assert.not.ok(allowed('11.0.0.1'));
  assert.not.ok(allowed('fe80::1'));
  assert.not.ok(allowed(undefined));
  assert.ok(allowList(['*'])('203.0.113.1'));
});

test.run();
