// healthz / readyz under the reserved prefix of the public listener.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { rawRequest, startStack } from './helpers.js';
import { skipWithoutRedis, startRedis } from './redis.js';

async function get(url: string, method = 'GET') {
  const r = await request(url, { method: method as 'GET' });
  const text = await r.body.text();
  return { status: r.statusCode, json: text ? JSON.parse(text) : undefined };
}

t.test('healthz and readyz on the embedded defaults', async (t) => {
  const s = await startStack(t.testdir());
  t.teardown(() => s.close());
  t.same(await get(`${s.url}/_keygate/healthz`), { status: 200, json: { status: 'ok' } });
  t.same(await get(`${s.url}/_keygate/readyz`), { status: 200, json: { status: 'ready', checks: { config: 'ok', key_store: 'ok', rate_limit_store: 'ok' } } });
  t.equal((await get(`${s.url}/_keygate/other`)).status, 404);
  t.equal((await get(`${s.url}/_keygate/healthz`, 'POST')).status, 404);
  const before = s.dagu.received.length;
  const raw = await rawRequest(s.url, 'GET /_keygate/../api/v1/health HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n');
  t.equal(raw.status, 404, 'the prefix is never forwarded, whatever follows');
  t.equal(s.dagu.received.length, before);
  t.notOk(s.logs.some((l) => l.includes('"msg":"request"') && l.includes('healthz')), 'probes do not flood the access log'); // (other lines may name the test dir)
});

t.test('readyz says degraded and why while Redis is down (still serving), and recovers', { skip: skipWithoutRedis }, async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const s = await startStack(t.testdir(), { keys: `${redis.url}/0`, rateLimits: `${redis.url}/1` });
  t.teardown(() => s.close());
  t.match(await get(`${s.url}/_keygate/readyz`), { status: 200, json: { status: 'ready' } });
  await redis.stop();
  // cached keys and the fallback limits still serve: a load balancer must keep sending traffic
  const down = await get(`${s.url}/_keygate/readyz`);
  t.equal(down.status, 200);
  t.equal(down.json.status, 'degraded');
  t.match(down.json.checks, {
    config: 'ok',
    key_store: /^degraded: .*serving cached keys as last known for up to \d+ s more \(store\.stale_ttl\)/,
    rate_limit_store: /^degraded: rate-limit store unreachable; serving on the fallback policy \(memory\)/,
  });
  t.equal((await get(`${s.url}/_keygate/healthz`)).status, 200, 'still alive');
  await redis.start();
  let status = '';
  for (let i = 0; i < 60 && status !== 'ready'; i++) {
    await new Promise((r) => setTimeout(r, 200));
    status = (await get(`${s.url}/_keygate/readyz`)).json.status;
  }
  t.equal(status, 'ready', 'ready again once Redis is back');
});

t.test('admin listener: /healthz, /readyz and /metrics (bounded labels, no secrets), no credential needed', async (t) => {
  const s = await startStack(t.testdir(), { adminToken: 'admin-token-for-ops-test-000' });
  t.teardown(() => s.close());
  const admin = s.gateway.adminUrl!;
  t.same(await get(`${admin}/healthz`), { status: 200, json: { status: 'ok' } });
  t.match(await get(`${admin}/readyz`), { status: 200, json: { status: 'ready' } });
  const k = await s.key({ name: 'metrics', role: 'viewer' });
  for (const headers of [{ 'x-api-key': k.secret }, {}, { 'x-api-key': k.secret }]) {
    const r = await request(`${s.url}/api/v1/dags?workspace=secret-looking-query`, { headers });
    await r.body.dump();
  }
  const nope = await request(`${s.url}/api/v1/not/a/route/${k.secret}`);
  await nope.body.dump();
  const r = await request(`${admin}/metrics`);
  const text = await r.body.text();
  t.equal(r.statusCode, 200);
  t.match(String(r.headers['content-type']), /^text\/plain/);
  t.match(text, /keygate_requests_total\{route="GET \/api\/v1\/dags",status_class="2xx",decision="allowed"\} 2/);
  t.match(text, /keygate_requests_total\{route="GET \/api\/v1\/dags",status_class="4xx",decision="unauthenticated"\} 1/);
  t.match(text, /keygate_requests_total\{route="-",status_class="4xx",decision="no_route"\} 1/, 'unrouted requests share one label');
  t.match(text, /keygate_upstream_duration_seconds_count\{upstream="dagu"\} 2/);
  t.match(text, /keygate_key_cache_(hits|misses)_total \d+/);
  t.match(text, /keygate_rate_limit_degraded 0/);
  const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  t.match(text, `keygate_build_info{version="${version}",node="${process.version}"} 1`, 'the version being served');
  t.match(text, /\nkeygate_process_cpu_seconds_total \d/, 'process metrics as keygate_process_*');
  t.match(text, /\nkeygate_nodejs_heap_size_used_bytes \d/, "and Node's as keygate_nodejs_*");
  t.notMatch(text, /keygate_process_process_|keygate_process_nodejs_/, 'never with the prefix twice');
  t.notOk(text.includes(k.secret), 'no secret');
  t.notOk(text.includes('/not/a/route'), 'no raw path');
  t.notOk(text.includes('secret-looking-query'), 'no query string');
  t.notMatch(text, /keygate_key_requests_total\{/, 'no per-key series unless metrics.per_key');
  t.equal((await get(`${admin}/api/v1/api-keys`)).status, 401, 'the key APIs still need the credential');
});

t.test('metrics.per_key: requests per key id, bounded by max_keys, names in keygate_key_info', async (t) => {
  const dir = t.testdir();
  const s = await startStack(dir, { yaml: 'metrics: { per_key: true, max_keys: 2 }\n' });
  t.teardown(() => s.close());
  const scrape = async () => (await request(`${s.gateway.adminUrl!}/metrics`)).body.text();
  const call = async (secret: string, path = '/api/v1/dags') => {
    const r = await request(`${s.url}${path}`, { headers: { 'x-api-key': secret } });
    await r.body.dump();
    return r.statusCode;
  };
  const a = await s.key({ name: 'key-a', role: 'viewer' });
  const b = await s.key({ name: 'key-b', role: 'viewer', rateLimit: 1 });
  const c = await s.key({ name: 'key-c', role: 'viewer' });
  t.equal(await call(a.secret), 200);
  t.equal(await call(a.secret, '/api/v1/admin'), 403, 'a viewer on an admin route');
  t.equal(await call(b.secret), 200);
  t.equal(await call(b.secret), 429);
  t.equal(await call(c.secret), 200, 'a third key, past max_keys 2');
  t.equal(await call('dg_not-a-key-0123456789'), 401, 'no key: not counted per key');
  let text = await scrape();
  t.match(text, `keygate_key_requests_total{key_id="${a.id}",decision="allowed"} 1`);
  t.match(text, `keygate_key_requests_total{key_id="${a.id}",decision="forbidden"} 1`);
  t.match(text, `keygate_key_requests_total{key_id="${b.id}",decision="allowed"} 1`);
  t.match(text, `keygate_key_requests_total{key_id="${b.id}",decision="rate_limited"} 1`);
  t.match(text, 'keygate_key_requests_total{key_id="other",decision="allowed"} 1', 'the third key counts as other');
  t.notOk(text.includes(c.id), 'and has no series of its own');
  t.match(text, `keygate_key_info{key_id="${a.id}",key_name="key-a"} 1`);
  t.notOk(s.secrets.some((secret) => text.includes(secret)), 'no secret');

  await s.gateway.keys.update(a.id, { name: 'key-a-renamed' }, 'test');
  t.equal(await call(a.secret), 200);
  text = await scrape();
  t.match(text, `keygate_key_info{key_id="${a.id}",key_name="key-a-renamed"} 1`, 'a rename shows in the info series');
  t.notOk(text.includes('key_name="key-a"'), 'the old name is gone');
  t.match(text, `keygate_key_requests_total{key_id="${a.id}",decision="allowed"} 2`, 'the id keeps its series');

  // a reload that turns per_key off drops the per-key series
  const { loadConfig } = await import('../src/config/load.js');
  const file = join(dir, 'gateway.yaml');
  writeFileSync(file, readFileSync(file, 'utf8').replace('per_key: true', 'per_key: false'));
  await s.gateway.reload(loadConfig(file, { DAGU_URL: s.dagu.url, DAGEN_URL: s.dagen.url, DAGU_TOKEN: 'upstream-dagu-token' }));
  t.equal(await call(a.secret), 200);
  text = await scrape();
  t.notMatch(text, /keygate_key_requests_total\{/, 'per_key off: no per-key series');
  t.notMatch(text, /keygate_key_info\{/);
});
