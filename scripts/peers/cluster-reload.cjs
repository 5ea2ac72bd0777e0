// A node:cluster server with the reload most Node users write by hand, for comparison with forkd:
// on HUP, fork a new set of workers and disconnect each old worker once a new one is listening
// (disconnect closes its server; Node's server.close() also drops its idle keep-alive sockets).
// Usage: PORT=8080 WORKERS=2 node cluster-reload.cjs
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');

const workers = Number(process.env.WORKERS || 2);
if (cluster.isPrimary) {
  let current = [];
  const forkSet = () => Array.from({ length: workers }, () => cluster.fork());
  current = forkSet();
  let listening = 0;
  cluster.on('listening', () => { if (++listening === workers) console.log(`ready on ${process.env.PORT}`); });
  process.on('SIGHUP', () => {
    const old = current;
    current = forkSet();
    let left = old.length;
    for (const w of current) {
      w.once('listening', () => {
        const o = old.shift();
        if (o) o.disconnect();
        if (--left === 0) console.log('reload done');
      });
    }
  });
  process.on('SIGTERM', () => { for (const id in cluster.workers) cluster.workers[id].process.kill(); process.exit(0); });
} else {
  http.createServer((req, res) => res.end('hello\n')).listen(Number(process.env.PORT), '127.0.0.1');
}
