// Rate limits shared through a real redis-server: two gateway instances, Redis down and back.

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { startStack, type Stack } from './helpers.js';
import { skipWithoutRedis, startRedis } from './redis.js';

async function call(s: Stack, secret: string): Promise<{ status: number; ms: number; body: string }> {
  const started = performance.now();
  const r = await request(`${s.url}/api/v1/dags`, { headers: { 'x-api-key': secret } });
  const body = await r.body.text();
  return { status: r.statusCode, ms: performance.now() - started, body };
}

t.test('two instances share one budget per key through Redis', { skip: skipWithoutRedis }, async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const dir = t.testdir();
  const a = await startStack(dir, { rateLimits: redis.url });
  const b = await startStack(dir, { rateLimits: redis.url }); // same key store file, same Redis
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  const k = await a.key({ name: 'shared', role: 'viewer', rateLimit: 6 });
  const statuses: number[] = [];
  for (let i = 0; i < 12; i++) statuses.push((await call(i % 2 === 0 ? a : b, k.secret)).status);
  t.same(statuses, [200, 200, 200, 200, 200, 200, 429, 429, 429, 429, 429, 429], 'six allowed in total, alternating instances');
  t.equal(a.dagu.received.length + b.dagu.received.length, 6, 'exactly six reached an upstream');
});

t.test('Redis down: answers within milliseconds under each policy, and recovers by itself', { skip: skipWithoutRedis }, async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const dir = t.testdir();
  const memory = await startStack(dir, { rateLimits: redis.url, rateLimitsFallback: 'memory' });
  const allow = await startStack(dir, { rateLimits: redis.url, rateLimitsFallback: 'allow' });
  const deny = await startStack(dir, { rateLimits: redis.url, rateLimitsFallback: 'deny' });
  t.teardown(async () => {
    await memory.close();
    await allow.close();
    await deny.close();
  });
  const k = await memory.key({ name: 'fallback', role: 'viewer', rateLimit: 3 });
  t.equal((await call(memory, k.secret)).status, 200, 'shared store up');

  await redis.stop();
  const down = { memory: [] as number[], allow: [] as number[], deny: [] as number[] };
  let slowest = 0;
  for (let i = 0; i < 5; i++) {
    for (const [name, s] of [['memory', memory], ['allow', allow], ['deny', deny]] as const) {
      const r = await call(s, k.secret);
      down[name].push(r.status);
      slowest = Math.max(slowest, r.ms);
      if (name === 'deny' && r.status === 503) t.match(JSON.parse(r.body), { code: 'unavailable' }, 'deny policy: 503 JSON');
    }
  }
  t.same(down.memory, [200, 200, 200, 429, 429], 'memory policy: per-instance limit of 3 holds while Redis is down');
  t.same(down.allow, [200, 200, 200, 200, 200], 'allow policy: no limit');
  t.same(down.deny, [503, 503, 503, 503, 503], 'deny policy: 503');
  // a hang guard, not a timing figure: a request waiting on a dead Redis would take the 2 s reconnect
  // cycle or longer; 1.5 s leaves room for a loaded machine (alone it is 29–40 ms)
  t.ok(slowest < 1500, `no answer waited on the dead Redis (slowest ${Math.round(slowest)} ms)`);
  t.ok(memory.logs.some((l) => l.includes('rate-limit store failed')), 'the switch is logged');
  t.ok(memory.gateway.limiterState.switches >= 1 && memory.gateway.limiterState.degraded, 'and counted');

  await redis.start();
  // ioredis reconnects on its own (retry every ≤ 2 s); wait until the deny instance answers again.
  let back = 0;
  for (let i = 0; i < 40 && back !== 200; i++) {
    await new Promise((r) => setTimeout(r, 250));
    back = (await call(deny, k.secret)).status;
  }
  t.equal(back, 200, 'Redis back: the deny instance serves again without a restart');
  t.ok(memory.logs.every((l) => !l.includes(k.secret)), 'no secret in the logs');
  for (let i = 0; i < 40 && memory.gateway.limiterState.degraded; i++) {
    await call(memory, k.secret);
    await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(memory.gateway.limiterState.degraded, false, 'the memory-policy instance switched back to Redis');
  t.ok(memory.logs.some((l) => l.includes('shared limits restored')), 'the switch back is logged');
});

t.test('a burst of one key in one turn, split over two instances: exactly the limit passes, in fewer Redis calls', { skip: skipWithoutRedis }, async (t) => {
  const { Redis } = await import('ioredis');
  const { KeyRateLimiter } = await import('../src/limits/limiter.js');
  const { RedisWindows, WINDOW_PREFIX } = await import('../src/limits/redis-windows.js');
  const { openRateLimiter } = await import('../src/limits/open.js');
  const { loadConfig } = await import('../src/config/load.js');
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  // Two instances' windows, as open.ts builds them but without the request path's 250 ms command
  // timeout (a loaded test machine would turn this test into one about the fallback).
  const instance = () => {
    const client = new Redis(redis.url, { enableAutoPipelining: true });
    t.teardown(() => client.disconnect());
    return new KeyRateLimiter(new RedisWindows(client), 'deny');
  };
  const a = instance();
  const b = instance();
  // 150 checks of one key, all started in the same turn, alternating instances; the limit is 100.
  // Wherever the turn falls in a 5 s bucket (test/limits-boundary.test.ts aims bursts across one).
  const decisions = await Promise.all(Array.from({ length: 150 }, (_, i) => (i % 2 === 0 ? a : b).check('hot-key', 100)));
  t.notOk(decisions.includes('unavailable'), 'Redis answered every check');
  const allowed = decisions.filter((d) => d !== 'unavailable' && d.allowed);
  t.equal(allowed.length, 100, 'exactly the limit was allowed');
  t.same(allowed.map((d) => (d as { remaining: number }).remaining).sort((x, y) => x - y), Array.from({ length: 100 }, (_, i) => i), 'each allowed request has its own place in the window (remaining 0…99, none twice)');
  // denied requests are not counted: the window holds exactly the 100 allowed
  const next = await a.check('hot-key', 101);
  t.ok(next !== 'unavailable' && next.allowed && next.remaining === 0, 'the 101st place is free under a limit of 101: denied requests were not counted');
  t.same(a.storeCalls, { calls: 2, checks: 76 }, `one Redis call per instance for the turn's 75 checks, one for the 101st (${a.storeCalls.calls} for ${a.storeCalls.checks})`);

  // and the gateway's Redis limiter is built on them
  const file = join(t.testdir(), 'gateway.yaml');
  writeFileSync(file, `store: { keys: "sqlite:./keys.db", rate_limits: "${redis.url}" }\nupstreams: [{ name: u, api_base_url: "http://127.0.0.1:1" }]\nroutes: [{ path: /x, upstream: u, auth: none }]\n`);
  const silent = { info() {}, warn() {}, error() {}, debug() {}, child() { return silent; } } as never;
  const opened = openRateLimiter(loadConfig(file, {}), silent);
  t.teardown(() => opened.close());
  await opened.ready;
  t.match(await opened.limiter.check('gateway-key', 5), { allowed: true, remaining: 4 });
  t.same(opened.limiter.storeCalls, { calls: 1, checks: 1 }, 'the gateway coalesces its checks');
  const probe = new Redis(redis.url);
  t.teardown(() => probe.disconnect());
  const ttl = await probe.pttl(`${WINDOW_PREFIX}gateway-key`);
  t.ok(ttl > 60_000 && ttl <= 70_000, `the key's window is one hash in Redis that expires when idle (${ttl} ms)`);
});

t.test("the Redis script decides exactly as the in-process windows: twenty minutes of bursts, pauses and a clock going back", { skip: skipWithoutRedis }, async (t) => {
  const { Redis } = await import('ioredis');
  const { RedisWindows } = await import('../src/limits/redis-windows.js');
  const { LocalWindows } = await import('../src/limits/local.js');
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const client = new Redis(redis.url);
  t.teardown(() => client.disconnect());
  let now = 1_800_000_000_000;
  // the script on a test clock instead of Redis's TIME, against the windows of one process
  const viaRedis = new RedisWindows(client, () => now);
  const local = new LocalWindows();
  let seed = 11;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const got: unknown[] = [];
  const want: unknown[] = [];
  const end = now + 1_200_000;
  let wentBack = false;
  while (now < end) {
    now += Math.floor(rand() < 0.01 ? 90_000 * rand() : rand() < 0.05 ? 12_000 * rand() : 300 * rand());
    if (!wentBack && now > end - 600_000) {
      now -= 7_000; // a failover to a host whose clock is behind
      wentBack = true;
    }
    const key = ['k1', 'k2', 'k3'][Math.floor(rand() * 3)]!;
    const limit = key === 'k1' ? 10 : key === 'k2' ? 40 : 3;
    const n = rand() < 0.1 ? 1 + Math.floor(rand() * 30) : 1;
    const r = await viaRedis.take(key, limit, n);
    got.push({ at: now, key, limit, n, admitted: r.admitted, current: r.current, msIntoBucket: r.msIntoBucket, closed: Array.from(r.closed) });
    const l = local.take(key, limit, n, now);
    want.push({ at: now, key, limit, n, admitted: l.admitted, current: l.current, msIntoBucket: l.msIntoBucket, closed: Array.from(l.closed) });
  }
  const admitted = (xs: unknown[]) => (xs as Array<{ admitted: number }>).reduce((s, x) => s + x.admitted, 0);
  t.ok(got.length > 500 && admitted(want) > 100 && (want as Array<{ admitted: number }>).some((x) => x.admitted === 0), `many takes, some refused (${got.length} takes, ${admitted(want)} admitted)`);
  const first = got.findIndex((g, i) => JSON.stringify(g) !== JSON.stringify(want[i]));
  t.equal(first, -1, 'the same takes: admitted, counted before, closed buckets, time into the bucket');
  if (first !== -1) {
    const key = (want[first] as { key: string }).key;
    const same = (xs: unknown[]) => xs.slice(0, first + 1).filter((x) => (x as { key: string }).key === key).slice(-3);
    t.comment(JSON.stringify(same(got)));
    t.comment(JSON.stringify(same(want)));
    t.same(same(got), same(want), 'the first that differs, after the same key\'s takes before it');
  }
});
