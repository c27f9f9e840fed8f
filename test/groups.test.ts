// Key groups in the key service: validation (every problem at once, the field named), the keys'
// group field, audit records, declared groups, the cached KeyAccess carrying the group's limits and
// dropped when the group changes, and a key file from before groups.

import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { KeysConfig } from '../src/config/types.js';
import { loadConfig } from '../src/config/load.js';
import { ConflictError, NotFoundError, ValidationError } from '../src/errors.js';
import { KeyService, serviceConfig } from '../src/keys/service.js';
import { digestSecret } from '../src/keys/secret.js';
import { SqliteKeyStore } from '../src/keys/sqlite-store.js';
import type { AuditRecord } from '../src/keys/store.js';

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
