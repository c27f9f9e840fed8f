// forward_auth: Keygate as the key check of a proxy in front of the upstream. A REAL nginx runs
// deploy/nginx-forward-auth.conf (the README's snippet) with auth_request in front of a recording
// upstream; Traefik's ForwardAuth and Envoy's ext_authz HTTP service are requests shaped like theirs.

import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { loadConfig } from '../src/config/load.js';
import { ConfigError, type ConfigIssue } from '../src/errors.js';
import { originalRequest } from '../src/forward-auth.js';
import { startStack, type Stack } from './helpers.js';
import { firstChunk, send, type Json } from './answer.js';
// @ts-expect-error plain ESM script without types (shared with the bench)
import { forwardAuthSnippet, skipWithoutNginx, startNginx } from '../bench/lib/nginx.js';

const SECRET = 'fa-secret-0123456789-abcdefghij';
const SECRET_HEADER = 'x-keygate-forward-secret';
const UPSTREAM_CREDENTIAL = 'Bearer upstream-dagu-token';

const ROUTES = `
routes:
  - { path: /api/v1/health, upstream: dagu, auth: none }
  - { path: /api/v1/dags, methods: [GET], upstream: dagu, role: viewer, workspace: { query: workspace } }
  - { path: "/api/v1/dags/{fileName}/start", methods: [POST], upstream: dagu, role: operator }
  - { path: /api/v1/events, methods: [GET], upstream: dagu, role: viewer, query_token: true }
  - { path: "/api/v1/stream/**", methods: [GET], upstream: dagu, role: viewer }
  - name: mcp
    path: /mcp
    upstream: dagu
    surface: mcp
    role: viewer
    jsonrpc:
      tools: { dagu_read: viewer, dagu_execute: operator }
      default_tool: deny
`;

const dir = mkdtempSync(join(tmpdir(), 'keygate-fwd-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

const FORWARD_AUTH = `forward_auth: { secret: "${SECRET}" }`;

/** A fresh directory under the test's own for one stack. */
function sub(name: string): string {
  const d = join(dir, name);
  mkdirSync(d, { recursive: true });
  return d;
}

t.test('the original request from each proxy form (pure)', async (t) => {
  const p = '/_keygate/auth';
  t.same(originalRequest('/_keygate/auth', p, 'GET', { 'x-original-uri': '/api/v1/dags?workspace=a', 'x-original-method': 'POST', 'x-original-host': 'dagu.example', host: 'keygate' }), {
    form: 'nginx', method: 'POST', target: '/api/v1/dags?workspace=a', host: 'dagu.example', client: undefined,
  }, 'nginx: X-Original-URI/-Method/-Host');
  t.same(originalRequest('/_keygate/auth', p, 'GET', { 'x-forwarded-uri': '/mcp', 'x-forwarded-method': 'delete', 'x-forwarded-host': 'gw.example', 'x-forwarded-for': '203.0.113.9, 10.0.0.7' }), {
    form: 'traefik', method: 'DELETE', target: '/mcp', host: 'gw.example', client: '10.0.0.7',
  }, 'Traefik: X-Forwarded-Method/-Uri/-Host; the client is the rightmost X-Forwarded-For (what the proxy saw)');
  t.same(originalRequest('/_keygate/auth/api/v1/dags?x=1', p, 'PATCH', { host: 'dagu.example' }), {
    form: 'envoy', method: 'PATCH', target: '/api/v1/dags?x=1', host: 'dagu.example', client: undefined,
  }, 'Envoy: the original path after the prefix, its own method and Host');
  // Traefik and Caddy pass the client's own headers on to the endpoint: a client can add another form
  const forged = { 'x-forwarded-uri': '/api/v1/dags/x/start', 'x-forwarded-method': 'POST', 'x-forwarded-host': 'gw.example', 'x-original-uri': '/api/v1/health', 'x-original-method': 'GET' };
  t.match(originalRequest('/_keygate/auth', p, 'GET', forged), /more than one description of the original request \(X-Original-URI \(nginx\) and X-Forwarded-Uri \(Traefik, Caddy\)\): a client may have sent one of them; set forward_auth\.proxy/, 'auto: two forms are refused, never resolved by a precedence');
  t.match(originalRequest('/_keygate/auth/api/v1/health', p, 'GET', { 'x-forwarded-uri': '/x' }), /more than one description .*a path below the endpoint \(Envoy\) and X-Forwarded-Uri/, 'Envoy path and a header');
  t.match(originalRequest('/_keygate/auth', p, 'GET', forged, 'traefik'), { form: 'traefik', method: 'POST', target: '/api/v1/dags/x/start', host: 'gw.example' }, 'proxy: traefik reads only its own form');
  t.match(originalRequest('/_keygate/auth', p, 'GET', forged, 'caddy'), { form: 'traefik', method: 'POST', target: '/api/v1/dags/x/start' }, "proxy: caddy is Traefik's form");
  t.match(originalRequest('/_keygate/auth', p, 'GET', forged, 'nginx'), { form: 'nginx', method: 'GET', target: '/api/v1/health' }, 'proxy: nginx reads only X-Original-*');
  t.match(originalRequest('/_keygate/auth/api/v1/dags', p, 'GET', forged, 'envoy'), { form: 'envoy', target: '/api/v1/dags' }, 'proxy: envoy reads only the path');
  t.match(originalRequest('/_keygate/auth', p, 'GET', { 'x-forwarded-uri': '/a' }, 'nginx'), /no original request in the form forward_auth\.proxy \(nginx\) sends: X-Original-URI/, 'the configured form missing: a reason');
  t.match(originalRequest('/_keygate/auth', p, 'GET', { 'x-original-uri': '/a' }, 'envoy'), /\(envoy\) sends: the original path appended/);
  t.match(originalRequest('/_keygate/auth', p, 'GET', { 'x-original-uri': '/a', 'x-forwarded-host': 'client-chosen.example', host: 'keygate' }), { form: 'nginx', host: 'keygate' }, "nginx: the host from X-Original-Host or Host, never a client's X-Forwarded-Host");
  t.match(originalRequest('/_keygate/auth', p, 'GET', { host: 'x' }), /no original request: send X-Original-URI/, 'nothing describes the request: a reason');
  t.match(originalRequest('/_keygate/auth', p, 'GET', { 'x-original-uri': '/a, /b' }), /must be one path/, 'two values joined by ", " are refused');
  t.match(originalRequest('/_keygate/auth', p, 'GET', { 'x-original-uri': 'http://evil/a' }), /must be one path starting with "\/"/, 'an absolute URI is refused');
  t.match(originalRequest('/_keygate/auth', p, 'GET', { 'x-original-uri': '/a', 'x-original-method': 'GET /b' }), /not an HTTP method/);
});

t.test('the README shows deploy/nginx-forward-auth.conf as shipped (the file this test runs)', async (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const snippet = readFileSync(new URL('../deploy/nginx-forward-auth.conf', import.meta.url), 'utf8');
  t.ok(readme.includes(`\`\`\`nginx\n${snippet}\`\`\`\n`), 'README.md carries the file verbatim in an nginx block');
});

t.test('config: forward_auth is validated with file:line:col', async (t) => {
  const cdir = mkdtempSync(join(tmpdir(), 'keygate-fwd-cfg-'));
  t.teardown(() => rmSync(cdir, { recursive: true, force: true }));
  const file = join(cdir, 'gateway.yaml');
  const issues = (yaml: string): ConfigIssue[] => {
    writeFileSync(file, `upstreams:\n  - { name: dagu, api_base_url: "http://127.0.0.1:1" }\nroutes:\n  - { path: /x, upstream: dagu }\n${yaml}`);
    try {
      loadConfig(file, {});
    } catch (err) {
      if (err instanceof ConfigError) return err.issues;
      throw err;
    }
    return [];
  };
  t.same(issues(''), [], 'absent: off, valid');
  t.equal(loadConfig(file, {}).forward_auth, undefined, 'absent = off');
  t.match(issues('forward_auth: {}'), [{ line: 5, col: 15, field: 'forward_auth.secret', message: /needs secret .* or allow_from/ }], 'neither secret nor allow_from');
  t.match(issues('forward_auth:\n  secret: short'), [{ line: 6, col: 11, field: 'forward_auth.secret', message: 'must be at least 20 characters (it is shorter)' }]);
  const bad = issues('forward_auth:\n  allow_from: [10.0.0.0/33, nonsense, "::1/64"]');
  t.match(bad, [
    { line: 6, col: 16, field: 'forward_auth.allow_from[0]', message: '"10.0.0.0/33": the prefix length must be 0 to 32' },
    { line: 6, col: 29, field: 'forward_auth.allow_from[1]', message: /not an IP address or CIDR range/ },
  ]);
  t.equal(bad.length, 2, 'a valid IPv6 range passes');
  t.match(issues(`forward_auth:\n  secret: "${SECRET}"\n  path: /x/`), [{ line: 7, col: 9, field: 'forward_auth.path', message: /does not match/ }], 'a path ending in "/"');
  t.match(issues(`forward_auth: { secret: "${SECRET}", path: /_keygate }`), [{ field: 'forward_auth.path', message: /would hide \/_keygate\/healthz/ }], 'the health endpoints stay reachable');
  t.match(issues(`forward_auth: { secret: "${SECRET}", secrt_header: x }`), [{ field: 'forward_auth.secrt_header', message: /did you mean "secret_header"/ }]);
  t.same(issues(`forward_auth: { secret: "${SECRET}", secret_header: X-Proxy-Secret, allow_from: [127.0.0.1, "10.0.0.0/8"] }`), []);
  t.match(loadConfig(file, {}).forward_auth, { path: '/_keygate/auth', secret_header: 'x-proxy-secret', allow_from: ['127.0.0.1', '10.0.0.0/8'] }, 'defaults; the header name in lower case');
  // keygate check (the built binary) says who may ask, never the secret
  const check = spawnSync(process.execPath, [fileURLToPath(new URL('../bin/keygate.js', import.meta.url)), 'check', '-c', file], { encoding: 'utf8', timeout: 60_000 });
  t.equal(check.status, 0, check.stderr);
  t.match(check.stdout, /\n {2}forward-auth: \/_keygate\/auth \(any one proxy form; shared secret in x-proxy-secret, from 127\.0\.0\.1, 10\.0\.0\.0\/8\)\n/);
  t.match(issues(`forward_auth: { secret: "${SECRET}", proxy: trafik }`), [{ line: 5, field: 'forward_auth.proxy', message: /auto, nginx, traefik, caddy, envoy/ }], 'an unknown proxy names the choices');
  t.same(issues(`forward_auth: { secret: "${SECRET}" }`), []);
  t.match(loadConfig(file, {}).forward_auth, { proxy: 'auto' }, 'auto by default');
  t.same(issues(`forward_auth: { secret: "${SECRET}", proxy: caddy }`), []);
  t.match(loadConfig(file, {}).forward_auth, { proxy: 'caddy' });
  t.notOk(check.stdout.includes(SECRET), 'not the secret');
  t.notOk(JSON.stringify(issues('forward_auth:\n  secret: short-secret-value')).includes('short-secret-value'), 'never echoes the secret');
});

t.test('with a real nginx (auth_request) in front of a recording upstream', { skip: skipWithoutNginx }, async (t) => {
  const s: Stack = await startStack(sub('nginx-stack'), { routes: ROUTES, yaml: FORWARD_AUTH });
  let nginx: Awaited<ReturnType<typeof startNginx>> | undefined;
  t.teardown(async () => {
    await nginx?.stop();
    await s.close();
  });
  const keygate = new URL(s.url).host;
  const dagu = new URL(s.dagu.url).host;
  nginx = await startNginx(join(dir, 'nginx'), (listen: string) => forwardAuthSnippet({ listen, keygate, dagu, secret: SECRET }));
  const via = (path: string, opts: Parameters<typeof send>[1] = {}) => send(nginx!.url + path, opts);

  const viewer = await s.key({ name: 'fwd-viewer', role: 'viewer' });
  const operator = await s.key({ name: 'fwd-operator', role: 'operator' });
  const teamA = await s.key({ name: 'fwd-team-a', role: 'viewer', workspaceAccess: { all: false, grants: [{ workspace: 'team-a', role: 'viewer' }] } });
  const limited = await s.key({ name: 'fwd-limited', role: 'viewer', rateLimit: 2 });

  await t.test('allowed: identity and the upstream credential arrive, the key does not', async (t) => {
    const before = s.dagu.received.length;
    const r = await via('/api/v1/dags?workspace=team-a', { headers: { 'x-api-key': viewer.secret, 'x-keygate-role': 'admin', 'x-keygate-key-id': 'forged' } });
    t.equal(r.status, 200, r.text);
    t.equal(s.dagu.received.length, before + 1, 'forwarded once, by nginx');
    const got = s.dagu.received.at(-1)!;
    t.equal(got.url, '/api/v1/dags?workspace=team-a', 'nginx forwarded the original target');
    t.match(got.headers, {
      'x-keygate-key-id': viewer.id,
      'x-keygate-key-name': 'fwd-viewer',
      'x-keygate-role': 'viewer',
      'x-keygate-workspace': 'team-a',
      'x-request-source': 'external_api',
      authorization: UPSTREAM_CREDENTIAL,
    }, 'identity headers from Keygate (the forged ones replaced), the credential set by nginx');
    t.equal(got.headers['x-api-key'], undefined, 'no X-API-Key upstream');
    t.notOk(JSON.stringify(got.rawHeaders).includes(viewer.secret), "the client's key never reaches the upstream");
    t.notOk(JSON.stringify(got.rawHeaders).includes(SECRET), 'nor the shared secret');
    t.match(r.headers['ratelimit'], /"per-key";r=\d+;t=\d+/, 'the rate-limit state reaches the client');

    const bearer = await via('/api/v1/dags/deploy.yaml/start', { method: 'POST', headers: { authorization: `Bearer ${operator.secret}` }, body: '{}' });
    t.equal(bearer.status, 200, bearer.text);
    const post = s.dagu.received.at(-1)!;
    t.match(post, { method: 'POST', url: '/api/v1/dags/deploy.yaml/start', headers: { authorization: UPSTREAM_CREDENTIAL, 'x-keygate-role': 'operator' } }, 'a key in Authorization: replaced by the upstream credential; the method and body pass');
    t.equal(post.body.toString(), '{}', 'the body went to the upstream (not to Keygate)');
    t.notOk(JSON.stringify(post.rawHeaders).includes(operator.secret));

    const open = await via('/api/v1/health');
    t.equal(open.status, 200, 'auth: none route without a key');
    t.equal(s.dagu.received.at(-1)!.headers['x-keygate-key-id'], undefined, 'no identity on auth: none');
  });

  await t.test('a server-sent event stream passes as it comes (not held in nginx buffers)', async (t) => {
    const { status, contentType, first } = await firstChunk(`${nginx!.url}/api/v1/stream/_sse?count=0&interval=600000`, { 'x-api-key': viewer.secret });
    t.equal(status, 200);
    t.match(contentType, /^text\/event-stream/);
    t.equal(first, ': connected\n\n', 'the first bytes arrive while the stream is still open');
  });

  await t.test('refused: each status and Keygate\'s JSON body reach the client; nothing reaches the upstream', async (t) => {
    const before = s.dagu.received.length;
    const missing = await via('/api/v1/dags');
    t.equal(missing.status, 401);
    t.match(missing.json, { code: 'unauthorized', message: /API key required/ });
    t.match(missing.headers['www-authenticate'], /^Bearer realm="keygate"$/, 'WWW-Authenticate passed on, once');

    const unknown = await via('/api/v1/dags', { headers: { 'x-api-key': 'dg_notakeyatall0123456789' } });
    t.equal(unknown.status, 401);
    t.match(unknown.json, { code: 'unauthorized', message: 'API key is not valid' });

    const role = await via('/api/v1/dags/x.yaml/start', { method: 'POST', headers: { 'x-api-key': viewer.secret } });
    t.equal(role.status, 403, role.text);
    t.match(role.json, { code: 'forbidden' });

    const ws = await via('/api/v1/dags', { headers: { 'x-api-key': teamA.secret } });
    t.equal(ws.status, 403, ws.text);
    t.match(ws.json, { code: 'workspace_required', message: /limited to workspaces \(team-a\)/ }, 'the workspace refusal');
    const other = await via('/api/v1/dags?workspace=team-b', { headers: { 'x-api-key': teamA.secret } });
    t.equal(other.status, 404, "another workspace: Dagu's 404, which auth_request alone would turn into 500");
    t.match(other.json, { code: 'not_found' });

    const noRoute = await via('/api/v1/nothing-here', { headers: { 'x-api-key': viewer.secret } });
    t.equal(noRoute.status, 404, 'a status auth_request alone would turn into 500');
    t.match(noRoute.json, { code: 'not_found' });

    const long = await via(`/api/v1/${'x'.repeat(6000)}`, { headers: { 'x-api-key': viewer.secret } });
    t.equal(long.status, 404, "a long path: Keygate's refusal headers stay within nginx's header buffer");
    t.match(long.json, { code: 'not_found', message: /^no route for GET \/api\/v1\/x+…$/ });
    t.equal(long.json?.message.length, 1001, 'the message cut at 1,000 characters (+ "…") in X-Keygate-Error');

    const mcp = await via('/mcp', { method: 'POST', headers: { 'x-api-key': viewer.secret, 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' });
    t.equal(mcp.status, 400, 'a JSON-RPC route: nginx does not pass the body, so the policy cannot be checked: closed');
    t.match(mcp.json, { code: 'bad_request', message: /needs the call/ });

    const token = await via(`/api/v1/events?token=${viewer.secret}`);
    t.equal(token.status, 400, 'a key in ?token= would be forwarded by nginx in the URL');
    t.equal(s.dagu.received.length, before, 'no refused request reached the upstream');
    t.equal(token.text.includes(viewer.secret), false, 'the refusal does not echo the key');
  });

  await t.test('rate limited: 429 with Retry-After reaches the client', async (t) => {
    for (let i = 0; i < 2; i++) t.equal((await via('/api/v1/dags', { headers: { 'x-api-key': limited.secret } })).status, 200, `request ${i + 1} of 2`);
    const before = s.dagu.received.length;
    const r = await via('/api/v1/dags', { headers: { 'x-api-key': limited.secret } });
    t.equal(r.status, 429, r.text);
    t.match(r.json, { code: 'rate_limited', message: /rate limit of 2 requests per minute/ });
    t.match(r.headers['retry-after'], /^\d+$/);
    t.match(r.headers['ratelimit'], /"per-key";r=0;/);
    t.equal(s.dagu.received.length, before, 'not forwarded');
  });

  await t.test('a quota: 429 quota_exceeded reaches the client, the quota headers too', async (t) => {
    const trial = await s.key({ name: 'fwd-trial', role: 'viewer', quota: { remaining: 1 } });
    const ok = await via('/api/v1/dags', { headers: { 'x-api-key': trial.secret } });
    t.equal(ok.status, 200, ok.text);
    t.match(ok.headers, { 'x-quota-period': 'none', 'x-quota-remaining': '0' }, 'what remains, on the allowed response');
    const before = s.dagu.received.length;
    const r = await via('/api/v1/dags', { headers: { 'x-api-key': trial.secret } });
    t.equal(r.status, 429, r.text);
    t.match(r.json, { code: 'quota_exceeded' });
    t.equal(r.headers['x-quota-remaining'], '0');
    t.equal(s.dagu.received.length, before, 'not forwarded');
  });

  await t.test('usage counted, access log written with the original request, no secret logged', async (t) => {
    await s.gateway.flushUsage();
    t.equal((await s.gateway.keys.get(viewer.id)).requestCount, 2, 'viewer: two allowed requests, the stream included (its refusals are not uses)');
    t.equal((await s.gateway.keys.get(operator.id)).requestCount, 1);
    t.equal((await s.gateway.keys.get(limited.id)).requestCount, 2, 'limited: the two allowed ones');
    const lines = s.logs.filter((l) => l.includes('"msg":"request"')).map((l) => JSON.parse(l) as Json);
    t.ok(lines.some((l) => l.method === 'POST' && l.path === '/api/v1/dags/deploy.yaml/start' && l.status === 200 && l.decision === 'allowed' && l.key_id === operator.id), 'the original method and path in the access log');
    t.ok(lines.every((l) => l.via === 'forward_auth' && l.upstream === undefined && l.upstream_ms === undefined), 'every line marked as a forward-auth answer, no upstream of its own');
    t.ok(lines.some((l) => l.status === 429 && l.decision === 'rate_limited' && l.key_id === limited.id));
    t.ok(lines.every((l) => l.remote_address === '127.0.0.1'), 'the client address from X-Forwarded-For');
    const all = s.logs.join('\n');
    for (const x of [...s.secrets, SECRET]) t.notOk(all.includes(x), 'no key or shared secret in any log line');
  });

  await t.test('the endpoint itself refuses anyone but the proxy', async (t) => {
    const direct = await send(`${s.url}/_keygate/auth`, { headers: { 'x-original-uri': '/api/v1/dags', 'x-api-key': viewer.secret } });
    t.equal(direct.status, 403);
    t.match(direct.json, { code: 'forward_auth_untrusted' });
    const wrong = await send(`${s.url}/_keygate/auth`, { headers: { 'x-original-uri': '/api/v1/dags', 'x-api-key': viewer.secret, [SECRET_HEADER]: `${SECRET}x` } });
    t.equal(wrong.status, 403, 'a wrong secret');
    t.equal(wrong.headers['x-keygate-key-id'], undefined, 'no identity');
    t.notOk(s.logs.join('\n').includes(`${SECRET}x`), 'the wrong secret is not logged either');
    const ok = await send(`${s.url}/_keygate/auth`, { headers: { 'x-original-uri': '/api/v1/dags', 'x-api-key': viewer.secret, [SECRET_HEADER]: SECRET } });
    t.equal(ok.status, 200, 'the proxy, as nginx calls it');
    t.equal(ok.text, '', 'an empty body');
    t.notOk(JSON.stringify(ok.headers).includes(viewer.secret), 'the answer never carries the key');
  });

  await t.test('Keygate down: nginx answers 503, closed', async (t) => {
    await s.gateway.close(1000);
    const r = await via('/api/v1/dags', { headers: { 'x-api-key': viewer.secret } });
    t.equal(r.status, 503);
    t.match(r.json, { code: 'unavailable' });
  });
});

t.test('Traefik ForwardAuth and Envoy ext_authz forms', async (t) => {
  const s = await startStack(sub('forms'), { routes: ROUTES, yaml: FORWARD_AUTH });
  t.teardown(() => s.close());
  const viewer = await s.key({ name: 'forms-viewer', role: 'viewer' });
  const operator = await s.key({ name: 'forms-operator', role: 'operator' });
  const auth = `${s.url}/_keygate/auth`;
  const before = s.dagu.received.length;

  await t.test('Traefik: GET with X-Forwarded-Method/-Uri/-Host and the original headers', async (t) => {
    // Traefik sends a GET to the address with the client's headers and its X-Forwarded-* ones
    const traefik = (key: string, method: string, uri: string) =>
      send(auth, { headers: { 'x-api-key': key, 'x-forwarded-method': method, 'x-forwarded-proto': 'https', 'x-forwarded-host': 'dagu.example', 'x-forwarded-uri': uri, 'x-forwarded-for': '198.51.100.4', [SECRET_HEADER]: SECRET } });
    const ok = await traefik(operator.secret, 'POST', '/api/v1/dags/a.yaml/start');
    t.equal(ok.status, 200, ok.text);
    t.match(ok.headers, { 'x-keygate-key-id': operator.id, 'x-keygate-role': 'operator', 'x-request-source': 'external_api', authorization: UPSTREAM_CREDENTIAL }, 'authResponseHeaders to copy');
    const denied = await traefik(viewer.secret, 'POST', '/api/v1/dags/a.yaml/start');
    t.equal(denied.status, 403, 'Traefik passes this status and body to the client');
    t.match(denied.json, { code: 'forbidden' });
    t.match(denied.headers, { 'x-keygate-status': '403', 'x-keygate-error': denied.text });
    t.equal((await traefik(viewer.secret, 'GET', '/api/v1/dags')).status, 200, 'the method comes from X-Forwarded-Method');
    const lines = s.logs.filter((l) => l.includes('"msg":"request"')).map((l) => JSON.parse(l) as Json);
    t.equal(lines.at(-1)?.remote_address, '198.51.100.4', 'the client address as the proxy reports it');
    // forwardBody: true — Traefik still asks with a GET, the call in its body
    const call = (key: string) =>
      send(auth, { method: 'GET', headers: { 'x-api-key': key, 'x-forwarded-method': 'POST', 'x-forwarded-uri': '/mcp', 'x-forwarded-host': 'dagu.example', 'content-type': 'application/json', [SECRET_HEADER]: SECRET }, body: '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"dagu_execute"}}' });
    t.equal((await call(viewer.secret)).status, 403, 'with the body passed, the tool policy holds');
    t.equal((await call(operator.secret)).status, 200);
  });

  await t.test('Envoy: the original method, path after the prefix, Host; the body when passed', async (t) => {
    const envoy = (key: string, method: string, path: string, body?: string) =>
      send(auth + path, { method, headers: { 'x-api-key': key, host: 'dagu.example', [SECRET_HEADER]: SECRET, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body !== undefined ? { body } : {}) });
    const ok = await envoy(operator.secret, 'POST', '/api/v1/dags/a.yaml/start');
    t.equal(ok.status, 200, ok.text);
    t.equal(ok.headers['authorization'], UPSTREAM_CREDENTIAL, 'allowed_upstream_headers to copy');
    t.equal((await envoy(viewer.secret, 'POST', '/api/v1/dags/a.yaml/start')).status, 403, 'role checked on the original method');
    t.equal((await envoy(viewer.secret, 'GET', '/api/v1/dags?workspace=w')).status, 200);
    // with_request_body: the JSON-RPC policy sees the call
    const list = await envoy(viewer.secret, 'POST', '/mcp', '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"dagu_read"}}');
    t.equal(list.status, 200, list.text);
    const exec = await envoy(viewer.secret, 'POST', '/mcp', '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"dagu_execute"}}');
    t.equal(exec.status, 403, 'the tool needs operator');
    t.match(exec.json, { jsonrpc: '2.0', id: 7, error: { code: Number, message: /./ } }, 'a JSON-RPC error with the call id, as the proxied route answers');
    t.equal((await envoy(operator.secret, 'POST', '/mcp', '{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"dagu_execute"}}')).status, 200);
  });

  await t.test('malformed or foreign asks', async (t) => {
    const none = await send(auth, { headers: { [SECRET_HEADER]: SECRET } });
    t.equal(none.status, 400);
    t.match(none.json, { code: 'bad_request', message: /no original request/ });
    t.equal(none.headers['x-keygate-status'], '400');
    t.equal((await send(`${s.url}/_keygate/authx`, { headers: { [SECRET_HEADER]: SECRET } })).status, 404, 'a longer path is not the endpoint');
    t.equal((await send(`${s.url}/_keygate/healthz`)).status, 200, 'health still answers');
  });
  t.equal(s.dagu.received.length, before, 'Keygate forwarded nothing itself');
});

t.test('allow_from: only the proxy\'s addresses; secret optional then', async (t) => {
  const s = await startStack(sub('allow'), { routes: ROUTES, yaml: 'forward_auth: { allow_from: ["10.0.0.0/8"] }' });
  t.teardown(() => s.close());
  const viewer = await s.key({ name: 'allow-viewer', role: 'viewer' });
  const ask = { headers: { 'x-original-uri': '/api/v1/dags', 'x-api-key': viewer.secret } };
  const r = await send(`${s.url}/_keygate/auth`, ask);
  t.equal(r.status, 403, '127.0.0.1 is not in 10.0.0.0/8');
  t.match(r.json, { code: 'forward_auth_untrusted' });
  const file = join(dir, 'allow', 'gateway.yaml');
  writeFileSync(file, readFileSync(file, 'utf8').replace('allow_from: ["10.0.0.0/8"]', 'allow_from: ["10.0.0.0/8", "127.0.0.1"]'));
  await s.gateway.reload(loadConfig(file, { DAGU_URL: s.dagu.url, DAGEN_URL: s.dagen.url, DAGU_TOKEN: 'upstream-dagu-token' }));
  const after = await send(`${s.url}/_keygate/auth`, ask);
  t.equal(after.status, 200, 'a reload makes the new list live; no secret configured, none needed');
  t.equal(after.headers['x-keygate-key-id'], viewer.id);
});
