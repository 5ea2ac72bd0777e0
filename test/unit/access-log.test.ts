import { execFileSync } from 'node:child_process';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compileAccessFormat, type AccessFormatter } from '../../src/log/access';
import { escapeControl, escapeQuoted } from '../../src/log/escape';
import { renderLine } from '../../src/log/logger';
import { GUNICORN_ACCESS_FORMAT } from '../../src/config/settings';
import { ROOT } from '../helpers/forkd';

function capitalised(h: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(h).map(([k, v]) => [k.replace(/(^|-)[a-z]/g, (c) => c.toUpperCase()), v]));
}

function entry(over: { url?: string; headers?: Record<string, string>; status?: number; bytes?: number; resHeaders?: Record<string, string> } = {}) {
  const req = {
    method: 'GET', url: over.url ?? '/a/b?x=1', httpVersion: '1.1',
    // Header names as sent on the wire (mixed case): the formatter reads rawHeaders.
    headers: { 'user-agent': 'curl/8', referer: 'http://r/', ...over.headers },
    rawHeaders: Object.entries({ 'User-Agent': 'curl/8', Referer: 'http://r/', ...capitalised(over.headers ?? {}) }).flat(),
    socket: { remoteAddress: '127.0.0.1' },
  } as unknown as IncomingMessage;
  const resHeaders = over.resHeaders ?? { 'content-type': 'text/plain' };
  const res = { statusCode: over.status ?? 200, getHeader: (k: string) => resHeaders[k] } as unknown as ServerResponse;
  return { req, res, startedAtMs: new Date(2026, 10, 27, 10, 5, 9).getTime(), durationUs: 1_234_567, bytes: over.bytes ?? 42 };
}

function compile(format: string): AccessFormatter {
  const f = compileAccessFormat(format);
  if (typeof f === 'string') throw new Error(f);
  return f;
}

test('gunicorn default format', () => {
  const line = compile(GUNICORN_ACCESS_FORMAT)(entry());
  assert.match(line, /^127\.0\.0\.1 - - \[27\/Nov\/2026:10:05:09 [+-]\d{4}\] "GET \/a\/b\?x=1 HTTP\/1\.1" 200 42 "http:\/\/r\/" "curl\/8"$/);
});

test('every atom', () => {
  const f = compile('%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%(b)s|%(T)s|%(D)s|%(M)s|%(L)s|%(p)s|%({content-type}o)s|%({user-agent}i)s|%({FORKD_TEST_VAR}e)s');
  process.env.FORKD_TEST_VAR = 'v';
  assert.is(f(entry()), `GET|/a/b|x=1|HTTP/1.1|200|42|42|1|1234567|1235|1.234567|<${process.pid}>|text/plain|curl/8|v`);
  assert.is(compile('%(b)s %(u)s')(entry({ bytes: 0, headers: { authorization: `Basic ${Buffer.from('ann:pw').toString('base64')}` } })), '- ann');
});

test('a method or HTTP version an app rewrote is escaped like any request field', () => {
  // Node's parser allows only tokens there, but the app may set req.method / req.httpVersion.
  for (const format of [GUNICORN_ACCESS_FORMAT, '%(m)s %(H)s']) {
    const e = entry();
    (e.req as { method: string }).method = 'GE"T\r\n';
    (e.req as { httpVersion: string }).httpVersion = '1.1\x1b';
    const line = compile(format)(e);
    assert.not.match(line, /[\x00-\x1f\x7f-\x9f]/, `no raw control character (${format})`);
    assert.ok(line.includes('GE\\"T\\x0d\\x0a'), `the method escaped: ${line}`);
    assert.ok(line.includes('1.1\\x1b'), `the version escaped: ${line}`);
  }
});

test('unknown atoms are refused at config time', () => {
  const err = compileAccessFormat('%(h)s %(zz)s');
  assert.type(err, 'string');
  assert.match(err as string, 'unknown atom %(zz)s');
});

test('request-derived fields cannot forge a line or break out of quotes', () => {
  const evil = 'x"\r\n127.0.0.1 - - [forged] "GET / HTTP/1.1" 200\x1b[31m\x9b';
  const line = compile(GUNICORN_ACCESS_FORMAT)(entry({ url: `/p${evil}`, headers: { 'user-agent': evil } }));
  assert.not.match(line, /[\x00-\x1f\x7f-\x9f]/);
  assert.ok(line.includes('x\\"\\x0d\\x0a127.0.0.1'));
  assert.is(line.split('\n').length, 1);
  const json = compile('json')(entry({ url: `/p${evil}`, headers: { 'user-agent': evil } }));
  assert.not.match(json, /[\x00-\x1f\x7f-\x9f]/);
  assert.equal(JSON.parse(json).user_agent, evil);
});

test('escaping helpers and error-log lines', () => {
  assert.is(escapeControl('a\nb\x00'), 'a\\x0ab\\x00');
  assert.is(escapeQuoted('say "hi"\\'), 'say \\"hi\\"\\\\');
  const line = renderLine('warning', 'bad\nthing', { url: '/x y', n: 3, event: 'e.v' }, new Date(2026, 0, 2, 3, 4, 5), 42);
  assert.match(line, /^\[2026-01-02 03:04:05 [+-]\d{4}\] \[42\] \[WARNING\] bad\\x0athing url="\/x y" n=3 event=e\.v$/);
});

test('a process that forbids code generation formats the same lines', () => {
  const format = `${GUNICORN_ACCESS_FORMAT} %(D)s %({x-id}i)s %(m)s`;
  const sample = { url: '/p?"q"\x1b', headers: { 'user-agent': 'a\\b', 'x-id': '7' } };
  const script = `
    const { compileAccessFormat } = require(${JSON.stringify(join(ROOT, 'dist', 'src', 'log', 'access.js'))});
    const e = JSON.parse(process.argv[1]);
    e.res.getHeader = () => undefined;
    process.stdout.write(compileAccessFormat(process.argv[2])(e));`;
  const e = entry(sample);
  const asJson = JSON.stringify({ ...e, req: { ...e.req, socket: { remoteAddress: '127.0.0.1' } }, res: { statusCode: e.res.statusCode } });
  const out = execFileSync(process.execPath, ['--disallow-code-generation-from-strings', '-e', script, asJson, format], { encoding: 'utf8' });
  assert.is(out, compile(format)(e));
  assert.ok(out.includes('\\"q\\"\\x1b'), out);
});

test.run();
