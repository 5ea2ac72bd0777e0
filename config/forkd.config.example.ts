// An example forkd config for a production service. Copy it beside your app as forkd.config.ts;
// `forkd --help` lists every setting, `forkd --print-config` shows what is in effect and why.
import { defineConfig } from 'forkd';

export default defineConfig({
  app: 'dist/server.js:createApp()',
  bind: ['127.0.0.1:8000', 'unix:/run/myapp/http.sock'],
  workers: 'auto',
  timeout: '30s',
  gracefulTimeout: '30s',
  maxRequests: 10_000,
  maxRequestsJitter: 500,
  accessLog: '/var/log/myapp/access.log',
  errorLog: '/var/log/myapp/error.log',
  pid: '/run/myapp/forkd.pid',
});
