// Rate-limit windows kept in Redis and decided inside Redis. One Lua script takes a key's requests
// of one event-loop turn: it reads the bucket from Redis's own clock (TIME), sums the key's window
// and counts the requests that fit, in one atomic step. No instance's clock and no increment still
// in flight can then let more than the limit through: every decision sees every request counted
// before it, across instances. A key's window is one hash (one key, so one Redis Cluster slot):
// a ring of BUCKETS + 1 bucket counts and the newest bucket seen, expiring when idle.

import type { RedisClient } from '../redis.js';
import type { WindowStore } from './limiter.js';
import { BUCKETS, BUCKET_MS, takeOf, type Take } from './window.js';

const RING = BUCKETS + 1;
/** A bucket's counts are needed for BUCKETS buckets after it (65 s); the hash lives 70 s from its newest bucket. */
const TTL_MS = (BUCKETS + 2) * BUCKET_MS;
/** Prefix of the windows' hashes (rate-limiter-flexible's counters before were `keygate:rl:…` strings). */
export const WINDOW_PREFIX = 'keygate:rlw:';

const fields = Array.from({ length: RING }, (_, i) => `'${i}'`).join(', ');

/**
 * KEYS[1] the key's window; ARGV limit, n, and (tests only) a clock in ms instead of TIME.
 * Returns admitted, counted before in the current bucket, ms into the bucket, then the closed
 * buckets' counts newest first: the Take the limiter turns into one decision per request.
 */
export const TAKE_SCRIPT = `
if redis.replicate_commands then redis.replicate_commands() end
local limit = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local now
if ARGV[3] then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local bucket = math.floor(now / ${BUCKET_MS})
local v = redis.call('HMGET', KEYS[1], 'b', ${fields})
local last = tonumber(v[1])
-- Redis's clock went back (a failover to another host): count into the newest bucket there is
local counted = bucket
if last ~= nil and last > bucket then counted = last end
local function count(b)
  if last == nil or b > last then return 0 end
  return tonumber(v[2 + b % ${RING}]) or 0
end
local current = count(counted)
local out = {0, current, now - bucket * ${BUCKET_MS}}
local sum = 0
for i = 1, ${BUCKETS} do
  local c = count(counted - i)
  out[3 + i] = c
  sum = sum + c
end
local admitted = math.max(0, math.min(n, limit - sum - current))
out[1] = admitted
-- written when the window moves on (the newest bucket seen is where a clock that goes back counts,
-- as in local.ts) or something is counted; a refusal within a bucket already seen writes nothing
local moved = last == nil or counted > last
if moved then
  local set = {'b', counted, counted % ${RING}, current + admitted}
  if last ~= nil then
    -- buckets nobody counted into since the newest one: their slots still hold older buckets' counts
    for b = math.max(last + 1, counted - ${BUCKETS}), counted - 1 do
      set[#set + 1] = b % ${RING}
      set[#set + 1] = 0
    end
  end
  redis.call('HSET', KEYS[1], unpack(set))
  -- set in the newest bucket, the expiry outlasts every count the window can still need
  redis.call('PEXPIRE', KEYS[1], ${TTL_MS})
elseif admitted > 0 then
  redis.call('HSET', KEYS[1], counted % ${RING}, current + admitted)
end
return out
`;

/**
 * KEYS[1] the key's window: one request a take admitted moments ago is uncounted (a later stage
 * refused it), from the newest bucket the window counted into, else the one before it.
 */
export const GIVE_BACK_SCRIPT = `
local last = tonumber(redis.call('HGET', KEYS[1], 'b'))
if last == nil then return 0 end
for _, b in ipairs({last, last - 1}) do
  local f = tostring(b % ${RING})
  local c = tonumber(redis.call('HGET', KEYS[1], f)) or 0
  if c > 0 then
    redis.call('HSET', KEYS[1], f, c - 1)
    return 1
  end
end
return 0
`;

type TakeCommand = (key: string, limit: number, n: number, ...clock: number[]) => Promise<number[]>;
type GiveBackCommand = (key: string) => Promise<number>;

/** The windows in Redis (single node, Sentinel or Cluster); `clock` only for tests. */
export class RedisWindows implements WindowStore {
  private readonly run: TakeCommand;
  private readonly back: GiveBackCommand;

  constructor(client: RedisClient, private readonly clock?: () => number) {
    // EVALSHA, with EVAL once if the server does not know the script yet
    if (!('keygateTake' in client)) client.defineCommand('keygateTake', { numberOfKeys: 1, lua: TAKE_SCRIPT });
    const command = (client as unknown as { keygateTake: TakeCommand }).keygateTake;
    this.run = command.bind(client);
    if (!('keygateGiveBack' in client)) client.defineCommand('keygateGiveBack', { numberOfKeys: 1, lua: GIVE_BACK_SCRIPT });
    this.back = (client as unknown as { keygateGiveBack: GiveBackCommand }).keygateGiveBack.bind(client);
  }

  async giveBack(keyId: string): Promise<void> {
    await this.back(WINDOW_PREFIX + keyId);
  }

  async take(keyId: string, limit: number, n: number): Promise<Take> {
    return takeOf(await (this.clock ? this.run(WINDOW_PREFIX + keyId, limit, n, this.clock()) : this.run(WINDOW_PREFIX + keyId, limit, n)));
  }
}
