// Per-key rate limits: the window arithmetic, the limiter over a fake clock, and 429s over HTTP.

import t from 'tap';
import { request } from 'undici';
import { BatchedCounterClient, runCounterOps, type CountersRequest } from '../src/limits/cluster-store.js';
import { KeyRateLimiter, counterStore, memoryWindows } from '../src/limits/limiter.js';
import { BUCKETS, BUCKET_MS, evaluate, type LimitDecision } from '../src/limits/window.js';
import { startStack } from './helpers.js';

const zeros = () => new Array<number>(BUCKETS).fill(0);

t.test('evaluate: allowed up to the limit, remaining, and when quota frees up', async (t) => {
  t.match(evaluate(3, 1, zeros(), 0), { allowed: true, remaining: 2 });
  t.match(evaluate(3, 3, zeros(), 0), { allowed: true, remaining: 0 });
  const denied = evaluate(3, 4, zeros(), 1000);
  t.match(denied, { allowed: false, remaining: 0 });
  // all four in the current bucket: the current bucket leaves after BUCKETS more boundaries
  t.equal(denied.retryAfterSeconds, Math.ceil((BUCKET_MS - 1000 + BUCKETS * BUCKET_MS) / 1000));
  const closed = zeros();
  closed[BUCKETS - 1] = 2; // the oldest counted bucket holds 2: they leave at the next boundary
  const soon = evaluate(3, 2, closed, 4000);
  t.match(soon, { allowed: false, retryAfterSeconds: Math.ceil((BUCKET_MS - 4000) / 1000) });
  t.equal(evaluate(10, 1, closed, 0).resetSeconds, Math.ceil(BUCKET_MS / 1000), 'reset = when the oldest counted requests leave');
});

/** A limiter over memory counters driven by a fake clock. */
function clocked(start = 1_800_000_000_000) {
  let now = start;
  const limiter = new KeyRateLimiter(memoryWindows(() => now), 'memory', {}, () => now);
  return {
    limiter,
    at: (ms: number) => (now = start + ms),
    async hit(key: string, limit: number) {
      return (await limiter.check(key, limit)) as LimitDecision;
    },
  };
}

t.test('a burst at a window edge does not let 2x through', async (t) => {
  const c = clocked(0); // bucket boundaries at multiples of BUCKET_MS, minutes at multiples of 60 s
  c.at(59_900);
  let allowed = 0;
  for (let i = 0; i < 15; i++) if ((await c.hit('edge', 10)).allowed) allowed++;
  t.equal(allowed, 10, 'ten allowed just before the minute turns');
  c.at(60_100);
  allowed = 0;
  for (let i = 0; i < 15; i++) if ((await c.hit('edge', 10)).allowed) allowed++;
  t.equal(allowed, 0, 'none right after it (a fixed window would allow 10 more)');
  c.at(59_900 + 60_000 + BUCKET_MS);
  t.equal((await c.hit('edge', 10)).allowed, true, 'allowed again once the burst is out of every window that counts it');
});

t.test('over every rolling 60 s a key gets at most its limit; a steady client gets at least 90%', async (t) => {
  const limit = 30;
  // Deterministic pseudo-random arrivals: bursts and gaps over ten minutes.
  let seed = 42;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const c = clocked(0);
  const allowedAt: number[] = [];
  let ms = 0;
  while (ms < 600_000) {
    ms += rand() < 0.1 ? 20_000 * rand() : 400 * rand(); // mostly dense, sometimes a pause
    c.at(ms);
    const burst = rand() < 0.05 ? 20 : 1;
    for (let i = 0; i < burst; i++) if ((await c.hit('prop', limit)).allowed) allowedAt.push(ms);
  }
  let worst = 0;
  for (let i = 0, j = 0; i < allowedAt.length; i++) {
    while (allowedAt[i]! - allowedAt[j]! >= 60_000) j++;
    worst = Math.max(worst, i - j + 1);
  }
  t.ok(allowedAt.length > 200, `many requests allowed (${allowedAt.length})`);
  t.ok(worst <= limit, `at most ${limit} in any rolling 60 s (worst ${worst})`);
  t.equal(worst, limit, 'and the limit is reached, not undercut');

  // A client sending at exactly its limit, evenly spaced, for ten minutes.
  const steady = clocked(7);
  let ok = 0;
  const n = 10 * limit;
  for (let i = 0; i < n; i++) {
    steady.at((i * 60_000) / limit);
    if ((await steady.hit('steady', limit)).allowed) ok++;
  }
  t.ok(ok / n >= 0.9, `steady client admitted ${((100 * ok) / n).toFixed(1)}% (documented bound: >= 91.7%)`);
});

t.test('denied requests are not counted; a changed limit applies to the next request', async (t) => {
  const c = clocked(0);
  c.at(1000);
  for (let i = 0; i < 3; i++) t.equal((await c.hit('k', 3)).allowed, true);
  for (let i = 0; i < 50; i++) t.equal((await c.hit('k', 3)).allowed, false);
  t.equal((await c.hit('k', 4)).allowed, true, 'raising the limit lets the next one through: the 50 denials were not counted');
  t.equal((await c.hit('k', 4)).allowed, false);
  t.equal((await c.hit('other', 1)).allowed, true, 'limits are per key');
});

t.test("in-process windows ('local', no promise) decide exactly as the shared-store path (takes, coalesced)", async (t) => {
  let now = 0;
  const viaStore = new KeyRateLimiter(memoryWindows(() => now), 'memory', {}, () => now);
  const local = new KeyRateLimiter('local', 'memory', {}, () => now);
  t.equal(viaStore.checkNow('k', 5), undefined, 'a counter store has no synchronous answer');
  let seed = 7;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const a: LimitDecision[] = [];
  const b: LimitDecision[] = [];
  let ms = 0;
  // ten minutes of bursts, pauses (some longer than the window) and three keys with different limits
  while (ms < 600_000) {
    ms += rand() < 0.05 ? 90_000 * rand() : 600 * rand();
    now = ms;
    const key = ['k1', 'k2', 'k3'][Math.floor(rand() * 3)]!;
    const limit = key === 'k1' ? 10 : key === 'k2' ? 40 : 3;
    const burst = rand() < 0.05 ? 15 : 1;
    for (let i = 0; i < burst; i++) {
      a.push((await viaStore.check(key, limit)) as LimitDecision);
      const d = local.checkNow(key, limit);
      if (d === undefined) return t.fail('local windows answer synchronously');
      b.push(d);
    }
  }
  t.ok(a.some((d) => !d.allowed) && a.some((d) => d.allowed), `both allowed and denied seen (${a.length} decisions)`);
  t.same(b, a, 'the same decisions, remaining and reset times');
  t.same(await local.check('k1', 10), await viaStore.check('k1', 10), 'check() answers from the same windows');
});

t.test('workers: the takes of one turn travel to the primary as one message, decided there', async (t) => {
  const primary = counterStore();
  const sent: CountersRequest[] = [];
  let answering = true;
  const client = new BatchedCounterClient((msg, onError) => {
    sent.push(msg);
    if (msg.ops.some(([key]) => key === 'broken-channel')) return onError(new Error('channel closed'));
    // the primary's side, asynchronously like IPC
    if (answering) setImmediate(() => client.receive(runCounterOps(primary, msg)));
  }, 200);

  const [first, second, other] = await Promise.all([client.take('k1', 5, 3), client.take('k1', 5, 4), client.take('k2', 1, 2)]);
  t.equal(sent.length, 1, 'three takes in one turn: one message');
  t.match(first, { admitted: 3, current: 0 }, 'the first take: all 3 fit');
  t.match(second, { admitted: 2, current: 3 }, 'the second, decided after it: 2 of 4 fit, after the 3 counted');
  t.match(other, { admitted: 1, current: 0 }, 'another key has its own window');
  t.equal(first.closed.length, BUCKETS, 'with the closed buckets');

  // a limiter over it: exactly the limit passes, each in its own place, in one message for the turn
  const limiter = new KeyRateLimiter(client, 'memory');
  const decisions = await Promise.all(Array.from({ length: 8 }, () => limiter.check('key-x', 5)));
  const allowed = decisions.filter((d): d is LimitDecision => d !== 'unavailable' && d.allowed);
  t.same(allowed.map((d) => d.remaining).sort(), [0, 1, 2, 3, 4], 'a limit of 5 lets exactly 5 of 8 through, remaining 4…0');
  t.same(limiter.storeCalls, { calls: 1, checks: 8 }, 'the 8 checks of one key were one take');
  t.equal(sent.length, 2);
  t.match(await limiter.check('key-x', 6), { allowed: true, remaining: 0 }, 'the 3 denied were not counted: the 6th place is free under a limit of 6');

  await t.rejects(client.take('broken-channel', 1, 1), /channel closed/, 'a failed send fails its batch at once');
  answering = false;
  const started = performance.now();
  await t.rejects(client.take('k1', 5, 1), /did not answer 1 rate-limit operation\(s\) within 200 ms/, 'a silent primary fails the batch after the timeout');
  t.ok(performance.now() - started < 1000, 'not later');
  const fallback = new KeyRateLimiter(client, 'memory');
  const d = await fallback.check('key-y', 5);
  t.ok(d !== 'unavailable' && d.allowed && fallback.isDegraded, "then the limiter uses its own counters (the 'memory' fallback)");
});

t.test('over HTTP: headers on every keyed response, 429 with Retry-After, nothing forwarded when limited', async (t) => {
  const s = await startStack(t.testdir());
  t.teardown(() => s.close());
  const k = await s.key({ name: 'limited', role: 'viewer', rateLimit: 3 });
  const before = s.dagu.received.length;
  const seen: { status: number; headers: Record<string, unknown>; body: string }[] = [];
  for (let i = 0; i < 5; i++) {
    const r = await request(`${s.url}/api/v1/dags`, { headers: { 'x-api-key': k.secret } });
    seen.push({ status: r.statusCode, headers: r.headers, body: await r.body.text() });
  }
  t.same(seen.map((r) => r.status), [200, 200, 200, 429, 429]);
  t.equal(s.dagu.received.length - before, 3, 'limited requests never reached the upstream');
  t.same(seen.map((r) => r.headers['x-ratelimit-remaining']), ['2', '1', '0', '0', '0']);
  for (const r of seen) {
    t.equal(r.headers['ratelimit-policy'], '"per-key";q=3;w=60');
    t.match(String(r.headers.ratelimit), /^"per-key";r=\d+;t=\d+$/);
    t.equal(r.headers['x-ratelimit-limit'], '3');
  }
  const limited = seen[3]!;
  t.match(String(limited.headers['content-type']), /^application\/json/);
  t.match(JSON.parse(limited.body), { code: 'rate_limited', message: /3 requests per minute/ });
  const retry = Number(limited.headers['retry-after']);
  t.ok(Number.isInteger(retry) && retry >= 1 && retry <= 65, `Retry-After in whole seconds (${retry})`);
  t.equal(limited.headers['x-ratelimit-reset'], String(retry));

  await s.gateway.keys.update(k.id, { rateLimit: 6 }, 'test');
  const raised = await request(`${s.url}/api/v1/dags`, { headers: { 'x-api-key': k.secret } });
  await raised.body.dump();
  t.equal(raised.statusCode, 200, 'a raised limit applies to the next request');
  t.equal(raised.headers['ratelimit-policy'], '"per-key";q=6;w=60');

  const open = await request(`${s.url}/api/v1/health`);
  await open.body.dump();
  t.equal(open.headers['ratelimit-policy'], undefined, 'routes without auth carry no per-key headers');
});

t.test('two instances on one SQLite key file with `rate_limits: memory` count apart: one budget needs a shared Redis', async (t) => {
  const dir = t.testdir();
  const a = await startStack(dir);
  const b = await startStack(dir); // the same key store file
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  const k = await a.key({ name: 'apart', role: 'viewer', rateLimit: 3 });
  const statuses = async (s: typeof a) => {
    const out: number[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await request(`${s.url}/api/v1/dags`, { headers: { 'x-api-key': k.secret } });
      await r.body.dump();
      out.push(r.statusCode);
    }
    return out;
  };
  t.same(await statuses(a), [200, 200, 200, 429], 'instance A: its own 3');
  t.same(await statuses(b), [200, 200, 200, 429], 'instance B: 3 more, from its own windows');
});
