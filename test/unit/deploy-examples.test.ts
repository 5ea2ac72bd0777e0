/** The container and Kubernetes examples cannot be applied on these machines: this checks what
 *  must hold between them and forkd's config, so that they cannot rot. The config file is valid
 *  for forkd; the Deployment's probes, ports and annotations name forkd's listeners; its grace
 *  period outlasts shutdownDelay + gracefulTimeout; the Containerfile runs tini, as a non-root
 *  user, with production dependencies only, and health-checks /livez on the status port. */

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

test.run();
