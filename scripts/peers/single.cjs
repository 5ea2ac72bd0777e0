// One plain Node process serving the app: what runs when nothing supervises it.
'use strict';
require('node:http').createServer(require('./bench-app.cjs')).listen(Number(process.env.PORT), '127.0.0.1', () => console.log(`ready on ${process.env.PORT}`));
process.on('SIGTERM', () => process.exit(0));
