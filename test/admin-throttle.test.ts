// admin.max_failed_auth: wrong admin credentials from one address are limited per minute, so the
// admin token cannot be guessed at network speed.

import t from 'tap';
import { request } from 'undici';
import { FailedAuthThrottle } from '../src/admin/throttle.js';
import { startStack } from './helpers.js';

const TOKEN = 'admin-token-for-throttle-tests-0123456789';

t.test('the throttle: max failures per address and window, then refused until the window ends', async (t) => {
  let now = 1_000_000;
  const th = new FailedAuthThrottle(3, 60_000, () => now);
  t.equal(th.retryAfter('a'), 0, 'an unknown address may try');
  t.equal(th.failed('a'), false);
  t.equal(th.failed('a'), false);
  t.equal(th.retryAfter('a'), 0, 'two failures: still allowed');
  t.equal(th.failed('a'), true, 'the third failure is the one that blocks (logged once)');
  t.equal(th.retryAfter('a'), 60, 'blocked for the rest of the window');
  t.equal(th.retryAfter('b'), 0, 'another address is not affected');
  now += 59_001;
  t.equal(th.retryAfter('a'), 1, 'rounded up to whole seconds');
  now += 999;
  t.equal(th.retryAfter('a'), 0, 'free again when the window ends');
  t.equal(th.failed('a'), false, 'and counting starts over');
  t.equal(th.retryAfter('a'), 0);

  const off = new FailedAuthThrottle(0, 60_000, () => now);
  for (let i = 0; i < 50; i++) off.failed('a');
  t.equal(off.retryAfter('a'), 0, 'max 0 = no limit');

  const many = new FailedAuthThrottle(1, 60_000, () => now);
  for (let i = 0; i < 10_001; i++) many.failed(`10.0.${i >> 8}.${i & 255}`);
  t.equal(many.retryAfter('10.0.39.16'), 60, 'the newest address is tracked even past the bound');
});

t.test('through the admin listener: 429 after 3 wrong credentials, even for the right token', async (t) => {
  const s = await startStack(t.testdir(), { adminToken: TOKEN, maxFailedAuth: 3 });
  t.teardown(() => s.close());
  const call = async (auth: string | null, path = '/api/keys') => {
    const res = await request(s.gateway.adminUrl! + path, { headers: auth === null ? {} : { authorization: `Bearer ${auth}` } });
    return { status: res.statusCode, headers: res.headers, json: (await res.body.json().catch(() => undefined)) as { code?: string; message?: string } | undefined };
  };
  const viewer = await s.key({ name: 'throttle-viewer', role: 'viewer' });
  for (let i = 0; i < 5; i++) t.equal((await call(null)).status, 401, `no credential ${i}: 401, not counted`);
  for (let i = 0; i < 5; i++) t.equal((await call(viewer.secret)).status, 403, `a real non-admin key ${i}: 403, not counted`);
  t.equal((await call(TOKEN)).status, 200, 'the right token works');
  for (let i = 0; i < 3; i++) t.equal((await call(`guess-${i}`)).status, 401, `wrong token ${i}: 401`);
  const blocked = await call(TOKEN);
  t.equal(blocked.status, 429, 'then even the right token is refused (a right guess must not get in)');
  t.equal(blocked.json?.code, 'too_many_failed_attempts');
  t.match(blocked.json?.message, /try again in \d+ s/);
  const wait = Number(blocked.headers['retry-after']);
  t.ok(wait > 0 && wait <= 60, `Retry-After ${wait} s, within the minute`);
  t.equal((await call(null, '/metrics')).status, 200, 'metrics are still served to the scraper');
  t.equal((await call(null, '/healthz')).status, 200, 'and health');
  const pub = await request(`${s.url}/api/v1/dags`, { headers: { 'x-api-key': viewer.secret } });
  await pub.body.dump();
  t.equal(pub.statusCode, 200, 'the public listener is not affected');
  const warnings = s.logs.filter((l) => l.includes('too many failed authentications'));
  t.equal(warnings.length, 1, 'one warning when the address is blocked');
  t.notOk(s.logs.some((l) => l.includes(TOKEN) || l.includes('guess-')), 'neither the token nor the guesses are logged');
});
