/** Owns the listening sockets. The master binds them and never listens or accepts: workers inherit
 *  the fds and call listen({ fd }) themselves, so the kernel hands each connection to a worker and
 *  the master is never in the data path. (A master that called listen() would accept connections
 *  too.) Node has no public way to bind without listening; node:cluster uses net's internal
 *  `_createServerHandle`, and so do we, here and nowhere else.
 *  Closing a Unix socket handle this master bound unlinks the socket file: only the master that
 *  created it may do that, at its exit. */

import { chmodSync, fstatSync, lchownSync, lstatSync, statSync, unlinkSync } from 'node:fs';
import net, { isIP } from 'node:net';
import { dirname, resolve } from 'node:path';
import { constants as osConstants } from 'node:os';
import { describeBind, parseBind, servesTls, type BindSpec } from './address';
import { BindError, createServerHandle, fail, lazyHandle, portOf, UV_TCP_REUSEPORT } from './handles';
import { groupName, resolveGroup, userName } from '../config/identity';
import type { Logger } from '../log/logger';

export { BindError } from './handles';

export interface Listener {
  /** The bind as configured, e.g. "127.0.0.1:0". */
  readonly bind: string;
  readonly spec: BindSpec;
  /** This master's fd for the socket, handed to workers in their stdio. */
  readonly fd: number;
  /** As logged: `http://127.0.0.1:41234` (with the port the kernel chose for :0), `unix:/path`, `fd://3`. */
  readonly url: string;
  /** Where a socket this process did not bind came from, for the log ("systemd socket http"). */
  readonly origin?: string;
  /** Set for a socket systemd passed (its name, or null), through every later upgrade: such a
   *  socket file is systemd's, never unlinked here. */
  readonly systemdName?: string | null;
  /** For a socket a previous master handed over: the bind it had there. */
  readonly predecessorBind?: string;
  /** The socket as a handle Node can send to a worker over IPC (to accept again after a pause). */
  handle(): object;
  close(): void;
}

/** Whether `l` serves TLS, with a certificate configured (`certfile`): a TCP bind by its scheme
 *  (servesTls); a socket given as an fd (fd://N, systemd) when it is a TCP one, as gunicorn wraps
 *  every socket; never a Unix socket (a local proxy in front terminates TLS). */
export function listenerServesTls(l: Listener, certfile: string | null): boolean {
  const written = parseBind(l.bind);
  if (typeof written !== 'string' && written.kind === 'tcp') return servesTls(l.bind, certfile);
  if (certfile === null) return false;
  return l.spec.kind === 'tcp' || (l.spec.kind !== 'unix' && l.handle().constructor?.name === 'TCP');
}

/** How this master binds the sockets it creates (never applied to one it was given). */
export interface BindOptions {
  /** Who Unix socket files are given to. */
  readonly owner: Owner | null;
  /** SO_REUSEPORT on TCP sockets (the reusePort setting). */
  readonly reusePort: boolean;
  /** The mode of the Unix socket files it creates, and their group (null: the owner's, or the master's). */
  readonly socketMode: number;
  readonly socketGid: number | null;
}

const NO_OPTIONS: BindOptions = { owner: null, reusePort: false, socketMode: 0o666, socketGid: null };

/** How a master with `config` binds: socketMode, else 0666 less the umask setting's bits (a
 *  connecting client needs write permission on the file, and the kernel's umask of the master is
 *  no setting of the operator's). */
export function bindOptions(config: { reusePort: boolean; socketMode: number | null; socketGroup: string | null; umask: number | null }, owner: Owner | null): BindOptions {
  return {
    owner, reusePort: config.reusePort,
    socketMode: config.socketMode ?? (0o666 & ~(config.umask ?? 0)),
    socketGid: config.socketGroup === null ? null : resolveGroup(config.socketGroup, 'socketGroup'),
  };
}
const STALE_PROBE_MS = 1000;
/** A host name's address. The resolver is loaded only for binds that name a host (it costs the
 *  master half a megabyte it would keep). */
function lookup(host: string): Promise<{ address: string }> {
  return (require('node:dns/promises') as typeof import('node:dns/promises')).lookup(host);
}

function once(fn: () => void): () => void {
  let done = false;
  return () => { if (!done) { done = true; fn(); } };
}

async function bindTcp(bind: string, spec: Extract<BindSpec, { kind: 'tcp' }>, reusePort: boolean): Promise<Listener> {
  let address = spec.host;
  if (!isIP(address)) {
    try { address = (await lookup(spec.host)).address; } catch (err) {
      throw new BindError(`cannot bind ${bind}: host ${spec.host} does not resolve (${(err as NodeJS.ErrnoException).code})`);
    }
  }
  const handle = createServerHandle()(address, spec.port, isIP(address), undefined, reusePort ? UV_TCP_REUSEPORT : 0);
  if (typeof handle === 'number') fail(bind, handle, spec.port > 0 && spec.port < 1024 ? ' (ports below 1024 need root)' : '');
  const port = portOf(handle);
  // libuv defers EADDRINUSE from bind() to listen(), and a socket whose bind failed would then be
  // listened on at a random port: the socket's own address is the only reliable answer here.
  if (spec.port !== 0 && port !== spec.port) {
    handle.close();
    fail(bind, -osConstants.errno.EADDRINUSE);
  }
  const actual: BindSpec = { kind: 'tcp', host: address, port: port as number };
  return { bind, spec: actual, fd: handle.fd, url: describeBind(actual), handle: () => handle, close: once(() => handle.close()) };
}

/** Whether a process answers on the Unix socket file `path`: 'refused' proves the file stale; a
 *  full backlog or a slow server ('answers' after a while, or another error) means it lives. */
export function probeSocket(path: string): Promise<'refused' | 'answers' | string> {
  return new Promise((done) => {
    const sock = net.connect(path);
    const timer = setTimeout(() => { sock.destroy(); done('answers'); }, STALE_PROBE_MS);
    sock.once('connect', () => { clearTimeout(timer); sock.destroy(); done('answers'); });
    sock.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      done(err.code === 'ECONNREFUSED' ? 'refused' : err.code ?? err.message);
    });
  });
}

/** A socket file left by a process that died is replaced; one that still answers is not. */
export async function clearStaleSocket(bind: string, path: string): Promise<void> {
  let st;
  try { st = lstatSync(path); } catch { return; }
  if (!st.isSocket()) throw new BindError(`cannot bind ${bind}: ${path} exists and is not a socket`);
  const probe = await probeSocket(path);
  if (probe === 'answers') throw new BindError(`cannot bind ${bind}: another process is listening on ${path}`);
  if (probe !== 'refused') throw new BindError(`cannot bind ${bind}: cannot tell whether ${path} is in use (${probe})`);
  unlinkSync(path);
}

/** Who a socket file is given to: the workers' user, so that it matches what they run as. */
export interface Owner { readonly uid: number; readonly gid: number }

async function bindUnix(bind: string, spec: Extract<BindSpec, { kind: 'unix' }>, opts: BindOptions): Promise<Listener> {
  const path = resolve(spec.path);
  await clearStaleSocket(bind, path);
  // The file is made with its mode (bind() applies the umask): never a moment more open, and no
  // chmod by path that a planted symlink could redirect.
  const before = process.umask(0o777 & ~opts.socketMode);
  let handle;
  try { handle = createServerHandle()(path, -1, -1); } finally { process.umask(before); }
  if (typeof handle === 'number') fail(bind, handle);
  try { setSocketAccess(path, opts, false); } catch (err) {
    handle.close();
    throw err;
  }
  const actual: BindSpec = { kind: 'unix', path };
  return { bind, spec: actual, fd: handle.fd, url: describeBind(actual), handle: () => handle, close: once(() => handle.close()) };
}

/** A reload's new socketMode and socketGroup for a Unix socket it keeps, when this master bound it
 *  (not one systemd or a predecessor passed); then says who can connect. */
export function keptSocketAccess(l: Listener, opts: BindOptions, log: Logger): void {
  if (l.spec.kind !== 'unix' || l.origin || l.systemdName !== undefined) return;
  try { setSocketAccess(l.spec.path, opts); } catch (err) {
    log.error(`${(err as Error).message}; it keeps its access`, { event: 'reload.socketAccess' });
  }
  logWhoCanConnect(log, l.spec.path);
}

/** Says in the log who can connect to the Unix socket file at `path`: a warning when only its owner can. */
export function logWhoCanConnect(log: Logger, path: string): void {
  let who;
  try { who = whoCanConnect(path); } catch (err) {
    log.warning(`cannot tell who can connect to unix:${path}: ${(err as Error).message}`, { event: 'master.socketAccess' });
    return;
  }
  if (who.narrow) log.warning(who.text, { event: 'master.socketAccess' });
  else log.info(who.text, { event: 'master.socketAccess' });
}

/** Gives the socket file at `path` its owner and group, and (`chmod`: a kept one) its mode; never
 *  through a symlink, nor to anything but a socket. */
function setSocketAccess(path: string, { owner, socketMode, socketGid }: BindOptions, chmod = true): void {
  if (!lstatSync(path).isSocket()) throw new BindError(`${path} is no longer a socket`);
  if (owner || socketGid !== null) {
    const uid = owner?.uid ?? -1;
    const gid = socketGid ?? owner?.gid ?? -1;
    try { lchownSync(path, uid, gid); } catch (err) {
      throw new BindError(`cannot give ${path} to uid ${uid}, gid ${gid}: ${(err as NodeJS.ErrnoException).code}`);
    }
  }
  if (chmod) try { chmodSync(path, socketMode & 0o777); } catch (err) {
    throw new BindError(`cannot set the mode of ${path} to ${socketMode.toString(8).padStart(4, '0')}: ${(err as NodeJS.ErrnoException).code}`);
  }
}

function modeText(mode: number, kind: string): string {
  let out = kind;
  for (let shift = 6; shift >= 0; shift -= 3) {
    const bits = (mode >> shift) & 7;
    out += `${bits & 4 ? 'r' : '-'}${bits & 2 ? 'w' : '-'}${bits & 1 ? 'x' : '-'}`;
  }
  return out;
}

/** Who can connect to the Unix socket file at `path` (write permission on it, and search permission
 *  on every directory above it), in a line for the log; `narrow` when only its owner (and root) can. */
export function whoCanConnect(path: string): { text: string; narrow: boolean } {
  const st = statSync(path);
  const owner = userName(st.uid);
  const group = groupName(st.gid);
  let others = (st.mode & 0o002) !== 0;
  let members = (st.mode & 0o020) !== 0;
  let blocker = '';
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    const d = statSync(dir);
    const groupPasses = (d.mode & 0o001) !== 0 || (d.gid === st.gid && (d.mode & 0o010) !== 0);
    if ((others && !(d.mode & 0o001)) || (members && !groupPasses)) {
      blocker ||= `, as ${dir} (${modeText(d.mode & 0o777, 'd')} ${userName(d.uid)}:${groupName(d.gid)}) lets ${d.mode & 0o001 ? 'them' : groupPasses ? `only group ${groupName(d.gid)}` : `only ${userName(d.uid)}`} through`;
      others &&= (d.mode & 0o001) !== 0;
      members &&= groupPasses;
    }
    if (dir === dirname(dir)) break;
  }
  const who = others ? 'any local user' : members ? `${owner}${owner === 'root' ? '' : ', root'} and group ${group}` : `only ${owner}${owner === 'root' ? '' : ' and root'}`;
  return { text: `unix:${path} is ${modeText(st.mode & 0o777, 's')} ${owner}:${group}: ${who} can connect${blocker} (socketMode, socketGroup)`, narrow: !others && !members };
}

function adoptFd(bind: string, spec: Extract<BindSpec, { kind: 'fd' }>): Listener {
  let isSocket = false;
  try { isSocket = fstatSync(spec.fd).isSocket(); } catch {
    throw new BindError(`cannot use ${bind}: file descriptor ${spec.fd} is not open in this process`);
  }
  if (!isSocket) throw new BindError(`cannot use ${bind}: file descriptor ${spec.fd} is not a socket`);
  // Not ours to close: whoever passed it keeps it.
  const lazy = lazyHandle(spec.fd);
  return { bind, spec, fd: spec.fd, url: describeBind(spec), handle: lazy.get, close: () => undefined };
}

/** A listening socket this process was given rather than bound: by systemd (socket activation) or
 *  by the master it succeeds (USR2). */
export interface InheritedSocket {
  readonly fd: number;
  /** systemd's name for it, or the bind it served in the predecessor. */
  readonly name: string | null;
  readonly address: Extract<BindSpec, { kind: 'tcp' | 'unix' }> | null;
  /** Whether this process owns the Unix socket file and removes it at its final stop: never for
   *  systemd's; for the predecessor's, once the predecessor is gone (a rolled-back upgrade's
   *  successor must leave the file to the master that keeps serving). */
  readonly ownsFile: boolean | (() => boolean);
  readonly via: 'systemd' | 'predecessor';
}

function adoptInherited(bind: string, sock: InheritedSocket): Listener {
  const spec: BindSpec = sock.address ?? { kind: 'fd', fd: sock.fd };
  const origin = sock.via === 'systemd' ? `systemd socket ${sock.name ?? `fd ${sock.fd}`}` : 'the previous master';
  const lazy = lazyHandle(sock.fd);
  return {
    bind, spec, fd: sock.fd, url: describeBind(spec), origin, handle: lazy.get,
    ...(sock.via === 'systemd' ? { systemdName: sock.name } : sock.name ? { predecessorBind: sock.name } : {}),
    close: once(() => {
      lazy.close();
      const owns = typeof sock.ownsFile === 'function' ? sock.ownsFile() : sock.ownsFile;
      if (owns && spec.kind === 'unix') { try { unlinkSync(spec.path); } catch { /* gone */ } }
    }),
  };
}

async function sameAddress(a: InheritedSocket['address'], spec: BindSpec): Promise<boolean> {
  if (!a) return false;
  if (a.kind === 'unix' && spec.kind === 'unix') return a.path === resolve(spec.path);
  if (a.kind !== 'tcp' || spec.kind !== 'tcp' || a.port !== spec.port) return false;
  if (a.host === spec.host) return true;
  try { return !isIP(spec.host) && (await lookup(spec.host)).address === a.host; } catch { return false; }
}

async function findInherited(bind: string, spec: BindSpec, pool: InheritedSocket[]): Promise<InheritedSocket | null> {
  const byName = pool.find((s) => s.name === bind || (spec.kind === 'named' && s.name === spec.name)
    || (spec.kind === 'fd' && s.fd === spec.fd));
  if (byName) return byName;
  for (const s of pool) if (await sameAddress(s.address, spec)) return s;
  return null;
}

async function openOne(bind: string, inherited: InheritedSocket[], opts: BindOptions): Promise<Listener> {
  const spec = parseBind(bind);
  if (typeof spec === 'string') throw new BindError(`cannot bind ${bind}: ${spec}`);
  const given = await findInherited(bind, spec, inherited);
  if (given) {
    inherited.splice(inherited.indexOf(given), 1);
    return adoptInherited(bind, given);
  }
  switch (spec.kind) {
    case 'tcp': return bindTcp(bind, spec, opts.reusePort);
    case 'unix': return bindUnix(bind, spec, opts);
    case 'fd': return adoptFd(bind, spec);
    case 'named': {
      throw new BindError(`cannot use ${bind}: systemd passed no socket named ${spec.name}`);
    }
  }
}

/** Opens every configured address in order, preferring a socket this process was given for the
 *  same name or address (binding it again would fail: it is in use, by us). With `configured`
 *  false (bind left at its default) and sockets given, exactly the given ones are served. Given
 *  sockets no bind names are served if systemd passed them; a previous master's that the config
 *  no longer names are closed (that master removes their files when it exits). On failure closes
 *  what it opened and throws BindError. */
export async function openListeners(binds: readonly string[], given: readonly InheritedSocket[] = [], configured = true,
  opts: BindOptions = NO_OPTIONS): Promise<Listener[]> {
  const opened: Listener[] = [];
  const left = [...given];
  try {
    for (const bind of configured || left.length === 0 ? binds : []) opened.push(await openOne(bind, left, opts));
    for (const sock of left) {
      const listener = adoptInherited(sock.address ? describeBind(sock.address).replace(/^http:\/\//, '') : `fd://${sock.name ?? sock.fd}`, sock);
      if (sock.via === 'systemd' || !configured) opened.push(listener); else listener.close();
    }
    return opened;
  } catch (err) {
    for (const l of opened) if (!given.some((g) => g.fd === l.fd)) l.close();
    throw err;
  }
}

/** The listeners a new generation of workers needs: a bind that names an address already open
 *  (the same text, or the same address, e.g. localhost:80 for 127.0.0.1:80) keeps its socket, which
 *  never stops accepting during the reload; a new bind is opened. Closes nothing it did not open. */
export async function listenersFor(binds: readonly string[], current: readonly Listener[], opts: BindOptions = NO_OPTIONS): Promise<{ listeners: Listener[]; opened: Listener[] }> {
  const listeners: Listener[] = [];
  const opened: Listener[] = [];
  try {
    for (const bind of binds) {
      const spec = parseBind(bind);
      let l = current.find((c) => c.bind === bind);
      if (!l && typeof spec !== 'string') {
        for (const c of current) {
          if ((c.spec.kind === 'tcp' || c.spec.kind === 'unix') && await sameAddress(c.spec, spec)) { l = c; break; }
        }
      }
      if (!l) {
        try {
          l = (await openListeners([bind], [], true, opts))[0]!;
        } catch (err) {
          const port = typeof spec !== 'string' && spec.kind === 'tcp' ? spec.port : -1;
          if (err instanceof BindError && current.some((c) => c.spec.kind === 'tcp' && c.spec.port === port)) {
            throw new BindError(`${err.message} (a listener already open on port ${port} holds it: moving a port to another host needs a restart)`);
          }
          throw err;
        }
        opened.push(l);
      }
      listeners.push(l);
    }
    return { listeners, opened };
  } catch (err) {
    for (const l of opened) l.close();
    throw err;
  }
}
