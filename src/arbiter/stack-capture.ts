/** Owns reading the JavaScript stack of a worker whose event loop is stuck, just before it is killed.
 *
 *  Nothing inside a blocked worker can run JavaScript, so the stack has to be taken from outside:
 *  SIGUSR1 makes Node open its inspector even while the loop is blocked (V8 is interrupted for it),
 *  and a WebSocket inspector session can pause the stuck code and read its call frames. The worker
 *  chose its inspector port at boot and told the master. The inspector listens on 127.0.0.1 (TCP),
 *  so it is opened only on a worker about to be killed, for as short a time as possible, and the
 *  `timeoutStack` setting turns this off. A hung worker_thread is reached through the process's
 *  session (the NodeWorker domain): its inspector, too, is served by interrupting its isolate. */

import type HttpType from 'node:http';
import type WebSocketType from 'ws';

/** One request a worker had in flight, as it lists them (worker/in-flight.ts). */
export interface InFlight {
  readonly method: string;
  /** The request target, control characters escaped, at most 200 characters. */
  readonly path: string;
  /** How long it had run, in ms (null: not known, no response watcher saw it start). */
  readonly ageMs: number | null;
  readonly client: string | null;
}

/** "GET /path (12.3 s, 10.0.0.7)": a request as a log line names it. */
export function inFlightText(r: InFlight): string {
  const age = r.ageMs === null ? 'age unknown' : `${(r.ageMs / 1000).toFixed(1)} s`;
  return `${r.method} ${r.path} (${age}${r.client ? `, ${r.client}` : ''})`;
}

interface Target { readonly url: string; readonly webSocketDebuggerUrl: string }
interface CallFrame {
  readonly functionName: string;
  readonly location: { readonly scriptId: string; readonly lineNumber: number; readonly columnNumber: number };
}

function listTargets(port: number, timeoutMs: number): Promise<Target[] | null> {
  return new Promise((done) => {
    // node:http and ws are loaded only when a worker hangs: the master otherwise needs neither.
    const http = require('node:http') as typeof HttpType;
    const req = http.get({ host: '127.0.0.1', port, path: '/json/list', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => { try { done(JSON.parse(body) as Target[]); } catch { done(null); } });
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => done(null));
  });
}

/** Call frames name their script by id; the URL comes from the scriptParsed events that
 *  Debugger.enable replays for every script already loaded. */
function formatFrame(f: CallFrame, scripts: ReadonlyMap<string, string>): string {
  const url = scripts.get(f.location.scriptId) ?? '';
  const file = url.startsWith('file://') ? decodeURIComponent(url.slice(7)) : url || '<anonymous>';
  return `${f.functionName || '(anonymous)'} (${file}:${f.location.lineNumber + 1}:${f.location.columnNumber + 1})`;
}

interface Message {
  readonly id?: number;
  readonly method?: string;
  readonly params?: {
    callFrames?: CallFrame[]; scriptId?: string; url?: string;
    sessionId?: string; message?: string; workerInfo?: { title?: string };
  };
  readonly result?: { result?: { value?: unknown } };
}

/** What a capture read: the stack, innermost frame first, and the requests the paused unit had in
 *  flight (null: its list could not be read). */
export interface Capture { readonly frames: string[]; readonly inFlight: InFlight[] | null }

/** Read in the paused unit: the list its serving unit registered (worker/in-flight.ts). */
const IN_FLIGHT_EXPRESSION = `(() => { const f = globalThis[Symbol.for('forkd.inFlight')]; return typeof f === 'function' ? f() : null; })()`;

function readInFlight(value: unknown): InFlight[] | null {
  if (typeof value !== 'string') return null;
  try {
    const list = JSON.parse(value) as unknown;
    return Array.isArray(list) ? list.filter((r): r is InFlight => typeof r === 'object' && r !== null && typeof (r as InFlight).method === 'string' && typeof (r as InFlight).path === 'string') : null;
  } catch { return null; }
}

/** Pauses the main thread, or the worker_thread `threadId`, and reads its frames, then (still
 *  paused) the requests it has in flight. */
function pauseAndRead(wsUrl: string, deadlineAt: number, threadId: number | null): Promise<Capture> {
  return new Promise((done, fail) => {
    const WebSocket = require('ws') as typeof WebSocketType;
    const ws = new WebSocket(wsUrl, { handshakeTimeout: Math.max(1, deadlineAt - performance.now()) });
    const what = threadId === null ? 'the worker' : `thread ${threadId}`;
    let frames: string[] | null = null;
    const finish = (inFlight: InFlight[] | null) => { clearTimeout(timer); ws.terminate(); done({ frames: frames!, inFlight }); };
    // Past the deadline with the frames read, the list is given up; without them, the capture is.
    const timer = setTimeout(() => {
      if (frames) { finish(null); return; }
      ws.terminate();
      fail(new Error(`the inspector did not pause ${what} in time`));
    }, Math.max(1, deadlineAt - performance.now()));
    let nextId = 1;
    let session: string | null = null;
    const sendTo = (sessionId: string | null, method: string, params: object = {}): number => {
      const id = nextId++;
      const msg = { id, method, params };
      if (sessionId === null) ws.send(JSON.stringify(msg));
      else ws.send(JSON.stringify({ id: nextId++, method: 'NodeWorker.sendMessageToWorker', params: { sessionId, message: JSON.stringify(msg) } }));
      return id;
    };
    const pause = (sessionId: string | null) => { session = sessionId; sendTo(sessionId, 'Debugger.enable'); sendTo(sessionId, 'Debugger.pause'); };
    let evaluating = -1;
    ws.on('open', () => {
      if (threadId === null) pause(null);
      else sendTo(null, 'NodeWorker.enable', { waitForDebuggerOnStart: false });
    });
    const scripts = new Map<string, string>();
    const onDebugger = (msg: Message) => {
      if (msg.method === 'Debugger.scriptParsed' && msg.params?.scriptId) scripts.set(msg.params.scriptId, msg.params.url ?? '');
      if (msg.id !== undefined && msg.id === evaluating) { finish(readInFlight(msg.result?.result?.value)); return; }
      if (msg.method !== 'Debugger.paused' || frames) return;
      frames = (msg.params?.callFrames ?? []).map((f) => formatFrame(f, scripts));
      evaluating = sendTo(session, 'Runtime.evaluate', { expression: IN_FLIGHT_EXPRESSION, returnByValue: true });
    };
    ws.on('message', (data) => {
      const msg = JSON.parse(String(data)) as Message;
      if (threadId === null) { onDebugger(msg); return; }
      // Every thread attaches; only the hung one is paused, and only its messages are read. The
      // inspector numbers threads its own way; their title, `[worker N]`, carries the threadId.
      if (msg.method === 'NodeWorker.attachedToWorker' && msg.params?.workerInfo?.title?.startsWith(`[worker ${threadId}]`)) {
        pause(msg.params.sessionId!);
      }
      if (msg.method === 'NodeWorker.receivedMessageFromWorker' && msg.params?.message) onDebugger(JSON.parse(msg.params.message) as Message);
    });
    ws.on('error', (err) => { clearTimeout(timer); fail(err); });
  });
}

/** The stack of the worker (or of its thread `threadId`), innermost frame first, and the requests
 *  it has in flight; throws with the reason if the stack cannot be had in time. `expectScript` guards against a port some other process took
 *  since the worker chose it. */
export async function captureStack(pid: number, port: number, expectScript: string, timeoutMs: number, threadId: number | null = null): Promise<Capture> {
  const deadlineAt = performance.now() + timeoutMs;
  process.kill(pid, 'SIGUSR1');
  let targets: Target[] | null = null;
  while (!targets && performance.now() < deadlineAt) {
    targets = await listTargets(port, Math.max(1, deadlineAt - performance.now()));
    if (!targets) await new Promise((r) => setTimeout(r, 25));
  }
  if (!targets) throw new Error(`the inspector did not open on 127.0.0.1:${port}`);
  const target = targets.find((t) => t.url.endsWith(expectScript));
  if (!target) throw new Error(`127.0.0.1:${port} is not this worker's inspector`);
  return pauseAndRead(target.webSocketDebuggerUrl, deadlineAt, threadId);
}
