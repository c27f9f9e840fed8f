// Header hygiene, over raw sockets (what a client really sends, unnormalised): underscore header
// names, method/path override headers, credentials in the query string, the admin listener's Host
// allow-list (DNS rebinding) and the public listener's failed-lookup throttle.

import t from 'tap';
import { connect } from 'node:net';
import { hostAllowed } from '../src/admin/server.js';
import { headersObject, upstreamRequestHeaderList } from '../src/proxy/headers.js';
import { credentialInQuery } from '../src/routes/query.js';
import { startStack, type Stack } from './helpers.js';

/** One raw HTTP/1.1 exchange; `from`: the local address to connect from (127.0.0.x). */
function raw(url: string, request: string, from?: string): Promise<{ status: number; head: string; body: string }> {
  const { port, hostname } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect({ port: Number(port), host: hostname, ...(from ? { localAddress: from } : {}) }, () => socket.write(request));
    let data = '';
    socket.setEncoding('latin1');
    socket.on('data', (d) => {
      data += d;
      // a WebSocket answer (101) stays open: enough once the head is in
      if (data.startsWith('HTTP/1.1 101') && data.includes('\r\n\r\n')) socket.destroy();
    });
    socket.on('error', reject);
    socket.on('close', () => {
      const end = data.indexOf('\r\n\r\n');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0), head: data.slice(0, end), body: data.slice(end + 4) });
    });
  });
}

const ROUTES = `
routes:
  - { path: "/api/v1/t/**", upstream: dagu, strip_prefix: /api/v1/t }
  - { path: "/override/**", upstream: dagu, pass_headers: [X-HTTP-Method-Override] }
  - { path: "/events/**", upstream: dagu, query_token: true }
  - { path: "/open/**", upstream: dagu, auth: none }
`;

let s: Stack;
t.before(async () => {
  s = await startStack(t.testdir(), { routes: ROUTES, listen: 'max_failed_auth: 3', admin: 'allowed_hosts: [keygate.internal]' });
});
t.teardown(() => s.close());

t.test('unit: the rules behind the headers', async (t) => {
  const fwd = { remoteAddress: '127.0.0.1', proto: 'http' as const, host: 'gw', trustForwarded: false };
  const incoming = { x_keygate_role: 'admin', x_forwarded_for: '1.2.3.4', x_api_key: 'dg_x', x_custom: 'v', 'x-http-method-override': 'DELETE', 'x-original-url': '/admin', 'x-rewrite-url': '/admin', 'x-http-method': 'PUT', 'x-method-override': 'PATCH', 'x-ok': 'yes' };
  const upstreamRequestHeaders = (...args: Parameters<typeof upstreamRequestHeaderList>) => headersObject(upstreamRequestHeaderList(...args));
  const drop = upstreamRequestHeaders(incoming, 'up', undefined, undefined, fwd);
  t.same(Object.keys(drop).sort(), ['host', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-ok'].sort(), 'default: underscores and overrides dropped');
  t.equal(drop['x-forwarded-for'], '127.0.0.1', 'the gateway\'s own X-Forwarded-For only');
  const allow = upstreamRequestHeaders(incoming, 'up', undefined, undefined, fwd, false, { underscores: 'allow', pass: ['x-http-method-override'] });
  t.equal(allow.x_custom, 'v', 'allow: an ordinary underscore name passes');
  t.equal(allow['x-http-method-override'], 'DELETE', 'a listed override passes');
  for (const name of ['x_keygate_role', 'x_forwarded_for', 'x_api_key', 'x-original-url', 'x-rewrite-url', 'x-http-method', 'x-method-override']) {
    t.equal(allow[name], undefined, `allow: ${name} still removed (it reads as a header the gateway removes)`);
  }
  t.equal(upstreamRequestHeaders({ x_http_method_override: 'DELETE' }, 'up', undefined, undefined, fwd, false, { underscores: 'allow' }).x_http_method_override, undefined, 'allow: an override spelt with _ is an override');

  // the list undici gets: the upstream's credential replaces a client header of its name, never joins it
  const list = upstreamRequestHeaderList({ 'x-upstream-token': 'from-the-client', authorization: 'Bearer client', 'x-ok': 'yes' }, 'up', ['x-upstream-token', 'the-credential'], undefined, fwd, true);
  const named = (n: string) => list.flatMap((v, i) => (i % 2 === 0 && v === n ? [list[i + 1]] : []));
  t.same(named('x-upstream-token'), ['the-credential'], 'a client header named like the credential is not sent beside it');
  t.same(named('authorization'), ['Bearer client'], 'pass_authorization keeps the client Authorization when the credential is another header');
  const both = upstreamRequestHeaderList({ authorization: 'Bearer client' }, 'up', ['authorization', 'Bearer upstream'], undefined, fwd, true);
  t.same(both.flatMap((v, i) => (i % 2 === 0 && v === 'authorization' ? [both[i + 1]] : [])), ['Bearer upstream'], 'and the credential wins when it is Authorization itself');
  t.equal(list.length % 2, 0, 'name/value pairs');

  const secret = 'dg_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG';
  t.match(credentialInQuery(`token=${secret}`, undefined), /"token" carries a credential/);
  for (const q of ['api_key=x', 'apikey=x', 'apiKey=x', 'API_KEY=x', 'access_token=x', 'Access-Token=x', 'auth_token=x', 'jwt=x', 'a=1&Token=x', 'to%6Ben=x', 'x-api-key=y', 'key=z']) t.ok(credentialInQuery(q, undefined), `named: ${q}`);
  t.match(credentialInQuery(`q=${secret}`, secret), /carries the API key/, 'the presented key anywhere');
  t.match(credentialInQuery(`q=${encodeURIComponent(secret).replace('_', '%5F')}`, secret), /carries the API key/, 'encoded');
  t.equal(credentialInQuery('workspace=a&page=2&tokens_used=3', secret), undefined, 'ordinary parameters');
  t.equal(credentialInQuery('', secret), undefined);

  const hosts = new Set(['keygate.internal']);
  for (const h of ['127.0.0.1:8081', '127.0.0.1', 'localhost:8081', 'LOCALHOST', 'localhost.', '[::1]:8081', '[::1]', '10.1.2.3:9', 'keygate.internal', 'KEYGATE.internal:8081', undefined]) t.ok(hostAllowed(h, hosts), `Host ${String(h)} answered`);
  for (const h of ['evil.example', 'evil.example:8081', 'localhost.evil.example', '127.0.0.1.nip.io', 'keygate.internal.evil', '[::1', '[::1]x', '']) t.notOk(hostAllowed(h, hosts), `Host ${h} refused`);
});

t.test('underscore header names are not forwarded (default drop), on HTTP and WebSocket', async (t) => {
  const { secret } = await s.key({ name: 'hdr', role: 'viewer' });
  const headers = `X_Keygate_Role: admin\r\nX_Forwarded_For: 6.6.6.6\r\nX_API_Key: ${secret}\r\nX_Custom: 1\r\nX-Ok: yes\r\n`;
  const r = await raw(s.url, `GET /api/v1/t/x HTTP/1.1\r\nHost: gw\r\nX-API-Key: ${secret}\r\n${headers}Connection: close\r\n\r\n`);
  t.equal(r.status, 200);
  const got = s.dagu.received.at(-1)!;
  t.same(got.rawHeaders.filter((_h, i) => i % 2 === 0).filter((h) => h.includes('_')), [], 'no header name with "_" reached the upstream');
  t.equal(got.headers['x-ok'], 'yes');
  t.equal(got.headers['x-keygate-role'], 'viewer');

  const ws = await raw(s.url, `GET /api/v1/t/ws HTTP/1.1\r\nHost: gw\r\nX-API-Key: ${secret}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${headers}\r\n`);
  t.equal(ws.status, 101, 'the upgrade went through');
  const up = s.dagu.received.at(-1)!;
  t.equal(up.path, '/api/v1/ws', 'the upgrade reached the upstream');
  t.same(up.rawHeaders.filter((_h, i) => i % 2 === 0).filter((h) => h.includes('_')), [], 'WebSocket: none either');
});

t.test('method and path override headers are removed unless the route passes them', async (t) => {
  const { secret } = await s.key({ name: 'ovr', role: 'viewer' });
  const overrides = 'X-HTTP-Method-Override: DELETE\r\nX-HTTP-Method: DELETE\r\nX-Method-Override: DELETE\r\nX-Original-URL: /api/v1/admin\r\nX-Rewrite-URL: /api/v1/admin\r\nX-Original-Method: DELETE\r\nX-Forwarded-Prefix: /admin\r\n';
  t.equal((await raw(s.url, `GET /api/v1/t/x HTTP/1.1\r\nHost: gw\r\nX-API-Key: ${secret}\r\n${overrides}Connection: close\r\n\r\n`)).status, 200);
  const h = s.dagu.received.at(-1)!.headers;
  for (const name of ['x-http-method-override', 'x-http-method', 'x-method-override', 'x-original-url', 'x-rewrite-url', 'x-original-method', 'x-forwarded-prefix']) t.equal(h[name], undefined, `${name} removed`);
  t.equal((await raw(s.url, `GET /override/x HTTP/1.1\r\nHost: gw\r\nX-API-Key: ${secret}\r\n${overrides}Connection: close\r\n\r\n`)).status, 200);
  const passed = s.dagu.received.at(-1)!.headers;
  t.equal(passed['x-http-method-override'], 'DELETE', 'pass_headers: the listed one reaches the upstream');
  t.equal(passed['x-original-url'], undefined, 'the others still do not');
});

t.test('a credential in the query string is refused with 400, not forwarded into upstream logs', async (t) => {
  const { secret } = await s.key({ name: 'qry', role: 'viewer' });
  const before = s.dagu.received.length;
  const cases: [string, string][] = [
    [`/api/v1/t/x?token=${secret}`, `X-API-Key: ${secret}\r\n`],
    [`/api/v1/t/x?token=${secret}`, ''],
    [`/api/v1/t/x?api_key=${secret}`, ''],
    [`/api/v1/t/x?access_token=abc`, `X-API-Key: ${secret}\r\n`],
    [`/api/v1/t/x?q=${secret}`, `X-API-Key: ${secret}\r\n`],
    [`/open/x?token=${secret}`, ''],
    [`/events/x?access_token=${secret}`, ''],
  ];
  for (const [target, header] of cases) {
    const r = await raw(s.url, `GET ${target} HTTP/1.1\r\nHost: gw\r\n${header}Connection: close\r\n\r\n`);
    t.equal(r.status, 400, `${target.replace(secret, '<key>')}${header ? ' (+ header key)' : ''}: 400`);
    t.match(JSON.parse(r.body), { code: 'bad_request' });
    t.notOk(r.body.includes(secret), 'the key is not echoed');
  }
  t.equal(s.dagu.received.length, before, 'none reached the upstream');
  t.equal((await raw(s.url, `GET /events/x?token=${secret}&topic=a HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n`)).status, 200, '?token= where the route accepts it');
  t.equal(s.dagu.received.at(-1)!.query, 'topic=a', 'and removed before forwarding');
});

t.test('the admin listener answers only its own Host names (DNS rebinding)', async (t) => {
  const admin = s.gateway.adminUrl!;
  const port = new URL(admin).port;
  for (const host of ['evil.example', `evil.example:${port}`, `rebind.attacker.test:${port}`]) {
    const r = await raw(admin, `GET /metrics HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    t.equal(r.status, 403, `Host ${host}: 403`);
    t.notOk(r.body.includes('keygate_'), 'no metrics');
    const page = await raw(admin, `GET /api-keys HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    t.equal(page.status, 403, `Host ${host}: the key page's files neither`);
  }
  for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, 'keygate.internal']) {
    const r = await raw(admin, `GET /metrics HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    t.equal(r.status, 200, `Host ${host}: answered`);
  }
});

t.test('listen.max_failed_auth: unknown keys from one address are throttled with 429', async (t) => {
  const { secret } = await s.key({ name: 'thr', role: 'viewer' });
  const get = (key: string, from: string) => raw(s.url, `GET /api/v1/t/x HTTP/1.1\r\nHost: gw\r\nX-API-Key: ${key}\r\nConnection: close\r\n\r\n`, from);
  for (let i = 0; i < 3; i++) t.equal((await get(`dg_wrong${i}`, '127.0.0.2')).status, 401, `unknown key ${i + 1}: 401`);
  const blocked = await get(secret, '127.0.0.2');
  t.equal(blocked.status, 429, 'then even a good key from that address: 429');
  t.match(blocked.head, /retry-after: \d+/i);
  t.equal((await get('dg_wrong9', '127.0.0.2')).status, 429, 'and a scanner gets 429 before any lookup');
  t.equal((await get(secret, '127.0.0.3')).status, 200, 'another address is not affected');
});

t.test('listen.underscore_headers: reject refuses with 400 (HTTP and WebSocket); allow forwards ordinary ones', async (t) => {
  const rejecting = await startStack(t.testdir(), { routes: ROUTES, listen: 'underscore_headers: reject' });
  t.teardown(() => rejecting.close());
  const { secret } = await rejecting.key({ name: 'rej', role: 'viewer' });
  const http = await raw(rejecting.url, `GET /api/v1/t/x HTTP/1.1\r\nHost: gw\r\nX-API-Key: ${secret}\r\nX_Keygate_Role: admin\r\nConnection: close\r\n\r\n`);
  t.equal(http.status, 400);
  t.match(JSON.parse(http.body), { code: 'bad_request', message: /"x_keygate_role"/ });
  const ws = await raw(rejecting.url, `GET /api/v1/t/ws HTTP/1.1\r\nHost: gw\r\nX-API-Key: ${secret}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX_Custom: 1\r\n\r\n`);
  t.equal(ws.status, 400, 'WebSocket upgrade refused too');
  t.equal(rejecting.dagu.received.length, 0, 'nothing reached the upstream');
  t.equal((await raw(rejecting.url, `GET /api/v1/t/x HTTP/1.1\r\nHost: gw\r\nX-API-Key: ${secret}\r\nConnection: close\r\n\r\n`)).status, 200, 'without one: as usual');

  const allowing = await startStack(t.testdir(), { routes: ROUTES, listen: 'underscore_headers: allow' });
  t.teardown(() => allowing.close());
  const k = await allowing.key({ name: 'alw', role: 'viewer' });
  t.equal((await raw(allowing.url, `GET /api/v1/t/x HTTP/1.1\r\nHost: gw\r\nX-API-Key: ${k.secret}\r\nX_Custom: 1\r\nX_Keygate_Role: admin\r\nConnection: close\r\n\r\n`)).status, 200);
  const h = allowing.dagu.received.at(-1)!.headers;
  t.equal(h.x_custom, '1', 'allow: an ordinary one passes');
  t.equal(h.x_keygate_role, undefined, 'allow: never one that reads as a gateway header');
});
