// One contract, every key store: SQLite (the default) and Redis (several instances) behave alike.

import { randomUUID } from 'node:crypto';
import t, { type Test as Tap } from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConflictError } from '../src/errors.js';
import { groupOwner, type KeyGroup } from '../src/keys/group.js';
import { keyMatches, keyStatus, type KeyStatus, type StoredKey } from '../src/keys/model.js';
import { RedisKeyStore } from '../src/keys/redis-store.js';
import { KeyService } from '../src/keys/service.js';
import { SqliteKeyStore } from '../src/keys/sqlite-store.js';
import type { AuditStore, KeyPageQuery, KeyStore } from '../src/keys/store.js';
import { storedKey } from './factories.js';
import { skipWithoutRedis, startCluster, startRedis, startSentinel, type TestRedis } from './redis.js';

type Store = KeyStore & AuditStore;

function stored(n: number, over: Partial<StoredKey> = {}): StoredKey {
  const at = new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString();
  const id = `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
  return storedKey({ id, name: `key-${n}`, digest: n.toString(16).padStart(64, 'a'), serviceAccountName: `key-${n}`, createdAt: at, updatedAt: at, ...over });
}

function contract(name: string, open: () => Promise<Store>, skip: string | false = false): void {
  t.test(`${name}: key store contract`, { skip }, (t) => contractOn(t, open));
}

async function contractOn(t: Tap, open: () => Promise<Store>): Promise<void> {
  {
    const store = await open();
    t.teardown(() => store.close());

    const a = stored(1);
    await store.insert(a);
    t.same(await store.get(a.id), a, 'get returns what was inserted');
    t.same(await store.getByName('key-1'), a);
    t.same(await store.findByDigest(a.digest), a);
    t.equal(await store.get('nope'), undefined);
    t.equal(await store.findByDigest('f'.repeat(64)), undefined);
    await t.rejects(store.insert(stored(2, { name: 'key-1' })), ConflictError, 'a taken name is a conflict');
    t.equal(await store.count(), 1, 'the refused insert left nothing behind');

    const b = stored(3, { workspace: 'team-a', scopes: ['workflows'], surfaces: ['rest_api'], expiresAt: '2099-01-01T00:00:00.000Z' });
    await store.insert(b);
    t.same((await store.list()).map((k) => k.name), ['key-1', 'key-3'], 'list ordered by creation');
    t.equal(await store.count(), 2);

    const renamed = await store.update(b.id, { name: 'renamed', isActive: false, rateLimit: 7 });
    t.match(renamed, { name: 'renamed', isActive: false, rateLimit: 7, workspace: 'team-a', surfaces: ['rest_api'] });
    t.equal(await store.getByName('key-3'), undefined, 'the old name is free');
    t.equal((await store.getByName('renamed'))?.id, b.id);
    await t.rejects(store.update(b.id, { name: 'key-1' }), ConflictError, 'renaming onto a taken name is a conflict');
    t.equal(await store.update('nope', { name: 'x' }), undefined, 'updating an unknown id');

    // regenerate with grace: a new digest, the previous one valid until a deadline
    const now = Date.now();
    const fresh = 'e'.repeat(64);
    await store.update(a.id, { digest: fresh, previousDigest: a.digest, previousDigestExpiresAt: new Date(now + 60_000).toISOString() });
    t.equal((await store.findByDigest(fresh, now))?.id, a.id, 'new digest opens the key');
    t.equal((await store.findByDigest(a.digest, now))?.id, a.id, 'previous digest works during the grace');
    t.equal(await store.findByDigest(a.digest, now + 61_000), undefined, 'and not after it');
    await store.update(a.id, { digest: 'd'.repeat(64), previousDigest: null, previousDigestExpiresAt: null });
    t.equal(await store.findByDigest(a.digest, now), undefined, 'a replaced digest opens nothing');
    t.equal(await store.findByDigest(fresh, now), undefined);

    await store.addUsage(new Map([[a.id, { count: 3, lastUsedAt: '2026-03-01T00:00:00.000Z' }]]), randomUUID());
    await store.addUsage(new Map([[a.id, { count: 4, lastUsedAt: '2026-02-01T00:00:00.000Z' }]]), randomUUID());
    const used = await store.get(a.id);
    t.equal(used?.requestCount, 7, 'usage adds up');
    t.equal(used?.lastUsedAt, '2026-03-01T00:00:00.000Z', 'last use never moves back');
    t.equal((await store.list()).find((k) => k.id === a.id)?.requestCount, 7, 'list shows usage too');

    // the hourly history, written by the same addUsage
    const H = Date.UTC(2026, 2, 1, 10);
    await store.addUsage(new Map([[a.id, { count: 2, lastUsedAt: '2026-03-01T10:30:00.000Z', hours: [{ hourMs: H, allowed: 2, limited: 1, forbidden: 0, quota: 2 }] }]]), randomUUID());
    await store.addUsage(
      new Map([
        [a.id, { count: 0, lastUsedAt: '', hours: [{ hourMs: H, allowed: 0, limited: 3, forbidden: 4 }, { hourMs: H + 3_600_000, allowed: 0, limited: 0, forbidden: 1 }] }],
        [b.id, { count: 5, lastUsedAt: '2026-03-01T10:00:00.000Z', hours: [{ hourMs: H, allowed: 5, limited: 0, forbidden: 0 }] }],
      ]),
      randomUUID(),
    );
    const hist = await store.get(a.id);
    t.equal(hist?.requestCount, 9, 'allowed requests add to the request count; refusals do not');
    t.equal(hist?.lastUsedAt, '2026-03-01T10:30:00.000Z', 'a batch of refusals only does not move last use');
    t.same(
      await store.usageHistory(a.id, H - 3_600_000, H + 7_200_000),
      [
        { hour: '2026-03-01T10:00:00.000Z', allowed: 2, limited: 4, forbidden: 4, quota: 2 },
        { hour: '2026-03-01T11:00:00.000Z', allowed: 0, limited: 0, forbidden: 1, quota: 0 },
      ],
      'history: per hour, counts added up, oldest first',
    );
    t.same(await store.usageHistory(a.id, H + 3_600_000, H + 7_200_000), [{ hour: '2026-03-01T11:00:00.000Z', allowed: 0, limited: 0, forbidden: 1, quota: 0 }], 'from is inclusive');
    t.same(await store.usageHistory(a.id, H - 3_600_000, H), [], 'to is exclusive');
    t.same(await store.usageHistory(b.id, 0, H * 2), [{ hour: '2026-03-01T10:00:00.000Z', allowed: 5, limited: 0, forbidden: 0, quota: 0 }], 'each key its own history');
    t.equal(await store.pruneUsage(H + 3_600_000), 2, 'prune: the two key-hours before the cutoff');
    t.same(await store.usageHistory(a.id, 0, H * 2), [{ hour: '2026-03-01T11:00:00.000Z', allowed: 0, limited: 0, forbidden: 1, quota: 0 }], 'the newer hour stays');
    t.equal(await store.pruneUsage(H + 3_600_000), 0, 'pruning again removes nothing');

    await store.addUsage(new Map([[b.id, { count: 1, lastUsedAt: '2026-03-02T00:00:00.000Z', hours: [{ hourMs: H + 86_400_000, allowed: 1, limited: 0, forbidden: 0 }] }]]), randomUUID());
    t.equal(await store.delete(b.id), true);
    t.same(await store.usageHistory(b.id, 0, H * 2), [], "a deleted key's history goes with it");
    t.equal(await store.delete(b.id), false, 'deleting twice');
    t.equal(await store.getByName('renamed'), undefined);
    t.equal(await store.findByDigest(b.digest), undefined);
    await store.insert(stored(4, { name: 'renamed' }));
    t.equal((await store.getByName('renamed'))?.id, stored(4).id, 'a deleted name can be used again');

    for (let i = 0; i < 3; i++) {
      await store.appendAudit({ id: `r${i}`, at: `2026-01-0${i + 1}T00:00:00.000Z`, actor: 'test', action: 'update', key_id: i === 1 ? b.id : a.id, key_name: 'x', remote_address: null, details: { n: i } });
    }
    t.same((await store.listAudit({ limit: 10 })).map((r) => r.id), ['r2', 'r1', 'r0'], 'audit newest first');
    t.same((await store.listAudit({ limit: 1 })).map((r) => r.id), ['r2']);
    t.same((await store.listAudit({ limit: 10, key_id: b.id })).map((r) => r.details), [{ n: 1 }]);
    t.equal(await store.pruneAudit('2026-01-02T00:00:00.000Z'), 1, 'prune: the one record before the cutoff');
    t.same((await store.listAudit({ limit: 10 })).map((r) => r.id), ['r2', 'r1'], 'the newer ones stay');
    t.equal(await store.pruneAudit('2026-01-02T00:00:00.000Z'), 0, 'pruning again removes nothing');

    // pages of the audit trail: newest first, older ones by cursor, unshifted by records added meanwhile
    for (let i = 0; i < 7; i++) {
      await store.appendAudit({ id: `p${i}`, at: `2026-02-0${i + 1}T00:00:00.000Z`, actor: 'test', action: 'update', key_id: i % 2 === 0 ? 'even' : 'odd', key_name: 'x', remote_address: null, details: {} });
    }
    const first = await store.pageAudit({ limit: 3 });
    t.same(first.records.map((r) => r.id), ['p6', 'p5', 'p4'], 'audit page 1');
    await store.appendAudit({ id: 'late', at: '2026-03-01T00:00:00.000Z', actor: 'test', action: 'update', key_id: 'odd', key_name: 'x', remote_address: null, details: {} });
    const second = await store.pageAudit({ limit: 3, cursor: first.next! });
    t.same(second.records.map((r) => r.id), ['p3', 'p2', 'p1'], 'page 2: a record added meanwhile does not shift it');
    const rest = await store.pageAudit({ limit: 3, cursor: second.next! });
    t.same(rest.records.map((r) => r.id), ['p0', 'r2', 'r1'], 'page 3');
    t.equal(rest.next, null, 'the oldest record: no next page');
    const evens: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await store.pageAudit({ limit: 2, key_id: 'even', cursor });
      evens.push(...page.records.map((r) => r.id));
      cursor = page.next ?? undefined;
    } while (cursor !== undefined);
    t.same(evens, ['p6', 'p4', 'p2', 'p0'], "one key's records, page by page");
    await t.rejects(store.pageAudit({ limit: 2, cursor: 'nonsense' }), { code: 'bad_request' }, 'a cursor not made here is a 400');
  }
  {
    // the key page's search, status filter and counts: the same answers from every store
    const store = await open();
    t.teardown(() => store.close());
    const nowMs = Date.UTC(2026, 5, 1);
    const keys = Array.from({ length: 25 }, (_, i) =>
      stored(100 + i, {
        name: i < 10 ? `Nightly-ETL-${i}` : `ops-${i}`,
        prefix: `dg_Pf${String(i).padStart(2, '0')}`,
        isActive: i % 7 !== 0,
        expiresAt: i === 3 || i === 12 ? '2026-01-01T00:00:00.000Z' : i === 4 ? '2027-01-01T00:00:00+02:00' : null,
      }),
    );
    for (const k of keys) await store.insert(k);
    const all = async (q: Omit<KeyPageQuery, 'limit'>) => {
      const names: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await store.page({ ...q, limit: 3, cursor, nowMs });
        t.ok(page.keys.length <= 3, 'a filtered page holds at most limit');
        names.push(...page.keys.map((k) => k.name));
        cursor = page.next ?? undefined;
      } while (cursor !== undefined);
      return names.sort();
    };
    const expect = (search?: string, status?: KeyStatus) =>
      keys.filter((k) => (search === undefined || keyMatches(k.name, k.prefix, search)) && (status === undefined || keyStatus(k, nowMs) === status)).map((k) => k.name).sort();
    t.same(await all({ search: 'etl' }), expect('etl'), 'search: part of the name, any case');
    t.equal(expect('etl').length, 10);
    t.same(await all({ search: 'dg_pf1' }), expect('dg_pf1'), 'search: part of the key prefix');
    t.same(await all({ status: 'inactive' }), expect(undefined, 'inactive'), 'status inactive');
    t.same(await all({ status: 'expired' }), ['Nightly-ETL-3', 'ops-12'], 'status expired');
    t.same(await all({ status: 'active' }), expect(undefined, 'active'), 'status active (a future expiry with an offset is active)');
    t.same(await all({ search: 'etl', status: 'inactive' }), expect('etl', 'inactive'), 'search and status together');
    t.same(await all({ search: 'nothing-like-it' }), [], 'no match: an empty last page');
    t.same(await store.counts(nowMs), { total: 25, active: 19, inactive: 4, expired: 2 }, 'counts of every key by status');
    t.same(await store.counts(nowMs, 'etl'), { total: 10, active: 7, inactive: 2, expired: 1 }, 'counts of the keys matching a search');
  }
  {
    // key groups: CRUD, the keys' group field, the ?group= filter and the member count by index
    const store = await open();
    t.teardown(() => store.close());
    const at = '2026-01-01T00:00:00.000Z';
    const g: KeyGroup = { name: 'ci-tenant', description: 'CI', rateLimit: 600, quota: { limit: 1000, period: 'month', refill: 'reset', start: null }, createdAt: at, updatedAt: at, createdBy: 'test', updatedBy: 'test', managedBy: 'api' };
    await store.insertGroup(g);
    t.same(await store.getGroup('ci-tenant'), g, 'getGroup returns what was inserted');
    await t.rejects(store.insertGroup({ ...g, description: 'other' }), ConflictError, 'a taken group name is a conflict');
    const bare: KeyGroup = { ...g, name: 'bare', description: '', rateLimit: null, quota: null, managedBy: 'config' };
    await store.insertGroup(bare);
    t.same(await store.getGroup('bare'), bare, 'a group without limits, managed by the config');
    t.same((await store.listGroups()).map((x) => x.name), ['bare', 'ci-tenant'], 'listGroups by name');
    t.equal(await store.getGroup('nope'), undefined);
    const changed = await store.updateGroup('ci-tenant', { rateLimit: null, quota: { remaining: 5 }, description: 'changed', updatedAt: '2026-01-02T00:00:00.000Z', updatedBy: 'x' });
    t.same(changed, { ...g, rateLimit: null, quota: { remaining: 5 }, description: 'changed', updatedAt: '2026-01-02T00:00:00.000Z', updatedBy: 'x' }, 'updateGroup: null members kept as null');
    t.same(await store.getGroup('ci-tenant'), changed, 'and stored');
    const back = await store.updateGroup('ci-tenant', { quota: null, rateLimit: 7 });
    t.equal(back?.quota, null, 'a quota removed');
    t.equal(back?.rateLimit, 7);
    t.equal(await store.updateGroup('nope', { rateLimit: 1 }), undefined, 'updating an unknown group');

    const k1 = stored(201, { group: 'ci-tenant' });
    const k2 = stored(202, { group: 'ci-tenant' });
    const k3 = stored(203);
    for (const k of [k1, k2, k3]) await store.insert(k);
    t.equal((await store.get(k1.id))?.group, 'ci-tenant', 'a key carries its group');
    t.equal((await store.findByDigest(k1.digest))?.group, 'ci-tenant', 'the request path reads it too');
    t.equal((await store.get(k3.id))?.group, null, 'no group = null');
    t.equal(await store.countGroupKeys('ci-tenant'), 2, 'member count');
    const members = async (group: string, search?: string) => {
      const names: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await store.page({ limit: 1, cursor, group, ...(search ? { search } : {}) });
        t.ok(page.keys.length <= 1);
        names.push(...page.keys.map((k) => k.name));
        cursor = page.next ?? undefined;
      } while (cursor !== undefined);
      return names.sort();
    };
    t.same(await members('ci-tenant'), ['key-201', 'key-202'], 'page by group, a page at a time');
    t.same(await members('ci-tenant', '202'), ['key-202'], 'group and search together');
    t.same(await members('bare'), [], 'a group without keys');
    await store.update(k2.id, { group: 'bare' });
    await store.update(k3.id, { group: 'ci-tenant' });
    t.same(await members('ci-tenant'), ['key-201', 'key-203'], 'a key moved between groups: both indexes follow');
    t.same(await members('bare'), ['key-202']);
    t.equal(await store.countGroupKeys('bare'), 1);
    await store.update(k1.id, { group: null });
    t.equal(await store.countGroupKeys('ci-tenant'), 1, 'a key ungrouped');
    await store.delete(k3.id);
    t.equal(await store.countGroupKeys('ci-tenant'), 0, 'a deleted key leaves its group');
    t.same(await members('ci-tenant'), []);

    // the group's quota counter: its owner, refunds, and deleting the group removes it
    const tick = { period: 3, limit: 2, add: false };
    const owner = groupOwner('ci-tenant');
    t.same(await store.consumeQuota(owner, tick), { allowed: true, remaining: 1 });
    await store.refundQuota(owner, tick);
    t.same(await store.quotaState(owner), { balance: 2, period: 3 }, 'a refund gives the credit back');
    t.same(await store.consumeQuota(owner, tick), { allowed: true, remaining: 1 });
    t.same(await store.consumeQuota(owner, tick), { allowed: true, remaining: 0 });
    t.same(await store.consumeQuota(owner, tick), { allowed: false, remaining: 0 }, 'used up');
    await store.refundQuota(owner, { ...tick, period: 2 });
    t.same(await store.quotaState(owner), { balance: 0, period: 3 }, "a refund for another period changes nothing (the refill replaced that period's credits)");
    t.equal(await store.deleteGroup('ci-tenant'), true);
    t.equal(await store.getGroup('ci-tenant'), undefined, 'deleted');
    t.equal(await store.quotaState(owner), undefined, "and its quota counter with it");
    t.equal(await store.deleteGroup('ci-tenant'), false, 'deleting twice');
  }
}

contract('sqlite (memory)', async () => new SqliteKeyStore(':memory:'));
contract('sqlite (file)', async () => new SqliteKeyStore(`${t.testdir()}/k.db`));

let redis: TestRedis | undefined;
t.before(async () => {
  if (!skipWithoutRedis) redis = await startRedis();
});
t.teardown(() => redis?.stop());

contract(
  'redis',
  async () => {
    const s = new RedisKeyStore(redis!.url, { prefix: RedisKeyStore.namespace() });
    await s.ready();
    return s;
  },
  skipWithoutRedis,
);

for (const [name, start] of [['redis sentinel', startSentinel], ['redis cluster', startCluster]] as const) {
  t.test(`${name}: same contract`, { skip: skipWithoutRedis }, async (t) => {
    const set = await start(t.testdir());
    t.teardown(() => set.stop());
    await contractOn(t, async () => {
      const s = new RedisKeyStore(set.url, { prefix: RedisKeyStore.namespace(), redis: set.settings });
      await s.ready(10_000);
      return s;
    });
  });
}

t.test('redis: a change on one instance reaches the others within 100 ms; a reconnect drops caches', { skip: skipWithoutRedis }, async (t) => {
  const prefix = RedisKeyStore.namespace();
  const storeA = new RedisKeyStore(redis!.url, { prefix });
  const storeB = new RedisKeyStore(redis!.url, { prefix });
  await Promise.all([storeA.ready(), storeB.ready()]);
  t.teardown(async () => {
    await storeA.close();
    await storeB.close();
  });
  const config = { prefix: 'dg_', rate_limit: { default: 60, min: 1, max: 600 } };
  const a = new KeyService(storeA, config);
  const b = new KeyService(storeB, config);
  const { key, secret } = await a.create({ name: 'shared', role: 'viewer' }, 'test');
  const { digestSecret } = await import('../src/keys/secret.js');
  const digest = digestSecret(secret);
  t.equal((await b.lookup(digest))?.key.isActive, true, 'B resolves a key created on A');
  // A's create was published too; when that message reaches B it (rightly) empties B's cache once.
  const mark = storeB.changeMark();
  for (let i = 0; i < 100 && storeB.changeMark() === mark; i++) await sleep(5);
  await b.lookup(digest);
  t.notOk(b.lookup(digest) instanceof Promise, 'and then serves it from its cache');

  const delays: number[] = [];
  for (let i = 0; i < 20; i++) {
    const active = i % 2 === 1;
    const started = performance.now();
    await a.setActive(key.id, active, 'test');
    for (;;) {
      const seen = await b.lookup(digest);
      if (seen?.key.isActive === active) break;
      if (performance.now() - started > 1000) break;
      await sleep(1);
    }
    delays.push(performance.now() - started);
  }
  delays.sort((x, y) => x - y);
  t.ok(delays.at(-1)! < 100, `every change seen by B within 100 ms (median ${delays[10]!.toFixed(1)} ms, max ${delays.at(-1)!.toFixed(1)} ms)`);

  // A message sent while B's subscriber is away is lost: B must drop its cache on reconnect.
  const before = storeB.changeMark();
  await redis!.stop();
  await redis!.start(); // empty again: every key is gone
  await storeB.ready(10_000);
  for (let i = 0; i < 50 && storeB.changeMark() === before; i++) await sleep(100);
  t.not(storeB.changeMark(), before, 'the reconnect marked the cache stale');
  t.equal(await b.lookup(digest), null, 'so B no longer serves the key from its cache');
  // B's subscriber subscribed again: a change made through A reaches B's cache mark
  await storeB.ready(10_000);
  const markAfter = storeB.changeMark();
  await a.create({ name: 'after-restart', role: 'viewer' }, 'test');
  for (let i = 0; i < 100 && storeB.changeMark() === markAfter; i++) await sleep(10);
  t.not(storeB.changeMark(), markAfter, 'a change published after the reconnect reaches B');
  // let both clients finish reconnecting (ioredis re-subscribes on its own) before the teardown closes them
  await Promise.all([storeA.ready(10_000), storeB.ready(10_000)]);
  await sleep(200);
});
