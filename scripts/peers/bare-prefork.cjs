// The ceiling of forkd's architecture: one socket bound (never listened on) by a parent, N plain
// `http` servers in child processes listening on it as an inherited fd. Nothing else.
// Usage: PORT=8080 WORKERS=2 node bare-prefork.cjs (node's own options, if any, reach the children too);
// with CERT and KEY (PEM file paths), the children serve https instead, as forkd's TLS is compared with.
'use strict';
const net = require('node:net');
const http = require('node:http');
const { spawn } = require('node:child_process');

if (process.argv[2] === 'child') {
  const app = require('./bench-app.cjs');
  const fs = require('node:fs');
  const server = process.env.CERT
    ? require('node:https').createServer({ cert: fs.readFileSync(process.env.CERT), key: fs.readFileSync(process.env.KEY) }, app)
    : http.createServer(app);
  server.listen({ fd: 3 }, 2048, () => process.send?.('ready'));
} else {
  const handle = net._createServerHandle('127.0.0.1', Number(process.env.PORT), 4);
  const n = Number(process.env.WORKERS || 2);
  const kids = [];
  let ready = 0;
  for (let i = 0; i < n; i++) {
    const c = spawn(process.execPath, [...process.execArgv, __filename, 'child'], { stdio: ['ignore', 'inherit', 'inherit', handle.fd, 'ipc'] });
    c.on('message', () => { if (++ready === n) console.log(`ready on ${process.env.PORT}`); });
    kids.push(c);
  }
  process.on('SIGTERM', () => { for (const c of kids) c.kill('SIGKILL'); process.exit(0); });
}
