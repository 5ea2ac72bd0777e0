/** Owns the settings table: every setting is declared here once. The command-line parser, --help,
 *  validation, the Config type, --print-config and the man page are all derived from it. */

import {
  addressRanges, bindList, certReqs, sniList, type SniEntry, statusBindList, statsdAddress, tagList, bool, byteSize, duration, envMap, serviceList, integer, list, oneOf, optional, text, workerCount, Invalid, type Parser,
} from './values';
import { parseAppSpec } from './app-spec';
import { HOOK_DOCS, HOOK_NAMES, type HookFn, type HookName } from './hooks';
import { WORKER_CLASSES } from './worker-class';
import { compileAccessFormat } from '../log/access';
import { LOG_LEVELS } from '../log/logger';

export type Section = 'Config' | 'Server socket' | 'TLS' | 'Workers' | 'Timeouts' | 'Security' | 'Process' | 'Logging' | 'Observability' | 'Hooks';

/** An environment variable other than FORKD_<NAME> that also sets a setting (lower precedence). */
export interface EnvAlias {
  readonly name: string;
  /** Turns the variable's text into the setting's input, e.g. PORT=80 → ["0.0.0.0:80"]. */
  readonly map?: (value: string) => unknown;
}

export interface SettingDef<T> {
  readonly section: Section;
  /** Command-line flags, e.g. ['-w', '--workers']; the last is the long form. */
  readonly flags?: readonly string[];
  /** Set by the positional argument instead of a flag. */
  readonly positional?: string;
  readonly metavar?: string;
  readonly env?: readonly EnvAlias[];
  /** Only the command line and the environment can set it (it says where the file is). */
  readonly notInFile?: boolean;
  /** Only a config file can set it (a function: hooks). */
  readonly fileOnly?: boolean;
  readonly parse: Parser<T>;
  readonly default: NoInfer<T>;
  readonly doc: string;
}

/** `P`, the parser's own type, is kept: durations.ts tells the duration settings by it. */
function setting<T, P extends Parser<T> = Parser<T>>(def: SettingDef<T> & { readonly parse: P }): SettingDef<T> & { readonly parse: P } {
  return def;
}

const appSpec: Parser<string> = Object.assign((input: unknown) => {
  if (typeof input !== 'string') throw new Invalid(appSpec.allowed);
  const parsed = parseAppSpec(input);
  if (typeof parsed === 'string') throw new Invalid(appSpec.allowed, parsed);
  return input;
}, { allowed: 'MODULE, MODULE:EXPORT or MODULE:FACTORY()' });

const accessFormat: Parser<string> = Object.assign((input: unknown) => {
  const format = text()(input);
  const compiled = compileAccessFormat(format);
  if (typeof compiled === 'string') throw new Invalid(accessFormat.allowed, compiled);
  return format;
}, { allowed: '"json" or a format of %(ATOM)s atoms' });

const umaskValue: Parser<number> = Object.assign((input: unknown) => {
  const n = typeof input === 'number' ? input : typeof input === 'string' && /^(0o)?[0-7]{1,4}$/.test(input)
    ? parseInt(input.replace(/^0o/, ''), 8) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > 0o7777) throw new Invalid(umaskValue.allowed);
  return n;
}, { allowed: 'an octal mode such as 0o027 or "027"' });

const hookFn: Parser<HookFn | null> = Object.assign((input: unknown) => {
  if (input === null) return null;
  if (typeof input !== 'function') throw new Invalid('a function (or null)');
  return input as HookFn;
}, { allowed: 'a function (or null)' });

/** One file-only setting per hook, from the hook contract. */
function hookSettings(): { readonly [K in HookName]: SettingDef<HookFn | null> } {
  const out = {} as Record<HookName, SettingDef<HookFn | null>>;
  for (const name of HOOK_NAMES) {
    out[name] = setting({
      section: 'Hooks', fileOnly: true, parse: hookFn, default: null,
      doc: `${HOOK_DOCS[name].where === 'worker' ? '[worker] ' : '[master] '}${HOOK_DOCS[name].doc}`,
    });
  }
  return out;
}

export const GUNICORN_ACCESS_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"';

export const settings = {
  config: setting({
    section: 'Config', flags: ['-c', '--config'], metavar: 'FILE', notInFile: true,
    parse: optional(text('a file path')), default: null,
    doc: 'Config file to load. Without it, forkd looks for forkd.config.{ts,mts,cts,js,mjs,cjs,json,yaml,yml}, '
      + '.forkdrc* or a "forkd" key in package.json in the working directory.',
  }),
  reloadOnConfigChange: setting({
    section: 'Config', flags: ['--reload-on-config-change'], parse: bool, default: true,
    doc: 'Saving the config file reloads it, as HUP does (an invalid save is logged and ignored).',
  }),
  reload: setting({
    section: 'Config', flags: ['--reload'], parse: bool, default: false,
    doc: 'Development: restart the workers when a file in the app\'s directory changes.',
  }),
  app: setting({
    section: 'Config', positional: 'APP', parse: optional(appSpec), default: null,
    doc: 'The app: MODULE (its default export), MODULE:EXPORT, or MODULE:FACTORY() to call a factory, '
      + 'sync or async, once in each worker.',
  }),
  bind: setting({
    section: 'Server socket', flags: ['-b', '--bind'], metavar: 'ADDRESS',
    env: [{ name: 'PORT', map: (port) => [`0.0.0.0:${port}`] }],
    parse: bindList, default: ['127.0.0.1:8000'],
    doc: 'Address to listen on, repeatable: HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N. '
      + 'PORT in the environment means 0.0.0.0:$PORT.',
  }),
  socketMode: setting({
    section: 'Server socket', flags: ['--socket-mode'], metavar: 'MODE', parse: optional(umaskValue), default: null,
    doc: 'The mode of the Unix socket files forkd creates (octal, e.g. 0o660 or "660"); a client needs write '
      + 'permission to connect. Unset: 0666 (any local user, as any local user can reach 127.0.0.1), less the umask setting\'s bits.',
  }),
  socketGroup: setting({
    section: 'Server socket', flags: ['--socket-group'], metavar: 'GROUP', parse: optional(text('a group name or gid')), default: null,
    doc: 'The group of the Unix socket files forkd creates (name or gid), e.g. the proxy\'s (www-data) with '
      + 'socketMode 0o660; the workers\' group by default.',
  }),
  proxyProtocol: setting({
    section: 'Server socket', flags: ['--proxy-protocol'], metavar: 'VERSION', parse: oneOf(['off', 'v1', 'v2', 'auto'] as const), default: 'off',
    doc: 'Every connection on the serving listeners starts with a PROXY protocol header (HAProxy\'s send-proxy, '
      + 'an AWS NLB): v1 (text), v2 (binary) or auto (either). The app, the access log and the balance see the '
      + 'client it names. A header from a peer outside proxyAllowIps, a malformed one, or none within 5 s closes '
      + 'the connection before HTTP (and TLS).',
  }),
  proxyAllowIps: setting({
    section: 'Server socket', flags: ['--proxy-allow-from'], metavar: 'RANGES', parse: addressRanges,
    default: ['127.0.0.1', '::1'] as string[],
    doc: 'The peers that may send a PROXY header: addresses and CIDR ranges, comma-separated or repeated; * for any. '
      + 'On a Unix listener the socket file\'s permissions decide instead.',
  }),
  forwardedAllowIps: setting({
    section: 'Server socket', flags: ['--forwarded-allow-ips'], metavar: 'RANGES', parse: addressRanges,
    default: ['127.0.0.1', '::1'] as string[],
    doc: 'The proxies whose X-Forwarded-For, X-Forwarded-Proto and Forwarded headers are believed for the access '
      + 'log\'s client (%(h)s) and scheme (%(S)s); from any other peer they are plain headers. * for any. '
      + 'A peer on a Unix listener is trusted.',
  }),
  backlog: setting({
    section: 'Server socket', flags: ['--backlog'], metavar: 'INT', parse: integer({ min: 1 }), default: 2048,
    doc: 'Pending connections the kernel queues on each listener (capped by net.core.somaxconn).',
  }),
  reusePort: setting({
    section: 'Server socket', flags: ['--reuse-port'], parse: bool, default: false,
    doc: 'Bind TCP sockets with SO_REUSEPORT, so that another server process of the same user (a second '
      + 'forkd during a blue/green switch) can bind the same address; the kernel then spreads new connections '
      + 'over both. Needs a Node.js that passes the flag to the socket (22.12+, 23.1+); on one that does not, '
      + 'it is refused as invalid. It applies to the sockets forkd binds: one it already holds at a reload, '
      + 'or is given (systemd, fd://, a USR2 predecessor), is used as it is.',
  }),
  certfile: setting({
    section: 'TLS', flags: ['--certfile'], metavar: 'FILE', parse: optional(text('a PEM file')), default: null,
    doc: 'The server certificate (PEM, with its chain). With it, every TCP bind serves TLS unless written '
      + 'http://HOST:PORT; Unix socket binds stay plain. The workers terminate TLS; the master never does.',
  }),
  keyfile: setting({
    section: 'TLS', flags: ['--keyfile'], metavar: 'FILE', parse: optional(text('a PEM file')), default: null,
    doc: 'The private key of certfile (PEM).',
  }),
  caCerts: setting({
    section: 'TLS', flags: ['--ca-certs'], metavar: 'FILE', parse: optional(text('a PEM file')), default: null,
    doc: 'CA certificates (PEM) that client certificates are checked against (certReqs).',
  }),
  certReqs: setting({
    section: 'TLS', flags: ['--cert-reqs'], metavar: 'WHICH', parse: certReqs, default: 'none',
    doc: 'Client certificates (mutual TLS): none, optional (asked for, checked when given) or required; '
      + 'gunicorn\'s 0, 1 and 2 are taken too.',
  }),
  ciphers: setting({
    section: 'TLS', flags: ['--ciphers'], metavar: 'LIST', parse: optional(text('an OpenSSL cipher list')), default: null,
    doc: 'The TLS 1.2 cipher list, in OpenSSL\'s format (Node\'s default when unset).',
  }),
  http2: setting({
    section: 'TLS', flags: ['--http2'], parse: bool, default: false,
    doc: 'TLS listeners offer HTTP/2 (h2) beside HTTP/1.1 by ALPN, on the same port. Request-listener apps get '
      + 'Node\'s HTTP/2 compatibility API; a stop or reload sends GOAWAY and lets open streams finish.',
  }),
  sni: setting({
    section: 'TLS', fileOnly: true, parse: sniList, default: [] as SniEntry[],
    doc: 'More certificates, chosen by the name a client asks for (SNI): a list of { servername, certfile, keyfile }; '
      + 'a servername may start with *. for one level of subdomain. certfile and keyfile serve any other name.',
  }),
  tlsMinVersion: setting({
    section: 'TLS', flags: ['--tls-min-version'], metavar: 'VERSION', parse: oneOf(['TLSv1.2', 'TLSv1.3'] as const), default: 'TLSv1.2',
    doc: 'The oldest TLS version a client may use.',
  }),
  statusBind: setting({
    section: 'Observability', flags: ['--status-bind'], metavar: 'ADDRESS', parse: statusBindList, default: [] as string[],
    doc: 'An address of the master\'s own read-only HTTP listener, repeatable: HOST:PORT, [IPv6]:PORT or '
      + 'unix:PATH (never handed to workers). GET /metrics (Prometheus), /stats (JSON), /livez and /readyz.',
  }),
  appMetrics: setting({
    section: 'Observability', flags: ['--app-metrics'], parse: bool, default: false,
    doc: 'At each scrape of /metrics, collect the app\'s own prom-client registry from every worker and '
      + 'merge it in (prom-client\'s aggregators decide how: sum, first, min, max, average, omit).',
  }),
  statsdHost: setting({
    section: 'Observability', flags: ['--statsd-host'], metavar: 'HOST:PORT', parse: optional(statsdAddress), default: null,
    doc: 'Send gunicorn\'s statsd metrics (named forkd.*) over UDP to HOST:PORT (port 8125 if left out), '
      + 'or to the Unix datagram socket unix:PATH.',
  }),
  statsdPrefix: setting({
    section: 'Observability', flags: ['--statsd-prefix'], metavar: 'PREFIX', parse: optional(text('a metric name prefix')), default: null,
    doc: 'Put this before every statsd metric name (a dot is added after it when it has none).',
  }),
  dogstatsdTags: setting({
    section: 'Observability', flags: ['--dogstatsd-tags'], metavar: 'TAGS', parse: tagList, default: [] as string[],
    doc: 'dogstatsd tags for every statsd metric, comma-separated KEY:VALUE pairs.',
  }),
  controlSocket: setting({
    section: 'Observability', flags: ['--control-socket'], metavar: 'PATH', parse: optional(text('a socket path')), default: null,
    doc: 'A Unix socket (mode 0600) on which the master takes `forkd ctl` commands: status, reload, '
      + 'scale, kill, reopen, stop, upgrade, stacks.',
  }),
  workers: setting({
    section: 'Workers', flags: ['-w', '--workers'], metavar: 'INT', env: [{ name: 'WEB_CONCURRENCY' }],
    parse: workerCount, default: 'auto',
    doc: 'Worker processes to keep alive. "auto" is one per CPU this process may run on, or its container\'s CPU '
      + 'quota (cgroup v2 cpu.max, v1 cpu.cfs_quota_us) rounded up when that is fewer: a Node worker multiplexes '
      + 'I/O on its event loop, so more workers than cores add memory, not throughput.',
  }),
  threads: setting({
    section: 'Workers', flags: ['--threads'], metavar: 'INT', parse: integer({ min: 1, max: 64 }), default: 1,
    doc: 'Serving threads in each worker process (worker_threads, each with its own copy of the app and '
      + 'its own duplicate of every listening socket): less memory per serving unit than a process.',
  }),
  workerConnections: setting({
    section: 'Workers', flags: ['--worker-connections'], metavar: 'INT', parse: integer(), default: 0,
    doc: 'Most connections one worker (or thread) holds at once (0: no cap). At the cap it closes its oldest '
      + 'connection still sending its first request, if it has one, to take the next; otherwise it stops '
      + 'accepting, and further connections wait in the kernel\'s backlog for one with room, never refused.',
  }),
  workerClass: setting({
    section: 'Workers', flags: ['-k', '--worker-class'], metavar: 'CLASS', parse: oneOf(WORKER_CLASSES), default: 'async',
    doc: '"async": each worker serves many connections on its event loop. "sync": one connection at a '
      + 'time and no keep-alive (workerConnections 1, keepAlive 0), as gunicorn\'s sync workers; threads must be 1.',
  }),
  balance: setting({
    section: 'Workers', flags: ['--balance'], parse: bool, default: true,
    doc: 'Keep kept-alive connections spread evenly over the workers: one holding well over its share '
      + 'asks that many of its clients to reconnect (Connection: close on their next response); the '
      + 'kernel hands each reconnect to a worker that accepts. The master is never in the data path.',
  }),
  maxRequests: setting({
    section: 'Workers', flags: ['--max-requests'], metavar: 'INT', parse: integer(), default: 0,
    doc: 'Recycle a worker after it has served this many requests (0: never). Its replacement starts first.',
  }),
  maxRequestsJitter: setting({
    section: 'Workers', flags: ['--max-requests-jitter'], metavar: 'INT', parse: integer(), default: 0,
    doc: 'Add a random 0..N to each worker\'s max-requests, so that workers do not all recycle at once.',
  }),
  upgrade: setting({
    section: 'Process', flags: ['--upgrade'], metavar: 'MODE', parse: oneOf(['auto', 'manual'] as const), default: 'auto',
    doc: 'USR2 starts a successor master from the installed code; once it serves, this one retires (auto) '
      + 'or waits for WINCH and TERM (manual, as unicorn).',
  }),
  maxMemory: setting({
    section: 'Workers', flags: ['--max-memory'], metavar: 'SIZE', parse: byteSize, default: 0,
    doc: 'Recycle a worker whose resident memory exceeds this, checked by the master every second '
      + '(0: never). Its replacement starts first.',
  }),
  maxBootFailures: setting({
    section: 'Workers', flags: ['--max-boot-failures'], metavar: 'INT', parse: integer({ min: 1 }), default: 5,
    doc: 'At first start, give up (exit 3) after this many workers in a row die before they have run a second.',
  }),
  timeout: setting({
    section: 'Timeouts', flags: ['-t', '--timeout'], metavar: 'SECONDS', parse: duration({ min: 1, orZero: true }), default: 30,
    doc: 'Kill and replace a worker whose event loop has not sent a heartbeat for this long (0: never).',
  }),
  timeoutStack: setting({
    section: 'Timeouts', flags: ['--timeout-stack'], parse: bool, default: true,
    doc: 'Before killing a timed-out worker, open its inspector on 127.0.0.1 for a moment to log the '
      + 'JavaScript stack it is stuck in.',
  }),
  bootTimeout: setting({
    section: 'Timeouts', flags: ['--boot-timeout'], metavar: 'SECONDS', parse: duration({ min: 0.1 }), default: 30,
    doc: 'How long a new worker has to load the app and start listening.',
  }),
  hookTimeout: setting({
    section: 'Timeouts', flags: ['--hook-timeout'], metavar: 'SECONDS', parse: duration({ min: 0.001 }), default: 10,
    doc: 'How long a hook may run before forkd logs it as overrun and carries on.',
  }),
  gracefulTimeout: setting({
    section: 'Timeouts', flags: ['--graceful-timeout'], metavar: 'SECONDS', parse: duration(), default: 30,
    doc: 'How long a stopping worker has to finish its requests before it is killed.',
  }),
  requestDeadline: setting({
    section: 'Timeouts', flags: ['--request-deadline'], metavar: 'SECONDS', parse: duration(), default: 0,
    doc: 'A response not finished this long after its request reached the app is ended by forkd: 503 if nothing was '
      + 'written yet (504 from a fetch handler, whose Request.signal is aborted), else its connection is closed; '
      + 'the request gets a \'deadline\' event first, and it is logged (0: no deadline).',
  }),
  shutdownDelay: setting({
    section: 'Timeouts', flags: ['--shutdown-delay'], metavar: 'SECONDS', parse: duration(), default: 0,
    doc: 'On TERM, /readyz answers 503 at once while the workers keep serving for this long (the time a load '
      + 'balancer or Kubernetes takes to stop sending here); then the graceful stop. A second TERM, INT or QUIT skips it.',
  }),
  keepAlive: setting({
    section: 'Timeouts', flags: ['--keep-alive'], metavar: 'SECONDS', parse: duration(), default: 5,
    doc: 'How long an idle keep-alive connection is kept open (0: no keep-alive).',
  }),
  requestTimeout: setting({
    section: 'Timeouts', flags: ['--request-timeout'], metavar: 'SECONDS', parse: duration(), default: 300,
    doc: 'Longest time to receive a whole request from a client (0: no limit).',
  }),
  headersTimeout: setting({
    section: 'Timeouts', flags: ['--headers-timeout'], metavar: 'SECONDS', parse: duration(), default: 60,
    doc: 'Longest time to receive a request\'s headers; at most request-timeout.',
  }),
  limitRequestLine: setting({
    section: 'Security', flags: ['--limit-request-line'], metavar: 'BYTES', parse: integer(), default: 4094,
    doc: 'Longest request line (method, target, version) accepted; longer ones get 414 (0: no limit).',
  }),
  limitRequestFields: setting({
    section: 'Security', flags: ['--limit-request-fields'], metavar: 'INT', parse: integer(), default: 100,
    doc: 'Most header fields a request may have; more get 431 (0: no limit). Node caps all headers at 16 KiB.',
  }),
  limitRequestFieldSize: setting({
    section: 'Security', flags: ['--limit-request-field-size'], metavar: 'BYTES', parse: integer(), default: 8190,
    doc: 'Longest header field line (name, value and line end) accepted; longer ones get 431 (0: no limit).',
  }),
  limitRequestBody: setting({
    section: 'Security', flags: ['--limit-request-body'], metavar: 'BYTES', parse: byteSize, default: 0,
    doc: 'Largest request body (bytes, or a size such as 10M; 0: no limit). A larger Content-Length gets 413 and '
      + 'Connection: close before the app runs; a chunked body that grows past it is cut (413 if nothing was '
      + 'sent yet) and its connection closed. The app never reads more than the limit.',
  }),
  name: setting({
    section: 'Process', flags: ['-n', '--name'], metavar: 'NAME', parse: optional(text()), default: null,
    doc: 'Name in process titles ("forkd: master [NAME]"); the app by default.',
  }),
  user: setting({
    section: 'Process', flags: ['-u', '--user'], metavar: 'USER', parse: optional(text('a user name or uid')), default: null,
    doc: 'Run the workers as this user (name or uid); the master keeps its own user, to bind on reload.',
  }),
  group: setting({
    section: 'Process', flags: ['-g', '--group'], metavar: 'GROUP', parse: optional(text('a group name or gid')), default: null,
    doc: 'Run the workers with this group (name or gid); the user\'s primary group by default.',
  }),
  initgroups: setting({
    section: 'Process', flags: ['--initgroups'], parse: bool, default: false,
    doc: 'Give the workers the user\'s supplementary groups too (otherwise they have only GROUP).',
  }),
  umask: setting({
    section: 'Process', flags: ['-m', '--umask'], metavar: 'INT', parse: optional(umaskValue), default: null,
    doc: 'The file mode mask of the master and workers (octal, e.g. 0o027 or "027"); Unix socket files get 0666 less it, unless socketMode is set.',
  }),
  pid: setting({
    section: 'Process', flags: ['-p', '--pid'], metavar: 'FILE', parse: optional(text('a file path')), default: null,
    doc: 'Write the master\'s pid to this file once the sockets are bound; removed at exit.',
  }),
  chdir: setting({
    section: 'Process', flags: ['--chdir'], metavar: 'DIR', parse: optional(text('a directory')), default: null,
    doc: 'Change to this directory before loading the app (config files are looked for there too).',
  }),
  nodeArgs: setting({
    section: 'Process', flags: ['--node-arg'], metavar: 'ARG', parse: list(text('a node option'), 'node options'), default: [],
    doc: 'An option for the workers\' node, repeatable (e.g. --node-arg=--max-old-space-size=512, --node-arg=--cpu-prof).',
  }),
  env: setting({
    section: 'Process', flags: ['-e', '--env'], metavar: 'KEY=VALUE', parse: envMap, default: {},
    doc: 'Set an environment variable in the workers, repeatable.',
  }),
  services: setting({
    section: 'Process', flags: ['--service'], metavar: 'NAME=MODULE', parse: serviceList, default: [],
    doc: 'Run MODULE (it exports (ctx) => …) once beside the workers, in a process of its own, restarted when it dies, '
      + 'replaced at a reload (stopped, then started; overlap: true in a config file starts the new one first), repeatable.',
  }),
  logLevel: setting({
    section: 'Logging', flags: ['--log-level'], metavar: 'LEVEL', parse: oneOf(LOG_LEVELS), default: 'info',
    doc: 'Least severe level written to the error log.',
  }),
  errorLog: setting({
    section: 'Logging', flags: ['--error-logfile', '--log-file'], metavar: 'FILE', parse: text('a file path or "-"'),
    default: '-', doc: 'Where the error log goes: "-" is stderr.',
  }),
  accessLog: setting({
    section: 'Logging', flags: ['--access-logfile'], metavar: 'FILE', parse: optional(text('a file path or "-"')),
    default: null, doc: 'Where the access log goes: "-" is stdout; off by default.',
  }),
  accessLogFormat: setting({
    section: 'Logging', flags: ['--access-logformat'], metavar: 'FORMAT', parse: accessFormat, default: GUNICORN_ACCESS_FORMAT,
    doc: 'Access log line, with gunicorn\'s atoms (%(h)s %(r)s %(s)s …), or "json" for one JSON object a line.',
  }),
  ...hookSettings(),
} as const;

export type SettingName = keyof typeof settings;
export type Config = { readonly [K in SettingName]: ReturnType<(typeof settings)[K]['parse']> };
export const SETTING_NAMES = Object.keys(settings) as SettingName[];
