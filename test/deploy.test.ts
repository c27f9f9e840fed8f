// deploy/kubernetes/keygate.yaml, checked against the gateway it describes: the ConfigMap's config
// loads and serves (keys and limits in a real Redis), the probes, ports, mount path and grace
// period agree with it and with the Dockerfile, and a ConfigMap update — kubelet swaps a "..data"
// symlink to a new directory — is picked up by reload.watch without a restart.

import { mkdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { request } from 'undici';
import { parseAllDocuments } from 'yaml';
import { startEchoUpstream } from '../src/demo/echo-upstream.js';
import { spawnKeygate } from './binary.js';
import { skipWithoutRedis, startRedis } from './redis.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
type Doc = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

t.test('the Kubernetes manifest: its config serves, its probes and ports match, a ConfigMap update reloads', { skip: skipWithoutRedis }, async (t) => {
  const docs = parseAllDocuments(readFileSync(join(ROOT, 'deploy/kubernetes/keygate.yaml'), 'utf8')).map((d) => d.toJS() as Doc);
  const configMap = docs.find((d) => d.kind === 'ConfigMap')!;
  const deployment = docs.find((d) => d.kind === 'Deployment')!;
  const service = docs.find((d) => d.kind === 'Service')!;
  const pod = deployment.spec.template.spec;
  const container = pod.containers[0];
  const configText: string = configMap.data['gateway.yaml'];
  const config = parseAllDocuments(configText)[0]!.toJS() as Doc;

  // the manifest agrees with its own config and with the image
  const port = (name: string) => container.ports.find((p: Doc) => p.name === name).containerPort;
  t.equal(port('http'), config.listen.port, 'containerPort http = listen.port');
  t.equal(port('admin'), config.admin.port, 'containerPort admin = admin.port');
  t.equal(Number(deployment.spec.template.metadata.annotations['prometheus.io/port']), config.admin.port, 'Prometheus scrapes the admin listener');
  t.same(service.spec.ports.map((p: Doc) => p.targetPort), ['http'], 'the Service exposes the public listener only');
  t.equal(container.readinessProbe.httpGet.path, '/_keygate/readyz');
  t.equal(container.livenessProbe.httpGet.path, '/_keygate/healthz');
  t.ok(pod.terminationGracePeriodSeconds >= config.listen.shutdown_delay + config.listen.drain_timeout, 'the grace period covers shutdown_delay + drain_timeout');
  const configPath: string = container.args[container.args.indexOf('-c') + 1];
  t.equal(configPath, `${container.volumeMounts[0].mountPath}/gateway.yaml`, 'the config is read from the mounted ConfigMap');
  t.match(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'), `CMD ["serve", "-c", "${configPath}"]`, "the image's default command reads the same path");
  t.match(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'), /\nUSER node\n/, 'the image runs as node …');
  t.equal(pod.securityContext.runAsUser, 1000, '… whose uid the pod names (runAsNonRoot cannot check a name)');

  // the ConfigMap as kubelet lays it out: gateway.yaml -> ..data/gateway.yaml, ..data -> ..<version>
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  // a recorded fake of a Dagu 2.x: the map's requires is checked at start (GET /api/v1/health)
  const dagu = await startEchoUpstream({ name: 'dagu', daguVersion: '2.0.0' });
  const dagen = await startEchoUpstream({ name: 'dagen' });
  t.teardown(() => Promise.all([dagu.close(), dagen.close()]));
  const dir = t.testdir();
  // test-only changes: the route maps from this checkout (the image has them in /app), a free admin port
  const local = (text: string) => text.replaceAll('/app/config/routes/', `${ROOT}config/routes/`).replace('port: 8081', 'port: 0');
  const version = (name: string, text: string) => {
    mkdirSync(join(dir, name));
    writeFileSync(join(dir, name, 'gateway.yaml'), local(text));
    symlinkSync(name, join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data')); // kubelet's atomic swap
  };
  version('..2026_11_22_a', configText);
  symlinkSync('..data/gateway.yaml', join(dir, 'gateway.yaml'));
  const env = { KEYGATE_REDIS_URL: redis.url, DAGU_URL: dagu.url, DAGEN_URL: dagen.url, DAGU_API_TOKEN: 'dagu-token', DAGEN_API_KEY: 'dagen-key', KEYGATE_ADMIN_TOKEN: 'admin-token-for-the-manifest-test' };
  const gw = spawnKeygate(t, ['serve', '-c', join(dir, 'gateway.yaml'), '--port', '0'], { env });
  const started = await gw.waitFor(/"url":"(http:\/\/[^"]+)"/);
  t.ok(started, `started with the ConfigMap's config ${gw.output()}`);
  const url = started![1]!.replace('0.0.0.0', '127.0.0.1');
  const status = async (path: string) => {
    const r = await request(`${url}${path}`);
    await r.body.dump();
    return r.statusCode;
  };
  t.equal(await status(container.readinessProbe.httpGet.path), 200, 'the readiness probe passes (Redis reachable)');
  t.equal(await status(container.livenessProbe.httpGet.path), 200, 'the liveness probe passes');
  t.equal(await status('/api/v1/dags'), 401, 'the Dagu map is live: a key is needed');
  t.equal(await status('/extra'), 404);

  await new Promise((r) => setTimeout(r, 1100)); // a new modification time for the poll
  version('..2026_11_22_b', configText.replace('\nroutes:\n', '\nroutes:\n  - { path: /extra, upstream: dagu, auth: none }\n'));
  t.ok(await gw.waitFor(/configuration reloaded/), 'the swapped ConfigMap was noticed and reloaded');
  t.equal(await status('/extra'), 200, 'its new route answers, no restart');

  const signalled = performance.now();
  gw.child.kill('SIGTERM');
  let readyAfterTerm = 200;
  while (readyAfterTerm === 200 && performance.now() - signalled < 2000) readyAfterTerm = await status(container.readinessProbe.httpGet.path);
  t.equal(readyAfterTerm, 503, `after SIGTERM the readiness probe fails at once (shutdown_delay), here after ${Math.round(performance.now() - signalled)} ms`);
  t.equal(await status('/extra'), 200, 'while requests are still served');
  t.equal(await gw.exited, 0, 'and the pod exits 0 after the delay and the drain');
});
