/** Request smuggling: the classic desync requests, sent through nginx (its upstream connections to
 *  forkd kept alive, where a desync would poison the next client's request) and straight to forkd.
 *  forkd never sets insecureHTTPParser: the app must never see a request the proxy did not forward,
 *  and every later client must get its own answer. */

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { APPS, startForkd, tempDir } from '../helpers/forkd';
import { freePort, rawExchange, request } from '../helpers/http';
import { startNginx, type Peer } from '../helpers/peers';

const SMUGGLED = (n: string) => `GET /smuggled-${n} HTTP/1.1\r\nHost: x\r\n\r\n`;

/** CL.TE: the front reads Content-Length (covering the smuggled request), the back chunked. */
function clTe(n: string, te: string): string {
  const body = `0\r\n\r\n${SMUGGLED(n)}`;
  return `POST /outer-${n} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n${te}\r\n\r\n${body}`;
}

/** TE.CL: the front reads chunked (one chunk holding the smuggled request), the back Content-Length 4. */
function teCl(n: string, te: string): string {
  const inner = SMUGGLED(n);
  return `POST /outer-${n} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n${te}\r\n\r\n${inner.length.toString(16)}\r\n${inner}\r\n0\r\n\r\n`;
}

/** Obfuscated Transfer-Encoding fields (TE.TE): one side may take them as chunked, the other not. */
const TE_VARIANTS: Record<string, string> = {
  plain: 'Transfer-Encoding: chunked',
  xchunked: 'Transfer-Encoding: xchunked',
  'space-before-colon': 'Transfer-Encoding : chunked',
  'second-te': 'Transfer-Encoding: chunked\r\nTransfer-Encoding: x',
  tab: 'Transfer-Encoding:\tchunked',
  'vertical-tab': 'Transfer-Encoding:\x0bchunked',
  'obs-fold-name': 'X: y\r\n Transfer-Encoding: chunked',
  'obs-fold-value': 'Transfer-Encoding:\r\n chunked',
  'chunked-identity': 'Transfer-Encoding: chunked, identity',
  'bare-lf': 'X: y\nTransfer-Encoding: chunked',
  'bare-cr': 'X: y\rTransfer-Encoding: chunked',
  nul: 'Transfer-Encoding: chunked\0',
  'nul-in-other': 'X: a\0b\r\nTransfer-Encoding: chunked',
  underscore: 'Transfer_Encoding: chunked',
};

function payloads(): [string, string][] {
  const out: [string, string][] = [];
  for (const [name, te] of Object.entries(TE_VARIANTS)) {
    out.push([`CL.TE ${name}`, clTe(`clte-${name}`, te)], [`TE.CL ${name}`, teCl(`tecl-${name}`, te)]);
  }
  const dup = SMUGGLED('dup-cl');
  out.push(['duplicate Content-Length', `POST /outer-dup HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: ${dup.length}\r\n\r\n${dup}`]);
  out.push(['Content-Length with a sign', `POST /outer-sign HTTP/1.1\r\nHost: x\r\nContent-Length: +${dup.length}\r\n\r\n${dup}`]);
  out.push(['bare LF lines', `POST /outer-lf HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n\n0\n\n${SMUGGLED('lf')}`]);
  out.push(['CR in a value', `GET /outer-cr HTTP/1.1\r\nHost: x\r\nX: a\rGET /smuggled-cr HTTP/1.1\r\n\r\n`]);
  out.push(['Content-Length and chunked, HTTP/1.0', `POST /outer-10 HTTP/1.0\r\nContent-Length: ${clTe('x', '').length}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${SMUGGLED('http10')}`]);
  return out;
}

test('the classic desync requests, through nginx and straight to forkd: the app sees no request the proxy did not forward, and every next client gets its own answer', async () => {
  const dir = tempDir();
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', join(APPS, 'paths.js')]).catch((err: Error) => { dir.remove(); throw err; });
  let nginx: Peer | null = null;
  try {
    const port = await freePort();
    const access = join(dir.path, 'nginx-access.log');
    nginx = await startNginx(dir.path, {
      http: `log_format fwd '$request_uri $status $upstream_addr';\n`
        + `upstream forkd { server 127.0.0.1:${new URL(f.url).port}; keepalive 4; }\n`
        + `server { listen 127.0.0.1:${port}; access_log ${access} fwd;\n`
        + '  location / { proxy_pass http://forkd; proxy_http_version 1.1; proxy_set_header Connection ""; } }',
    }, [port]);
    const paths = async () => JSON.parse((await request(`${f.url}/__paths`)).body) as string[];
    const rows: string[] = [];
    const seenVia: Record<'nginx' | 'forkd', string[]> = { nginx: [], forkd: [] };
    let victims = 0;
    for (const [target, tport] of [['nginx', port], ['forkd', Number(new URL(f.url).port)]] as const) {
      for (const [name, bytes] of payloads()) {
        const before = (await paths()).length;
        const reply = await rawExchange(tport, Buffer.from(bytes, 'latin1'), 300);
        const statuses = [...reply.data.matchAll(/^HTTP\/1\.[01] (\d{3})/gm)].map((m) => m[1]).join(',') || 'closed';
        // The next client, on a new connection (nginx may reuse its upstream one): its own answer.
        victims++;
        const victim = await request(`http://127.0.0.1:${tport}/victim-${victims}`);
        assert.is(victim.body, `seen GET /victim-${victims}\n`, `${target} ${name}: the next client got ${JSON.stringify(victim.body)}`);
        const saw = (await paths()).slice(before).filter((p) => !p.includes('/victim-'));
        seenVia[target].push(...saw);
        rows.push(`${target.padEnd(6)} ${name.padEnd(34)} client got ${statuses.padEnd(8)} app saw ${saw.length ? saw.join(' + ') : 'nothing'}`);
      }
    }
    // Through nginx: every request the app saw is one nginx forwarded (its log names the upstream),
    // as often as it did. nginx may take a request the client pipelined after one it read
    // differently from forkd (a Transfer_Encoding it drops, bare LF line ends it accepts): that one
    // it forwards itself, as its own request, and it is no desync.
    const forwarded = readFileSync(access, 'utf8').trim().split('\n').filter((l) => !l.endsWith(' -')).map((l) => l.split(' ')[0]!);
    const viaNginx = seenVia.nginx;
    for (const p of viaNginx) {
      const i = forwarded.indexOf(p.split(' ')[1]!);
      assert.ok(i >= 0, `the app saw ${p} through nginx, which never forwarded it:\n${rows.join('\n')}`);
      forwarded.splice(i, 1);
    }
    // Straight to forkd: every request whose framing is in doubt is refused, and nothing pipelined
    // behind a refusal is processed.
    assert.equal(seenVia.forkd.filter((p) => p.includes('smuggled')), [], `the app saw smuggled requests:\n${rows.join('\n')}`);
    assert.not.match(f.output(), /Worker \(pid:\d+\) (exited|was killed)/);
    console.log(rows.join('\n'));
  } finally {
    await nginx?.stop();
    await f.kill();
    dir.remove();
  }
});

test('an upgrade is checked as a request is, and one pipelined behind a refused request never reaches the app\'s upgrade listener', async () => {
  const f = await startForkd(['-w', '1', '-b', '127.0.0.1:0', join(APPS, 'upgrades.js')]);
  try {
    const port = Number(new URL(f.url).port);
    const upgrades = async () => Number((await request(`${f.url}/__upgrades`)).body);
    const upgrade = 'GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n';
    assert.match((await rawExchange(port, upgrade, 300)).data, /^HTTP\/1\.1 101 /, 'an upgrade is taken');
    assert.is(await upgrades(), 1);
    const behind = await rawExchange(port, `POST /x HTTP/1.1\r\nHost: x\r\nContent_Length: 1\r\n\r\n${upgrade}`, 300);
    assert.match(behind.data, /^HTTP\/1\.1 400 /);
    assert.not.match(behind.data, / 101 /, 'the upgrade behind the refusal was not taken');
    const twoHosts = await rawExchange(port, 'GET /ws HTTP/1.1\r\nHost: x\r\nHost: y\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n', 300);
    assert.match(twoHosts.data, /^HTTP\/1\.1 400 [^]*more than one Host header/, 'an upgrade with two Host fields is refused');
    assert.is(await upgrades(), 1, 'the app took no other upgrade');
  } finally {
    await f.kill();
  }
});

test.run();
