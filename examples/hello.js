// The smallest app forkd serves: a Node request listener.
// Run it with `npm start`, or `node bin/forkd.js examples/hello.js`, then `curl http://127.0.0.1:8000/`.
module.exports = (req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.end(`Hello from forkd worker ${process.pid}\n`);
};
