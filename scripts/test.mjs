#!/usr/bin/env node
// Runs every compiled test file (dist/test/**/*.test.js) in its own process, a few at a time, and
// prints the closing line CI reads: "N passed, N failed". uvu's own summary is parsed per file; a
// file that crashes or overruns its deadline counts as one failure.
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { availableParallelism } from 'node:os';

const root = fileURLToPath(new URL('..', import.meta.url));
const FILE_DEADLINE_MS = Number(process.env.FORKD_TEST_FILE_TIMEOUT_MS ?? 240_000);
const JOBS = Number(process.env.FORKD_TEST_JOBS ?? Math.max(1, Math.min(2, availableParallelism())));
const filter = process.argv[2] ? new RegExp(process.argv[2]) : null;

function find(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? find(p) : p.endsWith('.test.js') ? [p] : [];
  });
}

// Unit tests first: they are quick and say the most when something basic broke.
const files = find(join(root, 'dist', 'test'))
  .filter((f) => !filter || filter.test(f))
  .sort((a, b) => (a.includes('/unit/') === b.includes('/unit/') ? a.localeCompare(b) : a.includes('/unit/') ? -1 : 1));

function runFile(file) {
  return new Promise((done) => {
    const started = Date.now();
    // Its own process group: on a missed deadline the file and every forkd it started go together.
    const child = spawn(process.execPath, [file], {
      cwd: root, env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true,
    });
    let out = '';
    child.stdout.on('data', (c) => { out += c; });
    child.stderr.on('data', (c) => { out += c; });
    const timer = setTimeout(() => {
      out += `\n[runner] ${FILE_DEADLINE_MS} ms deadline passed: killed\n`;
      try { process.kill(-child.pid, 'SIGKILL'); } catch { child.kill('SIGKILL'); }
    }, FILE_DEADLINE_MS);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const total = Number(/Total:\s+(\d+)/.exec(out)?.[1] ?? NaN);
      const passed = Number(/Passed:\s+(\d+)/.exec(out)?.[1] ?? NaN);
      let result;
      if (Number.isNaN(total) || Number.isNaN(passed)) result = { passed: 0, failed: 1 };
      else result = { passed, failed: total - passed || (code === 0 ? 0 : 1) };
      done({ file, out, code, signal, ms: Date.now() - started, ...result });
    });
  });
}

const results = [];
let next = 0;
async function worker() {
  while (next < files.length) {
    const file = files[next++];
    const r = await runFile(file);
    results.push(r);
    const name = relative(root, r.file);
    process.stdout.write(`\n=== ${name}: ${r.passed} passed, ${r.failed} failed (${(r.ms / 1000).toFixed(1)} s)\n`);
    if (r.failed > 0 || process.env.FORKD_TEST_VERBOSE) process.stdout.write(r.out);
  }
}
await Promise.all(Array.from({ length: JOBS }, worker));
const passed = results.reduce((n, r) => n + r.passed, 0);
const failed = results.reduce((n, r) => n + r.failed, 0);
if (files.length === 0) { console.log('no test files found (did the build run?)'); process.exitCode = 1; }
console.log(`\n${passed} passed, ${failed} failed`);
process.exitCode = failed > 0 || files.length === 0 ? 1 : 0;
