/** gunicorn's raw request corpus against a forkd worker: every invalid request is refused before
 *  the app sees it and every valid one reaches the app, except where Node's HTTP parser and
 *  gunicorn's disagree; each such case is listed below with the reason, so that a change in
 *  either direction fails this test. No request may crash a worker. */

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, FIXTURES, startForkd } from '../helpers/forkd';
import { rawExchange, request } from '../helpers/http';

/** A copy of shared/corpus/gunicorn-requests (MIT, see its README), so that a clone tests alone. */
const CORPUS = join(FIXTURES, 'gunicorn-requests');

/** The corpus README's decoding: drop real newlines, then \r\n, \0, \n, \t and \xHH escapes. */
function decode(file: string): Buffer {
  const text = readFileSync(file).toString('latin1').replace(/\n/g, '')
    .replace(/\\r\\n/g, '\r\n').replace(/\\0/g, '\0').replace(/\\n/g, '\n').replace(/\\t/g, '\t')
    .replace(/\\x([0-9a-fA-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
  return Buffer.from(text, 'latin1');
}

/** app: the app answered 2xx · app-400: the app had the request, then its streamed body failed to
 *  parse · app-waiting: the app has the request and waits for a body that never completes ·
 *  refused: the app never saw it, and the client got a 4xx/5xx or a closed connection. */
type Outcome = 'app' | 'app-400' | 'app-waiting' | 'refused';

const HOST_REQUIRED = 'HTTP/1.1 without Host: RFC 9112 §3.2 requires a 400, and Node sends it';
const STREAMED = 'bodies stream, so the app has the request before its chunked body fails to parse';
const KNOWN: Record<string, [Outcome, string]> = {
  'invalid/rfc9110_trailer_forbidden_cl_01.http': ['app-400', STREAMED],
  'invalid/rfc9110_trailer_forbidden_te_01.http': ['app-400', STREAMED],
  'invalid/rfc9112_chunked_size_minus_sign_01.http': ['app-400', STREAMED],
  'invalid/rfc9112_chunked_size_plus_sign_01.http': ['app-400', STREAMED],
  'invalid/rfc9110_trailer_forbidden_host_01.http': ['app-400', `${STREAMED}; the Host trailer fails it (request-guard.ts)`],
  'invalid/rfc9112_chunked_missing_final_crlf_01.http': ['app-waiting', 'incomplete body: Node waits for the rest until requestTimeout'],
  'valid/019.http': ['app-400', 'a request pipelined after an HTTP/1.0 one, which closes the connection: Node answers the extra bytes with 400'],
  'valid/099.http': ['app-waiting', 'the file holds 8599 of the 17914 body bytes it announces: the app waits for the rest'],
  'valid/040.http': ['refused', 'Content_Length and Transfer_Encoding read as framing fields where _ means - (CGI, WSGI): a smuggling probe. gunicorn drops them by default and refuses them under header_map=refuse (its invalid/040); forkd refuses'],
  'valid/040_compat.http': ['refused', 'the same bytes as valid/040, which gunicorn passes only under header_map=dangerous'],
  'valid/009.http': ['refused', 'Transfer-Encoding with Content-Length: Node refuses it (request smuggling)'],
  'valid/013.http': ['refused', 'Node refuses a chunk extension with an invalid character'],
  'valid/024.http': ['refused', 'beyond gunicorn\'s default limit_request_line too (414); its test raises the limit'],
  'valid/026.http': ['refused', 'beyond gunicorn\'s default limit_request_field_size too (431); its test raises the limit'],
  'valid/027.http': ['refused', 'Node refuses " in the request target'],
  'valid/028.http': ['refused', 'Node refuses that header name character (gunicorn accepts it only under a setting)'],
  'valid/029.http': ['refused', 'Node refuses that header (gunicorn accepts it only under a setting)'],
  'valid/030.http': ['refused', 'Node refuses that header (gunicorn accepts it only under a setting)'],
  'valid/031.http': ['refused', 'Node\'s parser knows only registered methods'],
  'valid/031compat.http': ['refused', 'Node\'s parser knows only registered methods'],
  'valid/031compat2.http': ['refused', 'Node\'s parser knows only registered methods'],
  'valid/compat_obs_fold.http': ['refused', 'obsolete line folding: RFC 9112 §5.2 lets a server refuse it'],
  'valid/compat_obs_fold_huge.http': ['refused', 'obsolete line folding: RFC 9112 §5.2 lets a server refuse it'],
  'valid/pp_01.http': ['refused', 'a PROXY protocol preamble (gunicorn\'s proxy_protocol setting); forkd does not speak it'],
  'valid/pp_02.http': ['refused', 'a PROXY protocol preamble (gunicorn\'s proxy_protocol setting); forkd does not speak it'],
  'valid/pp_04.http': ['refused', 'a PROXY protocol preamble (gunicorn\'s proxy_protocol setting); forkd does not speak it'],
  'valid/pp_05.http': ['refused', 'a PROXY protocol preamble (gunicorn\'s proxy_protocol setting); forkd does not speak it'],
  'valid/rfc9112_target_authority_connect_01.http': ['refused', 'CONNECT is for proxies: Node emits it as a connect event, never a request'],
  'valid/rfc9112_target_authority_ipv6_01.http': ['refused', 'CONNECT is for proxies: Node emits it as a connect event, never a request'],
};

/** Requests that are invalid only under the limits gunicorn's own test sets for them (its
 *  tests/requests/invalid/NNN.py): sent to a forkd with the same limits. */
const WITH_SETTINGS: Record<string, readonly string[]> = {
  'invalid/011.http': ['--limit-request-fields', '2'],
  'invalid/012.http': ['--limit-request-field-size', '98'],
};

function expected(file: string, bytes: Buffer): [Outcome, string] {
  const known = KNOWN[file];
  if (known) return known;
  const head = bytes.toString('latin1').split('\r\n\r\n')[0]!;
  if (file.startsWith('valid/') && / HTTP\/1\.1\r?$/m.test(head.split('\r\n')[0]!) && !/^host:/im.test(head)) {
    return ['refused', HOST_REQUIRED];
  }
  return file.startsWith('valid/') ? ['app', 'valid'] : ['refused', 'invalid'];
}

test('gunicorn\'s valid and invalid requests against a worker', async () => {
  const rows = readFileSync(join(CORPUS, 'expected.tsv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split('\t')[0]!);
  assert.ok(rows.length > 100, 'the corpus is there');
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', join(APPS, 'recorder.js')]);
  const others: Awaited<ReturnType<typeof startForkd>>[] = [];
  try {
    const workers = f.workers();
    const wrong: string[] = [];
    for (const file of rows) {
      const bytes = decode(join(CORPUS, file));
      let server = f;
      if (WITH_SETTINGS[file]) {
        server = await startForkd(['-w', '1', '-b', '127.0.0.1:0', ...WITH_SETTINGS[file]!, join(APPS, 'recorder.js')]);
        others.push(server);
      }
      const seen = async () => Number((await request(`${server.url}/__seen`)).body);
      const before = await seen();
      const reply = await rawExchange(Number(new URL(server.url).port), bytes, 150);
      const reached = (await seen()) > before;
      const statuses = [...reply.data.matchAll(/^HTTP\/1\.[01] (\d{3})/gm)].map((m) => Number(m[1]));
      const outcome: Outcome = !reached ? 'refused'
        : statuses.some((s) => s >= 200 && s < 300) ? 'app'
          : statuses.includes(400) ? 'app-400' : 'app-waiting';
      if (!reached && statuses.some((s) => s < 400)) wrong.push(`${file}: the app did not see it, yet the client got ${statuses}`);
      const [want, why] = expected(file, bytes);
      if (outcome !== want) wrong.push(`${file}: ${outcome} (statuses ${statuses.join(',') || 'none'}), expected ${want} (${why})`);
    }
    assert.is(wrong.length, 0, `\n${wrong.join('\n')}`);
    assert.equal(f.workers(), workers, 'no worker crashed');
    for (const server of [f, ...others]) assert.not.match(server.output(), /Worker \(pid:\d+\) (exited|was killed)/);
  } finally {
    for (const server of others) await server.kill();
    await f.kill();
  }
});

test.run();
