/** A real NOTIFY_SOCKET for tests (python3, since Node cannot receive Unix datagrams): every message
 *  with the sender's pid as the kernel reported it (SCM_CREDENTIALS). Any Unix datagram listener
 *  will do too (statsd's unix:PATH): `text` is the datagram as sent. */

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { FIXTURES, waitFor } from './forkd';

export interface NotifyMessage { readonly pid: number; readonly fields: Readonly<Record<string, string>>; readonly text: string }

export interface NotifyListener {
  readonly messages: NotifyMessage[];
  /** Waits for a message having every one of `fields` (a value of '*' matches any). */
  waitFor(fields: Record<string, string>, timeoutMs?: number): Promise<NotifyMessage>;
  close(): void;
}

export async function listenForNotify(name: string): Promise<NotifyListener> {
  const child = spawn('python3', [join(FIXTURES, 'notify_listener.py'), name], { stdio: ['ignore', 'pipe', 'inherit'] });
  const messages: NotifyMessage[] = [];
  let listening = false;
  let buf = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    buf += chunk;
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const line = JSON.parse(buf.slice(0, nl)) as { listening?: string; pid?: number; message?: string };
      buf = buf.slice(nl + 1);
      if (line.listening) { listening = true; continue; }
      const fields: Record<string, string> = {};
      for (const kv of line.message!.split('\n')) { const eq = kv.indexOf('='); if (eq > 0) fields[kv.slice(0, eq)] = kv.slice(eq + 1); }
      messages.push({ pid: line.pid!, fields, text: line.message! });
    }
  });
  const close = () => { if (child.exitCode === null) child.kill('SIGKILL'); };
  process.on('exit', close);
  await waitFor(() => listening, `the notify listener on ${name}`);
  const matches = (m: NotifyMessage, want: Record<string, string>) =>
    Object.entries(want).every(([k, v]) => (v === '*' ? k in m.fields : m.fields[k] === v));
  return {
    messages,
    waitFor: (want, timeoutMs = 10_000) => waitFor(() => messages.find((m) => matches(m, want)), `a notify message ${JSON.stringify(want)} (have ${JSON.stringify(messages)})`, timeoutMs),
    close,
  };
}
