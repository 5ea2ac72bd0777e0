// The benchmark's app, the same for every server: a request listener. GET / says hello; GET /cpu
// does ~2 ms of synchronous work first; GET /io waits 10 ms first (a database call, say). Every
// response names the process that served it (x-worker), so the load generator can count requests per worker.
'use strict';
const CPU_MS = 2;
const IO_MS = 10;
const pid = String(process.pid);

function burn(ms) {
  const until = process.hrtime.bigint() + BigInt(ms * 1e6);
  let x = 0;
  while (process.hrtime.bigint() < until) x++;
  return x;
}

function hello(res) {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '6', 'x-worker': pid });
  res.end('hello\n');
}

module.exports = function benchApp(req, res) {
  if (req.url === '/io') { setTimeout(hello, IO_MS, res); return; }
  if (req.url === '/cpu') burn(CPU_MS);
  hello(res);
};
