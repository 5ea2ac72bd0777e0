/** Owns reading the JavaScript stack of a worker whose event loop is stuck, just before it is killed.
 *
 *  Nothing inside a blocked worker can run JavaScript, so the stack has to be taken from outside:
 *  SIGUSR1 makes Node open its inspector even while the loop is blocked (V8 is interrupted for it),
 *  and a WebSocket inspector session can pause the stuck code and read its call frames. The worker
 *  chose its inspector port at boot and told the master. The inspector listens on 127.0.0.1 (TCP),
 *  so it is opened only on a worker about to be killed, for as short a time as possible, and the
 *  `timeoutStack` setting turns this off. */

import http from 'node:http';
import WebSocket from 'ws';

interface Target { readonly url: string; readonly webSocketDebuggerUrl: string }
interface CallFrame {
  readonly functionName: string;
  readonly location: { readonly scriptId: string; readonly lineNumber: number; readonly columnNumber: number };
}

function listTargets(port: number, timeoutMs: number): Promise<Target[] | null> {
  return new Promise((done) => {
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

function pauseAndRead(wsUrl: string, deadlineAt: number): Promise<string[]> {
  return new Promise((done, fail) => {
    const ws = new WebSocket(wsUrl, { handshakeTimeout: Math.max(1, deadlineAt - performance.now()) });
    const timer = setTimeout(() => { ws.terminate(); fail(new Error('the inspector did not pause the worker in time')); },
      Math.max(1, deadlineAt - performance.now()));
    ws.on('open', () => {
      ws.send(JSON.stringify({ id: 1, method: 'Debugger.enable' }));
      ws.send(JSON.stringify({ id: 2, method: 'Debugger.pause' }));
    });
    const scripts = new Map<string, string>();
    ws.on('message', (data) => {
      const msg = JSON.parse(String(data)) as {
        method?: string; params?: { callFrames?: CallFrame[]; scriptId?: string; url?: string };
      };
      if (msg.method === 'Debugger.scriptParsed' && msg.params?.scriptId) scripts.set(msg.params.scriptId, msg.params.url ?? '');
      if (msg.method !== 'Debugger.paused') return;
      clearTimeout(timer);
      ws.terminate();
      done((msg.params?.callFrames ?? []).map((f) => formatFrame(f, scripts)));
    });
    ws.on('error', (err) => { clearTimeout(timer); fail(err); });
  });
}

/** The worker's stack, innermost frame first; throws with the reason if it cannot be had in time.
 *  `expectScript` guards against a port some other process took since the worker chose it. */
export async function captureStack(pid: number, port: number, expectScript: string, timeoutMs: number): Promise<string[]> {
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
  return pauseAndRead(target.webSocketDebuggerUrl, deadlineAt);
}
