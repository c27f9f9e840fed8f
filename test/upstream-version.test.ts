// The upstream version check (route `requires`) and the upstream refusing the gateway's own
// credential, against recorded fakes (echo upstreams on loopback). The same against the real Dagu
// 1.30.2 binary is in test/dagu-real.test.ts.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import t from 'tap';
import { request } from 'undici';
import { loadConfig } from '../src/config/load.js';
import { startEchoUpstream } from '../src/demo/echo-upstream.js';
import { ConfigError, KeygateError } from '../src/errors.js';
import { Gateway } from '../src/server.js';
import { compareVersions, parseRange, parseVersion, satisfies } from '../src/upstream-version/range.js';
import { startStack } from './helpers.js';
import { freePort } from './ports.js';

t.test('version ranges', async (t) => {
  const cases: [string, string, boolean][] = [
    ['1.30.2', '>=1.30.0 <2.0.0', true],
    ['v1.30.3', '>=1.30.0 <2.0.0', true],
    ['2.0.0', '>=1.30.0 <2.0.0', false],
    ['1.29.9', '>=1.30.0 <2.0.0', false],
    ['2.0.0', '>=2.0.0', true],
    ['2.3.1+build.7', '>=2.0.0', true],
    ['2.0.0-beta.1', '>=2.0.0', false], // a prerelease sorts before its release
    ['1.30.2', '>=2.0.0', false],
    ['1.30.2', '1.30.2', true],
    ['1.30.2', '=1.30.1', false],
    ['1.30.2', '>1.30.1 <=1.30.2', true],
  ];
  for (const [v, r, want] of cases) {
    const range = parseRange(r);
    if (typeof range === 'string') t.fail(range);
    else t.equal(satisfies(parseVersion(v)!, range), want, `${v} in ${r}: ${want}`);
  }
  for (const bad of ['', 'latest', '>=2', '~1.30', '>=1.30.0 || <1', '>= 2.0.0']) t.type(parseRange(bad), 'string', `"${bad}" is refused`);
  for (const bad of ['1.30', 'dev', '', '1.30.2.1']) t.equal(parseVersion(bad), undefined, `"${bad}" is not a version`);
  t.ok(compareVersions(parseVersion('1.10.0')!, parseVersion('1.9.0')!) > 0, 'numeric, not lexical');
});

t.test('config: requires and answer are checked where they are written', async (t) => {
  const dir = t.testdir();
  const write = (route: string) => {
    const f = join(dir, `c${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(f, `upstreams:\n  - { name: dagu, api_base_url: "http://127.0.0.1:1/api/v1" }\nroutes:\n  - ${route}\n`);
    return f;
  };
  t.throws(() => loadConfig(write('{ path: /a, upstream: dagu, requires: { dagu: "latest" } }')), ConfigError);
  try {
    loadConfig(write('{ path: /a, upstream: dagu, requires: { dagu: ">=2" } }'));
  } catch (err) {
    t.match((err as ConfigError).issues, [{ field: 'routes[0].requires.dagu', message: /not a comparator/ }]);
  }
  t.throws(() => loadConfig(write('{ path: /a, upstream: dagu, requires: { dagen: ">=1.0.0" } }')), ConfigError, 'only dagu');
  t.throws(() => loadConfig(write('{ path: /a, upstream: dagu, auth: none, answer: current_user }')), ConfigError, 'answer needs a key');
  const ok = loadConfig(write('{ path: /a, upstream: dagu, requires: { dagu: ">=1.30.0 <2.0.0" }, expose_login: true }'));
  t.match(ok.routes[0], { requires: { dagu: '>=1.30.0 <2.0.0' }, expose_login: true });
});

const VERSIONED = `
routes:
  - { path: /api/v1/health, upstream: dagu, auth: none, strip_prefix: /api/v1, requires: { dagu: ">=2.0.0" } }
  - { path: "/api/v1/dags/{fileName}/start", methods: [POST], upstream: dagu, role: operator, strip_prefix: /api/v1, requires: { dagu: ">=2.0.0" }, remote_node: true }
  - { path: "/api/v1/plain/**", upstream: dagu, role: viewer, strip_prefix: /api/v1 }
  - { path: "/api/v1/open/**", upstream: dagu, auth: none, strip_prefix: /api/v1 }
`;

t.test('start: a map for another Dagu is refused, naming the upstream, its version and the map to use', async (t) => {
  const err = await startStack(t.testdir(), { routes: VERSIONED, daguVersion: '1.30.2' }).then(
    (s) => (void s.close(), undefined),
    (e: unknown) => e,
  );
  t.ok(err instanceof KeygateError, 'a KeygateError (the CLI prints its message and exits 1)');
  const e = err as KeygateError;
  t.equal(e.code, 'upstream_version_mismatch');
  t.match(e.message, /upstream "dagu" is Dagu 1\.30\.2, but its routes \(.*gateway\.yaml\) require Dagu >=2\.0\.0: use config\/routes\/dagu-1\.30\.yaml with api_base_url http:\/\/127\.0\.0\.1:\d+\/api\/v2/);
  await t.rejects(startStack(t.testdir(), { routes: VERSIONED }), /upstream "dagu" reports no Dagu version \(GET \/api\/v1\/health: 200, GET \/api\/v2\/health: 200\)/, 'an upstream that is no Dagu');
});

t.test('a matching version: forwarded; readyz and /metrics show the version', async (t) => {
  const s = await startStack(t.testdir(), { routes: VERSIONED, daguVersion: '2.1.0' });
  t.teardown(() => s.close());
  const probes = s.dagu.received.filter((r) => r.path === '/api/v1/health').length;
  t.equal(probes, 1, 'asked once at start, at <api_base_url>/health');
  t.notOk(s.dagu.received.some((r) => r.headers.authorization !== undefined), 'the probe carries no credential');
  const { secret } = await s.key({ name: 'op', role: 'operator' });
  const r = await request(`${s.url}/api/v1/dags/x/start`, { method: 'POST', headers: { 'x-api-key': secret } });
  t.equal(r.statusCode, 200);
  await r.body.dump();
  const ready = await request(`${s.url}/_keygate/readyz`);
  t.match(await ready.body.json(), { status: 'ready', checks: { 'upstream_version.dagu': 'ok: Dagu 2.1.0' } });
  const metrics = await (await request(`${s.gateway.adminUrl}/metrics`)).body.text();
  t.match(metrics, /keygate_upstream_version_info\{upstream="dagu",kind="upstream",version="2\.1\.0"\} 1/);
  t.match(metrics, /keygate_upstream_version_mismatch\{upstream="dagu",kind="upstream"\} 0/);
});

function quietLogger(lines: string[]) {
  return pino({ level: 'info' }, new Writable({ write: (c: Buffer, _e, cb) => (lines.push(...c.toString().split('\n').filter(Boolean)), cb()) }));
}

t.test('unreachable at start: a warning; checked before the first request; a mismatch then is a 502 and never forwarded', async (t) => {
  const port = await freePort();
  const dir = t.testdir();
  const file = join(dir, 'gateway.yaml');
  writeFileSync(file, `store: { keys: "sqlite::memory:" }\nupstreams:\n  - { name: dagu, api_base_url: "http://127.0.0.1:${port}/api/v1", auth_type: token, auth_token: up-token, timeout: 2 }\n${VERSIONED}`);
  const lines: string[] = [];
  const gw = await Gateway.start({ config: loadConfig(file, {}), port: 0, adminPort: 0, logger: quietLogger(lines) });
  t.teardown(() => gw.close(1000));
  t.match(lines.join('\n'), /"level":40.*upstream \\"dagu\\": version not checked, unreachable/, 'a warning, not a refusal');
  const ready = await request(`${gw.url}/_keygate/readyz`);
  t.equal(ready.statusCode, 200, 'ready: it is asked before the first request');
  t.match(await ready.body.json(), { checks: { 'upstream_version.dagu': /^not checked: / } });
  const { secret } = await gw.keys.create({ name: 'op', role: 'operator' }, 'test');
  const down = await request(`${gw.url}/api/v1/dags/x/start`, { method: 'POST', headers: { 'x-api-key': secret } });
  t.equal(down.statusCode, 502);
  t.match(await down.body.json(), { code: 'bad_gateway', message: /upstream "dagu" is unreachable, so its version could not be checked/ });

  // now an old Dagu comes up on that port
  const old = await startEchoUpstream({ name: 'dagu', port, daguVersion: '1.30.2' });
  t.teardown(() => old.close());
  for (const path of ['/api/v1/dags/x/start', '/api/v1/dags/y/start']) {
    const r = await request(`${gw.url}${path}`, { method: 'POST', headers: { 'x-api-key': secret }, body: '{"action":"start"}' });
    t.equal(r.statusCode, 502, `${path}: 502`);
    t.match(await r.body.json(), { code: 'upstream_version_mismatch', message: /upstream "dagu" is Dagu 1\.30\.2, but its routes .* require Dagu >=2\.0\.0/ });
  }
  const pub = await request(`${gw.url}/api/v1/health`);
  t.equal(pub.statusCode, 502, 'a public route of the map: refused too');
  await pub.body.dump();
  const plain = await request(`${gw.url}/api/v1/plain/x`, { headers: { 'x-api-key': secret } });
  t.equal(plain.statusCode, 200, 'a route without requires is not affected');
  await plain.body.dump();
  t.same(
    old.received.map((r) => `${r.method} ${r.path}`),
    ['GET /api/v1/health', 'GET /api/v1/plain/x'],
    'the old Dagu was asked its version, and got only the unversioned request: nothing of the map',
  );
  const ready2 = await request(`${gw.url}/_keygate/readyz`);
  t.equal(ready2.statusCode, 503, 'not ready: the configuration is wrong for this upstream');
  t.match(await ready2.body.json(), { checks: { 'upstream_version.dagu': /^mismatch: upstream "dagu" is Dagu 1\.30\.2/ } });
  const metrics = await (await request(`${gw.adminUrl}/metrics`)).body.text();
  t.match(metrics, /keygate_upstream_version_mismatch\{upstream="dagu",kind="upstream"\} 1/);
  t.match(metrics, /keygate_requests_total\{route="POST \/api\/v1\/dags\/\{fileName\}\/start",status_class="5xx",decision="upstream_version_mismatch"\} 2/);
});

t.test('a remote node of another version: ?remoteNode= refused, the local upstream still served; reload refuses a mismatch', async (t) => {
  const prod = await startEchoUpstream({ name: 'prod', daguVersion: '2.2.0' });
  t.teardown(() => prod.close());
  const s = await startStack(t.testdir(), {
    routes: VERSIONED,
    daguVersion: '2.1.0',
    yaml: `remote_nodes:\n  - { name: prod, api_base_url: "${prod.url}/api/v1", auth_type: token, auth_token: prod-token }\n`,
  });
  t.teardown(() => s.close());
  const { secret } = await s.key({ name: 'op', role: 'operator' });
  const send = async (q: string) => {
    const r = await request(`${s.url}/api/v1/dags/x/start${q}`, { method: 'POST', headers: { 'x-api-key': secret } });
    return { status: r.statusCode, json: (await r.body.json()) as Record<string, unknown> };
  };
  t.match(await send('?remoteNode=prod'), { status: 200, json: { upstream: 'prod' } });
  t.match((await request(`${s.url}/_keygate/readyz`).then((r) => r.body.json())) as object, { checks: { 'remote_node_version.prod': 'ok: Dagu 2.2.0' } });

  // reload: the same config but the remote node is now a Dagu 1.30 → refused, the old one stays
  const old = await startEchoUpstream({ name: 'old', daguVersion: '1.30.2' });
  t.teardown(() => old.close());
  const file = join(t.testdirName, 'gateway.yaml');
  const { readFileSync } = await import('node:fs');
  writeFileSync(file, readFileSync(file, 'utf8').replace(`${prod.url}/api/v1`, `${old.url}/api/v1`));
  const next = loadConfig(file, { DAGU_URL: s.dagu.url, DAGEN_URL: s.dagen.url, DAGU_TOKEN: 'upstream-dagu-token' });
  await t.rejects(s.gateway.reload(next), /remote node "prod" is Dagu 1\.30\.2, but its routes .* require Dagu >=2\.0\.0/);
  t.equal(s.gateway.reloads.failed, 1);
  t.match(await send('?remoteNode=prod'), { status: 200, json: { upstream: 'prod' } }, 'the old configuration still serves');
  t.equal(old.received.filter((r) => r.path !== '/api/v1/health').length, 0, 'the old Dagu got nothing but the probe');
});

t.test("the upstream refuses the gateway's own credential: 502 upstream_credential_rejected, a warning, a metric", async (t) => {
  const routes = `
routes:
  - { path: "/api/v1/t/**", upstream: dagu, strip_prefix: /api/v1/t }
  - { path: "/api/v1/open/**", upstream: dagu, auth: none, strip_prefix: /api/v1 }
  - { path: "/down/**", upstream: down }
`;
  const s = await startStack(t.testdir(), { routes });
  t.teardown(() => s.close());
  const { secret } = await s.key({ name: 'ci', role: 'viewer' });
  for (const status of [401, 403]) {
    const r = await request(`${s.url}/api/v1/t/_status/${status}`, { headers: { 'x-api-key': secret } });
    t.equal(r.statusCode, 502, `upstream ${status} → 502`);
    t.same(r.headers['set-cookie'], undefined, "nothing of the upstream's answer");
    t.match(await r.body.json(), { code: 'upstream_credential_rejected', message: new RegExp(`upstream "dagu" refused the gateway's own credential \\(${status}\\)`) });
  }
  const ok = await request(`${s.url}/api/v1/t/_status/404`, { headers: { 'x-api-key': secret } });
  t.equal(ok.statusCode, 404, 'other statuses pass through');
  await ok.body.dump();
  const open = await request(`${s.url}/api/v1/open/_status/401`);
  t.equal(open.statusCode, 401, 'a public route injects no credential: its 401 is the client’s');
  await open.body.dump();
  const warn = s.logs.filter((l) => l.includes('refused the gateway'));
  t.equal(warn.length, 2, 'one warning each');
  t.match(JSON.parse(warn[0]!), { level: 40, upstream: 'dagu', kind: 'upstream' });
  t.notOk(s.logs.some((l) => l.includes('upstream-dagu-token') || l.includes(secret)), 'no secret in the log');
  const metrics = await (await request(`${s.gateway.adminUrl}/metrics`)).body.text();
  t.match(metrics, /keygate_upstream_credential_rejections_total\{upstream="dagu",kind="upstream"\} 2/);
});

t.test('login paths: 404 unless the matching route says expose_login; a remote node refusing its credential', async (t) => {
  const prod = await startEchoUpstream({ name: 'prod' });
  t.teardown(() => prod.close());
  const routes = `
routes:
  - { path: /api/v2/auth/login, methods: [POST], upstream: dagu, auth: none, strip_prefix: /api/v2, expose_login: true }
  - { path: "/api/v1/{a}/{b}", upstream: dagu, auth: none, strip_prefix: /api/v1 }
  - { path: "/api/v1/t/**", upstream: dagu, strip_prefix: /api/v1/t, remote_node: true }
`;
  const s = await startStack(t.testdir(), {
    routes,
    yaml: `remote_nodes:\n  - { name: prod, api_base_url: "${prod.url}/api/v1", auth_type: token, auth_token: wrong-prod-token }\n`,
  });
  t.teardown(() => s.close());
  const post = (path: string) => request(`${s.url}${path}`, { method: 'POST', body: '{}' }).then(async (r) => ({ status: r.statusCode, json: (await r.body.json()) as Record<string, unknown> }));
  t.match(await post('/api/v1/auth/login'), { status: 404, json: { code: 'not_found', message: /is not routed: Keygate's clients use API keys/ } }, 'a catch-all route does not expose login');
  t.match(await post('/api/v1/auth/setup'), { status: 404 }, 'nor first-run setup');
  t.match(await post('/api/v1/other/thing'), { status: 200 }, 'the catch-all serves everything else');
  t.match(await post('/api/v2/auth/login'), { status: 200, json: { path: '/api/v1/auth/login' } }, 'opted in: forwarded (to the base path of the upstream)');
  t.same(s.dagu.received.map((r) => r.path), ['/api/v1/other/thing', '/api/v1/auth/login'], 'the refused ones never reached the upstream');

  const { secret } = await s.key({ name: 'ci', role: 'viewer' });
  const r = await request(`${s.url}/api/v1/t/_status/401?remoteNode=prod`, { headers: { 'x-api-key': secret } });
  t.equal(r.statusCode, 502);
  t.match(await r.body.json(), { code: 'upstream_credential_rejected', message: /upstream "prod" refused the gateway's own credential \(401\)/ });
  t.match(JSON.parse(s.logs.find((l) => l.includes('refused the gateway'))!), { level: 40, upstream: 'prod', kind: 'remote_node' });
  const metrics = await (await request(`${s.gateway.adminUrl}/metrics`)).body.text();
  t.match(metrics, /keygate_upstream_credential_rejections_total\{upstream="prod",kind="remote_node"\} 1/);
  t.notOk(s.logs.some((l) => l.includes('wrong-prod-token')), 'the secret is never logged');
});

t.test('re-checked while running: a Dagu replaced by an older one under a running gateway is refused from then on', async (t) => {
  const first = await startEchoUpstream({ name: 'dagu', daguVersion: '2.1.0' });
  const port = first.port;
  const dir = t.testdir();
  const file = join(dir, 'gateway.yaml');
  writeFileSync(file, `store: { keys: "sqlite::memory:" }\nupstreams:\n  - { name: dagu, api_base_url: "http://127.0.0.1:${port}/api/v1", auth_type: token, auth_token: up-token, timeout: 2 }\n${VERSIONED}`);
  const lines: string[] = [];
  const gw = await Gateway.start({ config: loadConfig(file, {}), port: 0, adminPort: 0, logger: quietLogger(lines), versionRecheckMs: 100 });
  t.teardown(() => gw.close(1000));
  const { secret } = await gw.keys.create({ name: 'op', role: 'operator' }, 'test');
  const start = () => request(`${gw.url}/api/v1/dags/x/start`, { method: 'POST', headers: { 'x-api-key': secret } }).then(async (r) => ({ status: r.statusCode, json: (await r.body.json()) as Record<string, unknown> }));
  t.match(await start(), { status: 200, json: { upstream: 'dagu' } });
  await first.close();
  const old = await startEchoUpstream({ name: 'old', port, daguVersion: '1.30.2' });
  t.teardown(() => old.close());
  const until = Date.now() + 10_000;
  while (!lines.some((l) => l.includes('is Dagu 1.30.2')) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  t.match(JSON.parse(lines.find((l) => l.includes('is Dagu 1.30.2'))!), { level: 50, upstream: 'dagu', version: '1.30.2', msg: /answer 502 upstream_version_mismatch/ }, 'an error in the log');
  t.match(await start(), { status: 502, json: { code: 'upstream_version_mismatch' } });
  t.equal(old.received.filter((r) => r.path !== '/api/v1/health').length, 0, 'nothing but probes reached the old Dagu');
});
