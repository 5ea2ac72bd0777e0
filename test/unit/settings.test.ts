import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { workerSetupFor } from '../../src/arbiter/worker-config';
import { parseArgv } from '../../src/cli/argv';
import { renderHelp } from '../../src/cli/help';
import { parseAppSpec } from '../../src/config/app-spec';
import { durationsMs } from '../../src/config/durations';
import { ConfigError, UsageError, didYouMean } from '../../src/config/errors';
import { resolveLayers, type LayerInputs } from '../../src/config/layers';
import { renderConfig } from '../../src/config/print';
import { settings, SETTING_NAMES } from '../../src/config/settings';
import { envName } from '../../src/env-names';
import { duration } from '../../src/config/values';
import { parseBind } from '../../src/net/address';

const none: LayerInputs = { cli: {}, env: {}, file: null };
const layers = (over: Partial<LayerInputs>) => resolveLayers({ ...none, ...over });
const cli = (...argv: string[]) => parseArgv(argv).values;

function configError(fn: () => unknown): string {
  try { fn(); } catch (err) {
    assert.instance(err, ConfigError);
    return (err as Error).message;
  }
  throw new Error('expected a ConfigError');
}

test('defaults come from the table', () => {
  const { config, origins } = layers({});
  assert.equal(config.bind, ['127.0.0.1:8000']);
  assert.is(config.workers, 'auto');
  assert.is(config.timeout, 30);
  assert.is(config.gracefulTimeout, 30);
  assert.is(config.accessLog, null);
  assert.equal(origins.timeout, { layer: 'default' });
});

test('layers: file < env < command line, each origin recorded', () => {
  const file = { path: '/etc/forkd.config.js', values: { workers: 3, timeout: '2m', keepAlive: 9 } };
  const { config, origins } = layers({
    file, env: { FORKD_TIMEOUT: '45', WEB_CONCURRENCY: '5' }, cli: cli('-w', '7'),
  });
  assert.is(config.workers, 7);
  assert.equal(origins.workers, { layer: 'cli', flag: '-w' });
  assert.is(config.timeout, 45);
  assert.equal(origins.timeout, { layer: 'env', name: 'FORKD_TIMEOUT' });
  assert.is(config.keepAlive, 9);
  assert.equal(origins.keepAlive, { layer: 'file', file: '/etc/forkd.config.js' });
});

test('WEB_CONCURRENCY and PORT are environment aliases, below FORKD_*', () => {
  assert.is(layers({ env: { WEB_CONCURRENCY: '4' } }).config.workers, 4);
  assert.is(layers({ env: { WEB_CONCURRENCY: '4', FORKD_WORKERS: '2' } }).config.workers, 2);
  assert.equal(layers({ env: { PORT: '5000' } }).config.bind, ['0.0.0.0:5000']);
  assert.equal(layers({ env: { PORT: '5000', FORKD_BIND: 'unix:/tmp/a.sock,[::1]:9' } }).config.bind, ['unix:/tmp/a.sock', '[::1]:9']);
  const { origins } = layers({ env: { PORT: '5000' } });
  assert.equal(origins.bind, { layer: 'env', name: 'PORT' });
});

test('durations take seconds or units', () => {
  const d = duration();
  assert.is(d(5), 5);
  assert.is(d('5'), 5);
  assert.is(d('500ms'), 0.5);
  assert.is(d('2m'), 120);
  assert.is(d('1h'), 3600);
  assert.throws(() => d('-1'));
  assert.throws(() => d('soon'));
  assert.throws(() => d(-1));
});

test('durations become milliseconds once: every duration setting of the table, and only those', () => {
  const { config } = layers({ cli: cli('--keep-alive', '500ms', '-t', '2m', '--hook-timeout', '0.25', '--shutdown-delay', '5s', '--request-deadline', '30') });
  assert.equal(durationsMs(config), {
    timeout: 120_000, bootTimeout: 30_000, hookTimeout: 250, gracefulTimeout: 30_000, requestDeadline: 30_000, shutdownDelay: 5000, keepAlive: 500,
    requestTimeout: 300_000, headersTimeout: 60_000,
  });
});

test('a worker is told its durations in milliseconds and what its worker class implies', () => {
  const setup = (argv: string[]) => {
    const { config, origins } = layers({ cli: cli(...argv) });
    return workerSetupFor({ config, durationsMs: durationsMs(config), snapshot: null }).workerConfig;
  };
  const async = setup(['--keep-alive', '2', '--worker-connections', '50', '--graceful-timeout', '1m']);
  assert.is(async.keepAliveMs, 2000);
  assert.is(async.workerConnections, 50);
  assert.is(async.gracefulTimeoutMs, 60_000);
  const sync = setup(['-k', 'sync', '--keep-alive', '2', '--worker-connections', '50']);
  assert.is(sync.keepAliveMs, 0);
  assert.is(sync.workerConnections, 1);
});

test('observability: metrics on with a status listener or control socket; statsd named as gunicorn would', () => {
  const setup = (...argv: string[]) => {
    const { config, origins } = layers({ cli: cli(...argv) });
    return workerSetupFor({ config, durationsMs: durationsMs(config), snapshot: null }).workerConfig;
  };
  assert.is(setup().metrics, false);
  assert.is(setup().statsd, null);
  assert.is(setup('--status-bind', '127.0.0.1:9100').metrics, true);
  assert.is(setup('--control-socket', '/run/forkd.sock').metrics, true);
  assert.equal(setup('--statsd-host', '127.0.0.1:8125', '--statsd-prefix', 'web', '--dogstatsd-tags', 'env:prod,canary').statsd,
    { host: '127.0.0.1:8125', prefix: 'web.', tags: ['env:prod', 'canary'] });
  assert.is(setup('--statsd-host', 'unix:/run/statsd.sock', '--statsd-prefix', 'web.').statsd?.prefix, 'web.');
  assert.equal(layers({ cli: cli('--status-bind', '127.0.0.1:9100', '--status-bind', 'unix:/run/s.sock') }).config.statusBind, ['127.0.0.1:9100', 'unix:/run/s.sock']);
  assert.match(configError(() => layers({ cli: cli('--statsd-host', 'a:b:c') })), 'HOST:PORT, [IPv6]:PORT or unix:PATH');
  assert.match(configError(() => layers({ cli: cli('--statsd-host', '[::1]:70000') })), 'port 70000 is not 1..65535');
  assert.match(configError(() => layers({ cli: cli('--dogstatsd-tags', 'a b') })), 'KEY:VALUE or KEY');
  assert.match(configError(() => layers({ cli: cli('--status-bind', '127.0.0.1:9100', '--status-bind', '127.0.0.1:9100') })), 'each address once');
  assert.match(configError(() => layers({ cli: cli('-b', '0.0.0.0:8000', '--status-bind', '127.0.0.1:8000') })), 'the status listener needs an address of its own');
});

test('an invalid value names the setting, the value, the layer and what is allowed', () => {
  const fromFile = configError(() => layers({ file: { path: '/srv/forkd.config.ts', values: { timeout: -5 } } }));
  assert.match(fromFile, 'timeout = -5');
  assert.match(fromFile, 'config file /srv/forkd.config.ts');
  assert.match(fromFile, '0 (off) or a duration from 1 to 2147483: seconds');
  const fromEnv = configError(() => layers({ env: { WEB_CONCURRENCY: 'lots' } }));
  assert.match(fromEnv, 'workers = "lots" from environment variable WEB_CONCURRENCY');
  assert.match(fromEnv, '"auto" or an integer ≥ 1');
  const fromCli = configError(() => layers({ cli: cli('-b', '127.0.0.1:99999') }));
  assert.match(fromCli, 'the command line (-b)');
  assert.match(fromCli, 'port 99999 is out of range');
  const level = configError(() => layers({ cli: cli('--log-level', 'loud') }));
  assert.match(level, 'one of "critical", "error", "warning", "info", "debug"');
});

test('unknown settings are refused with a suggestion', () => {
  const msg = configError(() => layers({ file: { path: '/x/forkd.config.js', values: { worker: 2 } } }));
  assert.match(msg, 'unknown setting "worker" in config file /x/forkd.config.js; did you mean "workers"?');
  const env = configError(() => layers({ env: { FORKD_TIMEOUTS: '3' } }));
  assert.match(env, 'unknown environment variable FORKD_TIMEOUTS; did you mean "FORKD_TIMEOUT"?');
  const cfg = configError(() => layers({ file: { path: '/x/forkd.config.js', values: { config: 'other.js' } } }));
  assert.match(cfg, 'config cannot be set in config file');
});

test('values Node cannot honour are refused: long timers, NUL bytes, one address twice', () => {
  assert.match(configError(() => layers({ cli: cli('--keep-alive', '1000h') })), 'a duration from 0 to 2147483');
  assert.match(configError(() => layers({ cli: cli('-t', '0.2') })), '0 (off) or a duration from 1');
  assert.is(layers({ cli: cli('-t', '0') }).config.timeout, 0);
  assert.match(configError(() => layers({ file: { path: '/f.json', values: { env: { K: 'a\0b' } } } })), 'the value of K holds a NUL byte');
  assert.match(configError(() => layers({ cli: cli('-b', '[::]:80', '-b', '[::1]:80') })), '[::]:80 and [::1]:80 claim the same address');
  assert.match(configError(() => layers({ cli: cli('-b', 'unix:/a.sock', '-b', 'unix:/a.sock') })), 'claim the same address');
  assert.equal(layers({ cli: cli('-b', '127.0.0.1:0', '-b', '127.0.0.1:0', '-b', '127.0.0.1:80', '-b', '127.0.0.2:80') }).config.bind.length, 4);
});

test('headersTimeout may not exceed requestTimeout', () => {
  const msg = configError(() => layers({ cli: cli('--headers-timeout', '90', '--request-timeout', '60') }));
  assert.match(msg, 'headersTimeout (90s, from the command line (--headers-timeout)) must not exceed requestTimeout');
});

test('the sync worker class has no threads', () => {
  const msg = configError(() => layers({ cli: cli('-k', 'sync'), file: { path: '/f.json', values: { threads: 4 } } }));
  assert.match(msg, 'workerClass "sync" (from the command line (-k)) serves one connection at a time');
  assert.match(msg, 'cannot have threads (4, from config file /f.json)');
  assert.is(layers({ cli: cli('-k', 'sync', '--threads', '1') }).config.workerClass, 'sync');
});

test('argv: long, short, attached, =, repeatable, booleans, positional', () => {
  const p = parseArgv(['-w4', '--bind=127.0.0.1:1', '-b', 'unix:/tmp/x.sock', '--no-timeout-stack', '-e', 'A=1', '-e', 'B=2', 'app.js:make()']);
  assert.equal(p.values.workers, { value: '4', flag: '-w' });
  assert.equal(p.values.bind?.value, ['127.0.0.1:1', 'unix:/tmp/x.sock']);
  assert.equal(p.values.timeoutStack, { value: false, flag: '--no-timeout-stack' });
  assert.equal(p.values.app, { value: 'app.js:make()', flag: 'APP' });
  const { config } = layers({ cli: p.values });
  assert.equal(config.env, { A: '1', B: '2' });
  assert.equal(config.bind, ['127.0.0.1:1', 'unix:/tmp/x.sock']);
  assert.ok(parseArgv(['--check-config']).actions.has('checkConfig'));
});

test('dogstatsd tags: comma-separated on the command line as in the environment, or repeated', () => {
  assert.equal(layers({ cli: cli('--dogstatsd-tags', 'env:test,team:web') }).config.dogstatsdTags, ['env:test', 'team:web']);
  assert.equal(layers({ cli: cli('--dogstatsd-tags', 'env:test', '--dogstatsd-tags', 'a, b') }).config.dogstatsdTags, ['env:test', 'a', 'b']);
  assert.equal(layers({ env: { FORKD_DOGSTATSD_TAGS: 'env:test,team:web' } }).config.dogstatsdTags, ['env:test', 'team:web']);
  assert.match(configError(() => layers({ cli: cli('--dogstatsd-tags', 'env:te st') })), '"env:te st" is not valid');
});

test('argv: usage errors', () => {
  assert.throws(() => parseArgv(['--worker', '2']), (e: Error) => e instanceof UsageError && /did you mean "--workers"\?/.test(e.message));
  assert.throws(() => parseArgv(['-w']), (e: Error) => e instanceof UsageError && /needs a value/.test(e.message));
  assert.throws(() => parseArgv(['a.js', 'b.js']), (e: Error) => /expected one APP/.test(e.message));
});

test('bind grammar', () => {
  assert.equal(parseBind('127.0.0.1:8000'), { kind: 'tcp', host: '127.0.0.1', port: 8000 });
  assert.equal(parseBind('[::1]:0'), { kind: 'tcp', host: '::1', port: 0 });
  assert.equal(parseBind(':80'), { kind: 'tcp', host: '0.0.0.0', port: 80 });
  assert.equal(parseBind('localhost:3000'), { kind: 'tcp', host: 'localhost', port: 3000 });
  assert.equal(parseBind('unix:/run/app.sock'), { kind: 'unix', path: '/run/app.sock' });
  assert.equal(parseBind('fd://3'), { kind: 'fd', fd: 3 });
  assert.match(parseBind('8000') as string, 'a bare port has no host');
  assert.match(parseBind('::1:80') as string, 'must be in brackets');
  assert.match(parseBind('[::zz]:80') as string, 'is not an IPv6 address');
  assert.match(parseBind('fd://1') as string, 'fd:// needs a file descriptor number ≥ 3');
  assert.equal(parseBind('fd://http'), { kind: 'named', name: 'http' });
  assert.match(parseBind(`unix:/${'x'.repeat(200)}`) as string, 'longer than 107 bytes');
});

test('app spec grammar', () => {
  assert.equal(parseAppSpec('app.js'), { module: 'app.js', exportName: null, call: false });
  assert.equal(parseAppSpec('dist/server.js:createApp()'), { module: 'dist/server.js', exportName: 'createApp', call: true });
  assert.equal(parseAppSpec('app.mjs:handler'), { module: 'app.mjs', exportName: 'handler', call: false });
  assert.type(parseAppSpec('app.js:not-a-name'), 'string');
});

test('help and print-config are derived from the table', () => {
  const help = renderHelp('9.9.9');
  for (const name of SETTING_NAMES) {
    const def = settings[name];
    for (const flag of def.flags ?? []) assert.ok(help.includes(flag), `--help lacks ${flag}`);
    if (def.flags) assert.ok(help.includes(envName(name)), `--help lacks ${envName(name)}`);
  }
  assert.match(help, 'WEB_CONCURRENCY');
  const printed = renderConfig(layers({ env: { WEB_CONCURRENCY: '3' } }));
  for (const name of SETTING_NAMES) assert.match(printed, new RegExp(`^${name} `, 'm'));
  assert.match(printed, /^workers\s+3\s+# environment variable WEB_CONCURRENCY$/m);
  assert.match(printed, /^timeout\s+30\s+# the default$/m);
});

test('did-you-mean stays quiet for far-off words', () => {
  assert.is(didYouMean('zzzzzzzz', ['workers', 'timeout']), null);
  assert.is(didYouMean('graceful_timeout', ['gracefulTimeout', 'timeout']), 'gracefulTimeout');
});

test('services: --service NAME=MODULE repeated, or a config file\'s list with overlap; a bad one is refused naming what is wrong', () => {
  assert.equal(layers({ cli: cli('--service', 'cron=./jobs/cron.js', '--service', 'mail=./jobs/mail.mjs') }).config.services, [
    { name: 'cron', module: './jobs/cron.js', overlap: false }, { name: 'mail', module: './jobs/mail.mjs', overlap: false },
  ]);
  const file = (services: unknown) => layers({ file: { path: '/srv/forkd.config.json', values: { services } } });
  assert.equal(file([{ name: 'cron', module: 'cron.js', overlap: true }, 'mail=mail.js']).config.services, [
    { name: 'cron', module: 'cron.js', overlap: true }, { name: 'mail', module: 'mail.js', overlap: false },
  ]);
  assert.equal(layers({}).config.services, []);
  assert.match(configError(() => file([{ name: 'a', module: 'x.js' }, { name: 'a', module: 'y.js' }])), 'two services are named a');
  assert.match(configError(() => file([{ name: 'a' }])), '{"name":"a"} needs a name and a module');
  assert.match(configError(() => file([{ name: 'a', module: 'x.js', every: '1m' }])), 'a service has name, module and overlap, not every');
  assert.match(configError(() => file(['no/slash=x.js'])), '"no/slash" is no service name');
  assert.match(configError(() => file([{ name: 'a', module: 'x.js', overlap: 'yes' }])), 'overlap of a is true or false');
  assert.match(configError(() => file(['cron'])), '"cron" is not NAME=MODULE');
});

test.run();
