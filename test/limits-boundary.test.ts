// Bursts aimed across a 5 s bucket boundary, measured from the clock that decides (Redis's TIME, the
// primary's clock): over two instances that see the boundary at different moments — one further from
// the store, one whose clock runs ahead, or just two at once — exactly the limit passes, never more,
// and never fewer when the window was empty. Each key of a round is one trial; many keys straddle
// each boundary, over several boundaries.

import { createServer, connect, type Server, type Socket } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { BatchedCounterClient, runCounterOps, type CountersRequest } from '../src/limits/cluster-store.js';
import { KeyRateLimiter, counterStore, UNAVAILABLE } from '../src/limits/limiter.js';
import { openRateLimiter, type OpenedLimiter } from '../src/limits/open.js';
import { BUCKET_MS, type LimitDecision } from '../src/limits/window.js';
import { loadConfig } from '../src/config/load.js';
import { REQUEST_PATH_OPTIONS } from '../src/redis.js';
import { skipWithoutRedis, startRedis } from './redis.js';

const LIMIT = 100;
const PER_KEY = 150;
/** the burst runs from SPREAD_MS before the boundary to SPREAD_MS after it */
const SPREAD_MS = 150;
const TICKS = 30;
const ROUNDS = 3;

type Check = (keyId: string, limit: number) => Promise<LimitDecision | typeof UNAVAILABLE>;

interface Group {
  name: string;
  /** the two instances a key's checks alternate between */
  pair: [Check, Check];
  keys: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

/**
 * One burst per key of every group, PER_KEY checks spread over TICKS ticks from SPREAD_MS before
 * `boundary` (local clock) to SPREAD_MS after it, alternating the group's two instances.
 */
type Results = Map<string, { group: string; decisions: Array<LimitDecision | typeof UNAVAILABLE> }>;

async function aimedBurst(groups: Group[], boundary: number, round: number): Promise<{ results: Results; straddled: boolean }> {
  const out = new Map<string, { group: string; pending: Array<Promise<LimitDecision | typeof UNAVAILABLE>> }>();
  for (const g of groups) for (let k = 0; k < g.keys; k++) out.set(`${g.name}/r${round}/k${k}`, { group: g.name, pending: [] });
  const start = boundary - SPREAD_MS;
  const step = (2 * SPREAD_MS) / TICKS;
  let first = 0;
  let last = 0;
  for (let tick = 0; tick < TICKS; tick++) {
    await sleep(start + tick * step - Date.now());
    last = Date.now();
    if (tick === 0) first = last;
    for (const g of groups) {
      for (let k = 0; k < g.keys; k++) {
        const id = `${g.name}/r${round}/k${k}`;
        const entry = out.get(id)!;
        const from = Math.floor((tick * PER_KEY) / TICKS);
        const to = Math.floor(((tick + 1) * PER_KEY) / TICKS);
        for (let i = from; i < to; i++) entry.pending.push(g.pair[i % 2]!(id, LIMIT));
      }
    }
  }
  const done: Results = new Map();
  for (const [id, e] of out) done.set(id, { group: e.group, decisions: await Promise.all(e.pending) });
  // a machine so loaded that the first tick came after the boundary (or the last before it) did not aim
  return { results: done, straddled: first < boundary && last >= boundary };
}

/** Rounds of aimed bursts until ROUNDS of them straddled a boundary (a round that did not is run again). */
async function rounds(t: Test, groups: Group[], boundaryOf: () => Promise<number>): Promise<Results> {
  const all: Results = new Map();
  let straddled = 0;
  for (let round = 0; straddled < ROUNDS && round < 3 * ROUNDS; round++) {
    const burst = await aimedBurst(groups, await boundaryOf(), round);
    if (!burst.straddled) continue;
    straddled++;
    for (const [id, r] of burst.results) all.set(id, r);
  }
  t.equal(straddled, ROUNDS, `${ROUNDS} bursts straddled a boundary`);
  return all;
}

/** Exactly LIMIT admitted per key, each with its own place in the window (remaining 0…LIMIT-1 once each). */
function judge(t: Test, results: Results, groups: Group[]): void {
  const expected = Array.from({ length: LIMIT }, (_, i) => i);
  for (const g of groups) {
    const admitted: number[] = [];
    let unavailable = 0;
    let misplaced = 0;
    for (const r of results.values()) {
      if (r.group !== g.name) continue;
      unavailable += r.decisions.filter((d) => d === UNAVAILABLE).length;
      const allowed = r.decisions.filter((d): d is LimitDecision => d !== UNAVAILABLE && d.allowed);
      admitted.push(allowed.length);
      const places = allowed.map((d) => d.remaining).sort((x, y) => x - y);
      if (JSON.stringify(places) !== JSON.stringify(expected)) misplaced++;
    }
    t.equal(unavailable, 0, `${g.name}: the store answered every check`);
    t.same(admitted, admitted.map(() => LIMIT), `${g.name}: exactly ${LIMIT} of ${PER_KEY} admitted for each of ${admitted.length} keys across a boundary (admitted: ${admitted.join(', ')})`);
    t.equal(misplaced, 0, `${g.name}: each admitted request has its own place in the window (remaining 0…${LIMIT - 1} once each)`);
  }
}

/** A TCP relay to `port` that delays what the client sends by `delayMs`: an instance further from Redis. */
function slowLink(port: number, delayMs: number): Promise<{ port: number; close(): void }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(port, '127.0.0.1');
    sockets.add(client).add(upstream);
    client.on('data', (d) => setTimeout(() => upstream.write(d), delayMs));
    upstream.on('data', (d) => client.write(d));
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: (server.address() as { port: number }).port,
        close() {
          for (const s of sockets) s.destroy();
          server.close();
        },
      }),
    ),
  );
}

/** The next bucket boundary at least `lead` ms ahead of `nowMs`. */
function nextBoundary(nowMs: number, lead: number): number {
  let b = Math.ceil(nowMs / BUCKET_MS) * BUCKET_MS;
  if (b - nowMs < lead) b += BUCKET_MS;
  return b;
}

t.test('Redis: bursts aimed across a bucket boundary of Redis\'s clock admit exactly the limit, over instances that see the boundary at different moments', { skip: skipWithoutRedis }, async (t) => {
  const { Redis } = await import('ioredis');
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const link = await slowLink(redis.port, 30);
  t.teardown(() => link.close());
  const dir = t.testdir();
  const silent = { info() {}, warn() {}, error() {}, debug() {}, child() { return silent; } } as never;
  // Instances as the gateway opens them, with fallback "deny" (a store failure shows as
  // "unavailable"), but a generous command timeout instead of the request path's 250 ms: a loaded
  // test machine would turn this test into one about the fallback.
  const open = (url: string, now: () => number = Date.now): OpenedLimiter => {
    const file = join(dir, `gw-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(file, `store: { keys: "sqlite:./keys.db", rate_limits: "${url}", rate_limits_fallback: deny }\nupstreams: [{ name: u, api_base_url: "http://127.0.0.1:1" }]\nroutes: [{ path: /x, upstream: u, auth: none }]\n`);
    const saved = REQUEST_PATH_OPTIONS.commandTimeout;
    REQUEST_PATH_OPTIONS.commandTimeout = 10_000;
    try {
      const opened = openRateLimiter(loadConfig(file, {}), silent, now);
      t.teardown(() => opened.close());
      return opened;
    } finally {
      REQUEST_PATH_OPTIONS.commandTimeout = saved;
    }
  };
  const a = open(redis.url);
  const a2 = open(redis.url);
  const far = open(`redis://127.0.0.1:${link.port}`); // 30 ms further from Redis
  const ahead = open(redis.url, () => Date.now() + 300); // its host's clock runs 0.3 s ahead
  await Promise.all([a.ready, a2.ready, far.ready, ahead.ready]);
  const check = (o: OpenedLimiter): Check => (id, limit) => o.limiter.check(id, limit);
  const groups: Group[] = [
    { name: 'two instances, one clock, both near', pair: [check(a), check(a2)], keys: 4 },
    { name: 'one instance 30 ms further from Redis', pair: [check(a), check(far)], keys: 4 },
    { name: "one instance's clock 0.3 s ahead", pair: [check(a), check(ahead)], keys: 4 },
  ];
  const clock = new Redis(redis.url);
  t.teardown(() => clock.disconnect());
  // the next boundary by Redis's clock, in this process's clock
  const boundaryOf = async () => {
    const asked = Date.now();
    const [s, us] = await clock.time();
    const local = (asked + Date.now()) / 2;
    const redisNow = Number(s) * 1000 + Math.floor(Number(us) / 1000);
    return nextBoundary(redisNow, SPREAD_MS + 100) - (redisNow - local);
  };
  const all = await rounds(t, groups, boundaryOf);
  judge(t, all, groups);
});

t.test('workers: bursts aimed across a bucket boundary of the primary\'s clock admit exactly the limit, one worker\'s messages arriving 30 ms late', async (t) => {
  const primary = counterStore();
  /** a worker's limiter, its messages reaching the primary after `delayMs` (a busy worker or primary) */
  const worker = (delayMs: number): Check => {
    const client: BatchedCounterClient = new BatchedCounterClient((msg: CountersRequest) => {
      setTimeout(async () => {
        const reply = await runCounterOps(primary as never, msg);
        setImmediate(() => client.receive(reply));
      }, delayMs);
    }, 10_000);
    const limiter = new KeyRateLimiter(client, 'deny');
    return (id, limit) => limiter.check(id, limit);
  };
  const single = new KeyRateLimiter('local');
  const groups: Group[] = [
    { name: 'two workers, messages at once', pair: [worker(0), worker(0)], keys: 4 },
    { name: "one worker's messages 30 ms late", pair: [worker(0), worker(30)], keys: 4 },
    { name: 'one process, its own windows', pair: [(id, l) => single.check(id, l), (id, l) => single.check(id, l)], keys: 2 },
  ];
  const all = await rounds(t, groups, async () => nextBoundary(Date.now(), SPREAD_MS + 100));
  judge(t, all, groups);
});
