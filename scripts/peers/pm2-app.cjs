// The app as PM2 runs it in cluster mode (pm2 start pm2-app.cjs -i N): it listens itself, and
// PM2's node:cluster primary hands connections round-robin.
'use strict';
require('node:http').createServer(require('./bench-app.cjs')).listen(Number(process.env.PORT), '127.0.0.1');
