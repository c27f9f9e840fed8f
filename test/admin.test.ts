// The admin API through real sockets: its own listener, the admin credential, Dagen- and
// Dagu-shaped key endpoints, regenerate with grace (checked on the PUBLIC listener), the key-count
// limit, keys declared in the config, the audit trail, the OpenAPI document.

import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { writeFileSync } from 'node:fs';
import pino from 'pino';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { loadConfig } from '../src/config/load.js';
import { ConfigError } from '../src/errors.js';
import { digestSecret } from '../src/keys/secret.js';
import { startStack, type Stack } from './helpers.js';

const TOKEN = 'admin-token-for-tests-0123456789abcdef';
const DECLARED_SECRET = 'dg_declared-in-yaml-0123456789abcdefghij';
const DIGEST_ONLY_SECRET = 'dg_only-its-digest-is-in-the-yaml-012345';
const DECLARED = `keys:
  declared:
    - name: yaml-ops
      role: operator
      scopes: [workflows]
      secret: \${DECLARED_KEY}
    - name: yaml-digest
      secret_digest: ${digestSecret(DIGEST_ONLY_SECRET)}
`;

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

interface Call {
  body?: unknown;
  /** raw body text instead of JSON */
  raw?: string;
  headers?: Record<string, string>;
  /** the bearer credential; null = none; default the admin token */
  auth?: string | null;
}

async function http(url: string, method: string, opts: Call = {}) {
  const headers: Record<string, string> = { ...opts.headers };
  const auth = opts.auth === undefined ? TOKEN : opts.auth;
  if (auth !== null) headers['authorization'] = `Bearer ${auth}`;
  let body: string | undefined;
  if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers['content-type'] ??= 'application/json';
  }
  if (opts.raw !== undefined) body = opts.raw;
  const res = await request(url, { method: method as 'GET', headers, body: body ?? null });
  const text = await res.body.text();
  let json: Json = undefined;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: res.statusCode, headers: res.headers, text, json };
}

let s: Stack;
/** every secret and token the tests handled, for the grep of responses, records and logs */
const secrets: string[] = [TOKEN, DECLARED_SECRET, DIGEST_ONLY_SECRET];
const admin = (method: string, path: string, opts?: Call) => http(s.gateway.adminUrl! + path, method, opts);
/** a request to the PUBLIC listener with a key */
const pub = async (secret: string, path = '/api/v1/dags') => (await http(s.url + path, 'GET', { auth: null, headers: { 'x-api-key': secret } })).status;

t.before(async () => {
  // maxFailedAuth 0: this file sends wrong credentials on purpose, many times (the limit has its own test)
  s = await startStack(t.testdir(), { adminToken: TOKEN, maxFailedAuth: 0, yaml: DECLARED, env: { DECLARED_KEY: DECLARED_SECRET } });
});
t.teardown(() => s.close());

/** Asserts a JSON error `{"code","message"}`; for a 400 also the field, named in the message. */
function isError(t: Test, r: Awaited<ReturnType<typeof http>>, status: number, code: string, field?: string, what = ''): void {
  t.equal(r.status, status, `${what} status ${status}`);
  t.equal(r.json?.code, code, `${what} code ${code}`);
  t.type(r.json?.message, 'string', `${what} message`);
  t.match(String(r.headers['content-type']), /^application\/json/, `${what} JSON`);
  if (field !== undefined) {
    t.equal(r.json?.field, field, `${what} field ${field}`);
    t.ok(String(r.json?.message).startsWith(`${field}: `), `${what} message names ${field}: ${r.json?.message}`);
  }
}

// ---------------------------------------------------------------- listener and credential

t.test('the admin API is on its own listener; the public one never serves it', async (t) => {
  t.not(s.gateway.adminUrl, undefined);
  t.not(new URL(s.gateway.adminUrl!).port, new URL(s.url).port, 'a different port');
  t.equal((await admin('GET', '/api/keys')).status, 200);
  for (const route of s.gateway.admin!.router.routes()) {
    const path = route.path.replace(/\{[^}]+\}/g, 'some-id');
    const r = await http(s.url + path, route.method, { body: route.method === 'GET' || route.method === 'DELETE' ? undefined : {} });
    t.equal(r.status, 404, `public ${route.method} ${path}: 404`);
    t.equal(r.json?.code, 'not_found');
  }
});

t.test('keys.audit_retention_days: older audit records go when the gateway starts', async (t) => {
  const dir = t.testdir();
  const { SqliteKeyStore } = await import('../src/keys/sqlite-store.js');
  const store = new SqliteKeyStore(join(dir, 'keys.db'));
  const day = 86_400_000;
  for (const [id, age] of [['old', 40], ['edge', 29], ['new', 1]] as const) {
    await store.appendAudit({ id, at: new Date(Date.now() - age * day).toISOString(), actor: 'test', action: 'update', key_id: 'k', key_name: 'k', remote_address: null, details: {} });
  }
  await store.close();
  const kept = await startStack(dir, { adminToken: TOKEN, maxFailedAuth: 0, yaml: 'keys: { audit_retention_days: 30 }\n' });
  t.teardown(() => kept.close());
  let ids: string[] = [];
  for (let i = 0; i < 50; i++) {
    ids = (await http(`${kept.gateway.adminUrl}/api/audit`, 'GET')).json.records.map((r: { id: string }) => r.id);
    if (!ids.includes('old')) break;
    await sleep(20);
  }
  t.same(ids, ['new', 'edge'], 'the 40-day-old record is gone, the 29-day-old one stays');
  t.ok(kept.logs.some((l) => /audit records past their retention removed/.test(l) && /"removed":1/.test(l)), 'and the removal is logged');
});

t.test('every admin route refuses a request without a valid admin credential', async (t) => {
  const viewer = await s.key({ name: 'auth-viewer', role: 'viewer' });
  for (const route of s.gateway.admin!.router.routes()) {
    const url = s.gateway.adminUrl! + route.path.replace(/\{[^}]+\}/g, viewer.id);
    const body = route.method === 'POST' || route.method === 'PUT' || route.method === 'PATCH' ? { name: 'x' } : undefined;
    const none = await http(url, route.method, { auth: null, body });
    isError(t, none, 401, 'unauthorized', undefined, `${route.method} ${route.path} without credential:`);
    t.equal(none.headers['www-authenticate'], 'Bearer realm="keygate-admin"');
    isError(t, await http(url, route.method, { auth: 'wrong', body }), 401, 'unauthorized', undefined, `${route.method} ${route.path} wrong token:`);
    isError(t, await http(url, route.method, { auth: viewer.secret, body }), 403, 'forbidden', undefined, `${route.method} ${route.path} non-admin key:`);
  }
  t.equal((await admin('GET', '/api/v1/api-keys/' + viewer.id)).status, 200, 'nothing was changed by the refused calls');
});

t.test('the token: exact match only (prefix, longer, one character off, other case all refused)', async (t) => {
  const near = [TOKEN.slice(0, -1), TOKEN + 'x', TOKEN.slice(0, -1) + 'g', TOKEN.toUpperCase(), '', ' '];
  for (const token of near) {
    const r = await http(s.gateway.adminUrl + '/api/keys', 'GET', { auth: null, headers: { authorization: `Bearer ${token}` } });
    t.equal(r.status, 401, `${JSON.stringify(token.slice(-4))}… refused`);
  }
  t.equal((await admin('GET', '/api/keys', { auth: null, headers: { 'x-api-key': TOKEN } })).status, 200, 'X-API-Key carries the token too');
  t.equal((await admin('GET', '/api/keys', { auth: null, headers: { authorization: `bearer ${TOKEN}` } })).status, 200, 'scheme in any case');
  const two = await admin('GET', '/api/keys', { headers: { 'x-api-key': 'something-else' } });
  isError(t, two, 400, 'bad_request', undefined, 'two different credentials:');
});

t.test('admin keys: active ones pass; inactive, expired, workspace-bound, non-REST and non-admin ones do not', async (t) => {
  const good = await s.key({ name: 'admin-good', role: 'admin' });
  t.equal((await admin('GET', '/api/v1/api-keys', { auth: good.secret })).status, 200);
  t.equal((await admin('GET', '/api/v1/api-keys', { auth: null, headers: { 'x-api-key': good.secret } })).status, 200, 'as X-API-Key');

  const inactive = await s.key({ name: 'admin-inactive', role: 'admin' });
  await s.gateway.keys.setActive(inactive.id, false, 'test');
  isError(t, await admin('GET', '/api/keys', { auth: inactive.secret }), 403, 'key_inactive', undefined, 'inactive:');

  const expired = await s.key({ name: 'admin-expired', role: 'admin' });
  await s.gateway.keys.store.update(expired.id, { expiresAt: new Date(Date.now() - 1000).toISOString() });
  s.gateway.keys.invalidate(expired.id);
  isError(t, await admin('GET', '/api/keys', { auth: expired.secret }), 403, 'key_expired', undefined, 'expired:');

  const bound = await s.key({ name: 'admin-bound', role: 'admin', workspace: 'team-a' });
  isError(t, await admin('GET', '/api/keys', { auth: bound.secret }), 403, 'forbidden', undefined, 'workspace-bound:');
  const mcpOnly = await s.key({ name: 'admin-mcp', role: 'admin', surfaces: ['mcp'] });
  isError(t, await admin('GET', '/api/keys', { auth: mcpOnly.secret }), 403, 'forbidden', undefined, 'mcp only:');
  const manager = await s.key({ name: 'admin-manager', role: 'manager' });
  const r = await admin('GET', '/api/keys', { auth: manager.secret });
  isError(t, r, 403, 'forbidden', undefined, 'manager:');
  t.match(r.json.message, /role admin/);

  // a change made with an admin key is attributed to it
  const made = await admin('POST', '/api/v1/api-keys', {
    auth: good.secret,
    body: { name: 'made-by-key', role: 'viewer', allowedSurfaces: ['rest_api'], attributionClass: 'service_account' },
  });
  t.equal(made.status, 201);
  secrets.push(made.json.key);
  t.equal(made.json.apiKey.createdBy, `key:${good.id}`);
  const audit = await admin('GET', `/api/audit?key_id=${made.json.apiKey.id}`);
  t.match(audit.json.records, [{ action: 'create', actor: `key:${good.id}`, remote_address: /127\.0\.0\.1$/ }]);
});

t.test('without a token and without an admin key, every call says how to set one up', async (t) => {
  const bare = await startStack(t.testdir());
  t.teardown(() => bare.close());
  const url = bare.gateway.adminUrl!;
  for (const auth of [null, 'anything']) {
    const r = await http(url + '/api/keys', 'GET', { auth });
    isError(t, r, 401, 'unauthorized', undefined, `credential ${auth}:`);
    t.match(r.json.message, /admin\.token/);
    t.match(r.json.message, /KEYGATE_ADMIN_TOKEN/);
    t.match(r.json.message, /keygate keys create --name admin --role admin/);
  }
  const { secret } = await bare.key({ name: 'first-admin', role: 'admin' });
  t.equal((await http(url + '/api/keys', 'GET', { auth: secret })).status, 200, 'an admin key made with the CLI (the key service) works');
  const after = await http(url + '/api/keys', 'GET', { auth: 'anything' });
  t.equal(after.status, 401);
  t.notMatch(after.json.message, /admin\.token/, 'once an admin key exists, the plain message');
  for (const line of bare.logs) if (line.includes(secret)) t.fail(`log holds the secret: ${line}`);
});

t.test('unknown paths 404, wrong methods 405, ambiguous encodings 400, all JSON', async (t) => {
  isError(t, await admin('GET', '/api/nothing'), 404, 'not_found', undefined, 'unknown path:');
  const wrong = await admin('PATCH', '/api/keys');
  isError(t, wrong, 405, 'method_not_allowed', undefined, 'wrong method:');
  t.equal(wrong.headers['allow'], 'GET, POST');
  isError(t, await admin('GET', '/api/keys/%2F..%2Fx'), 400, 'bad_request', undefined, 'ambiguous encoding:');
});

t.test('admin.enabled: false starts no admin listener', async (t) => {
  const file = join(t.testdir(), 'gw.yaml');
  writeFileSync(file, 'listen: { host: 127.0.0.1 }\nadmin: { enabled: false, token: x }\nstore: { keys: "sqlite:./k.db" }\n');
  const { Gateway } = await import('../src/server.js');
  const gw = await Gateway.start({ config: loadConfig(file, {}), port: 0, adminPort: 0, logger: pino({ level: 'silent' }) });
  t.teardown(() => gw.close(100));
  t.equal(gw.adminUrl, undefined);
  t.equal(gw.admin, undefined);
  t.equal((await http(gw.url + '/api/keys', 'GET', { auth: 'x' })).status, 404, 'and the public listener does not serve it either');
});

// ---------------------------------------------------------------- Dagen shape

t.test('Dagen: create, list, update, deactivate, delete; the secret is shown only once', async (t) => {
  const created = await admin('POST', '/api/keys', { body: { name: 'dagen-ci', scopes: ['workflows'], rate_limit: 30, expires_at: '2099-01-31' } });
  t.equal(created.status, 201);
  const secret: string = created.json.key;
  secrets.push(secret);
  t.match(secret, /^dg_[0-9A-Za-z]{43}$/);
  t.match(created.json, {
    name: 'dagen-ci',
    key_prefix: secret.slice(0, 8),
    scopes: ['workflows'],
    workspace_id: null,
    rate_limit: 30,
    status: 'active',
    is_active: true,
    expires_at: '2099-01-31T00:00:00.000Z',
    request_count: 0,
    last_used_at: null,
    managed_by: 'api',
  });
  t.match(created.json.created_at, /^\d{4}-\d\d-\d\dT/);
  const id: string = created.json.id;
  t.equal(await pub(secret), 200, 'the new key works on the public listener');

  const defaults = await admin('POST', '/api/keys', { body: { name: 'dagen-defaults', scopes: ['agents'], workspace_id: 'team-dagen' } });
  t.equal(defaults.status, 201);
  secrets.push(defaults.json.key);
  t.match(defaults.json, { rate_limit: 60, expires_at: null, workspace_id: 'team-dagen' }, 'rate limit 60 by default');

  await s.gateway.flushUsage(); // usage is otherwise written once a second: make the count exact now
  const list = await admin('GET', '/api/keys');
  t.equal(list.status, 200);
  t.ok(Array.isArray(list.json), 'a JSON array');
  const item = list.json.find((k: Json) => k.id === id);
  t.match(item, { name: 'dagen-ci', key_prefix: secret.slice(0, 8), status: 'active', rate_limit: 30, request_count: 1 });
  t.equal(item.key, undefined, 'no key field in the list');
  for (const x of secrets) t.notOk(list.text.includes(x), 'no secret in the list');
  t.notOk(list.text.includes(digestSecret(secret)), 'nor a digest');

  const team = await admin('GET', '/api/keys?workspace_id=team-dagen');
  t.same(team.json.map((k: Json) => k.name), ['dagen-defaults'], 'workspace_id filters');
  isError(t, await admin('GET', '/api/keys?workspace_id=a&workspace_id=b'), 400, 'bad_request', 'workspace_id', 'workspace_id twice:');

  const updated = await admin('PUT', `/api/keys/${id}`, { body: { name: 'dagen-ci-2', scopes: ['agents', 'workflows'], rate_limit: 120, expires_at: null } });
  t.equal(updated.status, 200);
  t.match(updated.json, { id, name: 'dagen-ci-2', scopes: ['agents', 'workflows'], rate_limit: 120, expires_at: null });
  t.equal(updated.json.key, undefined, 'update never shows the secret');

  const off = await admin('PUT', `/api/keys/${id}`, { body: { is_active: false } });
  t.match(off.json, { is_active: false, status: 'inactive' });
  t.equal(await pub(secret), 403, 'deactivated: 403 on the next request');
  const on = await admin('PUT', `/api/keys/${id}`, { body: { is_active: true } });
  t.match(on.json, { is_active: true, status: 'active' });
  t.equal(await pub(secret), 200, 'reactivated');

  await sleep(1500); // usage is flushed once a second
  const used = (await admin('GET', '/api/keys')).json.find((k: Json) => k.id === id);
  t.ok(used.request_count >= 2, `request_count counts public requests (${used.request_count})`);
  t.match(used.last_used_at, /^\d{4}-/, 'last_used_at set');

  const del = await admin('DELETE', `/api/keys/${id}`);
  t.equal(del.status, 204);
  t.equal(del.text, '', 'no body');
  t.equal(await pub(secret), 401, 'deleted: refused at once');
  isError(t, await admin('DELETE', `/api/keys/${id}`), 404, 'not_found', undefined, 'delete twice:');
  isError(t, await admin('PUT', '/api/keys/no-such-key', { body: { name: 'x' } }), 404, 'not_found', undefined, 'update unknown:');
});

t.test('Dagen: each validation error is a 400 naming the field, and nothing is created', async (t) => {
  const before = (await admin('GET', '/api/keys')).json.length;
  const today = new Date().toISOString().slice(0, 10);
  const cases: [what: string, body: unknown, field: string][] = [
    ['name missing', { scopes: ['agents'] }, 'name'],
    ['name empty', { name: ' ', scopes: ['agents'] }, 'name'],
    ['name not a string', { name: 7, scopes: ['agents'] }, 'name'],
    ['scopes missing', { name: 'v' }, 'scopes'],
    ['scopes empty', { name: 'v', scopes: [] }, 'scopes'],
    ['scope unknown', { name: 'v', scopes: ['everything'] }, 'scopes'],
    ['scopes not a list', { name: 'v', scopes: 'agents' }, 'scopes'],
    ['scope not a string', { name: 'v', scopes: [1] }, 'scopes[0]'],
    ['rate_limit 0', { name: 'v', scopes: ['agents'], rate_limit: 0 }, 'rate_limit'],
    ['rate_limit 601', { name: 'v', scopes: ['agents'], rate_limit: 601 }, 'rate_limit'],
    ['rate_limit fraction', { name: 'v', scopes: ['agents'], rate_limit: 1.5 }, 'rate_limit'],
    ['rate_limit a string', { name: 'v', scopes: ['agents'], rate_limit: '60' }, 'rate_limit'],
    ['expires_at past', { name: 'v', scopes: ['agents'], expires_at: '2020-01-01' }, 'expires_at'],
    ['expires_at today', { name: 'v', scopes: ['agents'], expires_at: today }, 'expires_at'],
    ['expires_at not a date', { name: 'v', scopes: ['agents'], expires_at: 'next week' }, 'expires_at'],
    ['is_active not boolean', { name: 'v', scopes: ['agents'], is_active: 'yes' }, 'is_active'],
    ['workspace_id reserved', { name: 'v', scopes: ['agents'], workspace_id: 'all' }, 'workspace_id'],
    ['unknown field', { name: 'v', scopes: ['agents'], colour: 'red' }, 'colour'],
    ['read-only field', { name: 'v', scopes: ['agents'], key_prefix: 'dg_x' }, 'key_prefix'],
    ['not an object', ['name'], 'body'],
  ];
  for (const [what, body, field] of cases) {
    const r = await admin('POST', '/api/keys', { body });
    isError(t, r, 400, 'bad_request', field, `${what}:`);
    if (what.includes('read-only')) t.match(r.json.message, /is read-only$/);
    if (what === 'unknown field') t.match(r.json.message, /unknown field; allowed: name, scopes, rate_limit, expires_at, is_active, quota, group, workspace_id$/);
  }
  isError(t, await admin('POST', '/api/keys', { raw: '{"name": ', headers: { 'content-type': 'application/json' } }), 400, 'bad_request', 'body', 'malformed JSON:');
  isError(t, await admin('POST', '/api/keys', { raw: '', headers: { 'content-type': 'application/json' } }), 400, 'bad_request', 'body', 'empty body:');
  isError(t, await admin('POST', '/api/keys', { raw: 'name=v', headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 415, 'unsupported_media_type', undefined, 'form body:');
  isError(t, await admin('POST', '/api/keys', { raw: '{"name":"v","scopes":["agents"]}' }), 415, 'unsupported_media_type', undefined, 'no content type:');
  const big = JSON.stringify({ name: 'v', scopes: ['agents'], pad: 'x'.repeat(70 * 1024) });
  isError(t, await admin('POST', '/api/keys', { raw: big, headers: { 'content-type': 'application/json' } }), 413, 'payload_too_large', undefined, '70 KiB body:');
  t.equal((await admin('GET', '/api/keys')).json.length, before, 'no key was created');

  const { id } = await s.key({ name: 'dagen-validate', scopes: 'agents' });
  const updates: [what: string, body: unknown, field: string][] = [
    ['rate_limit too high', { rate_limit: 1000 }, 'rate_limit'],
    ['expires_at past', { expires_at: '2001-02-03' }, 'expires_at'],
    ['scopes empty', { scopes: [] }, 'scopes'],
    ['workspace_id is read-only', { workspace_id: 'team-b' }, 'workspace_id'],
    ['status is read-only', { status: 'active' }, 'status'],
  ];
  for (const [what, body, field] of updates) {
    const r = await admin('PUT', `/api/keys/${id}`, { body });
    isError(t, r, 400, 'bad_request', field, `update, ${what}:`);
    if (what.includes('read-only')) t.match(r.json.message, /is read-only$/);
  }
  isError(t, await admin('PUT', `/api/keys/${id}`, { body: { name: 'dagen-defaults' } }), 409, 'conflict', undefined, 'update to a taken name:');
  t.match((await s.gateway.keys.get(id)), { rateLimit: 60, scopes: ['agents'], name: 'dagen-validate' }, 'the key is unchanged');
});

t.test('Dagen: regenerate without grace: the old secret fails on the very next request', async (t) => {
  const { id, secret: old } = await s.key({ name: 'regen-now', role: 'viewer' });
  t.equal(await pub(old), 200);
  const r = await admin('POST', `/api/keys/${id}/regenerate`);
  t.equal(r.status, 200);
  const fresh: string = r.json.key;
  secrets.push(fresh);
  t.not(fresh, old);
  t.match(r.json, { id, name: 'regen-now', key_prefix: fresh.slice(0, 8), previous_key_expires_at: null });
  t.equal(await pub(old), 401, 'old secret refused at once');
  t.equal(await pub(fresh), 200, 'new secret works');
  const listed = await admin('GET', '/api/keys');
  t.notOk(listed.text.includes(fresh), 'the new secret is not listed');
  isError(t, await admin('POST', '/api/keys/no-such-key/regenerate'), 404, 'not_found', undefined, 'unknown id:');
});

t.test('Dagen: regenerate with grace: both secrets work, then the old one stops by itself', async (t) => {
  const { id, secret: old } = await s.key({ name: 'regen-grace', role: 'viewer' });
  t.equal(await pub(old), 200, 'old secret cached by the gateway');
  const started = Date.now();
  const r = await admin('POST', `/api/keys/${id}/regenerate?grace_seconds=2`);
  t.equal(r.status, 200);
  const fresh: string = r.json.key;
  secrets.push(fresh);
  const until = Date.parse(r.json.previous_key_expires_at);
  t.ok(until - started >= 1900 && until - started <= 2600, `previous_key_expires_at about 2 s ahead (${until - started} ms)`);
  t.equal(await pub(old), 200, 'old secret works during the grace');
  t.equal(await pub(fresh), 200, 'new secret works');
  await sleep(until - Date.now() + 200);
  t.equal(await pub(old), 401, 'old secret refused after the grace (it was in the cache)');
  t.equal(await pub(fresh), 200, 'new secret still works');

  for (const bad of ['-1', '86401', '1.5', 'soon', '']) {
    isError(t, await admin('POST', `/api/keys/${id}/regenerate?grace_seconds=${bad}`), 400, 'bad_request', 'grace_seconds', `grace_seconds=${bad}:`);
  }
  isError(t, await admin('POST', `/api/keys/${id}/regenerate?grace_seconds=1&grace_seconds=2`), 400, 'bad_request', 'grace_seconds', 'twice:');
  t.equal(await pub(fresh), 200, 'a refused regenerate changed nothing');
  const max = await admin('POST', `/api/keys/${id}/regenerate?grace_seconds=86400`);
  t.equal(max.status, 200, '86400 is the largest grace');
  secrets.push(max.json.key);
});

// ---------------------------------------------------------------- Dagu shape

const DAGU_BODY = { name: 'dagu-ci', description: 'CI runner', role: 'operator', workspaceAccess: { all: true }, allowedSurfaces: ['rest_api'], attributionClass: 'service_account', serviceAccountName: 'ci-bot' };

t.test('Dagu: create 201, get, list, patch, delete 204; the secret only in the create response', async (t) => {
  const created = await admin('POST', '/api/v1/api-keys', { body: DAGU_BODY });
  t.equal(created.status, 201);
  t.same(Object.keys(created.json).sort(), ['apiKey', 'key']);
  const secret: string = created.json.key;
  secrets.push(secret);
  const k = created.json.apiKey;
  t.match(k, {
    name: 'dagu-ci',
    description: 'CI runner',
    role: 'operator',
    workspaceAccess: { all: true, grants: [] },
    allowedSurfaces: ['rest_api'],
    attributionClass: 'service_account',
    serviceAccountName: 'ci-bot',
    keyPrefix: secret.slice(0, 8),
    createdBy: 'admin-token',
    lastUsedAt: null,
    isActive: true,
    status: 'active',
  });
  t.equal(k.ownerUserId, undefined);
  t.match(k.createdAt, /^\d{4}-/);
  t.equal(await pub(secret), 200, 'works on the public listener');
  t.equal(await pub(secret, '/mcp'), 403, 'not on a surface it does not allow');

  const got = await admin('GET', `/api/v1/api-keys/${k.id}`);
  t.equal(got.status, 200);
  t.same(Object.keys(got.json), ['apiKey']);
  t.equal(got.json.apiKey.id, k.id);
  t.equal(got.json.key, undefined, 'get never returns the secret');
  t.notOk(got.text.includes(secret));
  const byName = await admin('GET', '/api/v1/api-keys/dagu-ci');
  t.equal(byName.json.apiKey.id, k.id, 'a name is accepted where an id is');

  const list = await admin('GET', '/api/v1/api-keys');
  t.same(Object.keys(list.json), ['apiKeys']);
  t.ok(list.json.apiKeys.some((x: Json) => x.id === k.id));
  for (const x of secrets) t.notOk(list.text.includes(x), 'no secret in the list');

  const patched = await admin('PATCH', `/api/v1/api-keys/${k.id}`, { body: { description: 'nightly', role: 'viewer', workspaceAccess: { all: false, grants: [{ workspace: 'ops', role: 'developer' }] } } });
  t.equal(patched.status, 200);
  t.match(patched.json.apiKey, { description: 'nightly', role: 'viewer', workspaceAccess: { all: false, grants: [{ workspace: 'ops', role: 'developer' }] }, name: 'dagu-ci' });
  t.equal(patched.json.key, undefined);
  t.equal(await pub(secret, '/api/v1/workspaces/ops/settings'), 200, 'the grant applies at once');
  const owned = await admin('PATCH', `/api/v1/api-keys/${k.id}`, { body: { attributionClass: 'user_owned', ownerUserId: 'u-42' } });
  t.match(owned.json.apiKey, { attributionClass: 'user_owned', ownerUserId: 'u-42' });
  t.equal(owned.json.apiKey.serviceAccountName, undefined);

  const del = await admin('DELETE', `/api/v1/api-keys/${k.id}`);
  t.equal(del.status, 204);
  t.equal(del.text, '');
  t.equal(await pub(secret), 401, 'deleted key refused at once');
  isError(t, await admin('GET', `/api/v1/api-keys/${k.id}`), 404, 'not_found', undefined, 'get deleted:');
  isError(t, await admin('DELETE', `/api/v1/api-keys/${k.id}`), 404, 'not_found', undefined, 'delete twice:');
  isError(t, await admin('PATCH', '/api/v1/api-keys/no-such-key', { body: { description: 'x' } }), 404, 'not_found', undefined, 'patch unknown:');
});

t.test("Dagu: each of Dagu's validation rules is a 400 naming the field (409 for a taken name)", async (t) => {
  const before = (await admin('GET', '/api/v1/api-keys')).json.apiKeys.length;
  const cases: [what: string, body: Record<string, unknown>, field: string][] = [
    ['name missing', { ...DAGU_BODY, name: undefined }, 'name'],
    ['role missing', { ...DAGU_BODY, role: undefined }, 'role'],
    ['allowedSurfaces missing', { ...DAGU_BODY, allowedSurfaces: undefined }, 'allowedSurfaces'],
    ['attributionClass missing', { ...DAGU_BODY, attributionClass: undefined }, 'attributionClass'],
    ['name empty', { ...DAGU_BODY, name: '' }, 'name'],
    ['name 101 characters', { ...DAGU_BODY, name: 'n'.repeat(101) }, 'name'],
    ['description 501 characters', { ...DAGU_BODY, description: 'd'.repeat(501) }, 'description'],
    ['role unknown', { ...DAGU_BODY, role: 'boss' }, 'role'],
    ['scoped access with a role above viewer', { ...DAGU_BODY, workspaceAccess: { all: false, grants: [{ workspace: 'ops', role: 'developer' }] } }, 'role'],
    ['admin granted per workspace', { ...DAGU_BODY, role: 'viewer', workspaceAccess: { all: false, grants: [{ workspace: 'ops', role: 'admin' }] } }, 'workspaceAccess.grants[0].role'],
    ['all false without grants', { ...DAGU_BODY, role: 'viewer', workspaceAccess: { all: false, grants: [] } }, 'workspaceAccess.grants'],
    ['workspaceAccess not an object', { ...DAGU_BODY, workspaceAccess: 'all' }, 'workspaceAccess'],
    ['allowedSurfaces empty', { ...DAGU_BODY, allowedSurfaces: [] }, 'allowedSurfaces'],
    ['allowedSurfaces unknown', { ...DAGU_BODY, allowedSurfaces: ['web'] }, 'allowedSurfaces'],
    ['attributionClass unknown', { ...DAGU_BODY, attributionClass: 'robot' }, 'attributionClass'],
    ['user_owned without ownerUserId', { ...DAGU_BODY, attributionClass: 'user_owned', serviceAccountName: undefined }, 'ownerUserId'],
    ['serviceAccountName 101 characters', { ...DAGU_BODY, serviceAccountName: 's'.repeat(101) }, 'serviceAccountName'],
    ['read-only keyPrefix', { ...DAGU_BODY, keyPrefix: 'dg_x' }, 'keyPrefix'],
    ['snake_case field', { ...DAGU_BODY, rate_limit: 10 }, 'rate_limit'],
  ];
  for (const [what, body, field] of cases) {
    const r = await admin('POST', '/api/v1/api-keys', { body });
    isError(t, r, 400, 'bad_request', field, `${what}:`);
    if (what.includes('read-only')) t.match(r.json.message, /is read-only$/);
    if (what.endsWith('missing')) t.match(r.json.message, /is required$/);
  }
  t.equal((await admin('GET', '/api/v1/api-keys')).json.apiKeys.length, before, 'no key was created');

  const first = await admin('POST', '/api/v1/api-keys', { body: { ...DAGU_BODY, name: 'dagu-unique' } });
  t.equal(first.status, 201);
  secrets.push(first.json.key);
  isError(t, await admin('POST', '/api/v1/api-keys', { body: { ...DAGU_BODY, name: 'dagu-unique' } }), 409, 'conflict', undefined, 'create with a taken name:');
  const other = await admin('POST', '/api/v1/api-keys', { body: { ...DAGU_BODY, name: 'dagu-other' } });
  secrets.push(other.json.key);
  isError(t, await admin('PATCH', `/api/v1/api-keys/${other.json.apiKey.id}`, { body: { name: 'dagu-unique' } }), 409, 'conflict', undefined, 'rename to a taken name:');
  isError(t, await admin('PATCH', `/api/v1/api-keys/${other.json.apiKey.id}`, { body: { allowedSurfaces: [] } }), 400, 'bad_request', 'allowedSurfaces', 'patch to no surface:');
  isError(t, await admin('PATCH', `/api/v1/api-keys/${other.json.apiKey.id}`, { body: { role: 'admin', workspaceAccess: { all: false, grants: [{ workspace: 'ops', role: 'viewer' }] } } }), 400, 'bad_request', 'role', 'admin cannot be scoped:');
  isError(t, await admin('PATCH', `/api/v1/api-keys/${other.json.apiKey.id}`, { body: { status: 'inactive' } }), 400, 'bad_request', 'status', 'patch read-only:');
  t.equal((await admin('GET', `/api/v1/api-keys/${other.json.apiKey.id}`)).json.apiKey.name, 'dagu-other', 'unchanged');
});

t.test('every problem of a body at once (errors[], each at its field); ?dryRun validates and changes nothing', async (t) => {
  const count = async () => (await admin('GET', '/api/keys/counts')).json.total;
  const auditCount = async () => (await admin('GET', '/api/audit?limit=1000')).json.records.length;
  const [keysBefore, auditBefore] = [await count(), await auditCount()];
  const bad = {
    name: '',
    role: 'boss',
    workspaceAccess: { all: false, grants: [{ workspace: 'all', role: 'viewer' }, { workspace: 'ops', role: 'admin' }] },
    allowedSurfaces: [],
    attributionClass: 'user_owned',
    rateLimit: 601,
    expiresAt: '2020-01-01',
  };
  const expected = [
    { field: 'name', message: 'is required' },
    { field: 'role', message: 'must be one of viewer, operator, developer, manager, admin' },
    { field: 'workspaceAccess.grants[0].workspace', message: '"all" is reserved: use workspaceAccess {"all": true} for every workspace' },
    { field: 'workspaceAccess.grants[1].role', message: 'admin cannot be granted per workspace' },
    { field: 'allowedSurfaces', message: 'must name at least one of rest_api, mcp, a2a' },
    { field: 'rateLimit', message: 'must be a whole number of requests per minute from 1 to 600' },
    { field: 'expiresAt', message: 'must be in the future (a date after today)' },
    { field: 'ownerUserId', message: 'is required for a user_owned key' },
  ];
  for (const path of ['/api/v1/api-keys', '/api/v1/api-keys?dryRun=true']) {
    const r = await admin('POST', path, { body: bad });
    isError(t, r, 400, 'bad_request', 'name', `${path}:`);
    t.equal(r.json.message, 'name: is required', 'message and field: the first problem, as before');
    t.same(r.json.errors, expected, `${path}: every problem, each at its field, with the key service's message`);
  }
  // the JSON shape's problems and the rules' problems together
  const mixed = await admin('POST', '/api/v1/api-keys?dryRun=true', { body: { name: 5, role: 'boss', rateLimit: '10', workspaceAccess: { all: true } } });
  t.same(
    mixed.json.errors.map((e: { field: string }) => e.field),
    ['name', 'rateLimit', 'allowedSurfaces', 'attributionClass', 'role'],
    'wrong JSON types and missing fields, then the rules for the fields that were well-formed',
  );
  const ok = await admin('POST', '/api/v1/api-keys?dryRun=true', { body: { ...DAGU_BODY, name: 'dry-run-only' } });
  t.equal(ok.status, 200);
  t.same(ok.json, { dryRun: true, valid: true, errors: [] }, 'a body that would be accepted');
  t.equal((await admin('GET', '/api/v1/api-keys/dry-run-only')).status, 404, 'and nothing was created');

  const made = await admin('POST', '/api/v1/api-keys', { body: { ...DAGU_BODY, name: 'dry-run-target' } });
  secrets.push(made.json.key);
  const id = made.json.apiKey.id;
  const taken = await admin('POST', '/api/v1/api-keys?dryRun=true', { body: { ...DAGU_BODY, name: 'dry-run-target' } });
  t.equal(taken.status, 409, 'a taken name alone: the 409 the real create answers');
  t.match(taken.json, { code: 'conflict', field: 'name', errors: [{ field: 'name' }] });
  const takenAndBad = await admin('POST', '/api/v1/api-keys?dryRun=true', { body: { ...DAGU_BODY, name: 'dry-run-target', rateLimit: 0 } });
  t.same(takenAndBad.json.errors.map((e: { field: string }) => e.field), ['rateLimit', 'name'], 'with other problems: one 400 naming them all');
  const real409 = await admin('POST', '/api/v1/api-keys', { body: { ...DAGU_BODY, name: 'dry-run-target' } });
  t.match(real409.json, { code: 'conflict', field: 'name' }, 'the real create names the field of its 409 too');

  const patch = await admin('PATCH', `/api/v1/api-keys/${id}?dryRun=true`, { body: { rateLimit: 0, allowedSurfaces: [], name: ' ' } });
  t.same(patch.json.errors.map((e: { field: string }) => e.field), ['name', 'allowedSurfaces', 'rateLimit'], 'PATCH: every problem');
  const patchOk = await admin('PATCH', `/api/v1/api-keys/${id}?dryRun=true`, { body: { rateLimit: 5 } });
  t.same(patchOk.json, { dryRun: true, valid: true, errors: [] });
  t.equal((await admin('GET', `/api/v1/api-keys/${id}`)).json.apiKey.rateLimit, 60, 'a dry run changes nothing');
  isError(t, await admin('PATCH', `/api/v1/api-keys/${id}?dryRun=yes`, { body: {} }), 400, 'bad_request', 'dryRun');

  // the Dagen shape: the same rules, its own field names
  const dagen = await admin('POST', '/api/keys?dry_run=true', { body: { name: '', scopes: [], rate_limit: 0, expires_at: 'soon' } });
  t.same(dagen.json.errors.map((e: { field: string }) => e.field), ['name', 'scopes', 'rate_limit', 'expires_at'], 'Dagen: every problem in its spelling');
  const dagenOk = await admin('PUT', `/api/keys/${id}?dry_run=true`, { body: { rate_limit: 7 } });
  t.same(dagenOk.json, { dry_run: true, valid: true, errors: [] });
  t.equal(await count(), keysBefore + 1, 'only the one real create made a key');
  t.equal(await auditCount(), auditBefore + 1, 'and only it was audited');
});

// ---------------------------------------------------------------- limit, declared keys

t.test('keys.max_keys: creation stops with 403 through both APIs; existing keys keep working', async (t) => {
  const lim = await startStack(t.testdir(), { adminToken: TOKEN, yaml: 'keys: { max_keys: 2 }\n' });
  t.teardown(() => lim.close());
  const url = lim.gateway.adminUrl!;
  const a = await http(url + '/api/keys', 'POST', { body: { name: 'one', scopes: ['workflows'] } });
  const b = await http(url + '/api/v1/api-keys', 'POST', { body: { ...DAGU_BODY, name: 'two' } });
  t.same([a.status, b.status], [201, 201]);
  secrets.push(a.json.key, b.json.key);
  const dagen = await http(url + '/api/keys', 'POST', { body: { name: 'three', scopes: ['workflows'] } });
  isError(t, dagen, 403, 'forbidden', undefined, 'Dagen create beyond the limit:');
  t.match(dagen.json.message, /2 API keys exist.*keys\.max_keys.*is 2.*delete a key/);
  const dagu = await http(url + '/api/v1/api-keys', 'POST', { body: { ...DAGU_BODY, name: 'three' } });
  isError(t, dagu, 403, 'forbidden', undefined, 'Dagu create beyond the limit:');
  t.match(dagu.json.message, /2 API keys exist/);
  t.equal((await http(url + '/api/keys', 'GET')).json.length, 2, 'nothing created');
  const ok = await http(`${lim.url}/api/v1/dags`, 'GET', { auth: b.json.key });
  t.equal(ok.status, 200, 'existing keys keep working');
  t.equal((await http(`${url}/api/keys/${a.json.id}`, 'DELETE')).status, 204);
  const again = await http(url + '/api/keys', 'POST', { body: { name: 'three', scopes: ['workflows'] } });
  t.equal(again.status, 201, 'after a delete there is room again');
  secrets.push(again.json.key);
});

t.test('keys declared in the config: loaded at start, usable, listed as config-managed, refused for change with 409', async (t) => {
  const list = (await admin('GET', '/api/keys')).json;
  const ops = list.find((k: Json) => k.name === 'yaml-ops');
  const digestOnly = list.find((k: Json) => k.name === 'yaml-digest');
  t.match(ops, { managed_by: 'config', scopes: ['workflows'], key_prefix: DECLARED_SECRET.slice(0, 8), status: 'active' });
  t.match(digestOnly, { managed_by: 'config', key_prefix: '' });
  t.equal(await pub(DECLARED_SECRET), 200, 'the secret from ${ENV} works');
  t.equal((await http(s.url + '/api/v1/agent/chat', 'POST', { auth: DECLARED_SECRET })).status, 403, 'with its declared scopes only (no agents)');
  t.equal(await pub(DIGEST_ONLY_SECRET), 200, 'the key declared by digest works with its secret');
  const dagu = (await admin('GET', `/api/v1/api-keys/${ops.id}`)).json.apiKey;
  t.match(dagu, { role: 'operator', managedBy: 'config', createdBy: 'config' });

  const attempts: [string, string, unknown?][] = [
    ['PUT', `/api/keys/${ops.id}`, { is_active: false }],
    ['PUT', `/api/keys/${ops.id}`, { name: 'renamed' }],
    ['DELETE', `/api/keys/${ops.id}`],
    ['POST', `/api/keys/${ops.id}/regenerate`],
    ['POST', `/api/keys/${digestOnly.id}/regenerate?grace_seconds=10`],
    ['PATCH', `/api/v1/api-keys/${ops.id}`, { description: 'changed' }],
    ['DELETE', `/api/v1/api-keys/${digestOnly.id}`],
  ];
  for (const [method, path, body] of attempts) {
    const r = await admin(method, path, { body });
    isError(t, r, 409, 'conflict', undefined, `${method} ${path}:`);
    t.match(r.json.message, /declared in the configuration file; change it there/);
  }
  t.equal(await pub(DECLARED_SECRET), 200, 'still working, unchanged');
});

t.test('declared keys follow the file across restarts; a clash with an API key stops the start', async (t) => {
  const dir = t.testdir();
  const env = { DECLARED_KEY: DECLARED_SECRET };
  const one = await startStack(dir, { adminToken: TOKEN, yaml: DECLARED, env });
  const id = (await one.gateway.keys.get('yaml-ops')).id;
  await one.key({ name: 'made-by-api', role: 'viewer' });
  await one.close();

  const changed = `keys:
  declared:
    - name: yaml-ops
      role: developer
      scopes: [workflows, agents]
      secret: \${DECLARED_KEY}
`;
  const two = await startStack(dir, { adminToken: TOKEN, yaml: changed, env: { DECLARED_KEY: DECLARED_SECRET + '-v2' } });
  secrets.push(DECLARED_SECRET + '-v2');
  const k = await two.gateway.keys.get('yaml-ops');
  t.match(k, { id, role: 'developer', scopes: ['workflows', 'agents'], managedBy: 'config' }, 'updated in place');
  t.equal((await http(`${two.url}/api/v1/dags`, 'GET', { auth: DECLARED_SECRET })).status, 401, 'the replaced secret no longer works');
  t.equal((await http(`${two.url}/api/v1/dags`, 'GET', { auth: DECLARED_SECRET + '-v2' })).status, 200, 'the new one does');
  await t.rejects(two.gateway.keys.get('yaml-digest'), 'the undeclared key was removed');
  t.equal((await two.gateway.keys.get('made-by-api')).managedBy, 'api', 'keys made through the API are left alone');
  const records = (await http(`${two.gateway.adminUrl}/api/audit`, 'GET')).json.records;
  t.match(records.slice(0, 2), [
    { actor: 'config', action: 'delete', key_name: 'yaml-digest' },
    { actor: 'config', action: 'update', key_name: 'yaml-ops', details: { changes: { role: { from: 'operator', to: 'developer' }, secret: 'replaced' } } },
  ]);
  t.ok(two.logs.some((l) => /declared in the config synced/.test(l) && /"updated":1/.test(l) && /"deleted":1/.test(l)), 'the sync is logged');
  await two.close();

  const clash = `keys:
  declared:
    - name: made-by-api
      secret: \${DECLARED_KEY}
`;
  await t.rejects(startStack(dir, { adminToken: TOKEN, yaml: clash, env }), /made-by-api.*managed through the API or CLI/, 'start refused');
});

t.test('keys.declared in the YAML: exactly one of secret and secret_digest, unique names, no short secret', async (t) => {
  const dir = t.testdir({
    'rules.yaml': `keys:
  declared:
    - { name: a, secret: "\${SHORT}" }
    - { name: a, secret_digest: ${'0'.repeat(64)} }
    - { name: b }
    - { name: c, secret: "\${LONG}", secret_digest: ${'0'.repeat(64)} }
`,
    'shape.yaml': `keys:
  declared:
    - { name: d, secret_digest: not-hex }
    - { name: e, secret: "\${LONG}", colour: red }
    - { secret: "\${LONG}" }
`,
  });
  const env = { SHORT: 'tiny-secret', LONG: 'a-long-enough-secret-0123456789' };
  const issuesOf = (file: string): string[] => {
    try {
      loadConfig(join(dir, file), env);
    } catch (err) {
      t.ok(err instanceof ConfigError, `${file}: a ConfigError`);
      t.notOk((err as Error).message.includes('tiny-secret'), `${file}: the error never shows a secret`);
      t.notOk((err as Error).message.includes(env.LONG), `${file}: not even a valid one`);
      return (err as ConfigError).issues.map((i) => `${i.line}: ${i.field}: ${i.message}`);
    }
    t.fail(`${file} loaded`);
    return [];
  };
  const expect = (file: string, expected: RegExp[]): void => {
    const issues = issuesOf(file);
    t.equal(issues.length, expected.length, issues.join('\n'));
    expected.forEach((re, i) => t.match(issues[i], re));
  };
  expect('rules.yaml', [
    /^3: keys\.declared\[0\]\.secret: must be at least 20 characters/,
    /^4: keys\.declared\[1\]\.name: duplicate declared key name "a"/,
    /^5: keys\.declared\[2\]\.secret: needs secret .* or secret_digest/,
    /^6: keys\.declared\[3\]\.secret_digest: give secret or secret_digest, not both/,
  ]);
  expect('shape.yaml', [
    /^3: keys\.declared\[0\]\.secret_digest: .*does not match/,
    /^4: keys\.declared\[1\]\.colour: unknown field/,
    /^5: keys\.declared\[2\]\.name: missing required field "name"/,
  ]);
});

// ---------------------------------------------------------------- audit, OpenAPI, logs

t.test('audit: every change recorded with who, what, when, from where; never a secret', async (t) => {
  const created = await admin('POST', '/api/keys', { body: { name: 'audit-me', scopes: ['agents'] } });
  secrets.push(created.json.key);
  const id = created.json.id;
  await admin('PUT', `/api/keys/${id}`, { body: { rate_limit: 10 } });
  await admin('PUT', `/api/keys/${id}`, { body: { is_active: false } });
  await admin('PUT', `/api/keys/${id}`, { body: { is_active: true } });
  const regen = await admin('POST', `/api/keys/${id}/regenerate?grace_seconds=5`);
  secrets.push(regen.json.key);
  await admin('PATCH', `/api/v1/api-keys/${id}`, { body: { description: 'audited' } });
  await admin('DELETE', `/api/v1/api-keys/${id}`);

  const r = await admin('GET', `/api/audit?key_id=${id}`);
  t.equal(r.status, 200);
  const records = r.json.records;
  t.same(records.map((x: Json) => x.action), ['delete', 'update', 'regenerate', 'activate', 'deactivate', 'update', 'create'], 'newest first');
  for (const x of records) {
    t.match(x, { id: /^[0-9a-f-]{36}$/, at: /^\d{4}-\d\d-\d\dT/, actor: 'admin-token', key_id: id, key_name: 'audit-me', remote_address: /127\.0\.0\.1$/ });
  }
  t.match(records[5].details, { changes: { rateLimit: { from: 60, to: 10 } } });
  t.match(records[2].details, { graceSeconds: 5 });
  t.equal(Date.parse(records[0].at) >= Date.parse(records[6].at), true);

  t.equal((await admin('GET', '/api/audit?limit=3')).json.records.length, 3, 'limit');
  // older records by cursor: every record once, newest first
  const everyId = (await admin('GET', '/api/audit?limit=1000')).json.records.map((r: { id: string }) => r.id);
  const paged: string[] = [];
  let cursor = '';
  do {
    const page = await admin('GET', `/api/audit?limit=4${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    paged.push(...page.json.records.map((r: { id: string }) => r.id));
    cursor = page.json.nextCursor ?? '';
  } while (cursor);
  t.same(paged, everyId, 'pages of 4 follow nextCursor through every record');
  isError(t, await admin('GET', '/api/audit?cursor=x-1'), 400, 'bad_request', 'cursor', 'a cursor not made here:');
  t.ok((await admin('GET', '/api/audit')).json.records.length > 20, 'all keys by default');
  for (const bad of ['0', '1001', 'x', '-5']) isError(t, await admin('GET', `/api/audit?limit=${bad}`), 400, 'bad_request', 'limit', `limit=${bad}:`);

  const all = (await admin('GET', '/api/audit?limit=1000')).text;
  for (const x of secrets) t.notOk(all.includes(x), `no secret in the audit records (${x.slice(0, 6)}…)`);
});

t.test('GET /openapi.json describes exactly the routes the admin listener serves', async (t) => {
  const r = await admin('GET', '/openapi.json');
  t.equal(r.status, 200);
  const doc = r.json;
  t.equal(doc.openapi, '3.0.3');
  const served = s.gateway.admin!.router.routes().map((x) => `${x.method} ${x.path} ${x.operationId}`).sort();
  const documented: string[] = [];
  for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, { operationId: string; responses: object }>>)) {
    for (const [method, o] of Object.entries(ops)) {
      documented.push(`${method.toUpperCase()} ${path} ${o.operationId}`);
      t.ok(Object.keys(o.responses).length > 1, `${method} ${path} documents its responses`);
    }
  }
  t.same(documented.sort(), served, 'every served route is documented, and every documented one is served');
  t.equal(served.length, 32, 'Dagen 5 + usage + counts + quota, Dagu 5 + usage + quota, groups 6 in each shape, group usage (both shapes), audit, info (the key page), this document');
  // every $ref resolves
  const text = JSON.stringify(doc);
  for (const [, name] of text.matchAll(/"#\/components\/schemas\/([^"]+)"/g)) t.ok(doc.components.schemas[name!], `schema ${name} exists`);
  t.same(doc.components.schemas.DaguCreateAPIKeyRequest.required, ['name', 'role', 'allowedSurfaces', 'attributionClass']);
  t.same(doc.components.schemas.DagenCreateRequest.required, ['name', 'scopes']);

  // Redocly's recommended rules (what API portals and linters in CI run): no error, no warning
  const file = join(t.testdir(), 'openapi.json');
  writeFileSync(file, r.text);
  const redocly = createRequire(import.meta.url).resolve('@redocly/cli/bin/cli.js');
  const lint = spawnSync(process.execPath, [redocly, 'lint', '--format=summary', file], {
    encoding: 'utf8',
    env: { ...process.env, NODE_OPTIONS: '', REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true' },
  });
  const said = lint.stdout + lint.stderr;
  t.equal(lint.status, 0, `redocly lint: ${said}`);
  t.notMatch(said, /\d+ errors?|\d+ warnings?|Validation failed/, 'Redocly reports no error and no warning');
});

t.test('logs: admin requests and key changes are logged; no line holds a secret or the token', async (t) => {
  const changes = s.logs.filter((l) => l.includes('"msg":"key change"'));
  t.ok(changes.length > 20, `${changes.length} key-change lines`);
  t.match(JSON.parse(changes.find((l) => l.includes('"action":"regenerate"'))!), { audit: { actor: 'admin-token', action: 'regenerate' } });
  const requests = s.logs.filter((l) => l.includes('"msg":"admin request"'));
  t.ok(requests.length > 50, `${requests.length} admin request lines`);
  t.match(JSON.parse(requests[0]!), { admin: true, method: /^[A-Z]+$/, path: /^\//, status: Number, latency_ms: Number });
  for (const line of s.logs) {
    for (const x of [...secrets, ...s.secrets]) if (line.includes(x)) t.fail(`log line holds a secret: ${line}`);
  }
  t.ok(s.logs.length > 100, `${s.logs.length} lines grepped`);
});
