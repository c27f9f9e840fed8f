// healthz / readyz under the reserved prefix of the public listener.

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
  t.notOk(s.logs.some((l) => l.includes('healthz')), 'probes do not flood the access log');
});

t.test('readyz says 503 and why while Redis is down, and recovers', { skip: skipWithoutRedis }, async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const s = await startStack(t.testdir(), { keys: `${redis.url}/0`, rateLimits: `${redis.url}/1` });
  t.teardown(() => s.close());
  t.equal((await get(`${s.url}/_keygate/readyz`)).status, 200);
  await redis.stop();
  const down = await get(`${s.url}/_keygate/readyz`);
  t.equal(down.status, 503);
  t.equal(down.json.status, 'not_ready');
  t.match(down.json.checks, { config: 'ok', key_store: /^unreachable/, rate_limit_store: /^unreachable: serving on the fallback policy \(memory\)/ });
  t.equal((await get(`${s.url}/_keygate/healthz`)).status, 200, 'still alive');
  await redis.start();
  let status = 0;
  for (let i = 0; i < 60 && status !== 200; i++) {
    await new Promise((r) => setTimeout(r, 200));
    status = (await get(`${s.url}/_keygate/readyz`)).status;
  }
  t.equal(status, 200, 'ready again once Redis is back');
});
