// Several gateway instances sharing keys, limits and usage through one redis-server.

import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { RedisKeyStore } from '../src/keys/redis-store.js';
import { startStack, type Stack } from './helpers.js';
import { skipWithoutRedis, startCluster, startRedis, startSentinel } from './redis.js';

async function status(s: Stack, secret: string): Promise<number> {
  const r = await request(`${s.url}/api/v1/dags`, { headers: { 'x-api-key': secret } });
  await r.body.dump();
  return r.statusCode;
}

t.test('keys in Redis: created on one instance, revoked everywhere, usage exact', { skip: skipWithoutRedis }, async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const shared = { keys: `${redis.url}/0`, rateLimits: `${redis.url}/1` };
  const a = await startStack(t.testdir(), shared);
  const b = await startStack(t.testdir(), shared); // its own files; shared state is in Redis
  t.teardown(async () => {
    await a.close();
    await b.close();
  });

  const k = await a.key({ name: 'everywhere', role: 'viewer', rateLimit: 600 });
  t.equal(await status(b, k.secret), 200, 'a key created on A works on B');
  t.equal(await status(a, k.secret), 200);

  // Revocation: deactivate on A while B holds the key in its cache.
  await a.gateway.keys.setActive(k.id, false, 'test');
  const started = performance.now();
  let seen = 0;
  while (performance.now() - started < 1000) {
    seen = await status(b, k.secret);
    if (seen === 403) break;
    await sleep(2);
  }
  const delay = performance.now() - started;
  t.equal(seen, 403, 'B refuses the deactivated key');
  t.ok(delay < 100, `within 100 ms (${delay.toFixed(1)} ms)`);
  await a.gateway.keys.setActive(k.id, true, 'test');
  const { secret: fresh } = await a.gateway.keys.regenerate(k.id, 'test');
  a.secrets.push(fresh);
  await sleep(50);
  t.equal(await status(b, k.secret), 401, 'B refuses the regenerated-away secret');
  t.equal(await status(b, fresh), 200, 'and accepts the new one');

  // Exact usage across instances, flushed on graceful stop. Allowed so far: 2 with the first
  // secret and 1 with the fresh one; refusals (403, 401) are not usage.
  const before = 3;
  const send = async (s: Stack, n: number) => {
    for (let i = 0; i < n; i++) if ((await status(s, fresh)) !== 200) throw new Error('refused');
  };
  await Promise.all([send(a, 61), send(b, 53)]);
  await a.close();
  await b.close();
  const check = new RedisKeyStore(shared.keys);
  t.teardown(() => check.close());
  await check.ready();
  t.equal((await check.get(k.id))?.requestCount, before + 114, 'the 3 + 61 + 53 allowed requests counted exactly, refusals not');
});

for (const [name, start] of [['sentinel', startSentinel], ['cluster', startCluster]] as const) {
  t.test(`Redis ${name}: two instances share keys and one budget per key`, { skip: skipWithoutRedis }, async (t) => {
    const set = await start(t.testdir());
    t.teardown(() => set.stop());
    const shared = { keys: set.url, rateLimits: set.url, redis: set.settings };
    const a = await startStack(t.testdir(), shared);
    const b = await startStack(t.testdir(), shared);
    t.teardown(async () => {
      await a.close();
      await b.close();
    });
    const k = await a.key({ name: `${name}-key`, role: 'viewer', rateLimit: 4 });
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push(await status(i % 2 === 0 ? a : b, k.secret));
    t.same(statuses, [200, 200, 200, 200, 429, 429, 429, 429], 'four allowed in total across both instances');
    t.equal(a.gateway.limiterState.degraded, false, 'limits came from Redis, not the fallback');
    await a.gateway.keys.setActive(k.id, false, 'test');
    let seen = 0;
    for (let i = 0; i < 100 && seen !== 403; i++) {
      seen = await status(b, k.secret);
      if (seen !== 403) await sleep(2);
    }
    t.equal(seen, 403, 'a deactivation on A reaches B');
  });
}
