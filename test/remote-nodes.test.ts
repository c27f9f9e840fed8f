// ?remoteNode= routing to other Dagu servers, and ?token= for clients that cannot send headers.

import t from 'tap';
import { gunzipSync } from 'node:zlib';
import { request } from 'undici';
import { startEchoUpstream, type EchoUpstream } from '../src/demo/echo-upstream.js';
import { startStack, type Stack } from './helpers.js';

const ROUTES = `
remote_nodes:
  - name: prod
    api_base_url: \${PROD_URL}/api/v1
    auth_type: token
    auth_token: prod-node-token
routes:
  - { path: /api/v1/health, upstream: dagu, auth: none, strip_prefix: /api/v1 }
  - { path: /api/v1/dags, methods: [GET], upstream: dagu, role: viewer, remote_node: true, strip_prefix: /api/v1 }
  - { path: "/api/v1/dags/{fileName}/start", methods: [POST], upstream: dagu, role: operator, remote_node: true, strip_prefix: /api/v1 }
  - { path: /api/v1/events/stream, methods: [GET], upstream: dagu, role: viewer, query_token: true, remote_node: true, strip_prefix: /api/v1 }
  - { path: "/api/v1/t/**", upstream: dagu, strip_prefix: /api/v1/t }
  - { path: "/api/v1/webhooks/{fileName}", methods: [POST], upstream: dagu, auth: none, pass_authorization: true, strip_prefix: /api/v1 }
`;

let s: Stack;
let prod: EchoUpstream;
t.before(async () => {
  prod = await startEchoUpstream({ name: 'prod' });
  s = await startStack(t.testdir(), { routes: ROUTES, env: { PROD_URL: prod.url } });
});
t.teardown(async () => {
  await s.close();
  await prod.close();
});

async function call(path: string, headers: Record<string, string> = {}, method = 'GET') {
  const r = await request(`${s.url}${path}`, { method: method as 'GET', headers });
  const text = await r.body.text();
  return { status: r.statusCode, json: text ? JSON.parse(text) : {}, headers: r.headers };
}

t.test('?remoteNode= goes to that node with its credential, after the key is authorised', async (t) => {
  const viewer = await s.key({ name: 'rn-viewer', role: 'viewer' });
  const operator = await s.key({ name: 'rn-operator', role: 'operator' });
  const localBefore = s.dagu.received.length;

  const r = await call('/api/v1/dags?a=1&remoteNode=prod&b=x%20y', { authorization: `Bearer ${viewer.secret}` });
  t.equal(r.status, 200);
  const got = prod.received.at(-1)!;
  t.equal(got.path, '/api/v1/dags', "the local base path replaced by the node's api_base_url");
  t.equal(got.query, 'a=1&b=x%20y', 'remoteNode removed, the rest byte for byte');
  t.equal(got.headers.authorization, 'Bearer prod-node-token', "the node's own credential");
  t.equal(got.headers['x-keygate-key-name'], 'rn-viewer');
  t.equal(s.dagu.received.length, localBefore, 'the local upstream saw nothing');

  t.equal((await call('/api/v1/dags?remote%4Eode=prod', { 'x-api-key': viewer.secret })).status, 200, 'an encoded parameter name is understood as Dagu would');
  t.equal(prod.received.at(-1)!.query, '', 'and removed too');

  const local = await call('/api/v1/dags?remoteNode=local', { 'x-api-key': viewer.secret });
  t.equal(local.status, 200);
  t.equal(s.dagu.received.at(-1)!.path, '/api/v1/dags', '"local" means the route\'s own upstream');

  const prodBefore = prod.received.length;
  t.match(await call('/api/v1/dags?remoteNode=nowhere', { 'x-api-key': viewer.secret }), { status: 404, json: { code: 'not_found', message: /remote node "nowhere"/ } });
  t.match(await call('/api/v1/dags?remoteNode=nowhere'), { status: 401 }, 'no key: 401 before any node lookup');
  t.match(await call('/api/v1/dags/deploy/start?remoteNode=prod', { 'x-api-key': viewer.secret }, 'POST'), { status: 403 }, 'the route role applies to remote calls');
  t.match(await call('/api/v1/t/x?remoteNode=prod', { 'x-api-key': viewer.secret }), { status: 400, json: { code: 'bad_request', message: /does not accept remoteNode/ } }, 'an operation without remote support refuses it');
  t.match(await call('/api/v1/dags?remoteNode=prod&remoteNode=local', { 'x-api-key': viewer.secret }), { status: 400 }, 'two remoteNode values are ambiguous');
  t.equal(prod.received.length, prodBefore, 'no refused request reached the node');

  t.equal((await call('/api/v1/dags/deploy/start?remoteNode=prod', { 'x-api-key': operator.secret }, 'POST')).status, 200);
  t.equal(prod.received.at(-1)!.path, '/api/v1/dags/deploy/start');
});

t.test('?token= works only where the route allows it, and never travels on', async (t) => {
  const k = await s.key({ name: 'sse-token', role: 'viewer' });
  const r = await request(`${s.url}/api/v1/events/stream?topic=runs&token=${k.secret}&count=2&interval=10`);
  t.equal(r.statusCode, 200);
  t.equal(r.headers['content-type'], 'text/event-stream');
  const text = await r.body.text();
  t.match(text, /"n":2/, 'the stream arrived');
  const got = s.dagu.received.at(-1)!;
  t.equal(got.query, 'topic=runs&count=2&interval=10', 'token stripped before forwarding');
  t.notOk(JSON.stringify(got.rawHeaders).includes(k.secret), 'and not sent as a header either');

  const viaNode = await request(`${s.url}/api/v1/events/stream?remoteNode=prod&token=${k.secret}&count=1&interval=10`);
  t.equal(viaNode.statusCode, 200, 'token and remoteNode together');
  await viaNode.body.text();
  t.equal(prod.received.at(-1)!.query, 'count=1&interval=10');

  t.equal((await call(`/api/v1/dags?token=${k.secret}`)).status, 400, 'a route without query_token refuses ?token= (it would reach upstream logs)');
  t.equal((await call(`/api/v1/events/stream?token=${k.secret}`, { 'x-api-key': 'dg_other' })).status, 400, 'two different credentials');
  for (const line of s.logs) if (line.includes(k.secret)) t.fail(`secret in log: ${line}`);
});

t.test('a Dagu server using Keygate as its remote node: Bearer, gzip accepted, Dagu-shaped errors', async (t) => {
  // What Dagu's remote-node client sends: Authorization: Bearer, Accept-Encoding: gzip, deflate;
  // it buffers the body and reads {"code","message"} on errors.
  const k = await s.key({ name: 'dagu-peer', role: 'viewer', attributionClass: 'service_account', serviceAccountName: 'dagu-prod' });
  const ok = await request(`${s.url}/api/v1/dags`, { headers: { authorization: `Bearer ${k.secret}`, 'accept-encoding': 'gzip, deflate' } });
  const buf = Buffer.from(await ok.body.arrayBuffer());
  const body = ok.headers['content-encoding'] === 'gzip' ? gunzipSync(buf) : buf;
  t.equal(ok.statusCode, 200);
  t.equal(JSON.parse(body.toString()).headers['accept-encoding'], 'gzip, deflate', 'Accept-Encoding reaches the upstream, so it may compress');
  t.equal(s.dagu.received.at(-1)!.headers['x-keygate-attribution'], 'service_account:dagu-prod');
  for (const [headers, status, code] of [
    [{ 'accept-encoding': 'gzip, deflate' }, 401, 'unauthorized'],
    [{ authorization: 'Bearer dg_wrong', 'accept-encoding': 'gzip, deflate' }, 401, 'unauthorized'],
  ] as const) {
    const r = await request(`${s.url}/api/v1/dags`, { headers });
    const json = JSON.parse(await r.body.text());
    t.equal(r.statusCode, status);
    t.same(Object.keys(json).sort(), ['code', 'message'], "Dagu's error shape");
    t.equal(json.code, code);
  }
});

t.test("pass_authorization: a Dagu webhook's own token reaches Dagu; nowhere else does a client Authorization", async (t) => {
  const hook = await call('/api/v1/webhooks/deploy', { authorization: 'Bearer dagu_wh_0123456789', 'content-type': 'application/json' }, 'POST');
  t.equal(hook.status, 200);
  t.equal(s.dagu.received.at(-1)!.headers.authorization, 'Bearer dagu_wh_0123456789', 'the webhook token passed');
  const health = await call('/api/v1/health', { authorization: 'Bearer dagu_wh_0123456789' });
  t.equal(health.status, 200);
  t.equal(s.dagu.received.at(-1)!.headers.authorization, undefined, 'stripped on other auth: none routes');

  const { writeFileSync } = await import('node:fs');
  const { loadConfig } = await import('../src/config/load.js');
  const { ConfigError } = await import('../src/errors.js');
  const file = `${t.testdir()}/bad.yaml`;
  writeFileSync(file, 'upstreams: [{ name: u, api_base_url: "http://127.0.0.1:1" }]\nroutes:\n  - { path: /x, upstream: u, pass_authorization: true }\n');
  try {
    loadConfig(file, {});
    t.fail('a keyed route with pass_authorization must be refused');
  } catch (err) {
    t.ok(err instanceof ConfigError);
    t.match((err as InstanceType<typeof ConfigError>).issues[0], { line: 3, field: 'routes[0].pass_authorization', message: /only on auth: none routes/ });
  }
});
