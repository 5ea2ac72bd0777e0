// node:cluster with the same app: round-robin by default, or the OS's own spread with
// NODE_CLUSTER_SCHED_POLICY=none. Usage: PORT=8080 WORKERS=2 node cluster.cjs
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');

if (cluster.isPrimary) {
  const n = Number(process.env.WORKERS || 2);
  let ready = 0;
  for (let i = 0; i < n; i++) cluster.fork();
  cluster.on('listening', () => { if (++ready === n) console.log(`ready on ${process.env.PORT}`); });
  process.on('SIGTERM', () => { for (const id in cluster.workers) cluster.workers[id].process.kill('SIGKILL'); process.exit(0); });
} else {
  http.createServer(require('./bench-app.cjs')).listen(Number(process.env.PORT), '127.0.0.1');
}
