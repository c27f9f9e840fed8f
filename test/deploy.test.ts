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
  // test-only change: a free admin port. The relative route-map includes are not next to the config,
  // so they are found in the package — this checkout here, /app in the image.
  const local = (text: string) => text.replace('port: 8081', 'port: 0');
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

/** Pod Security Standards, "restricted" profile (v1.30): what a pod template must meet to be admitted. */
function restrictedViolations(spec: Doc): string[] {
  const out: string[] = [];
  const pod = spec.securityContext ?? {};
  for (const k of ['hostNetwork', 'hostPID', 'hostIPC']) if (spec[k]) out.push(`${k}: true`);
  const volumeTypes = new Set(['configMap', 'csi', 'downwardAPI', 'emptyDir', 'ephemeral', 'persistentVolumeClaim', 'projected', 'secret']);
  for (const v of spec.volumes ?? []) for (const k of Object.keys(v)) if (k !== 'name' && !volumeTypes.has(k)) out.push(`volume ${v.name}: ${k}`);
  if (pod.runAsUser === 0) out.push('pod runAsUser 0');
  for (const c of [...(spec.initContainers ?? []), ...spec.containers] as Doc[]) {
    const sc = c.securityContext ?? {};
    const at = `container ${c.name}`;
    if (sc.privileged) out.push(`${at}: privileged`);
    if (sc.allowPrivilegeEscalation !== false) out.push(`${at}: allowPrivilegeEscalation must be false`);
    if (!(sc.capabilities?.drop ?? []).includes('ALL')) out.push(`${at}: capabilities must drop ALL`);
    for (const cap of sc.capabilities?.add ?? []) if (cap !== 'NET_BIND_SERVICE') out.push(`${at}: adds capability ${cap}`);
    if ((sc.runAsNonRoot ?? pod.runAsNonRoot) !== true) out.push(`${at}: runAsNonRoot must be true`);
    if (sc.runAsUser === 0) out.push(`${at}: runAsUser 0`);
    const seccomp = (sc.seccompProfile ?? pod.seccompProfile)?.type;
    if (seccomp !== 'RuntimeDefault' && seccomp !== 'Localhost') out.push(`${at}: seccompProfile must be RuntimeDefault or Localhost`);
    for (const p of c.ports ?? []) if (p.hostPort) out.push(`${at}: hostPort ${p.hostPort}`);
  }
  return out;
}

t.test('the Kubernetes manifest: restricted pods, the admin port fenced off, and a named Redis', async (t) => {
  const docs = parseAllDocuments(readFileSync(join(ROOT, 'deploy/kubernetes/keygate.yaml'), 'utf8')).map((d) => d.toJS() as Doc);
  const workloads = docs.filter((d) => d.kind === 'Deployment' || d.kind === 'StatefulSet');
  t.ok(workloads.length >= 2, 'the gateway and its Redis');
  for (const w of workloads) t.same(restrictedViolations(w.spec.template.spec), [], `${w.kind} ${w.metadata.name} passes the "restricted" Pod Security profile`);
  t.same(restrictedViolations({ containers: [{ name: 'x', ports: [{ hostPort: 80 }] }], hostNetwork: true }).length, 6, '(the check does catch a bad pod)');

  const deployment = docs.find((d) => d.kind === 'Deployment')!;
  const labels: Doc = deployment.spec.template.metadata.labels;
  const selects = (sel: Doc | undefined, l: Doc) => Object.entries(sel?.matchLabels ?? {}).every(([k, v]) => l[k] === v);
  const policies = docs.filter((d) => d.kind === 'NetworkPolicy' && selects(d.spec.podSelector, labels));
  t.equal(policies.length, 1, "a NetworkPolicy selects the gateway's pods");
  const rules: Doc[] = policies[0]?.spec.ingress ?? [];
  t.ok(policies[0]?.spec.policyTypes.includes('Ingress'), 'and governs ingress: what no rule admits is refused');
  const admits = (port: string) => rules.filter((r) => (r.ports ?? []).some((p: Doc) => p.port === port));
  t.ok(admits('http').some((r) => r.from === undefined), 'the public port: from anywhere');
  const admin = admits('admin');
  t.ok(admin.length > 0 && admin.every((r) => Array.isArray(r.from) && r.from.length > 0), 'the admin port: only from the sources named …');
  t.match(admin[0]?.from, [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }], '… the monitoring namespace (Prometheus)');
  t.notOk(rules.some((r) => !r.ports), 'no rule admits every port');

  const env: Doc[] = deployment.spec.template.spec.containers[0].env;
  const redisUrl = new URL(env.find((e) => e.name === 'KEYGATE_REDIS_URL')!.value);
  const service = docs.find((d) => d.kind === 'Service' && d.metadata.name === redisUrl.hostname);
  t.ok(service, `KEYGATE_REDIS_URL names a Service of the manifest: ${redisUrl.hostname}`);
  const redis = docs.find((d) => d.kind === 'StatefulSet' && selects({ matchLabels: service?.spec.selector }, d.spec.template.metadata.labels));
  t.ok(redis, "which selects the Redis StatefulSet's pods");
  const port = service?.spec.ports.find((p: Doc) => p.port === Number(redisUrl.port || 6379));
  const container = redis?.spec.template.spec.containers[0];
  t.match(container?.image, /^redis:\d/, 'running Redis');
  t.equal(container?.ports.find((p: Doc) => p.name === port?.targetPort)?.containerPort, 6379, "the Service's port reaches Redis's 6379");
  t.ok(redis?.spec.volumeClaimTemplates?.length, 'on a persistent volume');
  const redisPolicy = docs.find((d) => d.kind === 'NetworkPolicy' && selects(d.spec.podSelector, redis?.spec.template.metadata.labels ?? {}));
  t.match(redisPolicy?.spec.ingress, [{ from: [{ podSelector: { matchLabels: labels } }] }], 'Redis admits only the gateway');
});
