/** The container, Kubernetes and cloud load balancer examples cannot be applied on these machines:
 *  this checks what must hold between them and forkd's config, so that they cannot rot. The config
 *  file is valid for forkd; the Deployment's probes, ports and annotations name forkd's listeners;
 *  its grace period outlasts shutdownDelay + gracefulTimeout; the Containerfile runs tini, as a
 *  non-root user, with production dependencies only, and health-checks /livez on the status port.
 *  The balancers' examples (examples/balancers) agree with the same config; HAProxy's and nginx's
 *  also run, in test/integration/fleet.test.ts. The README's snippets are taken from these files. */

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { resolveLayers } from '../../src/config/layers';
import { durationsMs } from '../../src/config/durations';
import { ROOT } from '../helpers/forkd';

const yaml = require('js-yaml') as { loadAll(text: string): unknown[] };
const dir = join(ROOT, 'examples');
const configPath = join(dir, 'container', 'forkd.config.json');
const resolved = resolveLayers({ cli: {}, env: {}, file: { path: configPath, values: JSON.parse(readFileSync(configPath, 'utf8')) as Record<string, unknown> } });
const config = resolved.config;
const ms = durationsMs(config);
const portOf = (bind: string) => Number(/:(\d+)$/.exec(bind)![1]);
const appPort = portOf(config.bind[0]!);
const statusPort = portOf(config.statusBind[0]!);

type Doc = { kind: string; metadata: { name: string; labels?: Record<string, string> }; spec: any };
const docs = yaml.loadAll(readFileSync(join(dir, 'kubernetes', 'forkd.yaml'), 'utf8')) as Doc[];
const byKind = (kind: string) => docs.find((d) => d.kind === kind)!;

test('the config: forkd reads it, and it stops behind a load balancer (shutdownDelay) with workers auto', () => {
  assert.is(config.workers, 'auto');
  assert.ok(ms.shutdownDelay > 0, 'shutdownDelay is set');
  assert.is(config.statusBind.length, 1);
});

test('the Deployment: probes on the status port (/readyz, /livez), ports named as forkd binds them, a grace period above shutdownDelay + gracefulTimeout, a CPU limit, scrape annotations', () => {
  const deployment = byKind('Deployment');
  const pod = deployment.spec.template;
  const [container] = pod.spec.containers;
  const ports = new Map<string, number>(container.ports.map((p: { name: string; containerPort: number }) => [p.name, p.containerPort]));
  assert.is(ports.get('http'), appPort, 'the http port is forkd\'s bind');
  assert.is(ports.get('status'), statusPort, 'the status port is forkd\'s statusBind');
  assert.equal(container.readinessProbe.httpGet, { path: '/readyz', port: 'status' });
  assert.equal(container.livenessProbe.httpGet, { path: '/livez', port: 'status' });
  const graceS = pod.spec.terminationGracePeriodSeconds as number;
  assert.ok(graceS * 1000 > ms.shutdownDelay + ms.gracefulTimeout,
    `terminationGracePeriodSeconds ${graceS} outlasts shutdownDelay ${ms.shutdownDelay / 1000} + gracefulTimeout ${ms.gracefulTimeout / 1000}`);
  // Taken out of the endpoints before the delay is over: the probe's period times its threshold.
  const readyS = container.readinessProbe.periodSeconds * container.readinessProbe.failureThreshold;
  assert.ok(readyS * 1000 < ms.shutdownDelay, `readiness notices the 503 in ${readyS} s, within shutdownDelay`);
  assert.ok(container.resources.limits.cpu, 'a CPU limit, which workers auto reads');
  assert.is(pod.metadata.annotations['prometheus.io/scrape'], 'true');
  assert.is(Number(pod.metadata.annotations['prometheus.io/port']), statusPort);
  assert.is(pod.metadata.annotations['prometheus.io/path'], '/metrics');
  assert.equal(deployment.spec.selector.matchLabels, pod.metadata.labels);
});

test('the Service and the PodDisruptionBudget select the Deployment\'s pods; the Service targets the http port', () => {
  const labels = byKind('Deployment').spec.template.metadata.labels as Record<string, string>;
  const service = byKind('Service');
  assert.equal(service.spec.selector, labels);
  assert.is(service.spec.ports[0].targetPort, 'http');
  const pdb = byKind('PodDisruptionBudget');
  assert.equal(pdb.spec.selector.matchLabels, labels);
});

test('the Containerfile: tini as the entrypoint, a non-root user, npm ci --omit=dev, the ports exposed, a HEALTHCHECK on /livez, forkd run with the config', () => {
  const file = readFileSync(join(dir, 'container', 'Containerfile'), 'utf8');
  const lines = file.split('\n').filter((l) => !l.startsWith('#'));
  const directive = (name: string) => lines.filter((l) => l.startsWith(`${name} `));
  assert.equal(directive('ENTRYPOINT'), ['ENTRYPOINT ["tini", "--"]']);
  const user = directive('USER')[0]?.split(' ')[1];
  assert.ok(user && user !== 'root' && user !== '0', `USER ${user}`);
  assert.ok(directive('RUN').some((l) => l.includes('npm ci --omit=dev')));
  assert.equal(directive('EXPOSE')[0]!.split(' ').slice(1).map(Number).sort(), [appPort, statusPort].sort());
  assert.match(file, new RegExp(`HEALTHCHECK [^]*127\\.0\\.0\\.1:${statusPort}/livez`));
  assert.match(directive('CMD')[0]!, /"node_modules\/forkd\/bin\/forkd\.js", "-c", "forkd\.config\.json"/);
});

const balancer = (name: string) => readFileSync(join(dir, 'balancers', name), 'utf8');

test('HAProxy (examples/balancers/haproxy.cfg): checks /readyz on the status port, takes a host out within shutdownDelay, sends to the app port', () => {
  const cfg = balancer('haproxy.cfg');
  assert.match(cfg, /^\s*option httpchk$/m);
  assert.match(cfg, /^\s*http-check send meth GET uri \/readyz$/m);
  assert.match(cfg, /^\s*http-check expect status 200$/m);
  const check = /^\s*default-server check port (\d+) inter (\d+)s fall (\d+) rise \d+$/m.exec(cfg)!;
  assert.ok(check, 'default-server checks a port');
  assert.is(Number(check[1]), statusPort);
  const outS = Number(check[2]) * Number(check[3]);
  assert.ok(outS * 1000 < ms.shutdownDelay, `out of the pool in ${outS} s, within shutdownDelay`);
  const servers = [...cfg.matchAll(/^\s*server \S+ [\d.]+:(\d+)$/gm)].map((m) => Number(m[1]));
  assert.is(servers.length, 3);
  for (const port of servers) assert.is(port, appPort);
});

test('nginx (examples/balancers/nginx.conf): sends to the app port, keeps upstream connections alive, passes a failed attempt to the next host', () => {
  const conf = balancer('nginx.conf');
  const servers = [...conf.matchAll(/^\s*server [\d.]+:(\d+)\b/gm)].map((m) => Number(m[1]));
  assert.is(servers.length, 3);
  for (const port of servers) assert.is(port, appPort);
  assert.match(conf, /^\s*proxy_next_upstream error timeout\b/m);
  // Upstream keep-alive needs HTTP/1.1 and no Connection header passed on.
  assert.match(conf, /^\s*keepalive \d+;$/m);
  assert.match(conf, /^\s*proxy_http_version 1\.1;$/m);
  assert.match(conf, /^\s*proxy_set_header Connection "";$/m);
});

test('an AWS load balancer (examples/balancers/aws-alb.yaml): health checks on /readyz at the status port notice a TERM within shutdownDelay, deregistration outlasts shutdownDelay + gracefulTimeout, its idle timeout is below keepAlive', () => {
  const { Resources: r } = yaml.loadAll(balancer('aws-alb.yaml'))[0] as { Resources: Record<string, { Type: string; Properties: any }> };
  const targets = Object.values(r).find((x) => x.Type === 'AWS::ElasticLoadBalancingV2::TargetGroup')!.Properties;
  const lb = Object.values(r).find((x) => x.Type === 'AWS::ElasticLoadBalancingV2::LoadBalancer')!.Properties;
  const attr = (list: { Key: string; Value: string }[], key: string) => Number(list.find((a) => a.Key === key)!.Value);
  assert.is(targets.Port, appPort);
  assert.is(Number(targets.HealthCheckPort), statusPort);
  assert.is(targets.HealthCheckPath, '/readyz');
  const outS = targets.HealthCheckIntervalSeconds * targets.UnhealthyThresholdCount;
  assert.ok(outS * 1000 < ms.shutdownDelay, `out of the pool in ${outS} s, within shutdownDelay`);
  const deregisterS = attr(targets.TargetGroupAttributes, 'deregistration_delay.timeout_seconds');
  assert.ok(deregisterS * 1000 >= ms.shutdownDelay + ms.gracefulTimeout, `deregistration_delay ${deregisterS} s`);
  const idleS = attr(lb.LoadBalancerAttributes, 'idle_timeout.timeout_seconds');
  assert.ok(idleS * 1000 < ms.keepAlive, `idle timeout ${idleS} s below keepAlive ${ms.keepAlive / 1000} s`);
});

test('the README\'s snippets of the examples are taken from them: each line, in order', () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const blocks = [...readme.matchAll(/```\w*\n# (examples\/\S+)\n([^]*?)```/g)];
  assert.ok(blocks.length >= 3, `${blocks.length} snippets name their example`);
  for (const [, file, body] of blocks) {
    const lines = readFileSync(join(ROOT, file!), 'utf8').split('\n');
    let at = 0;
    for (const line of body!.split('\n').filter((l) => l.trim() !== '' && l.trim() !== '...')) {
      const found = lines.indexOf(line, at);
      assert.ok(found >= 0, `${file}: README line ${JSON.stringify(line)} is in the file, after the one before`);
      at = found + 1;
    }
  }
});

test.run();
