// Usage counts: exact across instances, flushed on graceful stop, never counting refused requests.

import t from 'tap';
import { request } from 'undici';
import { SqliteKeyStore } from '../src/keys/sqlite-store.js';
import { UsageCounter } from '../src/usage/counter.js';
import { startStack } from './helpers.js';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

t.test('two instances on one key store: counts add up exactly after a graceful stop', async (t) => {
  const dir = t.testdir();
  const a = await startStack(dir);
  const b = await startStack(dir);
  const k = await a.key({ name: 'counted', role: 'viewer', rateLimit: 600 });
  const other = await a.key({ name: 'other', role: 'viewer', rateLimit: 600 });
  const send = async (url: string, secret: string, n: number) => {
    for (let i = 0; i < n; i++) {
      const r = await request(`${url}/api/v1/dags`, { headers: { 'x-api-key': secret } });
      await r.body.dump();
      if (r.statusCode !== 200) throw new Error(`unexpected ${r.statusCode}`);
    }
  };
  // concurrently, through both instances, several flush intervals long
  await Promise.all([send(a.url, k.secret, 137), send(b.url, k.secret, 145), send(b.url, other.secret, 9)]);
  const lastSent = Date.now();
  await Promise.all([a.close(), b.close()]);
  const store = new SqliteKeyStore(`${dir}/keys.db`);
  t.teardown(() => store.close());
  const saved = await store.get(k.id);
  t.equal(saved?.requestCount, 282, 'exactly the 137 + 145 requests sent');
  t.equal((await store.get(other.id))?.requestCount, 9);
  const last = Date.parse(saved!.lastUsedAt!);
  t.ok(last <= lastSent && lastSent - last < 5_000, 'last use is the latest across instances');
});

t.test('a failed flush keeps its batch, unchanged and with its id, for the next one', async (t) => {
  let fail = true;
  const attempts: string[] = [];
  const written: number[] = [];
  const counter = new UsageCounter({
    async addUsage(batch, id) {
      attempts.push(id);
      if (fail) throw new Error('disk full');
      for (const d of batch.values()) written.push(d.count);
    },
  });
  for (let i = 0; i < 5; i++) counter.record('k', null, 1000 + i);
  await counter.flush();
  t.same(written, [], 'nothing written while the store fails');
  counter.record('k', null, 2000);
  await counter.flush();
  t.equal(attempts[1], attempts[0], 'the retry carries the same batch id (the store applies it at most once)');
  fail = false;
  t.same(await counter.stop(), [], 'nothing left over');
  t.same(written, [5, 1], 'the kept batch as it was, then the count made after it');
  t.equal(new Set(attempts).size, 2);
});

t.test('flush lag: an idle gateway is never late; counts waiting on a failing store are', async (t) => {
  let fail = false;
  const counter = new UsageCounter({
    async addUsage() {
      if (fail) throw new Error('disk full');
    },
  });
  const lag = () => (Date.now() - counter.lastFlushMs) / 1000;
  counter.lastFlushMs = Date.now() - 600_000; // as if the last write was ten minutes ago
  await counter.flush();
  t.ok(lag() < 1, `idle: a flush with nothing to write is on time (lag ${lag()} s)`);
  counter.record('k', null, Date.now());
  fail = true;
  counter.lastFlushMs = Date.now() - 600_000;
  await counter.flush();
  t.ok(lag() >= 600, 'a failed write leaves the lag growing');
  await counter.flush();
  t.ok(lag() >= 600, 'and so does the next attempt, which still has those counts to write');
  fail = false;
  await counter.flush();
  t.ok(lag() < 1, 'until the counts are written');
});

t.test('the hourly history: allowed and refused per hour, kept when a flush fails', async (t) => {
  const H = Date.UTC(2026, 4, 1, 9);
  let fail = true;
  const batches: Json[] = [];
  const counter = new UsageCounter({
    async addUsage(batch) {
      if (fail) throw new Error('disk full');
      batches.push(Object.fromEntries([...batch].map(([id, d]) => [id, structuredClone(d)])));
    },
  });
  counter.record('k', null, H + 10);
  counter.refused('k', null, 'limited', H + 20);
  counter.refused('k', null, 'forbidden', H + 3_599_999);
  counter.record('k', null, H + 3_600_000); // the next hour
  counter.refused('other', null, 'forbidden', H + 5);
  await counter.flush();
  counter.record('k', null, H + 3_600_001);
  fail = false;
  await counter.stop();
  // the failed batch is written as it was (it may have reached the store: its id makes a second
  // arrival a no-op), then what was counted after it
  t.equal(batches.length, 2, 'the kept batch once the store is back, then the newer counts');
  t.match(batches[0], {
    k: {
      count: 2,
      lastUsedAt: new Date(H + 3_600_000).toISOString(),
      hours: [
        { hourMs: H, allowed: 1, limited: 1, forbidden: 1 },
        { hourMs: H + 3_600_000, allowed: 1, limited: 0, forbidden: 0 },
      ],
    },
    other: { count: 0, lastUsedAt: '', hours: [{ hourMs: H, allowed: 0, limited: 0, forbidden: 1 }] },
  });
  t.equal(batches[0].k.hours.length, 2, 'no hour twice');
  t.same(batches[1], { k: { count: 1, lastUsedAt: new Date(H + 3_600_001).toISOString(), hours: [{ hourMs: H + 3_600_000, allowed: 1, limited: 0, forbidden: 0, quota: 0 }] } });
});

t.test('GET /api/keys/{id}/usage and /api/v1/api-keys/{keyId}/usage count real traffic', async (t) => {
  const TOKEN = 'usage-admin-token-0123456789abcdef';
  const s = await startStack(t.testdir(), { adminToken: TOKEN });
  t.teardown(() => s.close());
  const k = await s.key({ name: 'charted', role: 'viewer', scopes: ['workflows'], rateLimit: 3 });
  const untouched = await s.key({ name: 'quiet', role: 'viewer' });
  const get = async (path: string, headers: Record<string, string> = { 'x-api-key': k.secret }) => {
    const r = await request(s.url + path, { headers });
    await r.body.dump();
    return r.statusCode;
  };
  const statuses = [];
  for (let i = 0; i < 4; i++) statuses.push(await get('/api/v1/dags'));
  statuses.push(await get('/api/v1/admin')); // role admin: 403
  statuses.push(await get('/api/v1/agent/chat')); // POST only: 404/405, not counted as refused by the key
  t.same(statuses.slice(0, 5), [200, 200, 200, 429, 403], 'three allowed, one rate limited, one forbidden');
  await s.gateway.flushUsage();

  const admin = async (path: string) => {
    const r = await request(s.gateway.adminUrl + path, { headers: { authorization: `Bearer ${TOKEN}` } });
    return { status: r.statusCode, body: (await r.body.json()) as Json };
  };
  const dagen = await admin(`/api/keys/${k.id}/usage`);
  t.equal(dagen.status, 200);
  t.equal(dagen.body.bucket, 'hour');
  t.equal(dagen.body.points.length, 7 * 24, 'default: 7 days of hours ending with the current one, zero-filled');
  t.same(dagen.body.totals, { allowed: 3, rate_limited: 1, forbidden: 1, quota_exceeded: 0 }, 'Dagen shape: totals');
  t.same(dagen.body.points.at(-1), { start: new Date(Math.floor(Date.now() / 3_600_000) * 3_600_000).toISOString(), allowed: 3, rate_limited: 1, forbidden: 1, quota_exceeded: 0 }, 'in the current hour');
  const dagu = await admin(`/api/v1/api-keys/charted/usage?bucket=day&from=${new Date(Date.now() - 2 * 86_400_000).toISOString().slice(0, 10)}`);
  t.equal(dagu.status, 200);
  t.equal(dagu.body.points.length, 3, 'by day, from a date: three days');
  t.match(dagu.body, { keyId: k.id, keyName: 'charted', bucket: 'day', totals: { allowed: 3, rateLimited: 1, forbidden: 1 } }, 'Dagu shape, by name too');
  t.same((await admin(`/api/keys/${untouched.id}/usage?bucket=day`)).body.totals, { allowed: 0, rate_limited: 0, forbidden: 0, quota_exceeded: 0 }, 'another key: nothing');
  t.equal((await s.gateway.keys.get(k.id)).requestCount, 3, 'the request count counts the same allowed requests');

  for (const [q, field] of [
    ['bucket=week', 'bucket'],
    ['from=yesterday', 'from'],
    ['to=2026-13-01', 'to'],
    ['from=2020-01-01&bucket=hour', 'from'],
    ['from=2030-01-02&to=2030-01-01', 'from'],
    ['bucket=day&bucket=hour', 'bucket'],
  ] as const) {
    const r = await admin(`/api/keys/${k.id}/usage?${q}`);
    t.equal(r.status, 400, `${q}: 400`);
    t.equal(r.body.field, field, `${q}: names ${field} (${r.body.message})`);
  }
  t.equal((await admin('/api/keys/no-such-key/usage')).status, 404, 'unknown key: 404');
});
