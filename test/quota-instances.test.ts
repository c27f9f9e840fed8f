// Quotas across instances, with the real binary: two `keygate serve` processes sharing one SQLite
// file, then two sharing one redis-server, a key with 10 credits under concurrent load from both:
// exactly 10 requests reach the recording upstream, every other one is 429 quota_exceeded. The CLI
// round trip (create/show/list/update/quota) and the Redis script checked against the reference rule.

import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { startEchoUpstream, type EchoUpstream } from '../src/demo/echo-upstream.js';
import { RedisKeyStore } from '../src/keys/redis-store.js';
import { runKeygate, spawnKeygate } from './binary.js';
import { startStack } from './helpers.js';
import { matchesReference } from './quota-reference.js';
import { skipWithoutRedis, startRedis } from './redis.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
if (!existsSync(join(ROOT, 'dist/cli.js'))) t.fail('dist/ is missing: run "npm run build"');

const TOKEN = 'quota-admin-token-0123456789';

const run = runKeygate;

function workDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-quota-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function config(dir: string, keys: string, upstream: string): string {
  const file = join(dir, 'gw.yaml');
  writeFileSync(
    file,
    `listen: { host: 127.0.0.1, port: 0 }\nadmin: { port: 0, token: ${TOKEN} }\nstore: { keys: "${keys}", rate_limits: memory }\n` +
      `upstreams: [{ name: up, api_base_url: "${upstream}" }]\nroutes: [{ path: "/**", upstream: up }]\n`,
  );
  return file;
}

/** Start one `keygate serve`; resolves with its public URL. */
async function serve(t: Test, cfg: string, dir: string): Promise<string> {
  const gw = spawnKeygate(t, ['serve', '-c', cfg], { cwd: dir });
  const url = (await gw.waitFor(/"url":"(http:\/\/[^"]+)"/))?.[1];
  if (!url) throw new Error(`gateway did not start: ${gw.output()}`);
  t.teardown(async () => {
    gw.child.kill('SIGTERM');
    await gw.exited;
  });
  return url;
}

/** 60 requests at once, 30 through each instance, all with one key; statuses and codes. */
async function burst(urls: string[], secret: string): Promise<{ status: number; code?: string; remaining?: string }[]> {
  const one = async (url: string) => {
    const r = await request(`${url}/metered`, { headers: { 'x-api-key': secret } });
    const text = await r.body.text();
    return { status: r.statusCode, code: r.statusCode === 200 ? undefined : (JSON.parse(text) as { code: string }).code, remaining: r.headers['x-quota-remaining'] as string | undefined };
  };
  return Promise.all(Array.from({ length: 60 }, (_, i) => one(urls[i % urls.length]!)));
}

async function exactlyTen(t: Test, echo: EchoUpstream, urls: string[], secret: string): Promise<void> {
  const before = echo.received.filter((r) => r.url === '/metered').length;
  const results = await burst(urls, secret);
  const allowed = results.filter((r) => r.status === 200);
  const refused = results.filter((r) => r.status === 429);
  t.equal(allowed.length, 10, 'exactly 10 allowed across both instances');
  t.equal(refused.length, 50, 'the other 50 refused');
  t.ok(refused.every((r) => r.code === 'quota_exceeded' && r.remaining === '0'), 'each refusal: 429 quota_exceeded, X-Quota-Remaining: 0');
  t.same(allowed.map((r) => Number(r.remaining)).sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'each credit handed out once');
  t.equal(echo.received.filter((r) => r.url === '/metered').length - before, 10, 'the recording upstream saw exactly 10');
}

t.test('two processes on one SQLite file: a key with 10 credits under concurrent load forwards exactly 10; the CLI round trip', async (t) => {
  const dir = workDir(t);
  const echo = await startEchoUpstream({ name: 'up' });
  t.teardown(() => echo.close());
  const cfg = config(dir, 'sqlite:./keys.db', echo.url);
  const c = ['-c', cfg];

  const created = await run(['keys', 'create', ...c, '--name', 'trial', '--quota-remaining', '10', '--rate-limit', '600', '--json'], dir);
  t.equal(created.code, 0, created.stderr);
  const { apiKey, key: secret } = JSON.parse(created.stdout) as { apiKey: Record<string, unknown>; key: string };
  t.match(apiKey, { quota: { remaining: 10 }, quotaRemaining: 10, quotaNextRefillAt: null });
  const shown = await run(['keys', 'show', ...c, 'trial'], dir);
  t.match(shown.stdout, /^quota: +10 one-time \(no refill\); 10 left$/m, 'keys show: the quota and what is left');

  const urls = [await serve(t, cfg, dir), await serve(t, cfg, dir)];
  await exactlyTen(t, echo, urls, secret);

  const after = JSON.parse((await run(['keys', 'show', ...c, 'trial', '--json'], dir)).stdout) as { apiKey: Record<string, unknown> };
  t.equal(after.apiKey['quotaRemaining'], 0, 'keys show --json: nothing left');
  const list = await run(['keys', 'list', ...c], dir);
  t.match(list.stdout, /NAME.*LIMIT\s+QUOTA\s+GROUP\s+REQUESTS/, 'keys list: the QUOTA column (then GROUP)');
  t.match(list.stdout, /trial\s+\S+\s+active\s+\S+\s+viewer\s+600\/min\s+0 one-time/, 'keys list: the quota column');

  const topUp = await run(['keys', 'quota', ...c, 'trial', '--remaining', '2'], dir);
  t.equal(topUp.code, 0, topUp.stderr);
  t.match(topUp.stdout, /2 left/);
  const statuses = [];
  for (let i = 0; i < 3; i++) {
    const r = await request(`${urls[i % 2]}/metered`, { headers: { 'x-api-key': secret } });
    await r.body.dump();
    statuses.push(r.statusCode);
  }
  t.same(statuses, [200, 200, 429], 'a top-up made with the CLI is spent by the running instances');

  const monthly = await run(['keys', 'update', ...c, 'trial', '--quota-limit', '500', '--quota-period', 'month', '--quota-refill', 'add', '--quota-start', '2031-01-31'], dir);
  t.equal(monthly.code, 0, monthly.stderr);
  t.match(monthly.stdout, /^quota: +500\/month \(add, periods from 2031-01-31T00:00:00\.000Z\); 500 left, refills \d{4}-\d{2}-\d{2}T00:00:00\.000Z$/m);
  const raised = await run(['keys', 'update', ...c, 'trial', '--quota-limit', '900', '--json'], dir);
  t.match(JSON.parse(raised.stdout).apiKey.quota, { limit: 900, period: 'month', refill: 'add', start: '2031-01-31T00:00:00.000Z' }, '--quota-limit alone keeps the rest of the quota');
  const bad = await run(['keys', 'update', ...c, 'trial', '--quota-period', 'year'], dir);
  t.equal(bad.code, 1);
  t.match(bad.stderr, /--quota-period must be one of day, week, month/, 'the error names the flag');
  const badNew = await run(['keys', 'create', ...c, '--name', 'x', '--quota-period', 'day'], dir);
  t.match(badNew.stderr, /--quota-limit is required/);
  const none = await run(['keys', 'update', ...c, 'trial', '--no-quota', '--json'], dir);
  t.equal(JSON.parse(none.stdout).apiKey.quota, null, '--no-quota removes it');
  const free = await request(`${urls[0]}/metered`, { headers: { 'x-api-key': secret } });
  await free.body.dump();
  t.equal(free.statusCode, 200, 'without a quota the key is not metered');
  t.equal(free.headers['x-quota-remaining'], undefined, 'and carries no quota headers');
});

t.test('two processes on one redis-server: exactly 10 of 60 concurrent requests forwarded', { skip: skipWithoutRedis }, async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const dir = workDir(t);
  const echo = await startEchoUpstream({ name: 'up' });
  t.teardown(() => echo.close());
  const cfg = config(dir, `${redis.url}/0`, echo.url);
  const created = await run(['keys', 'create', '-c', cfg, '--name', 'trial', '--quota-remaining', '10', '--rate-limit', '600', '--json'], dir);
  t.equal(created.code, 0, created.stderr);
  const { key: secret } = JSON.parse(created.stdout) as { key: string };
  const urls = [await serve(t, cfg, dir), await serve(t, cfg, dir)];
  await exactlyTen(t, echo, urls, secret);
  const shown = JSON.parse((await run(['keys', 'show', '-c', cfg, 'trial', '--json'], dir)).stdout) as { apiKey: Record<string, unknown> };
  t.equal(shown.apiKey['quotaRemaining'], 0);
});

t.test('the Redis script applies the same rule as the reference', { skip: skipWithoutRedis }, async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const store = new RedisKeyStore(redis.url, { prefix: RedisKeyStore.namespace() });
  t.teardown(() => store.close());
  await store.ready();
  await matchesReference(t, store);
});

t.test('Redis down: a quota key is refused 503 at once (its quota is not waived), a key without one is served from the cache', { skip: skipWithoutRedis }, async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const s = await startStack(t.testdir(), { keys: `${redis.url}/0` });
  t.teardown(() => s.close());
  const metered = await s.key({ name: 'metered', quota: { limit: 100, period: 'day' }, rateLimit: 600 });
  const plain = await s.key({ name: 'plain', rateLimit: 600 });
  const get = async (secret: string) => {
    const r = await request(`${s.url}/api/v1/dags`, { headers: { 'x-api-key': secret } });
    return { status: r.statusCode, retry: r.headers['retry-after'], body: await r.body.text() };
  };
  t.equal((await get(metered.secret)).status, 200);
  t.equal((await get(plain.secret)).status, 200);
  await redis.stop();
  const refused = await get(metered.secret);
  t.equal(refused.status, 503);
  t.equal(refused.retry, '1');
  t.match(JSON.parse(refused.body), { code: 'unavailable', message: /quota cannot be checked right now/ });
  t.equal((await get(plain.secret)).status, 200, 'keys without a quota make no store call');
});
