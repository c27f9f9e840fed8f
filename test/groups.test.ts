// Key groups in the key service: validation (every problem at once, the field named), the keys'
// group field, audit records, declared groups, the cached KeyAccess carrying the group's limits and
// dropped when the group changes, and a key file from before groups.

import t from 'tap';
import { request } from 'undici';
import WebSocket from 'ws';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { KeysConfig } from '../src/config/types.js';
import { loadConfig } from '../src/config/load.js';
import { ConflictError, NotFoundError, ValidationError } from '../src/errors.js';
import { KeyService, serviceConfig } from '../src/keys/service.js';
import { digestSecret } from '../src/keys/secret.js';
import { SqliteKeyStore } from '../src/keys/sqlite-store.js';
import { exportLines, importLines } from '../src/keys/transfer.js';
import type { AuditRecord } from '../src/keys/store.js';
import { adminClient, startStack } from './helpers.js';
import { Redis } from 'ioredis';
import type { RedisClient } from '../src/redis.js';
import { memoryWindows, type WindowStore } from '../src/limits/limiter.js';
import { LocalWindows } from '../src/limits/local.js';
import { BatchedCounterClient, runCounterOps } from '../src/limits/cluster-store.js';
import { RedisWindows } from '../src/limits/redis-windows.js';
import { skipWithoutRedis, startRedis } from './redis.js';

const CONFIG: KeysConfig = { prefix: 'dg_', rate_limit: { default: 60, min: 1, max: 600 } };

function fields(err: unknown): string[] {
  return (err as ValidationError).errors.map((e) => e.field);
}

t.test('group CRUD: validation names every field at once; names are identities; audited; 409 while keys belong to it', async (t) => {
  const store = new SqliteKeyStore(':memory:');
  t.teardown(() => store.close());
  const audit: AuditRecord[] = [];
  const svc = new KeyService(store, CONFIG, Date.now, { store, log: (r) => audit.push(r) });

  const bad = await svc.createGroup({ name: '', rateLimit: 0, quota: { limit: 5 } }, 'test').catch((e: unknown) => e);
  t.type(bad, ValidationError);
  t.same(fields(bad), ['name', 'rateLimit', 'quota.period'], 'every problem at once, each at its field');
  await t.rejects(svc.checkCreateGroup({ name: 'x', rateLimit: 'lots' }), { errors: [{ field: 'rateLimit' }] }, 'dry run: same rules');

  const g = await svc.createGroup({ name: ' ci-tenant ', description: 'one tenant', rateLimit: '600', quota: { limit: 1000, period: 'month' } }, 'cli:alice');
  t.match(g, { name: 'ci-tenant', description: 'one tenant', rateLimit: 600, quota: { limit: 1000, period: 'month', refill: 'reset', start: null }, managedBy: 'api', createdBy: 'cli:alice' });
  await t.rejects(svc.createGroup({ name: 'ci-tenant' }, 'test'), ConflictError, 'a taken name: 409');
  await t.rejects(svc.checkCreateGroup({ name: 'ci-tenant' }), ConflictError, 'the dry run says so too');
  await t.rejects(svc.checkCreateGroup({ name: 'ci-tenant', rateLimit: -1 }), { errors: [{ field: 'rateLimit' }, { field: 'name' }] }, 'with other problems: all of them (400)');
  await svc.checkCreateGroup({ name: 'other', rateLimit: 5 });

  await t.rejects(svc.updateGroup('ci-tenant', { name: 'renamed' }, 'test'), { errors: [{ field: 'name' }] }, 'a name cannot change');
  await t.rejects(svc.updateGroup('nope', { rateLimit: 5 }, 'test'), NotFoundError);
  const up = await svc.updateGroup('ci-tenant', { rateLimit: null, quota: { remaining: 50 } }, 'cli:bob');
  t.match(up, { rateLimit: null, quota: { remaining: 50 }, updatedBy: 'cli:bob' });
  t.same(await svc.groupStatus('ci-tenant'), { ...up, keys: 0, quotaStatus: { remaining: 50, nextRefillAt: null } }, 'status: members and the quota now');

  // keys name groups; an unknown group is a field error naming it, with the other problems
  const { key } = await svc.create({ name: 'ci', group: 'ci-tenant' }, 'test');
  t.equal(key.group, 'ci-tenant');
  const unknown = await svc.create({ name: 'x', group: 'no-such', rateLimit: 0 }, 'test').catch((e: unknown) => e);
  t.same(fields(unknown), ['rateLimit', 'group'], 'unknown group: a field error with the others');
  t.match((unknown as ValidationError).errors[1]!.reason, /no group named "no-such"/);
  await t.rejects(svc.checkCreate({ name: 'y', group: 'no-such' }), { errors: [{ field: 'group' }] }, 'dry run of create');
  await t.rejects(svc.checkUpdate('ci', { group: 'no-such' }), { errors: [{ field: 'group' }] }, 'dry run of update');
  await t.rejects(svc.update('ci', { group: 'no-such' }, 'test'), { errors: [{ field: 'group' }] }, 'update');
  t.same((await svc.page({ group: 'ci-tenant' })).keys.map((k) => k.name), ['ci'], 'the keys list filter');
  t.equal((await svc.groupStatus('ci-tenant')).keys, 1);

  await t.rejects(svc.deleteGroup('ci-tenant', 'test'), { status: 409, message: /still has 1 key.*--no-group/ }, 'a group with keys is not deleted');
  t.equal((await svc.update('ci', { group: null }, 'test')).group, null, 'ungrouped');
  t.equal((await svc.deleteGroup('ci-tenant', 'test')).name, 'ci-tenant');
  await t.rejects(svc.getGroup('ci-tenant'), NotFoundError);

  const groupAudit = audit.filter((r) => r.action.startsWith('group.'));
  t.same(groupAudit.map((r) => [r.action, r.key_id, r.key_name, r.actor]), [
    ['group.create', 'group:ci-tenant', 'ci-tenant', 'cli:alice'],
    ['group.update', 'group:ci-tenant', 'ci-tenant', 'cli:bob'],
    ['group.delete', 'group:ci-tenant', 'ci-tenant', 'test'],
  ], 'every group change audited');
  t.same(groupAudit[1]!.details, { changes: { rateLimit: { from: 600, to: null }, quota: { from: { limit: 1000, period: 'month', refill: 'reset', start: null }, to: { remaining: 50 } } } });
  const keyUpdate = audit.find((r) => r.action === 'update' && r.key_name === 'ci');
  t.same(keyUpdate?.details, { changes: { group: { from: 'ci-tenant', to: null } } }, "a key's group change is in its audit record");
});

t.test("the cached KeyAccess carries the group's limits; a group change drops its keys from the cache", async (t) => {
  const store = new SqliteKeyStore(':memory:');
  t.teardown(() => store.close());
  const svc = new KeyService(store, CONFIG);
  await svc.createGroup({ name: 'tenant', rateLimit: 10 }, 'test');
  const { secret } = await svc.create({ name: 'k', group: 'tenant' }, 'test');
  const { secret: plain } = await svc.create({ name: 'plain' }, 'test');
  const d = digestSecret(secret);
  const first = await svc.lookup(d);
  t.same(first?.group, { name: 'tenant', owner: 'group:tenant', rateLimit: 10, quota: null });
  t.equal(svc.lookup(d), first, 'then from the cache, synchronously');
  t.equal((await svc.lookup(digestSecret(plain)))?.group, null, 'a key without a group: null');
  await svc.updateGroup('tenant', { rateLimit: 3, quota: { remaining: 2 } }, 'test');
  const after = await svc.lookup(d);
  t.same(after?.group, { name: 'tenant', owner: 'group:tenant', rateLimit: 3, quota: { remaining: 2 } }, 'the change is seen at once');
  await svc.updateGroup('tenant', { rateLimit: null, quota: null }, 'test');
  t.equal((await svc.lookup(d))?.group, null, 'a group without limits costs its keys nothing');
});

t.test('groups.declared: synced (managed by the config), keys.declared may name them, file:line:col errors', async (t) => {
  const dir = t.testdir();
  const secret = 'declared-secret-0123456789abcdef';
  const file = (groups: string, keyGroup = 'tenant') => {
    const f = join(dir, 'gw.yaml');
    writeFileSync(
      f,
      `upstreams: [{ name: dagu, api_base_url: "http://127.0.0.1:1/api/v2" }]\nroutes: [{ path: /api/v2/*, upstream: dagu }]\n` +
        `groups:\n  declared:\n${groups}\n` +
        `keys:\n  declared:\n    - name: bot\n      secret: \${DECLARED_SECRET}\n      group: ${keyGroup}\n`,
    );
    return f;
  };
  // the schema and the service's quota rules, at the line and column of the field
  t.throws(() => loadConfig(file('    - name: tenant\n      rate_limit: 0'), { DECLARED_SECRET: secret }), /gw\.yaml:\d+:\d+: groups\.declared\[0\]\.rate_limit/);
  t.throws(() => loadConfig(file('    - name: tenant\n      quota: { remaining: 5, period: day }'), { DECLARED_SECRET: secret }), /gw\.yaml:6:38: groups\.declared\[0\]\.quota\.period: a one-time quota/);
  t.throws(() => loadConfig(file('    - name: tenant\n    - name: tenant'), { DECLARED_SECRET: secret }), /gw\.yaml:6:\d+: groups\.declared\[1\]\.name: duplicate declared group name "tenant" \(first declared at .*gw\.yaml:5:/);
  t.throws(() => loadConfig(file('    - name: tenant\n      colour: red'), { DECLARED_SECRET: secret }), /gw\.yaml:6:\d+: .*colour/);

  const config = loadConfig(file('    - name: tenant\n      rate_limit: 5\n      quota: { limit: 100, period: day }'), { DECLARED_SECRET: secret });
  const store = new SqliteKeyStore(':memory:');
  t.teardown(() => store.close());
  const svc = new KeyService(store, serviceConfig(config), Date.now, { store });
  const synced = await svc.syncDeclared();
  t.same(synced, { created: 1, updated: 0, deleted: 0, groups: { created: 1, updated: 0, deleted: 0 } });
  t.match(await svc.getGroup('tenant'), { rateLimit: 5, quota: { limit: 100, period: 'day' }, managedBy: 'config' });
  t.equal((await svc.get('bot')).group, 'tenant', 'the declared key is in the declared group');
  await t.rejects(svc.updateGroup('tenant', { rateLimit: 9 }, 'test'), { status: 409, message: /declared in the configuration file/ }, 'the API does not change a declared group');
  await t.rejects(svc.deleteGroup('tenant', 'test'), ConflictError);
  // a reload: the group changes; then it goes once no key names it
  svc.setConfig(serviceConfig(loadConfig(file('    - name: tenant\n      rate_limit: 7'), { DECLARED_SECRET: secret })));
  t.same((await svc.syncDeclared()).groups, { created: 0, updated: 1, deleted: 0 });
  t.match(await svc.getGroup('tenant'), { rateLimit: 7, quota: null });
  svc.setConfig(serviceConfig(loadConfig(file('    - name: other', 'other'), { DECLARED_SECRET: secret })));
  t.same((await svc.syncDeclared()).groups, { created: 1, updated: 0, deleted: 1 }, 'the key moved, the old group removed');
  // a declared key naming a group nobody has: the service's error at the declared key's path
  svc.setConfig(serviceConfig(loadConfig(file('    - name: other', 'ghost'), { DECLARED_SECRET: secret })));
  await t.rejects(svc.syncDeclared(), { message: /keys\.declared\[0\]\.group: no group named "ghost"/ });
});

t.test('a key file from before groups opens, keeps its keys and gains groups', async (t) => {
  const file = join(t.testdir(), 'old.db');
  const Database = (await import('better-sqlite3')).default;
  const db = new Database(file);
  db.exec(`CREATE TABLE api_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL DEFAULT '',
    digest TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL, scopes TEXT NOT NULL, role TEXT NOT NULL, workspace TEXT,
    workspace_access TEXT NOT NULL, surfaces TEXT, attribution_class TEXT NOT NULL, service_account_name TEXT,
    owner_user_id TEXT, rate_limit INTEGER NOT NULL, expires_at TEXT, is_active INTEGER NOT NULL,
    request_count INTEGER NOT NULL DEFAULT 0, last_used_at TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    created_by TEXT, updated_by TEXT, managed_by TEXT NOT NULL DEFAULT 'api', previous_digest TEXT,
    previous_digest_expires_at TEXT, quota TEXT)`);
  const digest = 'b'.repeat(64);
  db.prepare(`INSERT INTO api_keys (id, name, digest, prefix, scopes, role, workspace_access, attribution_class, service_account_name, rate_limit, is_active, created_at, updated_at, quota)
    VALUES ('old-1', 'old-key', ?, 'dg_old', '["agents","workflows"]', 'viewer', '{"all":true,"grants":[]}', 'service_account', 'old-key', 60, 1, '2030-01-01T00:00:00.000Z', '2030-01-01T00:00:00.000Z', '{"remaining":3}')`).run(digest);
  db.close();
  const store = new SqliteKeyStore(file);
  t.teardown(() => store.close());
  t.match(await store.findByDigest(digest), { id: 'old-1', name: 'old-key', quota: { remaining: 3 }, group: null }, 'the old key, without a group');
  const svc = new KeyService(store, CONFIG);
  await svc.createGroup({ name: 'tenant', quota: { remaining: 10 } }, 'test');
  t.equal((await svc.update('old-key', { group: 'tenant' }, 'test')).group, 'tenant', 'and can join one');
  t.same((await svc.page({ group: 'tenant' })).keys.map((k) => k.id), ['old-1']);
});

// ---------------------------------------------------------------- admission (in process)

async function get(url: string, secret: string, path = '/api/v1/dags'): Promise<{ status: number; code?: string; message?: string; headers: Record<string, string | string[] | undefined> }> {
  const r = await request(`${url}${path}`, { headers: { 'x-api-key': secret } });
  const text = await r.body.text();
  if (r.statusCode === 200) return { status: 200, headers: r.headers };
  const body = JSON.parse(text) as { code: string; message: string };
  return { status: r.statusCode, code: body.code, message: body.message, headers: r.headers };
}

t.test("a group's quota is shared by its keys: exactly its budget is forwarded, a refusal consumes nothing, the key's own limits still apply", async (t) => {
  const s = await startStack(t.testdir());
  t.teardown(() => s.close());
  const svc = s.gateway.keys;
  await svc.createGroup({ name: 'tenant', quota: { remaining: 10 } }, 'test');
  const keys = [];
  for (const name of ['ci', 'mcp', 'dev']) keys.push(await s.key({ name, group: 'tenant', rateLimit: 600 }));
  const before = s.dagu.received.length;
  const answers = [];
  for (let i = 0; i < 15; i++) answers.push(await get(s.url, keys[i % 3]!.secret));
  t.equal(answers.filter((a) => a.status === 200).length, 10, 'exactly the group budget allowed, across three keys');
  t.equal(s.dagu.received.length - before, 10, 'and exactly that reached the upstream');
  const refused = answers.filter((a) => a.status === 429);
  t.ok(refused.every((a) => a.code === 'quota_exceeded' && /^group "tenant": the quota shared by its keys is used up/.test(a.message!)), "each refusal says it was the group's budget");
  t.equal(refused[0]!.headers['x-quota-remaining'], '0', "the refusal's quota headers are the group's");
  t.same(answers.slice(0, 10).map((a) => Number(a.headers['x-quota-remaining'])), [9, 8, 7, 6, 5, 4, 3, 2, 1, 0], "allowed answers: the group's remaining (the only quota)");
  t.match(await svc.groupStatus('tenant'), { keys: 3, quotaStatus: { remaining: 0, nextRefillAt: null } });

  // the key's own quota and the group's: the tighter one shows; group refusals do not use the key's credits
  await svc.setGroupQuotaRemaining('tenant', { remaining: 3 }, 'test');
  const own = await s.key({ name: 'own', group: 'tenant', rateLimit: 600, quota: { remaining: 5 } });
  const ownAnswers = [];
  for (let i = 0; i < 5; i++) ownAnswers.push(await get(s.url, own.secret));
  t.same(ownAnswers.map((a) => a.status), [200, 200, 200, 429, 429], 'the group (3) binds before the key (5)');
  t.same(ownAnswers.slice(0, 3).map((a) => a.headers['x-quota-remaining']), ['2', '1', '0'], 'X-Quota-*: the budget with the least remaining (the group)');
  t.equal((await svc.quotaStatus(await svc.get('own')))!.remaining, 2, "the group's refusals took nothing from the key's own quota");

  // the key's quota refuses: the group's credits are given back
  await svc.setGroupQuotaRemaining('tenant', { remaining: 10 }, 'test');
  const tight = await s.key({ name: 'tight', group: 'tenant', rateLimit: 600, quota: { remaining: 1 } });
  t.same([(await get(s.url, tight.secret)).status, (await get(s.url, tight.secret)).status, (await get(s.url, tight.secret)).status], [200, 429, 429]);
  t.equal((await svc.groupQuotaStatus(await svc.getGroup('tenant')))!.remaining, 9, "the key's refusals took nothing from the group's quota");
  const keyRefusal = await get(s.url, tight.secret);
  t.match(keyRefusal.message, /this key's credits are used up/, "a refusal by the key's own quota says so");
});

t.test("a group's rate limit is shared by its keys, on top of each key's; the refused requests consume neither window", async (t) => {
  const s = await startStack(t.testdir());
  t.teardown(() => s.close());
  const svc = s.gateway.keys;
  await svc.createGroup({ name: 'burst', rateLimit: 5 }, 'test');
  const a = await s.key({ name: 'a', group: 'burst', rateLimit: 600 });
  const b = await s.key({ name: 'b', group: 'burst', rateLimit: 2 });
  const first = [await get(s.url, b.secret), await get(s.url, b.secret), await get(s.url, b.secret)];
  t.same(first.map((x) => x.status), [200, 200, 429], "key b's own limit (2) still applies");
  t.match(first[2]!.message, /^rate limit of 2 requests per minute exceeded/, "and its refusal is the key's");
  t.same(first.slice(0, 2).map((x) => x.headers['x-ratelimit-remaining']), ['1', '0'], "b's headers: its own window, tighter than the group's");
  // b's refused request did not count in the group's window: a has 3 left of the group's 5
  const rest = [];
  for (let i = 0; i < 5; i++) rest.push(await get(s.url, a.secret));
  t.same(rest.map((x) => x.status), [200, 200, 200, 429, 429], "the group's 5 per minute across both keys");
  t.same(rest.slice(0, 3).map((x) => x.headers['x-ratelimit-remaining']), ['2', '1', '0'], "a's headers: the group's window (the least remaining)");
  t.match(rest.slice(0, 3).map((x) => x.headers['ratelimit']), [/^"per-group";r=2;/, /^"per-group";r=1;/, /^"per-group";r=0;/], 'the IETF field names the policy');
  const refusal = rest[3]!;
  t.match(refusal.message, /^group "burst": 5 requests per minute shared by its keys exceeded; retry in \d+ s$/);
  t.ok(Number(refusal.headers['retry-after']) > 0, 'Retry-After');
  t.equal(refusal.headers['x-ratelimit-limit'], '5', "the refusal's headers are the group's window");
  // the group refusals gave a's own window back: lifting the group's limit, a has 600 - 3 left
  await svc.updateGroup('burst', { rateLimit: null }, 'test');
  const free = await get(s.url, a.secret);
  t.equal(free.status, 200, 'a group change applies to the next request');
  t.equal(free.headers['x-ratelimit-remaining'], '596', "a's window counted only its 4 allowed requests");
});

t.test('WebSocket upgrades and forward-auth answers take the group budget too', async (t) => {
  const secret = 'forward-auth-shared-secret-0123456789';
  const s = await startStack(t.testdir(), { yaml: `forward_auth: { secret: "${secret}" }` });
  t.teardown(() => s.close());
  await s.gateway.keys.createGroup({ name: 'tenant', quota: { remaining: 3 } }, 'test');
  const ws = await s.key({ name: 'ws', group: 'tenant', rateLimit: 600 });
  const fa = await s.key({ name: 'fa', group: 'tenant', rateLimit: 600 });
  const open = () =>
    new Promise<number>((resolve, reject) => {
      const sock = new WebSocket(`${s.url.replace('http', 'ws')}/api/v1/t/socket`, { headers: { 'x-api-key': ws.secret } });
      sock.once('open', () => {
        sock.close();
        resolve(101);
      });
      sock.once('unexpected-response', (_req, res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      sock.once('error', reject);
    });
  const ask = async () => {
    const r = await request(`${s.url}/_keygate/auth`, { headers: { 'x-original-uri': '/api/v1/dags', 'x-api-key': fa.secret, 'x-keygate-forward-secret': secret } });
    await r.body.dump();
    return r.statusCode;
  };
  t.same([await open(), await ask(), await open(), await ask(), await open()], [101, 200, 101, 429, 429], 'three credits shared by a WebSocket key and a forward-auth key');
  t.equal(s.dagu.received.filter((r) => r.url.endsWith('/socket')).length, 2, 'two upgrades reached the upstream');
});

t.test('admin APIs: groups in both shapes, dry runs, errors naming the field, 409 while keys belong, keys carry their group, audit', async (t) => {
  const token = 'admin-token-for-group-tests-0123456789';
  const s = await startStack(t.testdir(), { adminToken: token });
  t.teardown(() => s.close());
  const admin = adminClient(s, token);
  // Dagen shape
  const bad = await admin('POST', '/api/groups', { name: '', rate_limit: 0, quota: { limit: 5 }, keys: 3 });
  t.equal(bad.status, 400);
  t.same(bad.json.errors.map((e: { field: string }) => e.field).sort(), ['keys', 'name', 'quota.period', 'rate_limit'], 'every problem at once, in the API\'s spelling');
  t.same((await admin('POST', '/api/groups?dry_run=true', { name: 'tenant', rate_limit: 5 })).json, { dry_run: true, valid: true, errors: [] }, 'a dry run that passes');
  t.equal((await admin('GET', '/api/groups/tenant')).status, 404, 'the dry run stored nothing');
  const created = await admin('POST', '/api/groups', { name: 'tenant', description: 'one tenant', rate_limit: 5, quota: { limit: 100, period: 'day' } });
  t.equal(created.status, 201);
  t.match(created.json, { name: 'tenant', description: 'one tenant', rate_limit: 5, quota: { limit: 100, period: 'day', refill: 'reset', start: null }, keys: 0, quota_status: { remaining: 100 }, managed_by: 'api' });
  t.match(created.json.quota_status.next_refill_at, /T00:00:00\.000Z$/);
  t.equal((await admin('POST', '/api/groups', { name: 'tenant' })).status, 409, 'a taken name');
  // keys name it, in both key APIs
  const key = await admin('POST', '/api/keys', { name: 'ci', scopes: ['workflows'], group: 'tenant' });
  t.equal(key.json.group, 'tenant', 'Dagen key: group');
  const unknown = await admin('POST', '/api/v1/api-keys', { name: 'x', role: 'viewer', allowedSurfaces: ['rest_api'], attributionClass: 'service_account', group: 'ghost' });
  t.equal(unknown.status, 400);
  t.match(unknown.json, { field: 'group', message: /no group named "ghost"/ }, 'Dagu key: an unknown group is a 400 naming the field');
  const dagu = await admin('POST', '/api/v1/api-keys', { name: 'mcp', role: 'viewer', allowedSurfaces: ['mcp'], attributionClass: 'service_account', group: 'tenant' });
  t.equal(dagu.json.apiKey.group, 'tenant', 'Dagu key: group');
  await admin('POST', '/api/keys', { name: 'loner', scopes: ['workflows'] });
  t.same((await admin('GET', '/api/keys?group=tenant')).json.map((k: { name: string }) => k.name).sort(), ['ci', 'mcp'], 'Dagen keys list ?group=');
  t.same((await admin('GET', '/api/v1/api-keys?group=tenant')).json.apiKeys.map((k: { name: string }) => k.name).sort(), ['ci', 'mcp'], 'Dagu keys list ?group=');
  t.equal((await admin('GET', '/api/keys')).json.find((k: { name: string }) => k.name === 'loner').group, null, 'a key without a group: null');
  // Dagu shape
  const g = await admin('GET', '/api/v1/api-key-groups/tenant');
  t.match(g.json, { group: { name: 'tenant', rateLimit: 5, keys: 2, quotaStatus: { remaining: 100 }, managedBy: 'api' } });
  t.match((await admin('GET', '/api/v1/api-key-groups')).json, { groups: [{ name: 'tenant', keys: 2 }] });
  const renamed = await admin('PATCH', '/api/v1/api-key-groups/tenant?dryRun=true', { name: 'other', rateLimit: -1 });
  t.same(renamed.json.errors.map((e: { field: string }) => e.field), ['name', 'rateLimit'], 'dry run of an update: all problems');
  const patched = await admin('PATCH', '/api/v1/api-key-groups/tenant', { rateLimit: null, quota: { remaining: 7 } });
  t.match(patched.json.group, { rateLimit: null, quota: { remaining: 7 }, quotaStatus: { remaining: 7, nextRefillAt: null } });
  const topUp = await admin('POST', '/api/groups/tenant/quota', { remaining: 3 });
  t.match(topUp.json, { quota_status: { remaining: 3 } }, 'a top-up');
  t.equal((await admin('PATCH', '/api/groups/tenant', { rate_limit: 'fast' })).json.field, 'rate_limit', 'Dagen: the field in its spelling');
  const conflict = await admin('DELETE', '/api/groups/tenant');
  t.equal(conflict.status, 409);
  t.match(conflict.json.message, /still has 2 keys/);
  await admin('PUT', `/api/keys/${key.json.id}`, { group: null });
  await admin('PATCH', `/api/v1/api-keys/${dagu.json.apiKey.id}`, { group: null });
  t.equal((await admin('DELETE', '/api/v1/api-key-groups/tenant')).status, 204, 'deleted once no key belongs to it');
  t.equal((await admin('GET', '/api/groups/tenant')).status, 404);
  const audit = await admin('GET', '/api/audit?key_id=group:tenant');
  t.same(audit.json.records.map((r: { action: string }) => r.action), ['group.delete', 'group.quota', 'group.update', 'group.create'], 'audited, filterable by group:<name>');
  t.equal(audit.json.records[0].actor, 'admin-token');
  // the OpenAPI document describes the routes
  const doc = (await admin('GET', '/openapi.json')).json;
  for (const p of ['/api/groups', '/api/groups/{name}', '/api/groups/{name}/quota', '/api/v1/api-key-groups', '/api/v1/api-key-groups/{groupName}', '/api/v1/api-key-groups/{groupName}/quota']) t.ok(doc.paths[p], `OpenAPI: ${p}`);
});

t.test('export and import carry groups (before the keys that name them) and each key\'s group; a key naming a missing group is refused', async (t) => {
  const from = new SqliteKeyStore(':memory:');
  const to = new SqliteKeyStore(':memory:');
  t.teardown(async () => {
    await from.close();
    await to.close();
  });
  const svc = new KeyService(from, CONFIG);
  await svc.createGroup({ name: 'tenant', rateLimit: 9, quota: { remaining: 4 } }, 'test');
  await svc.create({ name: 'ci', group: 'tenant' }, 'test');
  await svc.create({ name: 'plain' }, 'test');
  const lines: string[] = [];
  for await (const l of exportLines(from)) lines.push(l);
  t.match(lines[0], /^\{"type":"group","name":"tenant"/, 'groups first');
  const feed = async function* (ls: string[]) {
    yield* ls;
  };
  const dry = await importLines(to, feed(lines), { dryRun: true });
  t.match(dry, { created: 2, groups: { created: 1 }, errors: [] }, 'a dry run judges the keys against the groups the file creates');
  const report = await importLines(to, feed(lines));
  t.match(report, { created: 2, groups: { created: 1, updated: 0, skipped: 0 }, errors: [] });
  t.match(await to.getGroup('tenant'), { rateLimit: 9, quota: { remaining: 4 } });
  t.equal((await to.getByName('ci'))?.group, 'tenant');
  t.equal(await to.countGroupKeys('tenant'), 1);
  t.match(await importLines(to, feed(lines)), { created: 0, updated: 0, skipped: 2, groups: { skipped: 1 } }, 'twice: nothing changes');
  const orphan = await importLines(new SqliteKeyStore(':memory:'), feed(lines.slice(1)));
  t.match(orphan.errors, [/its group "tenant" is neither in the store nor earlier in the file/], 'a key naming a group the target lacks');
});

t.test('every window store gives a request back: memory, the primary of workers (IPC ops), Redis', async (t) => {
  const check = async (name: string, store: WindowStore) => {
    const id = `gb-${name}`;
    t.equal((await store.take(id, 3, 3)).admitted, 3, `${name}: the limit taken`);
    t.equal((await store.take(id, 3, 1)).admitted, 0, `${name}: full`);
    await store.giveBack!(id);
    t.equal((await store.take(id, 3, 2)).admitted, 1, `${name}: one given back, one more fits`);
  };
  await check('memory', memoryWindows());
  const primary = new LocalWindows();
  const client = new BatchedCounterClient((msg) => setImmediate(() => client.receive(runCounterOps(primary, msg))));
  await check('workers', client);
  if (skipWithoutRedis) return;
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const conn = new Redis(redis.url);
  t.teardown(() => conn.disconnect());
  await check('redis', new RedisWindows(conn as unknown as RedisClient));
});

t.test('a gateway started with groups.declared applies the declared group to a declared key; a reload changes it', async (t) => {
  const secret = 'declared-group-key-secret-0123456789';
  const yaml = (remaining: number) => `groups: { declared: [{ name: yaml-tenant, quota: { remaining: ${remaining} } }] }\nkeys: { declared: [{ name: bot, secret: "${secret}", group: yaml-tenant, rate_limit: 600 }] }`;
  const dir = t.testdir();
  const s = await startStack(dir, { yaml: yaml(2) });
  t.teardown(() => s.close());
  const statuses = async (n: number) => {
    const out = [];
    for (let i = 0; i < n; i++) out.push((await get(s.url, secret)).status);
    return out;
  };
  t.same(await statuses(3), [200, 200, 429], "the declared group's quota binds the declared key");
  const file = join(dir, 'gateway.yaml');
  writeFileSync(file, readFileSync(file, 'utf8').replace(yaml(2), yaml(1)));
  const r = await s.gateway.reload(loadConfig(file, { DAGU_URL: s.dagu.url, DAGEN_URL: s.dagen.url, DAGU_TOKEN: 'upstream-dagu-token' }));
  t.match(r.declaredKeys, /groups created 0, updated 1, deleted 0/, 'the reload says what it did to the groups');
  t.same(await statuses(2), [200, 429], 'the changed quota (starting full) applies at once');
});
