// CORS: off by default; preflights answered by Keygate without a key and never forwarded; actual
// responses (forwarded ones and Keygate's own refusals) carry the policy's headers.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { loadConfig } from '../src/config/load.js';
import { ConfigError } from '../src/errors.js';
import { startStack } from './helpers.js';

const ROUTES = `
routes:
  - { path: /api/v1/dags, methods: [GET], upstream: dagu, role: viewer, strip_prefix: /api/v1 }
  - { path: "/api/v1/dags/{fileName}/start", methods: [POST], upstream: dagu, role: operator, strip_prefix: /api/v1 }
  - { path: /api/v1/private, methods: [GET], upstream: dagu, strip_prefix: /api/v1, cors: false }
  - { path: /api/v1/other, methods: [GET], upstream: dagu, strip_prefix: /api/v1, cors: { allowed_origins: ["https://other.example"], allow_credentials: true, max_age: 5 } }
`;
const preflight = (url: string, origin: string, method: string, headers = 'x-api-key, content-type') =>
  request(url, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': headers } });

t.test('off by default: a preflight is no route (404) and is not forwarded', async (t) => {
  const s = await startStack(t.testdir(), { routes: ROUTES });
  t.teardown(() => s.close());
  const r = await preflight(`${s.url}/api/v1/dags`, 'https://app.example', 'GET');
  t.equal(r.statusCode, 404);
  t.equal(r.headers['access-control-allow-origin'], undefined);
  await r.body.dump();
  t.equal(s.dagu.received.length, 0);
});

t.test('cors at the top level: preflights answered without a key, never forwarded; responses carry the headers', async (t) => {
  const s = await startStack(t.testdir(), { routes: ROUTES, yaml: 'cors: { allowed_origins: ["https://app.example"] }' });
  t.teardown(() => s.close());
  const ok = await preflight(`${s.url}/api/v1/dags/deploy/start`, 'https://app.example', 'POST');
  t.equal(ok.statusCode, 204, 'answered, no key needed');
  t.match(ok.headers, {
    'access-control-allow-origin': 'https://app.example',
    'access-control-allow-methods': 'GET, HEAD, POST, PUT, PATCH, DELETE',
    'access-control-allow-headers': 'Content-Type, X-API-Key, Authorization, X-Request-Id',
    'access-control-max-age': '600',
    vary: /Origin/,
  });
  t.equal(ok.headers['access-control-allow-credentials'], undefined);
  await ok.body.dump();
  for (const [origin, method, headers, why] of [
    ['https://evil.example', 'POST', 'x-api-key', /origin https:\/\/evil\.example is not allowed/],
    ['https://app.example', 'TRACE', 'x-api-key', /method TRACE is not allowed/],
    ['https://app.example', 'POST', 'x-api-key, x-secret', /header x-secret is not allowed/],
  ] as const) {
    const r = await preflight(`${s.url}/api/v1/dags/deploy/start`, origin, method, headers);
    t.equal(r.statusCode, method === 'TRACE' ? 404 : 403, `${origin} ${method} ${headers}`);
    if (method !== 'TRACE') t.match(await r.body.json(), { code: 'cors_forbidden', message: why });
    else await r.body.dump(); // no route for TRACE at all: an ordinary 404
    t.equal(r.headers['access-control-allow-origin'], undefined);
  }
  t.equal(s.dagu.received.length, 0, 'no preflight reached the upstream');

  const { secret } = await s.key({ name: 'browser', role: 'viewer' });
  const got = await request(`${s.url}/api/v1/dags`, { headers: { origin: 'https://app.example', 'x-api-key': secret } });
  t.equal(got.statusCode, 200);
  t.match(got.headers, { 'access-control-allow-origin': 'https://app.example', 'access-control-expose-headers': /X-Request-Id.*RateLimit/, vary: /Origin/ });
  await got.body.dump();
  const refused = await request(`${s.url}/api/v1/dags`, { headers: { origin: 'https://app.example' } });
  t.equal(refused.statusCode, 401);
  t.equal(refused.headers['access-control-allow-origin'], 'https://app.example', "the page can read Keygate's refusal");
  await refused.body.dump();
  const other = await request(`${s.url}/api/v1/dags`, { headers: { origin: 'https://evil.example', 'x-api-key': secret } });
  t.equal(other.statusCode, 200, 'a request from another origin is still served (browsers enforce CORS)…');
  t.equal(other.headers['access-control-allow-origin'], undefined, '…without the header that would let a page read it');
  await other.body.dump();

  // per route: off, or its own policy
  const off = await preflight(`${s.url}/api/v1/private`, 'https://app.example', 'GET');
  t.equal(off.statusCode, 404, 'cors: false on the route');
  await off.body.dump();
  const own = await preflight(`${s.url}/api/v1/other`, 'https://other.example', 'GET');
  t.equal(own.statusCode, 204);
  t.match(own.headers, { 'access-control-allow-origin': 'https://other.example', 'access-control-allow-credentials': 'true', 'access-control-max-age': '5' });
  await own.body.dump();
  const notHere = await preflight(`${s.url}/api/v1/other`, 'https://app.example', 'GET');
  t.equal(notHere.statusCode, 403, "the route's policy replaces the top-level one");
  await notHere.body.dump();
  t.equal(s.dagu.received.length, 2, 'only the two keyed GETs were forwarded');
});

t.test('config: credentials need listed origins; origins are origins', async (t) => {
  const dir = t.testdir();
  const f = join(dir, 'c.yaml');
  writeFileSync(f, 'cors: { allowed_origins: ["*"], allow_credentials: true }\n');
  t.throws(() => loadConfig(f, {}), ConfigError);
  try {
    loadConfig(f, {});
  } catch (err) {
    t.match((err as ConfigError).issues, [{ field: 'cors.allow_credentials', message: /list the origins/ }]);
  }
  writeFileSync(f, 'cors: { allowed_origins: ["app.example/path"] }\n');
  t.throws(() => loadConfig(f, {}), ConfigError, 'not an origin');
  writeFileSync(f, 'cors: { allowed_origins: ["https://a.example", "*"] }\n');
  t.match(loadConfig(f, {}).cors, { allowed_origins: ['https://a.example', '*'], allow_credentials: false, max_age: 600 });
});

t.test("the gateway's own failures after forwarding (upstream down, credential refused) carry the CORS headers", async (t) => {
  const routes = `${ROUTES}  - { path: /api/v1/down, methods: [GET], upstream: down, strip_prefix: /api/v1 }\n  - { path: "/api/v1/t/**", methods: [GET], upstream: dagu, strip_prefix: /api/v1/t }\n`;
  const s = await startStack(t.testdir(), { routes, yaml: 'cors: { allowed_origins: ["https://app.example"] }' });
  t.teardown(() => s.close());
  const { secret } = await s.key({ name: 'browser-failures', role: 'viewer' });
  const headers = { origin: 'https://app.example', 'x-api-key': secret };
  const down = await request(`${s.url}/api/v1/down`, { headers });
  t.equal(down.statusCode, 502, 'upstream unreachable → 502');
  t.match(await down.body.json(), { code: 'bad_gateway' });
  t.equal(down.headers['access-control-allow-origin'], 'https://app.example', 'with the CORS headers');
  const refused = await request(`${s.url}/api/v1/t/_status/401`, { headers });
  t.equal(refused.statusCode, 502, "the upstream refused the gateway's credential → 502");
  t.match(await refused.body.json(), { code: 'upstream_credential_rejected' });
  t.equal(refused.headers['access-control-allow-origin'], 'https://app.example', 'with the CORS headers');
  t.match(refused.headers.vary, /Origin/);
});
