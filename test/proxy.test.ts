// End to end through real sockets: client (undici / ws / raw TCP) → gateway → recording upstream.

import t from 'tap';
import { request } from 'undici';
import WebSocket from 'ws';
import { rawRequest, startStack, type Stack } from './helpers.js';

let s: Stack;
t.before(async () => {
  s = await startStack(t.testdir());
});
t.teardown(async () => {
  await s.close();
});

async function get(path: string, headers: Record<string, string> = {}, method = 'GET', body?: string) {
  const res = await request(s.url + path, { method: method as 'GET', headers, body: body ?? null });
  const text = await res.body.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.statusCode, headers: res.headers, json, text };
}

t.test('an allowed request reaches the upstream with its credential and the key identity, never the client secret', async (t) => {
  const { id, secret } = await s.key({ name: 'fwd', role: 'operator', scopes: 'workflows' });
  const before = s.dagu.received.length;
  const r = await get('/api/v1/dags?workspace=ops&x=1%202', {
    'X-API-Key': secret,
    cookie: 'session=abc',
    'x-keygate-role': 'admin',
    'x-request-source': 'spoofed',
    'x-forwarded-for': '6.6.6.6',
    'x-custom': 'kept',
  });
  t.equal(r.status, 200);
  t.equal(s.dagu.received.length, before + 1);
  const got = s.dagu.received.at(-1)!;
  t.equal(got.path, '/api/v1/dags', 'strip_prefix then joined to api_base_url path');
  t.equal(got.query, 'workspace=ops&x=1%202', 'query forwarded byte for byte');
  const h = got.headers;
  t.equal(h.authorization, 'Bearer upstream-dagu-token', "the upstream's own credential");
  t.equal(h['x-api-key'], undefined, 'client key stripped');
  t.equal(h.cookie, undefined, 'client cookie stripped');
  t.equal(h['x-keygate-key-id'], id);
  t.equal(h['x-keygate-key-name'], 'fwd');
  t.equal(h['x-keygate-role'], 'operator', 'client-sent identity replaced');
  t.equal(h['x-keygate-workspace'], 'ops');
  t.equal(h['x-keygate-attribution'], 'service_account:fwd');
  t.equal(h['x-request-source'], 'external_api');
  t.equal(h['x-forwarded-for'], '127.0.0.1', 'client X-Forwarded-For not trusted by default');
  t.equal(h['x-forwarded-proto'], 'http');
  t.equal(h['x-forwarded-host'], new URL(s.url).host);
  t.equal(h.host, new URL(s.dagu.url).host, 'Host is the upstream authority');
  t.equal(h['x-custom'], 'kept');
  t.notOk(JSON.stringify(got.rawHeaders).includes(secret), 'secret appears nowhere upstream');
});

t.test('identity headers follow the key: a rename, a role change and the workspace of each request reach the upstream at once', async (t) => {
  const { id, secret } = await s.key({ name: 'plan-a', role: 'viewer' });
  const sent = async (target: string) => {
    t.equal((await get(target, { 'x-api-key': secret })).status, 200);
    return s.dagu.received.at(-1)!.headers;
  };
  t.match(await sent('/api/v1/dags?workspace=ops'), { 'x-keygate-key-name': 'plan-a', 'x-keygate-role': 'viewer', 'x-keygate-workspace': 'ops' });
  t.match(await sent('/api/v1/dags?workspace=ops'), { 'x-keygate-key-name': 'plan-a', 'x-keygate-workspace': 'ops' }, 'the same again (kept with the key)');
  t.match(await sent('/api/v1/dags?workspace=dev'), { 'x-keygate-workspace': 'dev' }, 'another workspace: its own value');
  t.equal((await sent('/api/v1/dags'))['x-keygate-workspace'], undefined, 'none asked: none sent');
  await s.gateway.keys.update(id, { name: 'plan-b ü', role: 'operator' }, 'test');
  t.match(await sent('/api/v1/dags?workspace=ops'), { 'x-keygate-key-name': 'plan-b%20%C3%BC', 'x-keygate-role': 'operator', 'x-keygate-workspace': 'ops' }, 'renamed and promoted: the next request says so');
});

t.test('Authorization: Bearer works with any scheme case; header and basic upstream credentials', async (t) => {
  const { secret } = await s.key({ name: 'bearer', role: 'viewer', scopes: 'agents,workflows', workspace: 'team-a' });
  const r = await get('/api/v1/workflows', { authorization: `bEaReR ${secret}` });
  t.equal(r.status, 200);
  const got = s.dagen.received.at(-1)!;
  t.equal(got.headers['x-api-key'], 'upstream-dagen-key', 'auth_type header injects the configured header');
  t.equal(got.headers.authorization, undefined, 'client Authorization stripped');
  t.equal(got.headers['x-keygate-workspace'], 'team-a', 'workspace: key passes the key workspace');
  t.equal((await get('/basic/x', { 'x-api-key': secret })).status, 403, 'a bound key on a route that names no workspace: workspace_required');
  const unbound = await s.key({ name: 'bearer-unbound', role: 'viewer' });
  const b = await get('/basic/x', { 'x-api-key': unbound.secret });
  t.equal(b.status, 200);
  t.equal(s.dagu.received.at(-1)!.headers.authorization, 'Basic ' + Buffer.from('ops:s3cret').toString('base64'));
});

t.test('response status, headers and body pass back; hop-by-hop dropped', async (t) => {
  const { secret } = await s.key({ name: 'status', role: 'viewer' });
  const r = await get('/api/v1/t/_status/418', { 'x-api-key': secret });
  t.equal(r.status, 418);
  t.equal(r.headers['x-upstream-header'], 'yes');
  t.match(String(r.headers['set-cookie']), /session=1/);
  t.same(r.json, { status: 418 });
});

t.test('response header values pass byte for byte, non-ASCII ones too (the raw headers read as the bytes arrived)', async (t) => {
  const { secret } = await s.key({ name: 'raw-header', role: 'viewer' });
  const r = await get('/api/v1/t/_raw-header', { 'x-api-key': secret });
  t.equal(r.status, 200, r.text);
  // undici (the client here) reads header bytes as latin1: the same string means the same bytes arrived
  t.equal(r.headers['x-raw'], Buffer.from('naïve ✓', 'utf8').toString('latin1'));
});

t.test('every deny branch answers JSON and reaches no upstream', async (t) => {
  const viewer = await s.key({ name: 'deny-viewer', role: 'viewer', scopes: 'workflows' });
  const inactive = await s.key({ name: 'deny-inactive', role: 'admin' });
  await s.gateway.keys.setActive(inactive.id, false, 'test');
  const expired = await s.key({ name: 'deny-expired', role: 'admin' });
  // The service refuses a past expiry, so move it into the past in the store, as time would.
  await s.gateway.keys.store.update(expired.id, { expiresAt: new Date(Date.now() - 1000).toISOString() });
  s.gateway.keys.invalidate(expired.id);
  const restOnly = await s.key({ name: 'deny-rest-only', role: 'admin', surfaces: 'rest_api' });
  const scoped = await s.key({ name: 'deny-scoped', role: 'viewer', workspaceAccess: { all: false, grants: [{ workspace: 'ops', role: 'developer' }, { workspace: 'dev', role: 'operator' }] } });

  const cases: [string, string, Record<string, string>, number, string][] = [
    ['missing key', '/api/v1/dags', {}, 401, 'unauthorized'],
    ['unknown key', '/api/v1/dags', { 'x-api-key': 'dg_notakey' }, 401, 'unauthorized'],
    ['two different keys', '/api/v1/dags', { 'x-api-key': viewer.secret, authorization: 'Bearer dg_other' }, 400, 'bad_request'],
    ['inactive', '/api/v1/dags', { 'x-api-key': inactive.secret }, 403, 'key_inactive'],
    ['expired', '/api/v1/dags', { 'x-api-key': expired.secret }, 403, 'key_expired'],
    ['surface not allowed', '/mcp', { 'x-api-key': restOnly.secret }, 403, 'forbidden'],
    ['scope missing', '/api/v1/agent/chat', { 'x-api-key': viewer.secret }, 403, 'insufficient_scope'],
    ['role too low', '/api/v1/admin', { 'x-api-key': viewer.secret }, 403, 'forbidden'],
    ['invisible workspace', '/api/v1/dags?workspace=prod', { 'x-api-key': scoped.secret }, 404, 'not_found'],
    ['scoped key asks for all', '/api/v1/dags?workspace=all', { 'x-api-key': scoped.secret }, 403, 'workspace_required'],
    ['workspace twice', '/api/v1/dags?workspace=ops&workspace=prod', { 'x-api-key': scoped.secret }, 400, 'bad_request'],
    ['visible workspace, role too low', '/api/v1/workspaces/dev/settings', { 'x-api-key': scoped.secret }, 403, 'forbidden'],
    ['no route', '/api/v1/nowhere', { 'x-api-key': viewer.secret }, 404, 'not_found'],
    ['method not routed', '/api/v1/dags', { 'x-api-key': viewer.secret }, 404, 'not_found'],
  ];
  const before = s.dagu.received.length + s.dagen.received.length;
  for (const [name, path, headers, status, code] of cases) {
    const method = name === 'method not routed' || name === 'scope missing' ? 'POST' : 'GET';
    const r = await get(path, headers, method);
    t.equal(r.status, status, `${name}: status`);
    t.equal(r.json.code, code, `${name}: code`);
    t.type(r.json.message, 'string', `${name}: message`);
    t.match(String(r.headers['content-type']), /^application\/json/, `${name}: JSON`);
    for (const secret of s.secrets) t.notOk(r.text.includes(secret), `${name}: no secret echoed`);
    if (status === 401) t.match(String(r.headers['www-authenticate']), /^Bearer realm="keygate"/, `${name}: WWW-Authenticate`);
  }
  t.equal(s.dagu.received.length + s.dagen.received.length, before, 'no denied request reached an upstream');

  // and the allowed neighbours of those denials do get through
  t.equal((await get('/api/v1/workspaces/ops/settings', { 'x-api-key': scoped.secret })).status, 200, 'grant role developer suffices');
  t.equal(s.dagu.received.at(-1)!.headers['x-keygate-role'], 'developer', 'effective role is the grant role');
  t.equal((await get('/api/v1/dags?workspace=dev', { 'x-api-key': scoped.secret })).status, 200);
  t.equal((await get('/api/v1/health')).status, 200, 'auth: none route needs no key');
  t.equal(s.dagu.received.at(-1)!.headers.authorization, undefined, 'auth: none routes get no upstream credential');
});

t.test('changes through the key service take effect on the very next request', async (t) => {
  const k = await s.key({ name: 'lifecycle', role: 'viewer' });
  const h = { 'x-api-key': k.secret };
  t.equal((await get('/api/v1/dags', h)).status, 200);
  await s.gateway.keys.setActive(k.id, false, 'test');
  t.equal((await get('/api/v1/dags', h)).json.code, 'key_inactive');
  await s.gateway.keys.setActive(k.id, true, 'test');
  t.equal((await get('/api/v1/dags', h)).status, 200);
  const { secret: fresh } = await s.gateway.keys.regenerate(k.id, 'test');
  s.secrets.push(fresh);
  t.equal((await get('/api/v1/dags', h)).status, 401, 'old secret refused at once');
  t.equal((await get('/api/v1/dags', { 'x-api-key': fresh })).status, 200);
  await s.gateway.keys.update(k.id, { role: 'operator' }, 'test');
  t.equal((await get('/api/v1/dags/x/start', { 'x-api-key': fresh }, 'POST')).status, 200, 'role change applies');
  await s.gateway.keys.delete(k.id);
  t.equal((await get('/api/v1/dags', { 'x-api-key': fresh })).status, 401, 'deleted key refused at once');
});

t.test('path encodings: what is authorised is exactly what is forwarded', async (t) => {
  const { secret } = await s.key({ name: 'paths', role: 'viewer' });
  // [raw target, expected status, path the upstream must see (for 200s)]
  const cases: [string, number, string?][] = [
    ['/api/v1/public/../admin', 401], // normalised to /api/v1/admin: needs a key, not the public route
    ['/api/v1/public/%2e%2e/admin', 401],
    ['/api/v1/public/.%2E/admin', 401],
    ['/api/v1/public%2F..%2Fadmin', 400],
    ['/api/v1/public/..%2fadmin', 400],
    ['/api/v1/public/..%5cadmin', 400],
    ['/api/v1/public/..\\admin', 400],
    ['/api/v1/public/x%00', 400],
    ['/api/v1/public/%zz', 400],
    ['/api/v1//public//a', 200, '/api/v1/public/a'],
    ['/api/v1/public/./a/b/../c', 200, '/api/v1/public/a/c'],
    ['/api/v1/public/%61%62', 200, '/api/v1/public/ab'],
    ['/api/v1/public/a%3ab', 200, '/api/v1/public/a%3Ab'],
    ['/api/v1/%70ublic/x', 200, '/api/v1/public/x'],
    ['/api/v1/public/\xe9', 400], // raw non-ASCII: refused by Node's HTTP parser, answered as JSON
    ['/api/v1/public/a|b{c}', 200, '/api/v1/public/a%7Cb%7Bc%7D'], // outside pchar: percent-encoded
    ['/api/v1/../../../etc/passwd', 404],
  ];
  for (const [target, status, upstreamPath] of cases) {
    const before = s.dagu.received.length;
    const r = await rawRequest(s.url, `GET ${target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n`);
    t.equal(r.status, status, `${JSON.stringify(target)} → ${status}`);
    if (upstreamPath) t.equal(s.dagu.received.at(-1)?.path, upstreamPath, `${JSON.stringify(target)} forwarded as ${upstreamPath}`);
    else t.equal(s.dagu.received.length, before, `${JSON.stringify(target)} reached no upstream`);
  }
  // with a key, the traversal reaches the admin route and its role check
  const r = await rawRequest(s.url, `GET /api/v1/public/%2e%2e/admin HTTP/1.1\r\nHost: gw\r\nX-API-Key: ${secret}\r\nConnection: close\r\n\r\n`);
  t.equal(r.status, 403, 'viewer key refused on the admin route it was normalised to');
});

t.test('SSE streams event by event, Last-Event-ID passes', async (t) => {
  const { secret } = await s.key({ name: 'sse', role: 'viewer' });
  const started = performance.now();
  const res = await request(`${s.url}/api/v1/t/_sse?count=3&interval=300`, { headers: { 'x-api-key': secret, 'last-event-id': '41' } });
  t.equal(res.statusCode, 200);
  t.equal(res.headers['content-type'], 'text/event-stream');
  const arrivals: number[] = [];
  let text = '';
  for await (const chunk of res.body) {
    text += chunk.toString();
    if (chunk.toString().includes('data:')) arrivals.push(performance.now() - started);
  }
  t.equal(arrivals.length, 3, 'three separate data chunks');
  t.ok(arrivals[2]! - arrivals[0]! >= 450, `events spread over time, not buffered (${arrivals.map(Math.round).join(', ')} ms)`);
  t.match(text, /"lastEventId":"41"/);
  t.match(text, /: heartbeat/, 'comments (heartbeats) pass');
});

t.test('request bodies stream to the upstream', async (t) => {
  const { secret } = await s.key({ name: 'body', role: 'viewer' });
  const { PassThrough } = await import('node:stream');
  const body = new PassThrough();
  const resP = request(`${s.url}/api/v1/t/_echo-body`, { method: 'POST', headers: { 'x-api-key': secret, 'content-type': 'text/plain' }, body });
  body.write('first;');
  const res = await resP;
  const it = res.body[Symbol.asyncIterator]();
  const first = await it.next();
  t.equal(first.value.toString(), 'first;', 'first part echoed before the body ended');
  body.end('second');
  let rest = '';
  for (let n = await it.next(); !n.done; n = await it.next()) rest += n.value.toString();
  t.equal(rest, 'second');
});

t.test('a client that disconnects closes the upstream request', async (t) => {
  const { secret } = await s.key({ name: 'abort', role: 'viewer' });
  const ac = new AbortController();
  const res = await request(`${s.url}/api/v1/t/_sse?count=0&interval=50`, { headers: { 'x-api-key': secret }, signal: ac.signal });
  t.equal(res.statusCode, 200);
  ac.abort();
  res.body.on('error', () => {});
  const aborted = await s.dagu.waitForAbort(3000);
  t.equal(aborted.path, '/api/v1/_sse');
});

t.test('a client that reads slowly gets every byte: the upstream is paused, not buffered without bound', async (t) => {
  const { secret } = await s.key({ name: 'slow-reader', role: 'viewer' });
  const bytes = 48 << 20; // far beyond the sockets' buffers: the response must wait for the client
  const before = process.memoryUsage().arrayBuffers; // the gateway runs in this process
  const res = await request(`${s.url}/api/v1/t/_big?bytes=${bytes}&chunk=65536`, { headers: { 'x-api-key': secret } });
  t.equal(res.statusCode, 200);
  await new Promise((r) => setTimeout(r, 800)); // nobody reads: the gateway's writes back up
  const held = process.memoryUsage().arrayBuffers - before;
  t.ok(held < 24 << 20, `the upstream waits for the client: ${Math.round(held / 2 ** 20)} MB held in buffers while nobody read, not the ${bytes / 2 ** 20} MB it had to send`);
  let at = 0;
  let wrong = -1;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    for (let i = 0; i < chunk.length && wrong === -1; i++) if (chunk[i] !== ((at + i) & 0xff)) wrong = at + i;
    at += chunk.length;
    if (at % (4 << 20) < chunk.length) await new Promise((r) => setTimeout(r, 20)); // and reads slowly
  }
  t.equal(at, bytes, 'all bytes arrived');
  t.equal(wrong, -1, 'in order and unchanged');
  const line = s.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'request' && l.request_id === res.headers['x-request-id']);
  t.equal(line?.status, 200);
  t.equal(line?.decision, 'allowed');
  t.ok(line?.bytes_out > bytes, `access log counts the bytes sent (${line?.bytes_out})`);
});

t.test('an upstream that breaks mid-body: the client sees the response cut, the log says upstream_error', async (t) => {
  const { secret } = await s.key({ name: 'mid-break', role: 'viewer' });
  const res = await request(`${s.url}/api/v1/t/_break?bytes=1000`, { headers: { 'x-api-key': secret } });
  t.equal(res.statusCode, 200, 'the status was already sent');
  t.equal(res.headers['content-length'], '2000');
  const err = await res.body.text().then(
    () => undefined,
    (e: Error) => e,
  );
  t.ok(err, `the body ends in an error, not as if complete (${err?.message})`);
  let line: Record<string, unknown> | undefined;
  for (let i = 0; i < 100 && line === undefined; i++) {
    line = s.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'request' && l.request_id === res.headers['x-request-id']);
    if (line === undefined) await new Promise((r) => setTimeout(r, 20));
  }
  t.equal(line?.status, 200);
  t.equal(line?.decision, 'upstream_error');
  t.equal(line?.code, 'bad_gateway');
  // the gateway keeps serving
  t.equal((await get('/api/v1/dags', { 'x-api-key': secret })).status, 200);
});

t.test('upstream refused → 502, upstream silent → 504, both JSON and bounded in time', async (t) => {
  const { secret } = await s.key({ name: 'failures', role: 'viewer' });
  const down = await get('/down/x', { 'x-api-key': secret });
  t.equal(down.status, 502);
  t.equal(down.json.code, 'bad_gateway');
  const started = performance.now();
  const slow = await get('/api/v1/t/_hang', { 'x-api-key': secret });
  const took = performance.now() - started;
  t.equal(slow.status, 504);
  t.equal(slow.json.code, 'timeout');
  t.ok(took >= 1900 && took < 4000, `answered after the 2 s timeout, not later (${Math.round(took)} ms)`);
});

t.test('WebSocket upgrades are authorised and proxied', async (t) => {
  const { id, secret } = await s.key({ name: 'ws', role: 'viewer' });
  const ws = new WebSocket(`${s.url.replace('http', 'ws')}/api/v1/t/socket?q=1`, { headers: { 'x-api-key': secret } });
  const messages: string[] = [];
  const hello = await new Promise<Record<string, any>>((resolve, reject) => {
    ws.once('message', (m) => resolve(JSON.parse(m.toString())));
    ws.once('error', reject);
  });
  t.equal(hello.path, '/api/v1/socket');
  t.equal(hello.query, 'q=1');
  t.equal(hello.headers['x-api-key'], undefined, 'client key stripped');
  t.equal(hello.headers.authorization, 'Bearer upstream-dagu-token');
  t.equal(hello.headers['x-keygate-key-id'], id);
  ws.on('message', (m) => messages.push(m.toString()));
  ws.send('ping-1');
  await new Promise((r) => setTimeout(r, 100));
  t.same(messages, ['ping-1']);
  ws.close();

  const denied = new WebSocket(`${s.url.replace('http', 'ws')}/api/v1/t/socket`);
  const status = await new Promise<number>((resolve) => {
    denied.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    denied.once('error', () => resolve(-1));
  });
  t.equal(status, 401, 'upgrade without a key refused with 401');
});

t.test('X-Request-Id: kept or made, sent upstream, returned, logged with the client address', async (t) => {
  const { secret } = await s.key({ name: 'reqid', role: 'viewer' });
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  const logged = (id: string) => s.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === 'request' && l.request_id === id);

  const made = await get('/api/v1/dags', { 'x-api-key': secret });
  const id = String(made.headers['x-request-id']);
  t.match(id, UUID, 'none sent: the gateway makes one and returns it');
  t.equal((made.json.headers as Record<string, string>)['x-request-id'], id, 'the upstream received the same id');
  const line = logged(id);
  t.equal(line.length, 1, 'one access-log line with it');
  t.equal(line[0]?.remote_address, '127.0.0.1', 'and the client address');

  const kept = await get('/api/v1/dags', { 'x-api-key': secret, 'x-request-id': 'ci-run-42/step:7' });
  t.equal(kept.headers['x-request-id'], 'ci-run-42/step:7', "a client's id is kept");
  t.equal((kept.json.headers as Record<string, string>)['x-request-id'], 'ci-run-42/step:7', 'and sent upstream');

  for (const bad of ['has space', 'x'.repeat(129), '']) {
    const r = await get('/api/v1/dags', { 'x-api-key': secret, 'x-request-id': bad });
    t.match(String(r.headers['x-request-id']), UUID, `an unusable id (${JSON.stringify(bad.slice(0, 12))}…) is replaced`);
    t.equal((r.json.headers as Record<string, string>)['x-request-id'], r.headers['x-request-id'], 'upstream gets the replacement');
  }

  const refused = await get('/api/v1/dags', { 'x-api-key': 'dg_nope' });
  t.equal(refused.status, 401);
  t.match(String(refused.headers['x-request-id']), UUID, 'refusals carry one too');
  t.equal(logged(String(refused.headers['x-request-id'])).length, 1, 'and are logged with it');

  const spoofed = await get('/api/v1/dags', { 'x-api-key': secret, 'x-forwarded-for': '203.0.113.9' });
  t.equal(logged(String(spoofed.headers['x-request-id']))[0]?.forwarded_for, undefined, "a client's X-Forwarded-For is not logged unless trusted");
  const behind = await startStack(t.testdir(), { trustForwarded: true });
  t.teardown(() => behind.close());
  const k = await behind.key({ name: 'behind', role: 'viewer' });
  const r = await request(`${behind.url}/api/v1/dags`, { headers: { 'x-api-key': k.secret, 'x-forwarded-for': '203.0.113.9, 10.0.0.2' } });
  await r.body.dump();
  const entry = behind.logs.map((l) => JSON.parse(l)).find((l) => l.msg === 'request' && l.request_id === r.headers['x-request-id']);
  t.equal(entry?.forwarded_for, '203.0.113.9, 10.0.0.2', 'with listen.trust_forwarded the proxy chain is logged');
});

t.test('usage is counted per allowed request and flushed on close; logs never hold a secret', async (t) => {
  const dir = t.testdir();
  const s2 = await startStack(dir);
  const k = await s2.key({ name: 'usage', role: 'viewer' });
  for (let i = 0; i < 7; i++) t.equal((await request(`${s2.url}/api/v1/dags`, { headers: { 'x-api-key': k.secret } }).then((r) => (r.body.dump(), r.statusCode))), 200);
  await request(`${s2.url}/api/v1/admin`, { headers: { 'x-api-key': k.secret } }).then((r) => r.body.dump()); // denied: not counted
  await s2.close();
  const { SqliteKeyStore } = await import('../src/keys/sqlite-store.js');
  const reopened = new SqliteKeyStore(`${dir}/keys.db`);
  const saved = await reopened.get(k.id);
  t.equal(saved?.requestCount, 7, 'exactly the allowed requests were counted');
  t.ok(saved?.lastUsedAt && Date.now() - Date.parse(saved.lastUsedAt) < 10_000, 'last use recorded');
  await reopened.close();

  const access = s2.logs.filter((l) => l.includes('"msg":"request"'));
  t.equal(access.length, 8, 'one access-log line per request');
  t.match(JSON.parse(access[0]!), { method: 'GET', path: '/api/v1/dags', status: 200, key_id: k.id, decision: 'allowed' });
  t.match(JSON.parse(access[7]!), { path: '/api/v1/admin', status: 403, decision: 'forbidden', code: 'forbidden' });
  for (const line of [...s.logs, ...s2.logs]) {
    for (const secret of [...s.secrets, ...s2.secrets, 'upstream-dagu-token', 'upstream-dagen-key', 's3cret']) {
      if (line.includes(secret)) t.fail(`log line holds a secret: ${line}`);
    }
  }
  t.ok(s.logs.length > 20, `the main stack logged (${s.logs.length} lines) and was grepped`);
});
