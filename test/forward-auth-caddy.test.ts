// forward_auth with a REAL Caddy (Debian's caddy, 2.6.2 here) running deploy/Caddyfile.forward-auth
// (the README's snippet) in front of a recording upstream. Caddy's forward_auth asks as Traefik's
// ForwardAuth does (a GET with X-Forwarded-Method/-Uri/-Host), so this is that form from a real proxy.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { startStack } from './helpers.js';
import { firstChunk, send, type Json } from './answer.js';
import { caddySite, skipWithoutCaddy, startCaddy, type Caddy } from './caddy.js';

const SECRET = 'caddy-fa-secret-0123456789-abcdef';
const UPSTREAM_CREDENTIAL = 'Bearer upstream-dagu-token';

const ROUTES = `
routes:
  - { path: /api/v1/health, upstream: dagu, auth: none }
  - { path: /api/v1/dags, methods: [GET], upstream: dagu, role: viewer, workspace: { query: workspace } }
  - { path: "/api/v1/dags/{fileName}/start", methods: [POST], upstream: dagu, role: operator }
  - { path: "/api/v1/stream/**", methods: [GET], upstream: dagu, role: viewer }
  - { path: /mcp, upstream: dagu, surface: mcp, role: viewer, jsonrpc: { tools: { dagu_read: viewer }, default_tool: deny } }
`;

const dir = mkdtempSync(join(tmpdir(), 'keygate-caddy-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('the README shows deploy/Caddyfile.forward-auth as shipped (the file this test runs)', async (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const file = readFileSync(new URL('../deploy/Caddyfile.forward-auth', import.meta.url), 'utf8');
  t.ok(readme.includes(`\`\`\`caddyfile\n${file}\`\`\`\n`), 'README.md carries the file verbatim in a caddyfile block');
});

t.test('with a real Caddy (forward_auth) in front of a recording upstream', { skip: skipWithoutCaddy }, async (t) => {
  const s = await startStack(join(dir), { routes: ROUTES, yaml: `forward_auth: { secret: "${SECRET}", proxy: caddy }` });
  let caddy: Caddy | undefined;
  t.teardown(async () => {
    await caddy?.stop();
    await s.close();
  });
  caddy = await startCaddy(join(dir, 'caddy'), (listen) => caddySite({ listen, keygate: new URL(s.url).host, dagu: new URL(s.dagu.url).host, secret: SECRET }));
  const via = (path: string, opts: Parameters<typeof send>[1] = {}) => send(caddy!.url + path, opts);
  const viewer = await s.key({ name: 'caddy-viewer', role: 'viewer' });
  const operator = await s.key({ name: 'caddy-operator', role: 'operator' });
  const limited = await s.key({ name: 'caddy-limited', role: 'viewer', rateLimit: 2 });
  const FORGED = { 'x-keygate-role': 'admin', 'x-keygate-key-id': 'forged', 'x-keygate-workspace': 'forged', 'x-keygate-attribution': 'forged', 'x-request-source': 'forged', 'x-keygate-key-name': 'forged' };

  await t.test('allowed: identity and the credential arrive, replacing forged ones; the key does not', async (t) => {
    const before = s.dagu.received.length;
    const r = await via('/api/v1/dags?workspace=team-a', { headers: { 'x-api-key': viewer.secret, ...FORGED } });
    t.equal(r.status, 200, r.text);
    t.equal(s.dagu.received.length, before + 1, 'forwarded once, by Caddy');
    const got = s.dagu.received.at(-1)!;
    t.equal(got.url, '/api/v1/dags?workspace=team-a', 'the original target');
    t.match(got.headers, { 'x-keygate-key-id': viewer.id, 'x-keygate-key-name': 'caddy-viewer', 'x-keygate-role': 'viewer', 'x-keygate-workspace': 'team-a', 'x-request-source': 'external_api', authorization: UPSTREAM_CREDENTIAL });
    t.equal(got.headers['x-api-key'], undefined, 'no X-API-Key upstream');
    const raw = JSON.stringify(got.rawHeaders);
    t.notOk(raw.includes(viewer.secret), "the client's key never reaches the upstream");
    t.notOk(raw.includes(SECRET), 'nor the shared secret');
    t.notOk(raw.includes('forged'), 'no forged identity header survives');
    t.notOk(raw.includes('{http.'), 'no Caddy placeholder reaches the upstream');

    const noWorkspace = await via('/api/v1/dags', { headers: { 'x-api-key': viewer.secret, ...FORGED } });
    t.equal(noWorkspace.status, 200, noWorkspace.text);
    t.equal(s.dagu.received.at(-1)!.headers['x-keygate-workspace'], '', "no workspace: the client's forged value replaced by an empty one");

    const bearer = await via('/api/v1/dags/deploy.yaml/start', { method: 'POST', headers: { authorization: `Bearer ${operator.secret}`, 'content-type': 'application/json' }, body: '{"params":"x"}' });
    t.equal(bearer.status, 200, bearer.text);
    const post = s.dagu.received.at(-1)!;
    t.match(post, { method: 'POST', url: '/api/v1/dags/deploy.yaml/start', headers: { authorization: UPSTREAM_CREDENTIAL, 'x-keygate-role': 'operator' } }, 'a key in Authorization replaced by the credential');
    t.equal(post.body.toString(), '{"params":"x"}', 'the body went to the upstream');
    t.notOk(JSON.stringify(post.rawHeaders).includes(operator.secret));

    const open = await via('/api/v1/health', { headers: { authorization: 'Bearer client-own-token', ...FORGED } });
    t.equal(open.status, 200, 'an auth: none route, no key');
    const openGot = s.dagu.received.at(-1)!;
    t.equal(openGot.headers['x-keygate-role'], '', 'no identity on auth: none, and no forged one');
    t.notOk(JSON.stringify(openGot.rawHeaders).includes('client-own-token'), "the client's Authorization does not pass (the route does not set pass_authorization)");
  });

  await t.test("a client's own X-Forwarded-Uri/-Method or X-Original-URI cannot change what is checked", async (t) => {
    // Caddy passes the client's headers to the endpoint and sets only X-Forwarded-Method/-Uri/-Host:
    // with proxy: caddy the X-Original-* a client adds are never read (with auto: 400, test/forward-auth.test.ts)
    const before = s.dagu.received.length;
    const r = await via('/api/v1/dags/x.yaml/start', { method: 'POST', headers: { 'x-api-key': viewer.secret, 'x-forwarded-uri': '/api/v1/health', 'x-forwarded-method': 'GET', 'x-original-uri': '/api/v1/health' } });
    t.equal(r.status, 403, r.text);
    t.match(r.json, { code: 'forbidden' });
    t.equal(s.dagu.received.length, before, 'not forwarded');
  });

  await t.test("refused: each status with Keygate's JSON body and headers; nothing reaches the upstream", async (t) => {
    const before = s.dagu.received.length;
    const missing = await via('/api/v1/dags');
    t.equal(missing.status, 401);
    t.match(missing.json, { code: 'unauthorized', message: /API key required/ });
    t.match(missing.headers['www-authenticate'], /^Bearer realm="keygate"$/);
    const unknown = await via('/api/v1/dags', { headers: { 'x-api-key': 'dg_notakeyatall0123456789' } });
    t.equal(unknown.status, 401);
    t.match(unknown.json, { code: 'unauthorized', message: 'API key is not valid' });
    const noRoute = await via('/api/v1/nothing-here', { headers: { 'x-api-key': viewer.secret } });
    t.equal(noRoute.status, 404);
    t.match(noRoute.json, { code: 'not_found' });
    const mcp = await via('/mcp', { method: 'POST', headers: { 'x-api-key': viewer.secret, 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' });
    t.equal(mcp.status, 400, "Caddy's ask carries no body, so a JSON-RPC policy cannot be checked: closed");
    for (let i = 0; i < 2; i++) t.equal((await via('/api/v1/dags', { headers: { 'x-api-key': limited.secret } })).status, 200, `limited key, request ${i + 1} of 2`);
    const before429 = s.dagu.received.length;
    const limitedR = await via('/api/v1/dags', { headers: { 'x-api-key': limited.secret } });
    t.equal(limitedR.status, 429, limitedR.text);
    t.match(limitedR.json, { code: 'rate_limited' });
    t.match(limitedR.headers['retry-after'], /^\d+$/);
    t.match(limitedR.headers['ratelimit'], /"per-key";r=0;/);
    const trial = await s.key({ name: 'caddy-trial', role: 'viewer', quota: { remaining: 1 } });
    t.equal((await via('/api/v1/dags', { headers: { 'x-api-key': trial.secret } })).status, 200);
    const quota = await via('/api/v1/dags', { headers: { 'x-api-key': trial.secret } });
    t.equal(quota.status, 429, quota.text);
    t.match(quota.json, { code: 'quota_exceeded' });
    t.match(quota.headers, { 'x-quota-remaining': '0', 'x-quota-period': 'none' });
    t.equal(s.dagu.received.length, before429 + 1, 'of the refused requests only none reached the upstream (the +1 is the trial key\'s one allowed call)');
    t.ok(before <= before429, 'bookkeeping');
  });

  await t.test('a server-sent event stream passes as it comes', async (t) => {
    const { status, contentType, first } = await firstChunk(`${caddy!.url}/api/v1/stream/_sse?count=0&interval=600000`, { 'x-api-key': viewer.secret });
    t.equal(status, 200);
    t.match(contentType, /^text\/event-stream/);
    t.equal(first, ': connected\n\n', 'the first bytes arrive while the stream is still open');
  });

  await t.test('usage counted, access log marks forward-auth with the original request, no secret logged', async (t) => {
    await s.gateway.flushUsage();
    t.equal((await s.gateway.keys.get(operator.id)).requestCount, 1);
    t.equal((await s.gateway.keys.get(limited.id)).requestCount, 2, 'the refused third is not a use');
    const lines = s.logs.filter((l) => l.includes('"msg":"request"')).map((l) => JSON.parse(l) as Json);
    t.ok(lines.some((l) => l.via === 'forward_auth' && l.method === 'POST' && l.path === '/api/v1/dags/deploy.yaml/start' && l.status === 200 && l.key_id === operator.id));
    t.ok(lines.every((l) => l.remote_address === '127.0.0.1'));
    const all = s.logs.join('\n') + caddy!.output();
    for (const x of [...s.secrets, SECRET]) t.notOk(all.includes(x), 'no key or shared secret in any log line (Keygate or Caddy)');
  });

  await t.test('Keygate down: Caddy answers 502 and forwards nothing', async (t) => {
    await s.gateway.close(1000);
    const before = s.dagu.received.length;
    const r = await via('/api/v1/dags', { headers: { 'x-api-key': viewer.secret } });
    t.equal(r.status, 502);
    t.equal(s.dagu.received.length, before, 'closed, never open');
  });
});
