// wrk, the load generator the scripts drive: a check that it is installed, and one run of it read
// into numbers. A run ends at its -d or earlier at stop(): wrk prints its summary on SIGINT too.
import { execFileSync, spawn } from 'node:child_process';

/** Exits with 2, saying how to install it, when wrk is not on the PATH. */
export function needWrk() {
  try { execFileSync('wrk', ['--version'], { stdio: 'ignore' }); } catch (err) {
    if (err.code === 'ENOENT') { console.error('wrk is not installed (apt-get install wrk)'); process.exit(2); }
  }
}

/** Reads wrk's summary: requests, req/s, socket errors (their sum and wrk's own line) and non-2xx. */
export function readWrk(out) {
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  return {
    requests: Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN),
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN),
    errors: socket ? socket.slice(1).reduce((a, b) => a + Number(b), 0) : 0,
    errorDetail: socket ? socket[0] : 'Socket errors: none',
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
  };
}

/** Starts wrk with `args` (the URL last). `done` resolves with readWrk's numbers once it exits;
 *  `stop()` ends it early (SIGINT, after which wrk still prints its summary); `pid` is for cleanup. */
export function startWrk(args) {
  const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (c) => { out += c; });
  child.stderr.setEncoding('utf8').on('data', (c) => { out += c; });
  const done = new Promise((ok, fail) => {
    child.once('error', fail);
    child.once('close', (code) => {
      if (code !== 0) fail(new Error(`wrk exited with ${code}: ${out}`));
      else ok({ ...readWrk(out), output: out });
    });
  });
  return { pid: child.pid, done, stop: () => { if (child.exitCode === null) child.kill('SIGINT'); } };
}
