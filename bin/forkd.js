#!/usr/bin/env node
'use strict';
// The forkd CLI, and so the master. The master runs no hot code (signals, a heartbeat a second from
// each worker, the config read at each reload), so V8's optimizing compilers are turned off in it,
// here, before any module loads: start-up alone woke them, and paging them in cost the master
// 2.5–6 MB of resident memory on Node 20 to 26 (measured; set any later, Node 24 had already
// used them). Workers are processes of their own and keep every tier; `require('forkd')` in an app
// or config file never runs this. test/integration/node-lines.test.ts fails on a line whose V8 no
// longer knows either flag (it would say so on stderr).
const { setFlagsFromString } = require('node:v8');
for (const flag of ['--no-turbofan', '--no-maglev']) setFlagsFromString(flag);
// `forkd ctl` speaks to a running master over its control socket: a client, not a master.
if (process.argv[2] === 'ctl') {
  require('../dist/src/cli/ctl.js').run(process.argv.slice(3));
  return;
}
// Signal listeners first, before the slow modules load (cli/early.ts); then the CLI.
const early = require('../dist/src/cli/early.js').catchSignalsEarly();
require('../dist/src/cli/main.js').run(early);
