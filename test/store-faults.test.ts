// Keys, limits and usage counts under key-store faults, with real redis-server processes killed,
// frozen (SIGSTOP/SIGCONT) and restarted empty. Timing figures are in bench/faults.js; here every
// wait is a generous "answered, not hung" bound.

import { readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { startEchoUpstream } from '../src/demo/echo-upstream.js';
import { RedisKeyStore } from '../src/keys/redis-store.js';
import { digestSecret } from '../src/keys/secret.js';
import { spawnKeygate } from './binary.js';
import { startStack, type Stack } from './helpers.js';
import { skipWithoutRedis, startRedis } from './redis.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One request with a key; the status, the body's code and the Retry-After header. Bounded: never hangs the test. */
async function call(url: string, secret: string, path = '/api/v1/dags'): Promise<{ status: number; code?: string; retryAfter?: string }> {
  const r = await request(`${url}${path}`, { headers: { 'x-api-key': secret }, headersTimeout: 10_000, bodyTimeout: 10_000 });
  const text = await r.body.text();
  let code: string | undefined;
  try {
    code = (JSON.parse(text) as { code?: string }).code;
  } catch {
    code = undefined;
  }
  return { status: r.statusCode, ...(code ? { code } : {}), ...(r.headers['retry-after'] ? { retryAfter: String(r.headers['retry-after']) } : {}) };
}

async function metrics(s: Stack): Promise<string> {
  const r = await request(`${s.gateway.adminUrl!}/metrics`);
  return r.body.text();
}

function sample(text: string, name: string): number {
  const m = new RegExp(`^${name.replace(/[{}"=]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

async function until(what: () => Promise<boolean> | boolean, ms = 15_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await what()) return true;
    await sleep(100);
  }
  return false;
}

/** The request count a fresh client reads from the Redis key store. */
async function storedCount(url: string, id: string): Promise<number> {
  const store = new RedisKeyStore(url);
  try {
    await store.ready(5000);
    return (await store.get(id))?.requestCount ?? -1;
  } finally {
    await store.close();
  }
}

async function send(url: string, secret: string, n: number): Promise<number> {
  let ok = 0;
  for (let i = 0; i < n; i++) if ((await call(url, secret)).status === 200) ok++;
  return ok;
}

t.test('Redis down: known keys served as last known (revocations kept), a never-seen key 503 with Retry-After, counted, bounded by stale_ttl', { skip: skipWithoutRedis }, async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const dir = t.testdir();
  const s = await startStack(dir, { keys: `${redis.url}/0` });
  t.teardown(() => s.close());
  const short = await startStack(dir, { keys: `${redis.url}/0`, store: 'stale_ttl: 1' });
  t.teardown(() => short.close());
  const known = await s.key({ name: 'known', role: 'viewer' });
  const revoked = await s.key({ name: 'revoked', role: 'viewer' });
  const unseen = await s.key({ name: 'unseen', role: 'viewer' });
  for (const gw of [s, short]) {
    t.equal((await call(gw.url, known.secret)).status, 200, 'known key works');
    t.equal((await call(gw.url, revoked.secret)).status, 200);
  }
  await s.gateway.keys.setActive('revoked', false, 'test');
  t.ok(await until(async () => (await call(short.url, revoked.secret)).status === 403), 'the revocation reached the other instance');
  t.equal((await call(s.url, revoked.secret)).status, 403);

  await redis.stop();
  t.equal((await call(s.url, known.secret)).status, 200, 'Redis down: the known key is served as last known');
  t.equal((await call(s.url, revoked.secret)).status, 403, 'the revocation seen before stays applied');
  const never = await call(s.url, unseen.secret);
  t.same(never, { status: 503, code: 'unavailable', retryAfter: '1' }, 'a key this instance never saw: 503 with Retry-After');
  const text = await metrics(s);
  t.ok(sample(text, 'keygate_key_cache_stale_total') >= 2, 'stale answers are counted in /metrics');
  t.equal(sample(text, 'keygate_store_breaker_open{store="keys"}'), 1, 'the key store breaker is open');
  const ready = await request(`${s.url}/_keygate/readyz`);
  const body = (await ready.body.json()) as { status: string; checks: Record<string, string> };
  t.equal(ready.statusCode, 200);
  t.equal(body.status, 'degraded');
  t.match(body.checks.key_store, /^degraded: .*serving cached keys/, 'readyz says why');

  // stale_ttl: 1 — after a second of outage even known keys are refused, and readyz says so
  t.equal((await call(short.url, known.secret)).status, 200, 'within stale_ttl');
  await sleep(1500);
  t.match(await call(short.url, known.secret), { status: 503, code: 'unavailable' }, 'past stale_ttl: 503');
  const shortReady = await request(`${short.url}/_keygate/readyz`);
  const shortBody = (await shortReady.body.json()) as { checks: Record<string, string> };
  t.equal(shortReady.statusCode, 503);
  t.match(shortBody.checks.key_store, /stale_ttl \(1 s\) is over/);

  // back: the cache is revalidated, not cleared, and the never-seen key resolves
  await redis.start();
  // the restarted Redis is empty: its content is lost, and so the known key is gone for real
  t.ok(await until(async () => (await call(s.url, known.secret)).status === 401), 'revalidated against the store that came back (empty here)');
  t.notOk(s.logs.some((l) => l.includes('request failed inside the gateway')), 'no internal errors');
});

t.test('a restart during the outage still serves the keys of the local snapshot (digests only, mode 0600)', { skip: skipWithoutRedis }, async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const dir = t.testdir();
  const first = await startStack(dir, { keys: `${redis.url}/0`, store: 'state_dir: ./state' });
  const k = await first.key({ name: 'snap', role: 'viewer' });
  const other = await first.key({ name: 'never-used', role: 'viewer' });
  t.equal((await call(first.url, k.secret)).status, 200);
  await first.close();
  const file = join(dir, 'state', 'key-cache.json');
  t.equal(statSync(file).mode & 0o777, 0o600, 'snapshot mode 0600');
  const text = readFileSync(file, 'utf8');
  t.ok(text.includes(digestSecret(k.secret)), 'it holds the digest');
  t.notOk(text.includes(k.secret), 'never the secret');
  t.notOk(text.includes(digestSecret(other.secret)), 'only keys this instance used');

  await redis.stop();
  const second = await startStack(dir, { keys: `${redis.url}/0`, store: 'state_dir: ./state' });
  t.teardown(() => second.close());
  t.ok(second.logs.some((l) => l.includes('key cache restored from the local snapshot')), 'restore logged');
  t.equal((await call(second.url, k.secret)).status, 200, 'started during the outage, the key of the snapshot works');
  t.match(await call(second.url, other.secret), { status: 503, code: 'unavailable' }, 'a key not in the snapshot: 503');
});

t.test('serve starts while Redis is down and syncs its declared keys when it comes back; no stack, no "unexpected error"', { skip: skipWithoutRedis }, async (t) => {
  const redis = await startRedis();
  await redis.stop();
  t.teardown(() => redis.stop());
  const echo = await startEchoUpstream({ name: 'up' });
  t.teardown(() => echo.close());
  const dir = t.testdir();
  const cfg = join(dir, 'gw.yaml');
  const secret = 'dg_declared_key_for_the_outage_test_0123456789';
  writeFileSync(
    cfg,
    `listen: { host: 127.0.0.1, port: 0 }
admin: { port: 0 }
store: { keys: "${redis.url}/0", rate_limits: "${redis.url}/1" }
keys:
  declared:
    - { name: ci, role: viewer, secret: "${secret}" }
upstreams: [{ name: up, api_base_url: "${echo.url}" }]
routes:
  - { path: /x, upstream: up }
`,
  );
  const gw = spawnKeygate(t, ['serve', '-c', cfg]);
  const url = (await gw.waitFor(/"url":"(http:\/\/[^"]+)"/))?.[1];
  t.ok(url, 'listening although Redis is down');
  t.match(await call(url!, secret, '/x'), { status: 503, code: 'unavailable' }, 'the declared key is not in the store yet: 503, not 401');
  await redis.start();
  t.ok(await gw.waitFor(/keys declared in the config synced to the key store/), 'synced once Redis answers');
  t.ok(await until(async () => (await call(url!, secret, '/x')).status === 200), 'the declared key works');
  gw.child.kill('SIGTERM');
  t.equal(await gw.exited, 0);
  t.notMatch(gw.output(), /unexpected error|MaxRetriesPerRequestError|\n\s+at /, 'no stack, no unexpected error');
});

t.test('Redis frozen (SIGSTOP): the breakers open, requests are answered from the cache and the fallback; SIGCONT closes them', { skip: skipWithoutRedis }, async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const s = await startStack(t.testdir(), { keys: `${redis.url}/0`, rateLimits: `${redis.url}/1` });
  t.teardown(() => s.close());
  const k = await s.key({ name: 'frozen', role: 'viewer', rateLimit: 600 });
  t.equal((await call(s.url, k.secret)).status, 200);
  redis.pause();
  t.teardown(() => redis.resume());
  t.equal(await send(s.url, k.secret, 30), 30, 'every request answered 200 while Redis is frozen');
  const text = await metrics(s);
  t.equal(sample(text, 'keygate_store_breaker_open{store="rate_limits"}'), 1, 'rate-limit breaker open');
  t.ok(await until(async () => sample(await metrics(s), 'keygate_store_breaker_open{store="keys"}') === 1), 'key store breaker open (heartbeat)');
  redis.resume();
  t.ok(
    await until(async () => {
      const m = await metrics(s);
      return sample(m, 'keygate_store_breaker_open{store="rate_limits"}') === 0 && sample(m, 'keygate_store_breaker_open{store="keys"}') === 0;
    }),
    'both closed again by their background probes',
  );
  t.equal(s.gateway.limiterState.degraded, false, 'shared limits restored');
});

t.test('Redis frozen then resumed: usage counts exact, a batch that timed out but arrived is not added twice', { skip: skipWithoutRedis }, async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const s = await startStack(t.testdir(), { keys: `${redis.url}/0` });
  const k = await s.key({ name: 'counted', role: 'viewer', rateLimit: 600 });
  let served = await send(s.url, k.secret, 50);
  redis.pause();
  // long enough for the flush to time out (2 s) while its commands wait in Redis's socket
  const end = Date.now() + 3000;
  while (Date.now() < end) served += await send(s.url, k.secret, 5);
  redis.resume();
  served += await send(s.url, k.secret, 50);
  await s.close();
  t.equal(await storedCount(redis.url + '/0', k.id), served, `exactly the ${served} requests served`);
});

t.test('SIGTERM during a Redis outage: unwritten counts are spooled, replayed once at the next start (and logged)', { skip: skipWithoutRedis }, async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const dir = t.testdir();
  const first = await startStack(dir, { keys: `${redis.url}/0` });
  const k = await first.key({ name: 'spooled', role: 'viewer', rateLimit: 600 });
  let served = await send(first.url, k.secret, 40);
  await first.gateway.flushUsage();
  redis.pause();
  served += await send(first.url, k.secret, 30);
  await first.close();
  const spooled = first.logs.find((l) => l.includes('could not be written to the key store: spooled'));
  t.ok(spooled, 'the shutdown says it spooled');
  const files = readdirSync(join(dir, 'data')).filter((f) => f.startsWith('usage-spool.'));
  t.equal(files.length, 1, 'one spool file');
  t.equal(statSync(join(dir, 'data', files[0]!)).mode & 0o777, 0o600);
  redis.resume();
  const second = await startStack(dir, { keys: `${redis.url}/0` });
  t.teardown(() => second.close());
  t.ok(second.logs.some((l) => /usage spool: replaying the counts of \d+ requests/.test(l)), 'the start says how many it replays');
  t.ok(await until(() => readdirSync(join(dir, 'data')).every((f) => !f.startsWith('usage-spool.'))), 'the spool is removed once written');
  t.equal(await storedCount(redis.url + '/0', k.id), served, `exactly the ${served} requests served, none lost, none twice`);
});

t.test('Redis restarted empty: noticed by the marker key, declared keys synced again, loud log and metric; limits say they restarted empty', { skip: skipWithoutRedis }, async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const secret = 'dg_declared_key_for_the_empty_redis_test_01234';
  const s = await startStack(t.testdir(), {
    keys: `${redis.url}/0`,
    rateLimits: `${redis.url}/1`,
    yaml: `keys:\n  declared:\n    - { name: ci, role: viewer, secret: "${secret}" }`,
  });
  t.teardown(() => s.close());
  t.equal((await call(s.url, secret)).status, 200);
  await redis.stop();
  await redis.start();
  t.ok(await until(() => s.logs.some((l) => l.includes('KEY STORE CONTENT LOST'))), 'loud log');
  t.ok(await until(async () => (await call(s.url, secret)).status === 200), 'the declared key works again');
  t.equal(sample(await metrics(s), 'keygate_key_store_content_lost_total'), 1, 'counted');
  t.ok(await until(() => s.logs.some((l) => l.includes('rate-limit store came back EMPTY'))), 'limits restarting empty are logged');
});
