/** Owns the master's control socket (controlSocket): a Unix stream socket, mode 0600, on which
 *  `forkd ctl` asks for one command per connection, as a line of JSON ({"cmd": "...", "args": []})
 *  and gets one line of JSON back ({"ok": true, "text": ..., "data": ...} or {"ok": false,
 *  "error": ...}) once the command is done. What each command does is the arbiter's
 *  (ControlActions); this file checks the path, owns the socket file and speaks the protocol. */

import { chmodSync, lstatSync, statSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import { probeSocket } from '../net/listeners';

export interface Answer { readonly text: string; readonly data?: unknown }

export interface ControlActions {
  status(): Answer;
  reload(): Promise<Answer>;
  /** `to`: an absolute count, or a change ("+1", "-2"). */
  scale(to: string): Promise<Answer>;
  kill(nr: number): Promise<Answer>;
  reopen(): Promise<Answer>;
  stop(quick: boolean): Promise<Answer>;
  upgrade(): Promise<Answer>;
  stacks(nr: number | null): Promise<Answer>;
}

export const CONTROL_COMMANDS = ['status', 'reload', 'scale', 'kill', 'reopen', 'stop', 'upgrade', 'stacks'] as const;

/** A request's longest line; anything longer is refused. */
const MAX_REQUEST_BYTES = 4096;
/** How long a client may take to send its request line. */
const REQUEST_WITHIN_MS = 10_000;

/** Why `path` cannot be the control socket, or null when it can: not a symlink; if something is
 *  there, a socket of this user's; its directory writable by no one else (group or others) unless
 *  sticky (/tmp): whoever can rename in it could put a socket of theirs in the way of forkd ctl. */
export function controlPathProblem(path: string): string | null {
  let st;
  try { st = lstatSync(path); } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return `cannot inspect it: ${(err as NodeJS.ErrnoException).code}`;
  }
  if (st) {
    if (st.isSymbolicLink()) return 'it is a symbolic link';
    if (!st.isSocket()) return 'it exists and is not a socket';
    if (st.uid !== process.getuid!()) return `it is a socket of another user (uid ${st.uid})`;
  }
  let dir;
  try { dir = statSync(dirname(path)); } catch (err) { return `its directory ${dirname(path)} cannot be used: ${(err as NodeJS.ErrnoException).code}`; }
  if (!dir.isDirectory()) return `${dirname(path)} is not a directory`;
  if ((dir.mode & 0o022) !== 0 && (dir.mode & 0o1000) === 0) {
    return `its directory ${dirname(path)} is writable by ${(dir.mode & 0o002) !== 0 ? 'others' : 'its group'} and not sticky`;
  }
  return null;
}

/** True unless the socket file `path` is absent or proven stale (a refused connection): a master
 *  that is busy, or slow to accept, still has it. */
export async function socketAnswers(path: string): Promise<boolean> {
  if (!lstatSafe(path)) return false;
  return (await probeSocket(path)) !== 'refused';
}

export class ControlServer {
  readonly #path: string;
  readonly #actions: ControlActions;
  #server: net.Server | null = null;

  constructor(path: string, actions: ControlActions) {
    this.#path = path;
    this.#actions = actions;
  }

  get path(): string { return this.#path; }

  /** Creates the socket, mode 0600 from the start (the umask is narrowed around the bind). A
   *  stale socket file of ours is replaced; one a live master answers on is not. */
  async listen(): Promise<void> {
    const problem = controlPathProblem(this.#path);
    if (problem) throw new Error(`controlSocket ${this.#path}: ${problem}`);
    if (lstatSafe(this.#path)) {
      if (await socketAnswers(this.#path)) throw new Error(`controlSocket ${this.#path}: another process answers on it`);
      unlinkSync(this.#path);
    }
    const server = net.createServer((c) => this.#serve(c));
    await new Promise<void>((ok, fail) => {
      server.once('error', (err: NodeJS.ErrnoException) => fail(new Error(`controlSocket ${this.#path}: ${err.code ?? err.message}`)));
      const before = process.umask(0o177);
      try { server.listen(this.#path, () => ok()); } finally { process.umask(before); }
    });
    chmodSync(this.#path, 0o600);
    this.#server = server;
  }

  /** Stops taking commands and removes the socket file (when it is still ours). */
  close(): void {
    if (!this.#server) return;
    this.#server.close();
    this.#server = null;
    try { if (lstatSafe(this.#path)?.isSocket()) unlinkSync(this.#path); } catch { /* gone already */ }
  }

  #serve(c: net.Socket): void {
    let buf = '';
    c.setEncoding('utf8');
    // A client that says nothing is not waited for; one that has asked waits for its answer.
    c.setTimeout(REQUEST_WITHIN_MS, () => { if (buf.indexOf('\n') < 0) c.destroy(); });
    const reply = (body: object) => { if (!c.destroyed) c.end(`${JSON.stringify(body)}\n`); };
    c.on('error', () => undefined);
    c.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > MAX_REQUEST_BYTES) { c.removeAllListeners('data'); reply({ ok: false, error: 'request too long' }); return; }
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      c.removeAllListeners('data');
      c.setTimeout(0);
      let req: { cmd?: unknown; args?: unknown };
      try { req = JSON.parse(buf.slice(0, nl)) as typeof req; } catch { reply({ ok: false, error: 'not a JSON request' }); return; }
      this.#run(req).then(
        (answer) => reply({ ok: true, ...answer }),
        (err: Error) => reply({ ok: false, error: err.message }),
      );
    });
  }

  async #run(req: { cmd?: unknown; args?: unknown }): Promise<Answer> {
    const args = Array.isArray(req.args) ? req.args.map(String) : [];
    const a = this.#actions;
    const nr = (s: string | undefined) => {
      if (s === undefined || !/^[1-9]\d*$/.test(s)) throw new Error(`a worker number (1, 2, ...) is needed, not ${s ?? 'nothing'}`);
      return Number(s);
    };
    switch (req.cmd) {
      case 'status': return a.status();
      case 'reload': return a.reload();
      case 'scale': {
        const to = args[0];
        if (to === undefined || !/^[+-]?\d+$/.test(to)) throw new Error(`scale takes N, +N or -N, not ${to ?? 'nothing'}`);
        return a.scale(to);
      }
      case 'kill': return a.kill(nr(args[0]));
      case 'reopen': return a.reopen();
      case 'stop': return a.stop(args.includes('--quick'));
      case 'upgrade': return a.upgrade();
      case 'stacks': return a.stacks(args[0] === undefined ? null : nr(args[0]));
      default: throw new Error(`unknown command ${JSON.stringify(req.cmd)}: one of ${CONTROL_COMMANDS.join(', ')}`);
    }
  }
}

function lstatSafe(path: string) {
  try { return lstatSync(path); } catch { return null; }
}
