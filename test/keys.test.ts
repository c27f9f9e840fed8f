// Keys: secrets and digests, keyStatus, and KeyService (validation, cache, cross-process changes)
// over SqliteKeyStore in memory and on disk.

import { createHash, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import type { KeysConfig } from '../src/config/types.js';
import { ConflictError, KeygateError, LimitError, NotFoundError, ValidationError } from '../src/errors.js';
import { keyStatus, type ApiKey, type KeyAccess } from '../src/keys/model.js';
import { base62, digestSecret, displayPrefix, generateSecret } from '../src/keys/secret.js';
import { KeyService, type KeyInput } from '../src/keys/service.js';
import { SqliteKeyStore } from '../src/keys/sqlite-store.js';

const START = Date.parse('2030-06-15T12:00:00.000Z');
const START_ISO = '2030-06-15T12:00:00.000Z';
const CONFIG: KeysConfig = { prefix: 'dg_', rate_limit: { default: 60, min: 1, max: 600 } };
/** A declared-keys sync that changes no group. */
const NO_GROUP_CHANGES = { created: 0, updated: 0, deleted: 0 };
const SECRET = /^dg_[0-9A-Za-z]{43}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** A service with a settable clock, closed when the test ends. */
function service(t: Test, file = ':memory:', config: KeysConfig = CONFIG) {
  const clock = { now: START };
  const store = new SqliteKeyStore(file);
  t.teardown(() => store.close());
  const svc = new KeyService(store, config, () => clock.now);
  return { svc, store, clock };
}

/** The error a promise rejects with; a failed assertion when it resolves. */
async function rejection(t: Test, p: Promise<unknown>, what: string): Promise<KeygateError> {
  try {
    await p;
  } catch (err) {
    return err as KeygateError;
  }
  t.fail(`${what}: did not reject`);
  return new KeygateError('none', 0, 'did not reject');
}

/** Resolve a lookup result, and say whether it came synchronously. */
async function look(svc: KeyService, digest: string): Promise<{ sync: boolean; access: KeyAccess | null }> {
  const r = svc.lookup(digest);
  return { sync: !(r instanceof Promise), access: await r };
}

// ---------------------------------------------------------------- secret.ts

t.test('secrets: prefix + 43 base62 characters, all different', async (t) => {
  const secrets = Array.from({ length: 200 }, () => generateSecret('dg_'));
  for (const s of secrets) t.match(s, SECRET);
  t.equal(new Set(secrets).size, 200);
  t.match(generateSecret('dagu_'), /^dagu_[0-9A-Za-z]{43}$/);
  t.equal(generateSecret('').length, 43);
});

t.test('base62 pads to 43 digits and holds any 32-byte value', async (t) => {
  t.equal(base62(new Uint8Array(32)), '0'.repeat(43));
  t.equal(base62(Uint8Array.of(1)), '0'.repeat(42) + '1');
  t.equal(base62(Uint8Array.of(61)), '0'.repeat(42) + 'z');
  t.equal(base62(Uint8Array.of(62)), '0'.repeat(41) + '10');
  t.equal(base62(new Uint8Array(0)), '0'.repeat(43));
  const max = base62(new Uint8Array(32).fill(255));
  t.equal(max.length, 43);
  t.equal(BigInt(`0x${'ff'.repeat(32)}`), [...max].reduce((n, c) => n * 62n + BigInt('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'.indexOf(c)), 0n));
});

t.test('digest: 64 hex, stable, domain-separated', async (t) => {
  const secret = 'dg_' + 'x'.repeat(43);
  const d = digestSecret(secret);
  t.match(d, /^[0-9a-f]{64}$/);
  t.equal(digestSecret(secret), d, 'deterministic');
  t.not(digestSecret(secret + 'y'), d);
  t.not(d, createHash('sha256').update(secret).digest('hex'), 'not a plain sha256 of the secret');
  t.equal(d, createHash('sha256').update('keygate-api-key:v1\0' + secret).digest('hex'), 'the label is part of the stored format');
});

t.test('displayPrefix: the first 8 characters', async (t) => {
  t.equal(displayPrefix('dg_7Qx2aXYZ123'), 'dg_7Qx2a');
  const s = generateSecret('dg_');
  t.equal(displayPrefix(s), s.slice(0, 8));
  t.equal(displayPrefix(s).length, 8);
});

t.test('keyStatus: inactive before expired, expired at expiresAt', async (t) => {
  const at = '2030-06-15T12:00:00.000Z';
  const rows: [key: Pick<ApiKey, 'isActive' | 'expiresAt'>, nowMs: number, expected: string][] = [
    [{ isActive: true, expiresAt: null }, START, 'active'],
    [{ isActive: true, expiresAt: at }, START - 1, 'active'],
    [{ isActive: true, expiresAt: at }, START, 'expired'],
    [{ isActive: true, expiresAt: at }, START + 1, 'expired'],
    [{ isActive: false, expiresAt: null }, START, 'inactive'],
    [{ isActive: false, expiresAt: at }, START + 1, 'inactive'],
  ];
  for (const [key, nowMs, expected] of rows) t.equal(keyStatus(key, nowMs), expected, `${JSON.stringify(key)} at ${nowMs - START}`);
});

// ---------------------------------------------------------------- KeyService: create and validation

for (const backend of ['memory', 'file'] as const) {
  t.test(`KeyService over SqliteKeyStore (${backend})`, async (t) => {
    const file = (tt: Test) => (backend === 'memory' ? ':memory:' : join(tt.testdir({ nested: { dir: {} } }), 'nested', 'dir', 'keys.db'));

    t.test('create fills the defaults', async (t) => {
      const path = file(t);
      const { svc } = service(t, path);
      if (backend === 'file') t.equal(existsSync(path), true, 'missing directories are created');
      const { key, secret } = await svc.create({ name: 'ci-bot' }, 'tester');
      t.match(secret, SECRET);
      t.match(key.id, UUID);
      t.same(key, {
        id: key.id,
        name: 'ci-bot',
        description: '',
        prefix: secret.slice(0, 8),
        scopes: ['agents', 'workflows'],
        role: 'viewer',
        workspace: null,
        workspaceAccess: { all: true, grants: [] },
        surfaces: null,
        attributionClass: 'service_account',
        serviceAccountName: 'ci-bot',
        ownerUserId: null,
        rateLimit: 60,
        quota: null,
        group: null,
        expiresAt: null,
        isActive: true,
        requestCount: 0,
        lastUsedAt: null,
        createdAt: START_ISO,
        updatedAt: START_ISO,
        createdBy: 'tester',
        updatedBy: 'tester',
        managedBy: 'api',
      });
      t.equal(Object.hasOwn(key, 'digest'), false);
      t.equal(keyStatus(key, START), 'active');
      t.same(await svc.get(key.id), key, 'by id');
      t.same(await svc.get('ci-bot'), key, 'by name');
      const found = await look(svc, digestSecret(secret));
      t.equal(found.access?.key.id, key.id, 'the secret resolves');
      t.equal(found.access?.attribution, 'service_account:ci-bot');
    });

    t.test('create accepts and normalises valid input', async (t) => {
      const { svc } = service(t, file(t));
      const rows: [input: KeyInput, expected: Partial<ApiKey>][] = [
        [{ name: '  padded  ' }, { name: 'padded' }],
        [{ name: 'n'.repeat(100) }, { name: 'n'.repeat(100) }],
        [{ name: 'd500', description: 'd'.repeat(500) }, { description: 'd'.repeat(500) }],
        [{ name: 'd-empty', description: '' }, { description: '' }],
        [{ name: 's1', scopes: 'agents' }, { scopes: ['agents'] }],
        [{ name: 's2', scopes: 'workflows, agents,agents' }, { scopes: ['workflows', 'agents'] }],
        [{ name: 's3', scopes: ['workflows'] }, { scopes: ['workflows'] }],
        [{ name: 'r1', role: 'admin' }, { role: 'admin' }],
        [{ name: 'rl1', rateLimit: '30' }, { rateLimit: 30 }],
        [{ name: 'rl2', rateLimit: ' 45 ' }, { rateLimit: 45 }],
        [{ name: 'rl3', rateLimit: 1 }, { rateLimit: 1 }],
        [{ name: 'rl4', rateLimit: 600 }, { rateLimit: 600 }],
        [{ name: 'e1', expiresAt: '2030-06-16' }, { expiresAt: '2030-06-16T00:00:00.000Z' }],
        [{ name: 'e2', expiresAt: '2030-06-15T12:00:01Z' }, { expiresAt: '2030-06-15T12:00:01.000Z' }],
        [{ name: 'e3', expiresAt: '2030-06-15T15:00:00+02:00' }, { expiresAt: '2030-06-15T13:00:00.000Z' }],
        [{ name: 'e4', expiresAt: '' }, { expiresAt: null }],
        [{ name: 'e5', expiresAt: null }, { expiresAt: null }],
        [{ name: 'w1', workspace: 'team-a', role: 'operator' }, { workspace: 'team-a', role: 'operator' }],
        [{ name: 'w2', workspace: '' }, { workspace: null }],
        [
          { name: 'g1', workspaceAccess: { grants: [{ workspace: 'team-a', role: 'operator' }, { workspace: 'team-b', role: 'manager' }] } },
          { role: 'viewer', workspaceAccess: { all: false, grants: [{ workspace: 'team-a', role: 'operator' }, { workspace: 'team-b', role: 'manager' }] } },
        ],
        [{ name: 'g2', workspaceAccess: { all: true } }, { workspaceAccess: { all: true, grants: [] } }],
        [{ name: 'sf', surfaces: ['mcp', 'a2a'] }, { surfaces: ['mcp', 'a2a'] }],
        [{ name: 'sf2', surfaces: 'rest_api' }, { surfaces: ['rest_api'] }],
        [{ name: 'u1', attributionClass: 'user_owned', ownerUserId: 'u-1' }, { attributionClass: 'user_owned', ownerUserId: 'u-1', serviceAccountName: null }],
        [{ name: 'sa', serviceAccountName: 'deployer' }, { serviceAccountName: 'deployer' }],
        [{ name: 'off', isActive: false }, { isActive: false }],
        [{ name: 'off2', isActive: 'false' }, { isActive: false }],
      ];
      for (const [input, expected] of rows) {
        const { key } = await svc.create(input, 'tester');
        const picked = Object.fromEntries(Object.keys(expected).map((k) => [k, key[k as keyof ApiKey]]));
        t.same(picked, expected, JSON.stringify(input));
      }
    });

    t.test('every validation error names its field, and nothing is stored', async (t) => {
      const { svc, store } = service(t, file(t));
      const grants = (...g: { workspace: unknown; role: unknown }[]) => ({ workspaceAccess: { all: false, grants: g } });
      const rows: [input: KeyInput, field: string, message?: string][] = [
        [{ name: undefined }, 'name', 'name: must be a string'],
        [{ name: '' }, 'name', 'name: is required'],
        [{ name: '   ' }, 'name', 'name: is required'],
        [{ name: 42 }, 'name'],
        [{ name: 'n'.repeat(101) }, 'name', 'name: must be at most 100 characters'],
        [{ description: 'd'.repeat(501) }, 'description', 'description: must be at most 500 characters'],
        [{ description: 5 }, 'description'],
        [{ scopes: ['agents', 'bad'] }, 'scopes', 'scopes: "bad" is not one of agents, workflows'],
        [{ scopes: [] }, 'scopes', 'scopes: must name at least one of agents, workflows'],
        [{ scopes: '' }, 'scopes'],
        [{ scopes: { agents: true } }, 'scopes'],
        [{ role: 'root' }, 'role', 'role: must be one of viewer, operator, developer, manager, admin'],
        [{ role: 'Admin' }, 'role'],
        [{ rateLimit: 0 }, 'rateLimit', 'rateLimit: must be a whole number of requests per minute from 1 to 600'],
        [{ rateLimit: 601 }, 'rateLimit'],
        [{ rateLimit: -5 }, 'rateLimit'],
        [{ rateLimit: 1.5 }, 'rateLimit'],
        [{ rateLimit: '1.5' }, 'rateLimit'],
        [{ rateLimit: 'abc' }, 'rateLimit'],
        [{ rateLimit: '' }, 'rateLimit'],
        [{ rateLimit: true }, 'rateLimit'],
        [{ rateLimit: null }, 'rateLimit'],
        [{ expiresAt: '2030-06-14' }, 'expiresAt', 'expiresAt: must be in the future (a date after today)'],
        [{ expiresAt: '2030-06-15' }, 'expiresAt', 'expiresAt: must be in the future (a date after today)'],
        [{ expiresAt: '2030-06-15T12:00:00Z' }, 'expiresAt'],
        [{ expiresAt: '2030-06-15T14:00:00+02:00' }, 'expiresAt'],
        [{ expiresAt: 'not-a-date' }, 'expiresAt', 'expiresAt: "not-a-date" must be a date (YYYY-MM-DD) or an ISO 8601 date-time with an offset (2031-01-31T12:00:00Z)'],
        [{ expiresAt: '2030-13-01' }, 'expiresAt'],
        [{ expiresAt: 1924992000000 }, 'expiresAt', 'expiresAt: must be a date (YYYY-MM-DD) or an ISO 8601 date-time with an offset (2031-01-31T12:00:00Z)'],
        [{ workspace: '../etc' }, 'workspace'],
        [{ workspace: 7 }, 'workspace'],
        [{ surfaces: ['web'] }, 'surfaces'],
        [{ surfaces: [] }, 'surfaces'],
        [{ isActive: 'yes' }, 'isActive', 'isActive: must be true or false'],
        [{ attributionClass: 'robot' }, 'attributionClass', 'attributionClass: must be service_account or user_owned'],
        [{ attributionClass: 'user_owned' }, 'ownerUserId', 'ownerUserId: is required for a user_owned key'],
        [{ attributionClass: 'user_owned', ownerUserId: '' }, 'ownerUserId'],
        [{ workspaceAccess: 'all' }, 'workspaceAccess', 'workspaceAccess: must be an object {all, grants}'],
        [{ workspaceAccess: [] }, 'workspaceAccess'],
        [{ workspaceAccess: { all: 'yes' } }, 'workspaceAccess.all'],
        [{ workspaceAccess: { all: false, grants: [] } }, 'workspaceAccess.grants', 'workspaceAccess.grants: must name at least one workspace when all is false'],
        [{ workspaceAccess: { all: true, grants: [{ workspace: 'a', role: 'viewer' }] } }, 'workspaceAccess.grants', 'workspaceAccess.grants: must be empty when all is true'],
        [{ workspaceAccess: { all: false, grants: 'team-a' } }, 'workspaceAccess.grants'],
        [{ workspaceAccess: { all: false, grants: ['team-a'] } }, 'workspaceAccess.grants[0]', 'workspaceAccess.grants[0]: must be {workspace, role}'],
        [{ ...grants({ workspace: 'bad name', role: 'viewer' }) }, 'workspaceAccess.grants[0].workspace'],
        [{ ...grants({ workspace: 'team-a', role: 'boss' }) }, 'workspaceAccess.grants[0].role'],
        [{ ...grants({ workspace: 'team-a', role: 'admin' }) }, 'workspaceAccess.grants[0].role', 'workspaceAccess.grants[0].role: admin cannot be granted per workspace'],
        [
          { ...grants({ workspace: 'team-a', role: 'viewer' }, { workspace: 'team-a', role: 'operator' }) },
          'workspaceAccess.grants[1].workspace',
          'workspaceAccess.grants[1].workspace: "team-a" is granted twice',
        ],
        [
          { role: 'operator', ...grants({ workspace: 'team-a', role: 'viewer' }) },
          'role',
          'role: a key with per-workspace grants must have the top-level role viewer',
        ],
        [{ role: 'admin', ...grants({ workspace: 'team-a', role: 'viewer' }) }, 'role'],
        [
          { workspace: 'team-b', ...grants({ workspace: 'team-a', role: 'viewer' }) },
          'workspace',
          'workspace: a key is bound to one workspace or has workspace grants, not both',
        ],
      ];
      for (const [input, field, message] of rows) {
        const what = JSON.stringify(input);
        const err = await rejection(t, svc.create({ name: 'k', ...input }, 'tester'), what);
        t.ok(err instanceof ValidationError, `${what}: ValidationError`);
        t.same({ field: (err as ValidationError).field, status: err.status, code: err.code }, { field, status: 400, code: 'bad_request' }, what);
        if (message !== undefined) t.equal(err.message, message, what);
        else t.equal(err.message.startsWith(`${field}: `), true, `${what}: message starts with the field`);
      }
      t.equal(await store.count(), 0, 'no invalid key was stored');
    });

    t.test('a duplicate name is a 409 ConflictError', async (t) => {
      const { svc, store } = service(t, file(t));
      await svc.create({ name: 'ci-bot' }, 'tester');
      for (const name of ['ci-bot', '  ci-bot ']) {
        const err = await rejection(t, svc.create({ name }, 'tester'), name);
        t.ok(err instanceof ConflictError, `${JSON.stringify(name)}: ConflictError`);
        t.same({ status: err.status, code: err.code, message: err.message }, { status: 409, code: 'conflict', message: 'a key named "ci-bot" already exists' });
      }
      t.equal(await store.count(), 1);
      const { key } = await svc.create({ name: 'CI-BOT' }, 'tester');
      t.equal(key.name, 'CI-BOT', 'names are case-sensitive');
    });

    t.test('max_keys: creation stops with a 403 LimitError saying how many exist', async (t) => {
      const { svc, store } = service(t, file(t), { ...CONFIG, max_keys: 2 });
      const a = await svc.create({ name: 'a' }, 'tester');
      await svc.create({ name: 'b' }, 'tester');
      const err = await rejection(t, svc.create({ name: 'c' }, 'tester'), 'third key');
      t.ok(err instanceof LimitError, 'LimitError');
      t.same({ status: err.status, code: err.code }, { status: 403, code: 'forbidden' });
      t.equal(
        err.message,
        '2 API keys exist and the configured limit (keys.max_keys) is 2: delete a key you no longer use or raise keys.max_keys to create more. Existing keys keep working.',
      );
      t.equal(await store.count(), 2);
      t.equal((await look(svc, digestSecret(a.secret))).access?.key.name, 'a', 'existing keys keep working');
      await svc.delete('b');
      t.equal((await svc.create({ name: 'c' }, 'tester')).key.name, 'c', 'room again after a delete');
    });

    t.test('list never contains digests or secrets', async (t) => {
      const { svc } = service(t, file(t));
      const a = await svc.create({ name: 'a' }, 'tester');
      const b = await svc.create({ name: 'b', workspace: 'team-a' }, 'tester');
      const list = await svc.list();
      t.same(list.map((k) => k.name), ['a', 'b']);
      t.same(list.map((k) => Object.hasOwn(k, 'digest')), [false, false]);
      const json = JSON.stringify(list);
      for (const { secret } of [a, b]) {
        t.equal(json.includes(secret), false, 'no secret');
        t.equal(json.includes(digestSecret(secret)), false, 'no digest');
        t.equal(json.includes(secret.slice(0, 8)), true, 'the display prefix is there');
      }
      t.same((await svc.list({ workspace: 'team-a' })).map((k) => k.name), ['b']);
      t.same(await svc.list({ workspace: 'team-z' }), []);
      await svc.create({ name: 'granted', workspaceAccess: { all: false, grants: [{ workspace: 'team-a', role: 'operator' }] } }, 'tester');
      t.same((await svc.list({ workspace: 'team-a' })).map((k) => k.name), ['b', 'granted'], 'a workspace lists keys bound to it or granted it, not all-workspace keys');
    });

    t.test('get by id or name; unknown is a 404 NotFoundError', async (t) => {
      const { svc } = service(t, file(t));
      const { key } = await svc.create({ name: 'ci-bot' }, 'tester');
      t.equal((await svc.get(key.id)).name, 'ci-bot');
      t.equal((await svc.get('ci-bot')).id, key.id);
      const err = await rejection(t, svc.get('nope'), 'unknown');
      t.ok(err instanceof NotFoundError);
      t.same({ status: err.status, code: err.code, message: err.message }, { status: 404, code: 'not_found', message: 'no API key with id or name "nope"' });
    });

    // ---------------------------------------------------------------- update, setActive, regenerate, delete

    t.test('update changes only the given fields and re-validates', async (t) => {
      const { svc, store, clock } = service(t, file(t));
      const { key } = await svc.create({ name: 'ci-bot', description: 'd0', rateLimit: 50 }, 'tester');
      await svc.create({ name: 'other' }, 'tester');
      clock.now = START + 60_000;
      const later = new Date(clock.now).toISOString();

      const updated = await svc.update('ci-bot', { description: 'd1' }, 'editor');
      t.same(updated, { ...key, description: 'd1', updatedAt: later, updatedBy: 'editor' });
      t.same(await svc.get(key.id), updated, 'stored');

      const renamed = await svc.update(key.id, { name: 'ci-bot-2', rateLimit: '70' }, 'editor');
      t.same(renamed, { ...updated, name: 'ci-bot-2', rateLimit: 70 });

      const rows: [input: KeyInput, field: string][] = [
        [{ rateLimit: 0 }, 'rateLimit'],
        [{ name: '' }, 'name'],
        [{ scopes: [] }, 'scopes'],
        [{ expiresAt: '2030-06-15' }, 'expiresAt'],
        [{ attributionClass: 'user_owned' }, 'ownerUserId'],
        [{ workspaceAccess: { grants: [{ workspace: 'team-a', role: 'viewer' }] }, role: 'operator' }, 'role'],
      ];
      for (const [input, field] of rows) {
        const err = await rejection(t, svc.update(key.id, input, 'editor'), JSON.stringify(input));
        t.equal(err instanceof ValidationError && err.field, field, JSON.stringify(input));
      }
      const conflict = await rejection(t, svc.update(key.id, { name: 'other' }, 'editor'), 'rename onto another key');
      t.same({ cls: conflict.constructor.name, status: conflict.status }, { cls: 'ConflictError', status: 409 });
      t.same(await svc.get(key.id), renamed, 'no failed update changed anything');
      t.ok((await rejection(t, svc.update('nope', { description: 'x' }, 'editor'), 'unknown')) instanceof NotFoundError);

      // the consistency rules see the key as it would be after the update
      const admin = await svc.create({ name: 'adm', role: 'admin' }, 'tester');
      const err = await rejection(t, svc.update('adm', { workspaceAccess: { grants: [{ workspace: 'team-a', role: 'viewer' }] } }, 'editor'), 'grants on an admin');
      t.equal(err instanceof ValidationError && err.field, 'role');
      const scoped = await svc.update('adm', { role: 'viewer', workspaceAccess: { grants: [{ workspace: 'team-a', role: 'viewer' }] } }, 'editor');
      t.same(scoped.workspaceAccess, { all: false, grants: [{ workspace: 'team-a', role: 'viewer' }] });
      t.equal(scoped.id, admin.key.id);

      const owned = await svc.update('other', { attributionClass: 'user_owned', ownerUserId: 'u-1' }, 'editor');
      t.same([owned.attributionClass, owned.ownerUserId, owned.serviceAccountName], ['user_owned', 'u-1', null]);
      const back = await svc.update('other', { attributionClass: 'service_account' }, 'editor');
      t.same([back.attributionClass, back.ownerUserId, back.serviceAccountName], ['service_account', null, 'other']);

      const expiring = await svc.update('other', { expiresAt: '2031-01-01' }, 'editor');
      t.equal(expiring.expiresAt, '2031-01-01T00:00:00.000Z');
      t.equal((await svc.update('other', { expiresAt: null }, 'editor')).expiresAt, null);
      t.equal(await store.count(), 3);
    });

    t.test('setActive switches a key off and on, and the next lookup sees it', async (t) => {
      const { svc, clock } = service(t, file(t));
      const { key, secret } = await svc.create({ name: 'ci-bot' }, 'tester');
      const digest = digestSecret(secret);
      t.equal((await look(svc, digest)).access?.key.isActive, true);
      clock.now = START + 1000;
      const off = await svc.setActive('ci-bot', false, 'ops');
      t.same(off, { ...key, isActive: false, updatedAt: '2030-06-15T12:00:01.000Z', updatedBy: 'ops' });
      t.equal(keyStatus(off, clock.now), 'inactive');
      t.same(await look(svc, digest).then((r) => [r.sync, r.access?.key.isActive]), [false, false], 'refetched, inactive');
      t.equal((await svc.setActive(key.id, true, 'ops')).isActive, true);
      t.equal((await look(svc, digest)).access?.key.isActive, true);
    });

    t.test('regenerate: a new secret, and the old one stops on the very next lookup', async (t) => {
      const { svc } = service(t, file(t));
      const { key, secret } = await svc.create({ name: 'ci-bot' }, 'tester');
      const oldDigest = digestSecret(secret);
      await look(svc, oldDigest);
      t.equal((await look(svc, oldDigest)).sync, true, 'old digest cached');

      const fresh = await svc.regenerate('ci-bot', 'ops');
      t.match(fresh.secret, SECRET);
      t.not(fresh.secret, secret);
      t.equal(fresh.key.prefix, fresh.secret.slice(0, 8));
      t.equal(fresh.key.id, key.id);
      t.same(await look(svc, oldDigest), { sync: false, access: null }, 'old secret: gone');
      t.equal((await look(svc, digestSecret(fresh.secret))).access?.key.id, key.id, 'new secret resolves');
    });

    t.test('delete: the key is gone from the next lookup', async (t) => {
      const { svc } = service(t, file(t));
      const { key, secret } = await svc.create({ name: 'ci-bot' }, 'tester');
      const digest = digestSecret(secret);
      await look(svc, digest);
      t.equal((await look(svc, digest)).sync, true, 'cached');
      const deleted = await svc.delete('ci-bot');
      t.same(deleted, key);
      t.same(await look(svc, digest), { sync: false, access: null });
      t.ok((await rejection(t, svc.get(key.id), 'get after delete')) instanceof NotFoundError);
      t.ok((await rejection(t, svc.delete(key.id), 'delete twice')) instanceof NotFoundError);
    });

    t.test('the cache: a repeated lookup is synchronous, unknown digests too', async (t) => {
      const { svc } = service(t, file(t));
      const { secret } = await svc.create({ name: 'ci-bot' }, 'tester');
      const digest = digestSecret(secret);
      const first = svc.lookup(digest);
      t.equal(first instanceof Promise, true, 'first lookup goes to the store');
      const access = await first;
      const second = svc.lookup(digest);
      t.equal(second instanceof Promise, false, 'second lookup is synchronous');
      t.equal(second, access, 'the same object');

      const unknown = digestSecret('dg_unknown');
      t.equal(svc.lookup(unknown) instanceof Promise, true);
      await svc.lookup(unknown);
      t.equal(svc.lookup(unknown), null, 'an unknown digest is remembered: synchronous null');

      svc.clearCache();
      t.equal(svc.lookup(digest) instanceof Promise, true, 'clearCache forgets');
    });

    t.test('a key created after its digest was looked up resolves', async (t) => {
      // the same service: create() removes the digest from the negative cache
      const { svc } = service(t, file(t));
      const { secret } = await svc.create({ name: 'first' }, 'tester');
      t.equal(await svc.lookup(digestSecret('dg_none')), null);
      t.equal(svc.lookup(digestSecret('dg_none')), null);
      t.equal((await look(svc, digestSecret(secret))).access?.key.name, 'first');
    });

    t.test('usage: counts add up and last_used_at only moves forward', async (t) => {
      const { svc, store } = service(t, file(t));
      const { key } = await svc.create({ name: 'ci-bot' }, 'tester');
      const { key: other } = await svc.create({ name: 'other' }, 'tester');
      const T1 = '2030-06-15T12:01:00.000Z';
      const T2 = '2030-06-15T12:02:00.000Z';
      const T3 = '2030-06-15T12:03:00.000Z';
      const usage = async () => {
        const k = (await store.get(key.id))!;
        return [k.requestCount, k.lastUsedAt];
      };
      await store.addUsage(new Map([[key.id, { count: 3, lastUsedAt: T2 }]]), randomUUID());
      t.same(await usage(), [3, T2]);
      await store.addUsage(new Map([[key.id, { count: 2, lastUsedAt: T1 }]]), randomUUID());
      t.same(await usage(), [5, T2], 'an older timestamp does not move it back');
      await store.addUsage(new Map([[key.id, { count: 1, lastUsedAt: T3 }], [other.id, { count: 7, lastUsedAt: T1 }]]), randomUUID());
      t.same(await usage(), [6, T3]);
      await store.addUsage(new Map(), randomUUID());
      await store.addUsage(new Map([['no-such-id', { count: 9, lastUsedAt: T3 }]]), randomUUID());
      t.same(await usage(), [6, T3], 'empty and unknown batches change nothing');
      const o = (await svc.get(other.id))!;
      t.same([o.requestCount, o.lastUsedAt], [7, T1]);
    });
  });
}

// ---------------------------------------------------------------- several connections to one file

t.test('changes made through another connection are seen on the next lookup', async (t) => {
  const file = join(t.testdir(), 'keys.db');
  const a = service(t, file);
  const b = service(t, file);

  // A remembers an unknown digest, then B creates a key: A's next lookups are fresh.
  t.equal(await a.svc.lookup(digestSecret('dg_unknown')), null);
  t.equal(a.svc.lookup(digestSecret('dg_unknown')), null, 'negative entry cached');
  const { key, secret } = await b.svc.create({ name: 'from-cli' }, 'cli');
  const digest = digestSecret(secret);
  t.same(await look(a.svc, digest).then((r) => [r.sync, r.access?.key.id]), [false, key.id], 'A finds the key B created');
  t.equal((await look(a.svc, digest)).sync, true, 'and caches it');

  await b.svc.setActive(key.id, false, 'cli');
  t.same(await look(a.svc, digest).then((r) => [r.sync, r.access?.key.isActive]), [false, false], 'A sees the deactivation at once');

  await b.svc.update(key.id, { role: 'operator' }, 'cli');
  t.equal((await look(a.svc, digest)).access?.key.role, 'operator');

  const fresh = await b.svc.regenerate(key.id, 'cli');
  t.same(await look(a.svc, digest), { sync: false, access: null }, 'old secret refused by A');
  t.equal((await look(a.svc, digestSecret(fresh.secret))).access?.key.id, key.id);

  await b.svc.delete(key.id);
  t.same(await look(a.svc, digestSecret(fresh.secret)), { sync: false, access: null }, 'deleted via B, gone for A');
});

t.test('lookupForRequest (the request path) reads the change mark once per event-loop turn and sees other connections in the next one', async (t) => {
  const file = join(t.testdir(), 'keys.db');
  const a = service(t, file);
  const b = service(t, file);
  const { key, secret } = await b.svc.create({ name: 'turns' }, 'cli');
  const digest = digestSecret(secret);
  const turn = () => new Promise<void>((resolve) => setImmediate(resolve));
  let reads = 0;
  const changeMark = a.store.changeMark.bind(a.store);
  a.store.changeMark = () => (reads++, changeMark());
  await turn();
  t.equal((await a.svc.lookupForRequest(digest))?.key.isActive, true, 'found');
  await turn();
  reads = 0;
  for (let i = 0; i < 50; i++) t.equal((a.svc.lookupForRequest(digest) as KeyAccess).key.id, key.id);
  t.equal(reads, 1, '50 lookups in one turn: one read of the change mark');
  await turn();
  await b.svc.setActive(key.id, false, 'cli');
  await turn();
  t.equal((await a.svc.lookupForRequest(digest))?.key.isActive, false, 'the next turn sees the deactivation made through the other connection');
  t.equal(reads, 2, 'read again in the new turn');
  t.equal(a.svc.lookup(digest) instanceof Promise, false, 'lookup() and lookupForRequest() share the cache');
});

t.test('changeMark moves only for commits made by another connection', async (t) => {
  const file = join(t.testdir(), 'keys.db');
  const a = service(t, file);
  const b = service(t, file);
  const { key } = await a.svc.create({ name: 'k' }, 'tester');
  const markA = a.store.changeMark();
  const markB = b.store.changeMark();
  await a.store.addUsage(new Map([[key.id, { count: 1, lastUsedAt: START_ISO }]]), randomUUID());
  t.equal(a.store.changeMark(), markA, 'own usage flush: A unchanged');
  t.not(b.store.changeMark(), markB, 'B sees A commit');
  t.equal((await b.store.get(key.id))?.requestCount, 1);
});

t.test('changeMark: every commit by another process is seen on the very next call, own commits are not', async (t) => {
  const file = join(t.testdir(), 'keys.db');
  const a = service(t, file);
  const { key } = await a.svc.create({ name: 'k' }, 'tester');
  let mark = a.store.changeMark();
  t.equal(a.store.changeMark(), mark, 'nothing committed: the same mark');
  // another process (as the CLI is): commits one at a time; each must move A's mark on A's next call
  const { spawn } = await import('node:child_process');
  const script = `
    const Database = require('better-sqlite3');
    const db = new Database(process.argv[1]);
    db.pragma('busy_timeout = 5000');
    const up = db.prepare('UPDATE api_keys SET description = ? WHERE id = ?');
    process.stdin.setEncoding('utf8');
    let buf = '';
    process.stdin.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\\n')) >= 0) {
        const line = buf.slice(0, i); buf = buf.slice(i + 1);
        if (line === 'end') { db.close(); process.exit(0); }
        up.run(line, process.argv[2]);
        process.stdout.write('done\\n');
      }
    });`;
  const child = spawn(process.execPath, ['-e', script, file, key.id], { stdio: ['pipe', 'pipe', 'inherit'] });
  t.teardown(() => child.kill());
  const acks: (() => void)[] = [];
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    for (const _ of d.split('\n').filter(Boolean)) acks.shift()?.();
  });
  const commit = (text: string) => new Promise<void>((resolve) => (acks.push(resolve), child.stdin.write(`${text}\n`)));
  let seen = 0;
  let ownMoved = 0;
  for (let i = 0; i < 20; i++) {
    await commit(`change ${i}`);
    const next = a.store.changeMark();
    if (next !== mark) seen++;
    mark = next;
    // own commits in between (usage flushes): never a change
    await a.store.addUsage(new Map([[key.id, { count: 1, lastUsedAt: START_ISO }]]), randomUUID());
    if (a.store.changeMark() !== mark) ownMoved++;
  }
  t.equal(seen, 20, 'all 20 commits of the other process seen on the first call after each');
  t.equal(ownMoved, 0, 'none of the 20 own usage flushes moved the mark');
  child.stdin.write('end\n');
  t.equal((await a.store.get(key.id))?.description, 'change 19');
});

t.test('keys survive closing and reopening the file', async (t) => {
  const file = join(t.testdir(), 'keys.db');
  const first = new SqliteKeyStore(file);
  const svc = new KeyService(first, CONFIG, () => START);
  const { key, secret } = await svc.create({ name: 'persist', scopes: ['agents'], workspaceAccess: { grants: [{ workspace: 'team-a', role: 'operator' }] }, surfaces: ['mcp'] }, 'tester');
  await first.close();
  await first.close(); // closing twice is harmless
  const second = new SqliteKeyStore(file);
  t.teardown(() => second.close());
  const again = new KeyService(second, CONFIG, () => START);
  t.same(await again.get(key.id), key);
  t.equal((await look(again, digestSecret(secret))).access?.key.id, key.id);
});

// ---------------------------------------------------------------- input rules found by review

t.test('expiresAt accepts only real YYYY-MM-DD dates and ISO 8601 date-times', async (t) => {
  const { svc } = service(t);
  const rows: [input: string, silently: string][] = [
    ['2031-02-30', '2031-03-02T00:00:00.000Z'],
    ['2031-02-31T00:00:00Z', '2031-03-03T00:00:00.000Z'],
    ['12345', '+012345-01-01T00:00:00.000Z'],
    ['March 7, 2031', '2031-03-07T00:00:00.000Z'],
    ['2031/01/01', '2031-01-01T00:00:00.000Z'],
  ];
  let n = 0;
  for (const [input, silently] of rows) {
    let outcome: string;
    try {
      outcome = `accepted as ${(await svc.create({ name: `e${n++}`, expiresAt: input }, 'tester')).key.expiresAt}`;
    } catch (err) {
      outcome = err instanceof ValidationError ? `ValidationError(${err.field})` : String(err);
    }
    t.equal(outcome, 'ValidationError(expiresAt)', `${input} is refused (Date.parse alone would give ${silently})`);
  }
});

t.test('the reserved workspace name "all" cannot be bound or granted', async (t) => {
  const { svc } = service(t);
  const rows: [input: KeyInput, field: string][] = [
    [{ name: 'bound-all', workspace: 'all' }, 'workspace'],
    [{ name: 'grant-all', workspaceAccess: { grants: [{ workspace: 'all', role: 'operator' }] } }, 'workspaceAccess.grants[0].workspace'],
  ];
  for (const [input, field] of rows) {
    let outcome: string;
    try {
      const { key } = await svc.create(input, 'tester');
      outcome = `accepted (workspace ${JSON.stringify(key.workspace)}, grants ${JSON.stringify(key.workspaceAccess.grants)})`;
    } catch (err) {
      outcome = err instanceof ValidationError ? `ValidationError(${err.field})` : String(err);
    }
    t.equal(outcome, `ValidationError(${field})`, `${input.name as string} is refused`);
  }
});

t.test('keys declared in the config cannot be changed through the key service', async (t) => {
  const { svc, store } = service(t);
  const { key } = await svc.create({ name: 'from-yaml' }, 'config');
  // what a config sync would write: the same key, marked as declared in the YAML
  await store.delete(key.id);
  await store.insert({ ...key, managedBy: 'config', digest: digestSecret('dg_from-yaml') });
  const before = await svc.get(key.id);
  t.equal(before.managedBy, 'config');
  const attempts: [what: string, run: () => Promise<unknown>][] = [
    ['update', () => svc.update(key.id, { description: 'changed' }, 'admin-api')],
    ['setActive', () => svc.setActive(key.id, false, 'admin-api')],
    ['regenerate', () => svc.regenerate(key.id, 'admin-api')],
    ['delete', () => svc.delete(key.id)],
  ];
  for (const [what, run] of attempts) {
    let outcome: string;
    try {
      await run();
      outcome = 'allowed';
    } catch (err) {
      outcome = err instanceof KeygateError ? 'refused' : String(err);
    }
    t.equal(outcome, 'refused', `${what} of a config-managed key`);
  }
});

// ---------------------------------------------------------------- regenerate with grace, audit, declared keys

t.test('regenerate with a grace period: the old secret resolves until the grace ends, cached or not', async (t) => {
  const { svc, store, clock } = service(t);
  const { key, secret: first } = await svc.create({ name: 'rotating' }, 'tester');
  const old = digestSecret(first);
  await look(svc, old);

  const second = await svc.regenerate(key.id, 'ops', { graceSeconds: 60 });
  t.equal(second.previousValidUntil, new Date(START + 60_000).toISOString());
  const during = await look(svc, old);
  t.equal(during.access?.key.id, key.id, 'old secret resolves during the grace');
  t.equal(during.access?.validUntilMs, START + 60_000, 'and carries the end of its grace');
  t.equal((await look(svc, old)).sync, true, 'from the cache');
  t.equal((await look(svc, digestSecret(second.secret))).access?.validUntilMs, Infinity, 'the new secret has no end');

  clock.now = START + 59_999;
  t.equal((await look(svc, old)).access?.key.id, key.id, 'still valid 1 ms before the end');
  clock.now = START + 60_000;
  t.same(await look(svc, old), { sync: false, access: null }, 'the cached entry is not served past the grace');
  const fresh = new KeyService(store, CONFIG, () => START + 60_000);
  t.equal(await fresh.lookup(old), null, 'nor does the store match it');
  t.equal((await look(svc, digestSecret(second.secret))).access?.key.id, key.id, 'the new secret keeps working');

  // a second regenerate keeps only the secret it replaces
  clock.now = START;
  const third = await svc.regenerate(key.id, 'ops', { graceSeconds: '30' });
  t.equal(await svc.lookup(old), null, 'the first secret is gone');
  t.equal((await look(svc, digestSecret(second.secret))).access?.key.id, key.id, 'the second is in its grace');
  await svc.regenerate(key.id, 'ops');
  t.equal(await svc.lookup(digestSecret(second.secret)), null, 'a regenerate without grace ends any grace at once');
  t.equal(await svc.lookup(digestSecret(third.secret)), null, 'and the secret it replaced stops at once');

  for (const bad of [-1, 86_401, 1.5, 'soon', '']) {
    const err = await rejection(t, svc.regenerate(key.id, 'ops', { graceSeconds: bad }), `grace ${String(bad)}`);
    t.equal(err instanceof ValidationError ? err.field : err.code, 'graceSeconds', `grace ${JSON.stringify(bad)} refused`);
  }
});

t.test('a change to a key in its grace period applies to both of its secrets', async (t) => {
  const { svc } = service(t);
  const { key, secret } = await svc.create({ name: 'both' }, 'tester');
  const next = await svc.regenerate(key.id, 'ops', { graceSeconds: 600 });
  await look(svc, digestSecret(secret));
  await look(svc, digestSecret(next.secret));
  await svc.setActive(key.id, false, 'ops');
  t.equal((await look(svc, digestSecret(secret))).access?.key.isActive, false, 'old secret sees the deactivation');
  t.equal((await look(svc, digestSecret(next.secret))).access?.key.isActive, false, 'new secret too');
  await svc.delete(key.id);
  t.equal(await svc.lookup(digestSecret(secret)), null);
  t.equal(await svc.lookup(digestSecret(next.secret)), null);
});

t.test('a key file from before the grace columns is migrated when opened', async (t) => {
  const file = join(t.testdir(), 'old.db');
  const Database = (await import('better-sqlite3')).default;
  const db = new Database(file);
  db.exec(`CREATE TABLE api_keys (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, description TEXT NOT NULL DEFAULT '',
    digest TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL, scopes TEXT NOT NULL, role TEXT NOT NULL, workspace TEXT,
    workspace_access TEXT NOT NULL, surfaces TEXT, attribution_class TEXT NOT NULL, service_account_name TEXT,
    owner_user_id TEXT, rate_limit INTEGER NOT NULL, expires_at TEXT, is_active INTEGER NOT NULL,
    request_count INTEGER NOT NULL DEFAULT 0, last_used_at TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    created_by TEXT, updated_by TEXT, managed_by TEXT NOT NULL DEFAULT 'api')`);
  db.prepare(`INSERT INTO api_keys VALUES ('k1', 'legacy', '', ?, 'dg_legac', '["agents"]', 'viewer', NULL, '{"all":true,"grants":[]}',
    NULL, 'service_account', 'legacy', NULL, 60, NULL, 1, 3, NULL, ?, ?, 'cli', 'cli', 'api')`).run(digestSecret('dg_legacy-secret'), START_ISO, START_ISO);
  db.close();

  const { svc, store } = service(t, file);
  const check = new Database(file, { readonly: true });
  const names = (check.prepare('PRAGMA table_info(api_keys)').all() as { name: string }[]).map((c) => c.name);
  check.close();
  t.ok(names.includes('previous_digest') && names.includes('previous_digest_expires_at'), 'columns added');
  t.match(await store.get('k1'), { name: 'legacy', requestCount: 3, previousDigest: null, previousDigestExpiresAt: null });
  t.equal((await look(svc, digestSecret('dg_legacy-secret'))).access?.key.id, 'k1', 'the old key still authenticates');
  const next = await svc.regenerate('legacy', 'ops', { graceSeconds: 5 });
  t.equal((await look(svc, digestSecret('dg_legacy-secret'))).access?.key.id, 'k1', 'grace works on the migrated file');
  t.equal((await look(svc, digestSecret(next.secret))).access?.key.id, 'k1');
  const again = new SqliteKeyStore(file); // opening a migrated file again changes nothing
  t.equal((await again.get('k1'))?.previousDigestExpiresAt, new Date(START + 5000).toISOString());
  await again.close();
});

t.test('the key service audits every change, whoever makes it, and never records a secret', async (t) => {
  const clock = { now: START };
  const store = new SqliteKeyStore(':memory:');
  t.teardown(() => store.close());
  const logged: unknown[] = [];
  const svc = new KeyService(store, CONFIG, () => clock.now, { store, log: (r) => logged.push(r) });
  const who = { id: 'admin-token', remoteAddress: '10.0.0.7' };
  const { key, secret } = await svc.create({ name: 'audited', role: 'operator' }, who);
  await svc.update(key.id, { isActive: false }, who);
  await svc.update(key.id, { isActive: true }, who);
  await svc.update(key.id, { role: 'developer', description: 'ci' }, 'cli:alice');
  await svc.setActive(key.id, false, 'cli:alice');
  const regenerated = await svc.regenerate(key.id, who, { graceSeconds: 10 });
  await svc.delete(key.id, who);

  const records = await svc.auditTrail({ limit: 100 });
  t.same(records.map((r) => r.action), ['delete', 'regenerate', 'deactivate', 'update', 'activate', 'deactivate', 'create'], 'newest first');
  t.same(logged, [...records].reverse(), 'every record was also logged, in order');
  t.match(records.at(-1), { actor: 'admin-token', remote_address: '10.0.0.7', key_id: key.id, key_name: 'audited', at: START_ISO, details: { role: 'operator', prefix: key.prefix } });
  t.match(records[3], { actor: 'cli:alice', remote_address: null, details: { changes: { role: { from: 'operator', to: 'developer' }, description: { from: '', to: 'ci' } } } });
  t.match(records[1], { details: { graceSeconds: 10, previousValidUntil: new Date(START + 10_000).toISOString(), prefix: { from: key.prefix, to: regenerated.key.prefix } } });
  const text = JSON.stringify(records);
  t.notOk(text.includes(secret) || text.includes(regenerated.secret), 'no secret in any record');
  t.notOk(text.includes(digestSecret(secret)) || text.includes(digestSecret(regenerated.secret)), 'nor a digest');
  t.same((await svc.auditTrail({ limit: 2, keyId: key.id })).map((r) => r.action), ['delete', 'regenerate'], 'limit and key filter');
  t.same(await svc.auditTrail({ limit: 10, keyId: 'other' }), []);
});

t.test('keys declared in the config: inserted, updated, removed; never over an API key', async (t) => {
  const store = new SqliteKeyStore(':memory:');
  t.teardown(() => store.close());
  const secret = 'kg-declared-secret-0123456789';
  const withDeclared = (declared: KeysConfig['declared']) => new KeyService(store, { ...CONFIG, max_keys: 1, declared }, () => START, { store });

  const first = await withDeclared([
    { name: 'yaml-a', role: 'operator', scopes: ['workflows'], secret, expires_at: '2020-01-01' },
    { name: 'yaml-b', secret_digest: 'AB'.repeat(32), grants: [{ workspace: 'ops', role: 'developer' }] },
  ]).syncDeclared();
  t.same(first, { created: 2, updated: 0, deleted: 0, groups: NO_GROUP_CHANGES }, 'max_keys does not apply to declared keys');
  const a = await store.getByName('yaml-a');
  t.match(a, { managedBy: 'config', role: 'operator', scopes: ['workflows'], prefix: secret.slice(0, 8), digest: digestSecret(secret), createdBy: 'config' });
  t.equal(a?.expiresAt, '2020-01-01T00:00:00.000Z', 'a past expiry is kept (the key is expired), not a start failure');
  t.match(await store.getByName('yaml-b'), { digest: 'ab'.repeat(32), prefix: '', workspaceAccess: { all: false, grants: [{ workspace: 'ops', role: 'developer' }] } });

  const svc = withDeclared([{ name: 'yaml-a', role: 'developer', scopes: ['workflows'], secret, expires_at: '2020-01-01' }]);
  t.same(await svc.syncDeclared(), { created: 0, updated: 1, deleted: 1, groups: NO_GROUP_CHANGES }, 'changed one updated, missing one removed');
  t.same(await svc.syncDeclared(), { created: 0, updated: 0, deleted: 0, groups: NO_GROUP_CHANGES }, 'nothing to do the second time');
  t.equal((await store.getByName('yaml-a'))?.id, a?.id, 'same key id after an update');
  t.equal((await store.getByName('yaml-a'))?.role, 'developer');
  t.equal(await store.getByName('yaml-b'), undefined);
  const actions = (await svc.auditTrail({ limit: 10 })).map((r) => `${r.actor} ${r.action} ${r.key_name}`);
  t.same(actions, ['config delete yaml-b', 'config update yaml-a', 'config create yaml-b', 'config create yaml-a']);

  await store.insert({ ...(await store.getByName('yaml-a'))!, id: 'api-1', name: 'taken', digest: 'c'.repeat(64), managedBy: 'api' });
  const taken = await rejection(t, withDeclared([{ name: 'taken', secret }]).syncDeclared(), 'declared over an API key');
  t.ok(taken instanceof ConflictError, 'a declared name held by an API key is a conflict');
  t.match(taken.message, /keys\.declared\[0\].*"taken".*keygate keys delete taken/);
  t.equal((await store.get('api-1'))?.managedBy, 'api', 'the API key is untouched');

  const bad = await rejection(t, withDeclared([{ name: 'yaml-c', secret, rate_limit: 1000 }]).syncDeclared(), 'bad rate limit');
  t.equal((bad as ValidationError).field, 'keys.declared[0].rate_limit', 'named as in the YAML');
  const grant = await rejection(t, withDeclared([{ name: 'yaml-c', secret, role: 'operator', grants: [{ workspace: 'ops', role: 'viewer' }] }]).syncDeclared(), 'grants');
  t.equal((grant as ValidationError).field, 'keys.declared[0].role');
});
