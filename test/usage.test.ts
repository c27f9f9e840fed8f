// Usage counts: exact across instances, flushed on graceful stop, never counting refused requests.

import t from 'tap';
import { request } from 'undici';
import { SqliteKeyStore } from '../src/keys/sqlite-store.js';
import { UsageCounter } from '../src/usage/counter.js';
import { startStack } from './helpers.js';

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

t.test('a failed flush keeps its counts for the next one', async (t) => {
  let fail = true;
  const written: number[] = [];
  const counter = new UsageCounter({
    async addUsage(batch) {
      if (fail) throw new Error('disk full');
      for (const d of batch.values()) written.push(d.count);
    },
  });
  for (let i = 0; i < 5; i++) counter.record('k', 1000 + i);
  await counter.flush();
  t.same(written, [], 'nothing written while the store fails');
  counter.record('k', 2000);
  fail = false;
  await counter.stop();
  t.same(written, [6], 'the five kept plus the one after, written once');
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
  counter.record('k', Date.now());
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
