// A group's usage history: counted with each request under the key's group at that moment, written
// by the same usage flush as the key's rows (SQLite transaction, Redis script), so it stays right
// after a key moves to another group or is deleted. Both stores, real traffic, real redis-server.

import t, { type Test } from 'tap';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { request } from 'undici';
import { RedisKeyStore } from '../src/keys/redis-store.js';
import { SqliteKeyStore } from '../src/keys/sqlite-store.js';
import type { KeyStore, UsageDelta } from '../src/keys/store.js';
import { UsageCounter } from '../src/usage/counter.js';
import { readSpool, writeSpool } from '../src/usage/spool.js';
import { startStack } from './helpers.js';
import { skipWithoutRedis, startRedis } from './redis.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

const H = Date.UTC(2026, 4, 1, 9);

t.test('the counter keeps each hour of a key apart by the group it had then', async (t) => {
  const batches: Map<string, UsageDelta>[] = [];
  const counter = new UsageCounter({
    async addUsage(batch) {
      batches.push(structuredClone(new Map(batch)));
    },
  });
  counter.record('k', 'tenant-a', H + 1);
  counter.refused('k', 'tenant-a', 'limited', H + 2);
  counter.record('k', 'tenant-b', H + 3); // moved within the batch
  counter.record('k', null, H + 4); // and out of any group
  counter.refused('k', 'tenant-a', 'quota', H + 3_600_000);
  await counter.stop();
  t.equal(batches.length, 1);
  t.same(batches[0]!.get('k'), {
    count: 3,
    lastUsedAt: new Date(H + 4).toISOString(),
    hours: [
      { hourMs: H, allowed: 1, limited: 1, forbidden: 0, quota: 0, group: 'tenant-a' },
      { hourMs: H, allowed: 1, limited: 0, forbidden: 0, quota: 0, group: 'tenant-b' },
      { hourMs: H, allowed: 1, limited: 0, forbidden: 0, quota: 0 },
      { hourMs: H + 3_600_000, allowed: 0, limited: 0, forbidden: 0, quota: 1, group: 'tenant-a' },
    ],
  });

  // a spooled batch keeps the groups (and a spool from before groups reads as none)
  const file = join(mkdtempSync(join(tmpdir(), 'kg-spool-')), 'usage.spool');
  writeSpool(file, [{ id: 'b1', counts: batches[0]! }]);
  const back = readSpool(file);
  t.equal(back.damaged, 0);
  t.same(back.batches[0]!.counts.get('k'), batches[0]!.get('k'), 'read back as written');
});

/** The store half: a batch's group hours land under the group in the same write; prune and group delete remove them. */
async function storeContract(t: Test, store: KeyStore): Promise<void> {
  const hour = (group: string | undefined, allowed: number) => ({ hourMs: H, allowed, limited: 1, forbidden: 0, quota: 0, ...(group ? { group } : {}) });
  // more keys than one Redis script call takes (200): every chunk adds its own part of the group's hour
  const batch = new Map<string, UsageDelta>();
  for (let i = 0; i < 450; i++) batch.set(`key-${i}`, { count: 1, lastUsedAt: new Date(H).toISOString(), hours: [hour(i % 3 === 0 ? undefined : 'big', 1)] });
  batch.set('mover', { count: 5, lastUsedAt: new Date(H).toISOString(), hours: [hour('big', 2), hour('small', 3), { ...hour('small', 1), hourMs: H - 3_600_000 }] });
  const id = randomUUID();
  await store.addUsage(batch, id);
  await store.addUsage(batch, id); // a retried batch adds nothing, to the groups either
  t.same(await store.usageHistory('group:big', H - 7_200_000, H + 3_600_000), [{ hour: new Date(H).toISOString(), allowed: 302, limited: 301, forbidden: 0, quota: 0 }], '300 keys of the group and the mover, once');
  t.same(
    await store.usageHistory('group:small', 0, H * 2),
    [
      { hour: new Date(H - 3_600_000).toISOString(), allowed: 1, limited: 1, forbidden: 0, quota: 0 },
      { hour: new Date(H).toISOString(), allowed: 3, limited: 1, forbidden: 0, quota: 0 },
    ],
  );
  t.same(await store.usageHistory('mover', 0, H * 2), [
    { hour: new Date(H - 3_600_000).toISOString(), allowed: 1, limited: 1, forbidden: 0, quota: 0 },
    { hour: new Date(H).toISOString(), allowed: 5, limited: 2, forbidden: 0, quota: 0 },
  ], "the key's own history adds its hours whatever the group");
  t.ok((await store.pruneUsage(H)) >= 2, 'the older hour of the key and of the group');
  t.same(await store.usageHistory('group:small', 0, H * 2), [{ hour: new Date(H).toISOString(), allowed: 3, limited: 1, forbidden: 0, quota: 0 }], 'pruned like a key: older hours go');
}

t.test('SQLite store: group hours in the same transaction, applied once, pruned', async (t) => {
  const store = new SqliteKeyStore(join(mkdtempSync(join(tmpdir(), 'kg-gu-')), 'keys.db'));
  t.teardown(() => store.close());
  await storeContract(t, store);
});

t.test('Redis store: group hours in the same script call, applied once, pruned', { skip: skipWithoutRedis }, async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const store = new RedisKeyStore(redis.url, { prefix: RedisKeyStore.namespace() });
  t.teardown(() => store.close());
  await store.ready();
  await storeContract(t, store);
});

/** Real traffic through a gateway: the group's history outlives a key's move and a key's deletion. */
async function throughGateway(t: Test, keys?: string): Promise<void> {
  const TOKEN = 'group-usage-admin-token-0123456789';
  const s = await startStack(t.testdir(), { adminToken: TOKEN, ...(keys ? { keys } : {}) });
  t.teardown(() => s.close());
  const svc = s.gateway.keys;
  await svc.createGroup({ name: 'tenant-a' }, 'test');
  await svc.createGroup({ name: 'tenant-b' }, 'test');
  const k1 = await s.key({ name: 'ci', role: 'viewer', rateLimit: 2, group: 'tenant-a' });
  const k2 = await s.key({ name: 'mcp', role: 'viewer', rateLimit: 600, quota: { remaining: 1 }, group: 'tenant-a' });
  const k3 = await s.key({ name: 'loose', role: 'viewer', rateLimit: 600 });
  const get = async (secret: string, path = '/api/v1/dags') => {
    const r = await request(s.url + path, { headers: { 'x-api-key': secret } });
    await r.body.dump();
    return r.statusCode;
  };
  const seen = [];
  for (let i = 0; i < 3; i++) seen.push(await get(k1.secret));
  seen.push(await get(k1.secret, '/api/v1/admin'));
  seen.push(await get(k2.secret), await get(k2.secret));
  seen.push(await get(k3.secret), await get(k3.secret));
  t.same(seen, [200, 200, 429, 403, 200, 429, 200, 200], 'ci: 2 allowed, 1 limited, 1 forbidden; mcp: 1 allowed, 1 over quota; loose: 2 allowed');
  await s.gateway.flushUsage();

  // ci moves to tenant-b (with room in its own window), mcp is deleted
  await svc.update('ci', { group: 'tenant-b', rateLimit: 600 }, 'test');
  t.equal(await get(k1.secret), 200);
  await svc.delete(k2.id, 'test');
  await s.gateway.flushUsage();

  const a = await svc.groupUsage('tenant-a', {});
  t.same(a.totals, { allowed: 3, limited: 1, forbidden: 1, quota: 1 }, "tenant-a keeps what ci and mcp did while they were its keys");
  t.equal(a.group.name, 'tenant-a');
  t.same((await svc.groupUsage('tenant-b', { bucket: 'day' })).totals, { allowed: 1, limited: 0, forbidden: 0, quota: 0 }, 'tenant-b: only what ci did after it moved');
  t.same((await svc.usage('ci', {})).totals, { allowed: 3, limited: 1, forbidden: 1, quota: 0 }, "ci's own history is all of it");

  const admin = async (path: string) => {
    const r = await request(s.gateway.adminUrl + path, { headers: { authorization: `Bearer ${TOKEN}` } });
    return { status: r.statusCode, body: (await r.body.json()) as Json };
  };
  const dagen = await admin('/api/groups/tenant-a/usage');
  t.equal(dagen.status, 200);
  t.equal(dagen.body.points.length, 7 * 24, 'the same default range as a key: 7 days of hours');
  t.match(dagen.body, { group_name: 'tenant-a', bucket: 'hour', totals: { allowed: 3, rate_limited: 1, forbidden: 1, quota_exceeded: 1 } }, 'Dagen shape');
  t.same(dagen.body.points.at(-1), { start: new Date(Math.floor(Date.now() / 3_600_000) * 3_600_000).toISOString(), allowed: 3, rate_limited: 1, forbidden: 1, quota_exceeded: 1 });
  const dagu = await admin(`/api/v1/api-key-groups/tenant-b/usage?bucket=day&from=${new Date(Date.now() - 86_400_000).toISOString().slice(0, 10)}`);
  t.equal(dagu.status, 200);
  t.match(dagu.body, { groupName: 'tenant-b', bucket: 'day', totals: { allowed: 1, rateLimited: 0, forbidden: 0, quotaExceeded: 0 } }, 'Dagu shape');
  t.equal(dagu.body.points.length, 2);
  const bad = await admin('/api/groups/tenant-a/usage?bucket=week');
  t.equal(bad.status, 400);
  t.equal(bad.body.field, 'bucket');
  t.equal((await admin('/api/v1/api-key-groups/no-such/usage')).status, 404, 'unknown group: 404');
  t.equal((await admin('/api/groups/no-such/usage')).status, 404);

  // a deleted group's history goes with it: a new group of that name starts at zero
  await svc.update('ci', { group: null }, 'test');
  await svc.deleteGroup('tenant-b', 'test');
  await svc.createGroup({ name: 'tenant-b' }, 'test');
  t.same((await svc.groupUsage('tenant-b', {})).totals, { allowed: 0, limited: 0, forbidden: 0, quota: 0 }, 'a new group of an old name has no history');
  t.same((await svc.groupUsage('tenant-a', {})).totals.allowed, 3, 'the other group keeps its own');
}

t.test('through a gateway on SQLite: a group keeps its history when keys move or go', (t) => throughGateway(t));

t.test('through a gateway on Redis: the same', { skip: skipWithoutRedis }, async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  await throughGateway(t, `${redis.url}/0`);
});
