// Key store in Redis, for several gateway instances on several hosts. Keys are JSON documents
// with indexes by name and digest; usage counters are separate hashes (HINCRBY, so instances add
// up exactly, each batch at most once); every change is published so that each instance drops
// that key from its cache within milliseconds, and a reconnect makes the whole cache revalidate
// (messages sent while away are lost). Key lookups of the request path use their own connection
// without an offline queue, behind a circuit breaker: while Redis is down or frozen they fail at
// once and the key service answers from its cache (stale-if-error).

import { randomUUID } from 'node:crypto';
import { Cluster } from 'ioredis';
import { CircuitBreaker } from '../breaker.js';
import { ConflictError, ValidationError } from '../errors.js';
import { createRedis, REQUEST_PATH_OPTIONS, type RedisClient, type RedisSettings } from '../redis.js';
import { groupOwner, type GroupPatch, type KeyGroup } from './group.js';
import { keyMatches, keyStatus, type StoredKey } from './model.js';
import { keyQuotaOwner, type QuotaCount, type QuotaState, type QuotaTick } from './quota.js';
import type { AuditPage, AuditPageQuery, AuditQuery, AuditRecord, AuditStore, KeyCounts, KeyPage, KeyPageQuery, KeyPatch, KeyStore, StoreAvailable, UsageDelta, UsageHour, UsageRow } from './store.js';

/** Document as stored: the key without its usage counters, plus a version for optimistic updates. */
type Doc = Omit<StoredKey, 'requestCount' | 'lastUsedAt'> & { version: number };

// KEYS: names hash, digests hash, keys hash. ARGV: id, name, digest, previous digest or "", json.
const INSERT = `
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return 'name_taken' end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], ARGV[4], ARGV[1]) end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
return 'ok'`;

// Replace a document if its version is unchanged, moving the name and digest indexes.
// ARGV: id, expected version, old name, new name, old digest, new digest, old prev, new prev, json
const REPLACE = `
local cur = redis.call('HGET', KEYS[3], ARGV[1])
if not cur then return 'gone' end
if cjson.decode(cur).version ~= tonumber(ARGV[2]) then return 'retry' end
if ARGV[3] ~= ARGV[4] then
  if redis.call('HEXISTS', KEYS[1], ARGV[4]) == 1 then return 'name_taken' end
  redis.call('HDEL', KEYS[1], ARGV[3])
  redis.call('HSET', KEYS[1], ARGV[4], ARGV[1])
end
for _, d in ipairs({ARGV[5], ARGV[7]}) do
  if d ~= '' and redis.call('HGET', KEYS[2], d) == ARGV[1] then redis.call('HDEL', KEYS[2], d) end
end
redis.call('HSET', KEYS[2], ARGV[6], ARGV[1])
if ARGV[8] ~= '' then redis.call('HSET', KEYS[2], ARGV[8], ARGV[1]) end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[9])
return 'ok'`;

// ARGV: id; KEYS 4: usage hash of the key, KEYS 5: its hourly history, KEYS 6: its quota counter
const DELETE = `
local cur = redis.call('HGET', KEYS[3], ARGV[1])
if not cur then return 0 end
local doc = cjson.decode(cur)
redis.call('HDEL', KEYS[1], doc.name)
for _, d in ipairs({doc.digest, doc.previousDigest}) do
  if type(d) == 'string' and redis.call('HGET', KEYS[2], d) == ARGV[1] then redis.call('HDEL', KEYS[2], d) end
end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4], KEYS[5], KEYS[6])
return 1`;

// One quota consume (quota.ts refill, then take a credit only when one is left; a refused consume
// writes nothing). KEYS[1]: the owner's counter hash {b: balance, p: period}. ARGV: period now,
// limit, 1 = refill add. Returns {1 allowed | 0 refused, balance after}.
const QUOTA_CONSUME = `
local b = redis.call('HGET', KEYS[1], 'b')
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local balance, period
if not b then
  balance, period = limit, now
else
  balance, period = tonumber(b), tonumber(redis.call('HGET', KEYS[1], 'p'))
  if period < now then
    if ARGV[3] == '1' then balance = balance + limit * (now - period) else balance = limit end
    period = now
  end
end
if balance <= 0 then return {0, 0} end
redis.call('HSET', KEYS[1], 'b', balance - 1, 'p', period)
return {1, balance - 1}`;

// KEYS[1]: the batch's marker, KEYS[2]: set of ids with history, then per key of the batch its
// usage hash and its hourly history hash. ARGV[1]: marker TTL (s), then per key: count, last-used
// ms (0 = none), id, number of hours, and per hour: hour ms, allowed, limited, forbidden, quota.
// A group's history is an entry like a key's, its owner "group:<name>" as id, count 0 and last 0.
// Applied at most once: a batch whose marker exists adds nothing. Last use only moves forward;
// history fields are "<hour ms>:a|l|f".
const USAGE = `
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local a = 2
for k = 3, #KEYS, 2 do
  local usage, hours = KEYS[k], KEYS[k + 1]
  local count, lastMs, id, n = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2], tonumber(ARGV[a + 3])
  if count > 0 then redis.call('HINCRBY', usage, 'count', count) end
  local last = tonumber(redis.call('HGET', usage, 'last') or '0')
  if lastMs > last then redis.call('HSET', usage, 'last', ARGV[a + 1]) end
  if n > 0 then redis.call('SADD', KEYS[2], id) end
  a = a + 4
  for _ = 1, n do
    if tonumber(ARGV[a + 1]) > 0 then redis.call('HINCRBY', hours, ARGV[a] .. ':a', ARGV[a + 1]) end
    if tonumber(ARGV[a + 2]) > 0 then redis.call('HINCRBY', hours, ARGV[a] .. ':l', ARGV[a + 2]) end
    if tonumber(ARGV[a + 3]) > 0 then redis.call('HINCRBY', hours, ARGV[a] .. ':f', ARGV[a + 3]) end
    if tonumber(ARGV[a + 4]) > 0 then redis.call('HINCRBY', hours, ARGV[a] .. ':q', ARGV[a + 4]) end
    a = a + 5
  end
end
return 1`;

// Give back one credit of a counter still in period ARGV[1] (a later stage refused the request).
const QUOTA_REFUND = `
if redis.call('HGET', KEYS[1], 'p') == ARGV[1] then redis.call('HINCRBY', KEYS[1], 'b', 1) end
return 1`;

// KEYS[1]: groups hash. ARGV: name, json. A taken name changes nothing.
const GROUP_INSERT = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 'name_taken' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 'ok'`;

// KEYS[1]: groups hash. ARGV: name, patch json (its fields replace the group's).
const GROUP_UPDATE = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return false end
local g = cjson.decode(cur)
for k, v in pairs(cjson.decode(ARGV[2])) do g[k] = v end
local out = cjson.encode(g)
redis.call('HSET', KEYS[1], ARGV[1], out)
return out`;

/** How long an applied usage batch id is remembered (a retry comes within seconds; a spool replay within a day). */
const BATCH_ID_TTL_SECONDS = 86_400;
/** Keys per script call. */
const USAGE_CHUNK = 200;
/** Key-lookup connection heartbeat: how a frozen Redis is noticed between requests. */
const HEARTBEAT_MS = 1000;

// KEYS[1]: set of ids with history; ARGV[1]: cutoff hour ms; ARGV[2]: the hash-name prefix of a
// key's history (the id is appended). Removes older hour fields; resolves with how many hours went.
const USAGE_PRUNE = `
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = ARGV[2] .. id
  for _, f in ipairs(redis.call('HKEYS', h)) do
    local hour = tonumber(string.match(f, '^(%d+):'))
    if hour and hour < tonumber(ARGV[1]) then
      redis.call('HDEL', h, f)
      if string.sub(f, -2) == ':a' then n = n + 1 end
    end
  end
  if redis.call('EXISTS', h) == 0 then redis.call('SREM', KEYS[1], id) end
end
return n`;

// KEYS[1]: audit list (newest first). ARGV: cutoff (ISO 8601). Pops from the old end while older.
const AUDIT_PRUNE = `
local n = 0
while n < 100000 do
  local last = redis.call('LINDEX', KEYS[1], -1)
  if not last or cjson.decode(last).at >= ARGV[1] then break end
  redis.call('RPOP', KEYS[1])
  n = n + 1
end
return n`;

interface QuotaScript {
  kgQuota(counter: string, period: number, limit: number, add: number): Promise<[number, number]>;
  kgQuotaRefund(counter: string, period: number): Promise<number>;
}

interface Scripts {
  kgInsert(names: string, digests: string, keys: string, ...argv: string[]): Promise<string>;
  kgReplace(names: string, digests: string, keys: string, ...argv: (string | number)[]): Promise<string>;
  kgDelete(names: string, digests: string, keys: string, usage: string, hours: string, quota: string, id: string): Promise<number>;
  kgUsage(numberOfKeys: number, ...args: (string | number)[]): Promise<number>;
  kgUsagePrune(withHistory: string, beforeMs: number, hoursPrefix: string): Promise<number>;
  kgAuditPrune(audit: string, before: string): Promise<number>;
  kgGroupInsert(groups: string, name: string, json: string): Promise<string>;
  kgGroupUpdate(groups: string, name: string, patch: string): Promise<string | null>;
}

export interface RedisKeyStoreOptions {
  /** key namespace, default "keygate" */
  prefix?: string;
  /** topology: standalone (default), sentinel or cluster */
  redis?: RedisSettings | undefined;
  onError?: (err: Error) => void;
}

export class RedisKeyStore implements KeyStore, AuditStore {
  private readonly redis: RedisClient & Scripts;
  private readonly sub: RedisClient;
  /** the request path's connection: no offline queue, short timeouts, behind `breaker` */
  private readonly fast: RedisClient & QuotaScript;
  private readonly breaker: CircuitBreaker;
  private readonly heartbeat: NodeJS.Timeout;
  private readonly k: {
    names: string;
    digests: string;
    keys: string;
    audit: string;
    changes: string;
    /** set on every connection; its absence after it was seen means Redis lost its content */
    marker: string;
    /** a usage batch's applied-once marker */
    batch: (id: string) => string;
    /** ids of the keys declared in the config file, and whether that index was built */
    config: string;
    configIndexed: string;
    usage: (id: string) => string;
    /** a key's hourly history; the prefix of its name is hoursPrefix */
    hours: (id: string) => string;
    hoursPrefix: string;
    /** ids that have history (so pruning finds the history of deleted keys too) */
    withHistory: string;
    /** a quota counter by owner */
    quota: (owner: string) => string;
    /** groups by name (JSON), and the ids of each group's keys */
    groups: string;
    groupKeys: (name: string) => string;
  };
  private mark = 0;
  private readonly changed: ((id: string) => void)[] = [];
  private readonly available: ((e: StoreAvailable) => void)[] = [];
  /** the marker key existed (or was set by us) once: its absence later means the content was lost */
  private markerSeen = false;
  private connections = 0;
  /** settles once the latest SUBSCRIBE was answered (or failed, which onError reported) */
  private subscribed: Promise<void> = Promise.resolve();

  constructor(url: string, opts: RedisKeyStoreOptions = {}) {
    // A hash tag: every key of the store lands in one Redis Cluster slot, as its Lua scripts need.
    const p = `{${opts.prefix ?? 'keygate'}}`;
    this.k = {
      names: `${p}:key-names`,
      digests: `${p}:key-digests`,
      keys: `${p}:keys`,
      audit: `${p}:audit`,
      changes: `${p}:key-changes`,
      marker: `${p}:store-marker`,
      batch: (id) => `${p}:usage-batch:${id}`,
      // ids of the keys declared in the config file, so a sync reads those and not every key
      config: `${p}:config-keys`,
      configIndexed: `${p}:config-keys-indexed`,
      usage: (id) => `${p}:key-usage:${id}`,
      hours: (id) => `${p}:key-usage-hours:${id}`,
      hoursPrefix: `${p}:key-usage-hours:`,
      withHistory: `${p}:key-usage-hours`,
      quota: (owner) => `${p}:quota:${owner}`,
      groups: `${p}:groups`,
      groupKeys: (name) => `${p}:group-keys:${name}`,
    };
    // Management and cache misses may wait briefly for a reconnect; they are not the hot path
    // (cached keys are answered without Redis).
    const common = { maxRetriesPerRequest: 2, connectTimeout: 2000, commandTimeout: 2000, retryStrategy: (n: number) => Math.min(100 * n, 2000) };
    this.redis = createRedis(url, opts.redis, { ...common, enableOfflineQueue: true }) as RedisClient & Scripts;
    // The subscriber re-subscribes itself on every (re)connect, below: ioredis' own autoResubscribe
    // sends SUBSCRIBE without handling its failure, so a connection lost again before the reply
    // would end in an unhandled rejection, which stops the process. (Cluster mode keeps ioredis'
    // resubscription, which handles its errors.)
    this.sub = createRedis(url, opts.redis, { ...common, enableOfflineQueue: true, autoResubscribe: false });
    // Report a failure once per outage, not on every reconnect attempt.
    let down = false;
    const onError = (err: Error) => {
      if (!down) opts.onError?.(err);
      down = true;
    };
    this.redis.on('error', onError);
    this.sub.on('error', onError);
    this.redis.on('ready', () => {
      down = false;
      this.checkMarker().catch(onError);
    });
    this.fast = createRedis(url, opts.redis, REQUEST_PATH_OPTIONS) as RedisClient & QuotaScript;
    this.fast.defineCommand('kgQuota', { numberOfKeys: 1, lua: QUOTA_CONSUME });
    this.fast.defineCommand('kgQuotaRefund', { numberOfKeys: 1, lua: QUOTA_REFUND });
    this.fast.on('error', onError);
    this.breaker = new CircuitBreaker({
      name: 'redis key store',
      threshold: 2,
      probe: () => this.fast.ping(),
      // open: cached keys are no longer known to be current (served stale); closed: revalidate them
      onChange: () => this.mark++,
    });
    // a lost connection opens the breaker at once; the ready connection closes it
    this.fast.on('close', () => this.breaker.trip(new Error('connection to redis lost')));
    this.fast.on('ready', () => this.breaker.close());
    this.heartbeat = setInterval(() => {
      if (!this.breaker.isOpen && this.fast.status === 'ready') this.breaker.run(() => this.fast.ping()).catch(() => {});
    }, HEARTBEAT_MS);
    this.heartbeat.unref();
    this.redis.defineCommand('kgInsert', { numberOfKeys: 3, lua: INSERT });
    this.redis.defineCommand('kgReplace', { numberOfKeys: 3, lua: REPLACE });
    this.redis.defineCommand('kgDelete', { numberOfKeys: 6, lua: DELETE });
    this.redis.defineCommand('kgUsage', { lua: USAGE });
    this.redis.defineCommand('kgUsagePrune', { numberOfKeys: 1, lua: USAGE_PRUNE });
    this.redis.defineCommand('kgAuditPrune', { numberOfKeys: 1, lua: AUDIT_PRUNE });
    this.redis.defineCommand('kgGroupInsert', { numberOfKeys: 1, lua: GROUP_INSERT });
    this.redis.defineCommand('kgGroupUpdate', { numberOfKeys: 1, lua: GROUP_UPDATE });
    // Any change anywhere, and any (re)connect of the subscriber, makes cached keys stale; the
    // changed key is dropped from caches at once (a revocation must not be served stale).
    this.sub.on('message', (_channel: string, id: string) => {
      this.mark++;
      for (const l of this.changed) l(id);
    });
    const subscribe = () => (this.subscribed = this.sub.subscribe(this.k.changes).then(() => undefined, onError));
    if (this.sub instanceof Cluster) subscribe();
    this.sub.on('ready', () => {
      this.mark++;
      if (!(this.sub instanceof Cluster)) subscribe();
    });
  }

  /**
   * On every connection of the main client: the marker key says whether this is the Redis we
   * knew. Set when absent; absent after it was seen means Redis restarted empty (or was flushed).
   */
  private async checkMarker(): Promise<void> {
    const set = await this.redis.set(this.k.marker, new Date().toISOString(), 'NX');
    const fresh = set === 'OK';
    const event: StoreAvailable = { first: this.connections++ === 0, emptied: fresh && this.markerSeen };
    this.markerSeen = true;
    for (const l of this.available) l(event);
  }

  onKeyChanged(listener: (id: string) => void): void {
    this.changed.push(listener);
  }

  onAvailable(listener: (e: StoreAvailable) => void): void {
    this.available.push(listener);
  }

  unreachable(): string | undefined {
    return this.breaker.isOpen ? (this.breaker.reason ?? 'not answering') : undefined;
  }

  /** Resolves once both connections are ready (or rejects after `ms`). */
  async ready(ms = 5000): Promise<void> {
    const wait = (c: RedisClient) =>
      c.status === 'ready'
        ? Promise.resolve()
        : new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error('redis key store not reachable')), ms);
            c.once('ready', () => {
              clearTimeout(timer);
              resolve();
            });
          });
    await Promise.all([wait(this.redis), wait(this.sub), wait(this.fast)]);
    await this.subscribed;
  }

  private publish(id: string): Promise<unknown> {
    return this.redis.publish(this.k.changes, id);
  }

  private async withUsage(doc: Doc | undefined): Promise<StoredKey | undefined> {
    if (doc === undefined) return undefined;
    const u = await this.redis.hgetall(this.k.usage(doc.id));
    return toKey(doc, u);
  }

  private async doc(id: string): Promise<Doc | undefined> {
    const json = await this.redis.hget(this.k.keys, id);
    return json === null ? undefined : (JSON.parse(json) as Doc);
  }

  async insert(key: StoredKey): Promise<void> {
    const { requestCount: _c, lastUsedAt: _l, ...rest } = key;
    const doc: Doc = { ...rest, version: 1 };
    const r = await this.redis.kgInsert(this.k.names, this.k.digests, this.k.keys, key.id, key.name, key.digest, key.previousDigest ?? '', JSON.stringify(doc));
    if (r === 'name_taken') throw new ConflictError(`a key named "${key.name}" already exists`, 'name');
    if (key.managedBy === 'config') await this.redis.sadd(this.k.config, key.id);
    if (key.group) await this.redis.sadd(this.k.groupKeys(key.group), key.id);
    await this.publish(key.id);
  }

  async update(id: string, patch: KeyPatch): Promise<StoredKey | undefined> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const cur = await this.doc(id);
      if (cur === undefined) return undefined;
      const next: Doc = { ...cur, ...patch, version: cur.version + 1 };
      const r = await this.redis.kgReplace(
        this.k.names, this.k.digests, this.k.keys,
        id, cur.version, cur.name, next.name, cur.digest, next.digest, cur.previousDigest ?? '', next.previousDigest ?? '', JSON.stringify(next),
      );
      if (r === 'gone') return undefined;
      if (r === 'name_taken') throw new ConflictError(`a key named "${next.name}" already exists`, 'name');
      if (r === 'ok') {
        const before = cur.group ?? null;
        const after = next.group ?? null;
        if (before !== after) {
          if (before !== null) await this.redis.srem(this.k.groupKeys(before), id);
          if (after !== null) await this.redis.sadd(this.k.groupKeys(after), id);
        }
        await this.publish(id);
        return this.withUsage(next);
      }
      // 'retry': another instance changed the key meanwhile; apply the patch to its version
    }
    throw new ConflictError(`key ${id} is being changed concurrently; try again`);
  }

  async delete(id: string): Promise<boolean> {
    const group = (await this.doc(id))?.group ?? null;
    const n = await this.redis.kgDelete(this.k.names, this.k.digests, this.k.keys, this.k.usage(id), this.k.hours(id), this.k.quota(keyQuotaOwner(id)), id);
    await this.redis.srem(this.k.config, id);
    if (group !== null) await this.redis.srem(this.k.groupKeys(group), id);
    if (n === 1) await this.publish(id);
    return n === 1;
  }

  async get(id: string): Promise<StoredKey | undefined> {
    return this.withUsage(await this.doc(id));
  }

  async getByName(name: string): Promise<StoredKey | undefined> {
    const id = await this.redis.hget(this.k.names, name);
    return id === null ? undefined : this.get(id);
  }

  /** The request path's lookup: on its own connection, failing at once while the breaker is open. */
  findByDigest(digest: string, nowMs = Date.now()): Promise<StoredKey | undefined> {
    return this.breaker.run(async () => {
      const id = await this.fast.hget(this.k.digests, digest);
      if (id === null) return undefined;
      const json = await this.fast.hget(this.k.keys, id);
      if (json === null) return undefined;
      const doc = JSON.parse(json) as Doc;
      if (doc.digest !== digest) {
        // only a previous digest inside its grace period still opens the key
        const until = doc.previousDigest === digest ? Date.parse(doc.previousDigestExpiresAt ?? '') : NaN;
        if (!(until > nowMs)) return undefined;
      }
      return toKey(doc, await this.fast.hgetall(this.k.usage(doc.id)));
    });
  }

  async list(): Promise<StoredKey[]> {
    const all = await this.redis.hgetall(this.k.keys);
    const docs = Object.values(all).map((j) => JSON.parse(j) as Doc);
    const pipe = this.redis.pipeline();
    for (const d of docs) pipe.hgetall(this.k.usage(d.id));
    const usage = (await pipe.exec()) ?? [];
    return docs
      .map((d, i) => toKey(d, (usage[i]?.[1] as Record<string, string>) ?? {}))
      .sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : a.name < b.name ? -1 : 1));
  }

  /**
   * Pages follow HSCAN (no order): the cursor is the scan cursor and how many keys of that scan step
   * were already returned, so a page never exceeds its limit.
   */
  async page(q: KeyPageQuery): Promise<KeyPage> {
    if (q.managedBy === 'config') return { keys: await this.configKeys(), next: null };
    let [scan, skip] = q.cursor === undefined ? ['0', 0] : parseScanCursor(q.cursor);
    const docs: Doc[] = [];
    const filtered = q.search !== undefined || q.status !== undefined;
    const nowMs = q.nowMs ?? Date.now();
    // a filtered page may pass many keys by: larger scan steps (the same for every page of one filter)
    const count = filtered ? 1000 : Math.max(q.limit, 10);
    for (;;) {
      // a group's keys: a scan of its index, not of every key
      const [nextScan, found] = q.group === undefined ? await this.scanKeys(scan, count) : await this.scanGroup(q.group, scan, count);
      const step: Doc[] = [];
      for (const d of found) {
        if (filtered && !docMatches(d, q.search, q.status, nowMs)) continue;
        step.push(d);
      }
      const take = step.slice(skip, skip + q.limit - docs.length);
      docs.push(...take);
      if (skip + take.length < step.length) {
        skip += take.length;
        break; // the page is full inside this scan step: the next page resumes in it
      }
      scan = nextScan;
      skip = 0;
      if (scan === '0' || docs.length >= q.limit) break;
    }
    const done = scan === '0' && skip === 0;
    return { keys: await this.withUsages(docs), next: done ? null : `${scan}.${skip}` };
  }

  private async scanKeys(scan: string, count: number): Promise<[string, Doc[]]> {
    const [next, flat] = await this.redis.hscan(this.k.keys, scan, 'COUNT', count);
    const docs: Doc[] = [];
    for (let i = 1; i < flat.length; i += 2) docs.push(JSON.parse(flat[i]!) as Doc);
    return [next, docs];
  }

  private async scanGroup(group: string, scan: string, count: number): Promise<[string, Doc[]]> {
    const [next, ids] = await this.redis.sscan(this.k.groupKeys(group), scan, 'COUNT', count);
    if (ids.length === 0) return [next, []];
    const json = await this.redis.hmget(this.k.keys, ...ids);
    // an index entry of a key moved or deleted meanwhile is skipped
    const docs = json.filter((j): j is string => j !== null).map((j) => JSON.parse(j) as Doc).filter((d) => d.group === group);
    return [next, docs];
  }

  private async withUsages(docs: Doc[]): Promise<StoredKey[]> {
    if (docs.length === 0) return [];
    const pipe = this.redis.pipeline();
    for (const d of docs) pipe.hgetall(this.k.usage(d.id));
    const usage = (await pipe.exec()) ?? [];
    return docs.map((d, i) => toKey(d, (usage[i]?.[1] as Record<string, string>) ?? {}));
  }

  /** The config-managed keys, by their index (built once from a scan for stores older than it). */
  private async configKeys(): Promise<StoredKey[]> {
    if ((await this.redis.exists(this.k.configIndexed)) === 0) {
      let scan = '0';
      do {
        const [next, flat] = await this.redis.hscan(this.k.keys, scan, 'COUNT', 1000);
        for (let i = 1; i < flat.length; i += 2) {
          const d = JSON.parse(flat[i]!) as Doc;
          if (d.managedBy === 'config') await this.redis.sadd(this.k.config, d.id);
        }
        scan = next;
      } while (scan !== '0');
      await this.redis.set(this.k.configIndexed, '1');
    }
    const ids = await this.redis.smembers(this.k.config);
    if (ids.length === 0) return [];
    const json = await this.redis.hmget(this.k.keys, ...ids);
    return this.withUsages(json.filter((j): j is string => j !== null).map((j) => JSON.parse(j) as Doc));
  }

  /** Scans the keys (Redis has no index by role): only when no admin token is configured and a credential failed. */
  async hasActiveAdmin(nowMs: number): Promise<boolean> {
    let scan = '0';
    do {
      const [next, flat] = await this.redis.hscan(this.k.keys, scan, 'COUNT', 1000);
      for (let i = 1; i < flat.length; i += 2) {
        const d = JSON.parse(flat[i]!) as Doc;
        if (d.role === 'admin' && d.isActive && (d.expiresAt === null || Date.parse(d.expiresAt) > nowMs)) return true;
      }
      scan = next;
    } while (scan !== '0');
    return false;
  }

  async count(): Promise<number> {
    return this.redis.hlen(this.k.keys);
  }

  /** Redis has no index by status or name: a scan of the keys (the key service remembers the answer briefly). */
  async counts(nowMs: number, search?: string): Promise<KeyCounts> {
    const out: KeyCounts = { total: 0, active: 0, inactive: 0, expired: 0 };
    let scan = '0';
    do {
      const [next, flat] = await this.redis.hscan(this.k.keys, scan, 'COUNT', 1000);
      for (let i = 1; i < flat.length; i += 2) {
        const d = JSON.parse(flat[i]!) as Doc;
        if (search !== undefined && !keyMatches(d.name, d.prefix, search)) continue;
        out.total++;
        out[keyStatus(d, nowMs)]++;
      }
      scan = next;
    } while (scan !== '0');
    return out;
  }

  async addUsage(batch: ReadonlyMap<string, UsageDelta>, batchId: string): Promise<void> {
    if (batch.size === 0) return;
    // one script call per chunk, each with its own marker: a chunk is applied whole or not at all
    const entries = [...batch];
    const calls: Promise<number>[] = [];
    for (let i = 0; i < entries.length; i += USAGE_CHUNK) {
      const chunk = entries.slice(i, i + USAGE_CHUNK);
      const keys = [this.k.batch(`${batchId}:${i / USAGE_CHUNK}`), this.k.withHistory];
      const argv: (string | number)[] = [BATCH_ID_TTL_SECONDS];
      const groups = new Map<string, UsageHour[]>();
      for (const [id, d] of chunk) {
        keys.push(this.k.usage(id), this.k.hours(id));
        const hours = d.hours ?? [];
        argv.push(d.count, d.lastUsedAt ? Date.parse(d.lastUsedAt) : 0, id, hours.length);
        for (const h of hours) {
          argv.push(h.hourMs, h.allowed, h.limited, h.forbidden, h.quota ?? 0);
          if (h.group !== undefined) groupHours(groups, groupOwner(h.group)).push(h);
        }
      }
      // the groups' histories, in the same script call: an owner "group:<name>" with hours and no count
      for (const [owner, hours] of groups) {
        keys.push(this.k.usage(owner), this.k.hours(owner));
        argv.push(0, 0, owner, hours.length);
        for (const h of hours) argv.push(h.hourMs, h.allowed, h.limited, h.forbidden, h.quota ?? 0);
      }
      calls.push(this.redis.kgUsage(keys.length, ...keys, ...argv));
    }
    await Promise.all(calls);
  }

  /** One script call on the request path's connection, failing at once while its breaker is open. */
  consumeQuota(owner: string, t: QuotaTick): Promise<QuotaCount> {
    return this.breaker.run(async () => {
      const [allowed, balance] = await this.fast.kgQuota(this.k.quota(owner), t.period, t.limit, t.add ? 1 : 0);
      return { allowed: allowed === 1, remaining: balance };
    });
  }

  refundQuota(owner: string, t: QuotaTick): Promise<void> {
    return this.breaker.run(async () => void (await this.fast.kgQuotaRefund(this.k.quota(owner), t.period)));
  }

  // ---------------------------------------------------------------- groups

  async insertGroup(g: KeyGroup): Promise<void> {
    const r = await this.redis.kgGroupInsert(this.k.groups, g.name, JSON.stringify(g));
    if (r === 'name_taken') throw new ConflictError(`a group named "${g.name}" already exists`, 'name');
    await this.publish(`group:${g.name}`);
  }

  async updateGroup(name: string, patch: GroupPatch): Promise<KeyGroup | undefined> {
    // cjson cannot tell null from absent in a table: null members are sent as JSON null (cjson.null)
    const json = await this.redis.kgGroupUpdate(this.k.groups, name, JSON.stringify(patch));
    if (json === null) return undefined;
    await this.publish(`group:${name}`);
    return toGroup(JSON.parse(json));
  }

  async deleteGroup(name: string): Promise<boolean> {
    const n = await this.redis.hdel(this.k.groups, name);
    await this.redis.del(this.k.quota(groupOwner(name)), this.k.hours(groupOwner(name)));
    if (n === 1) await this.publish(`group:${name}`);
    return n === 1;
  }

  async getGroup(name: string): Promise<KeyGroup | undefined> {
    const json = await this.redis.hget(this.k.groups, name);
    return json === null ? undefined : toGroup(JSON.parse(json));
  }

  async listGroups(): Promise<KeyGroup[]> {
    const all = await this.redis.hgetall(this.k.groups);
    return Object.values(all)
      .map((j) => toGroup(JSON.parse(j)))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  countGroupKeys(name: string): Promise<number> {
    return this.redis.scard(this.k.groupKeys(name));
  }

  async quotaState(owner: string): Promise<QuotaState | undefined> {
    const h = await this.redis.hgetall(this.k.quota(owner));
    return h.b === undefined ? undefined : { balance: Number(h.b), period: Number(h.p) };
  }

  async setQuotaState(owner: string, state: QuotaState | undefined): Promise<void> {
    if (state === undefined) await this.redis.del(this.k.quota(owner));
    else await this.redis.hset(this.k.quota(owner), 'b', state.balance, 'p', state.period);
  }

  async usageHistory(owner: string, fromMs: number, toMs: number): Promise<UsageRow[]> {
    const all = await this.redis.hgetall(this.k.hours(owner));
    const byHour = new Map<number, UsageRow>();
    for (const [field, value] of Object.entries(all)) {
      const i = field.indexOf(':');
      const hourMs = Number(field.slice(0, i));
      if (!(hourMs >= fromMs && hourMs < toMs)) continue;
      let row = byHour.get(hourMs);
      if (row === undefined) {
        row = { hour: new Date(hourMs).toISOString(), allowed: 0, limited: 0, forbidden: 0, quota: 0 };
        byHour.set(hourMs, row);
      }
      const kind = field.slice(i + 1);
      if (kind === 'a') row.allowed = Number(value);
      else if (kind === 'l') row.limited = Number(value);
      else if (kind === 'f') row.forbidden = Number(value);
      else if (kind === 'q') row.quota = Number(value);
    }
    return [...byHour.entries()].sort((a, b) => a[0] - b[0]).map(([, row]) => row);
  }

  async pruneUsage(beforeMs: number): Promise<number> {
    return this.redis.kgUsagePrune(this.k.withHistory, beforeMs, this.k.hoursPrefix);
  }

  async appendAudit(record: AuditRecord): Promise<void> {
    await this.redis.lpush(this.k.audit, JSON.stringify(record));
  }

  async listAudit(q: AuditQuery): Promise<AuditRecord[]> {
    // newest first; a key filter scans (audit reads are rare and operator-driven)
    const raw = await this.redis.lrange(this.k.audit, 0, q.key_id === undefined ? q.limit - 1 : -1);
    const records = raw.map((j) => JSON.parse(j) as AuditRecord);
    return (q.key_id === undefined ? records : records.filter((r) => r.key_id === q.key_id)).slice(0, q.limit);
  }

  /**
   * The list holds the newest record first (LPUSH); pruning takes from the tail. The cursor is the
   * index to go on from and the list's length then: records pushed since shift it by the difference.
   */
  async pageAudit(q: AuditPageQuery): Promise<AuditPage> {
    const len = await this.redis.llen(this.k.audit);
    let index = 0;
    if (q.cursor !== undefined) {
      const m = /^(\d{1,15})\.(\d{1,15})$/.exec(q.cursor);
      if (!m) throw new ValidationError('cursor', 'is not a cursor this gateway returned (use the nextCursor of the page before)');
      index = Math.max(0, Number(m[1]) + Math.max(0, len - Number(m[2])));
    }
    const records: AuditRecord[] = [];
    while (records.length < q.limit && index < len) {
      // a key filter reads on in chunks (audit reads are rare and operator-driven)
      const want = q.key_id === undefined ? q.limit - records.length : 1000;
      const raw = await this.redis.lrange(this.k.audit, index, index + want - 1);
      if (raw.length === 0) break;
      let used = 0;
      for (const j of raw) {
        used++;
        const r = JSON.parse(j) as AuditRecord;
        if (q.key_id !== undefined && r.key_id !== q.key_id) continue;
        records.push(r);
        if (records.length === q.limit) break;
      }
      index += used;
    }
    return { records, next: index < len ? `${index}.${len}` : null };
  }

  async pruneAudit(before: string): Promise<number> {
    return this.redis.kgAuditPrune(this.k.audit, before);
  }

  changeMark(): number {
    return this.mark;
  }

  async close(): Promise<void> {
    // quit, not disconnect: it waits for replies still due (e.g. the re-subscribe ioredis sends
    // after a reconnect), whose promises would otherwise reject with nobody to catch them
    this.sub.removeAllListeners('message');
    clearInterval(this.heartbeat);
    this.breaker.stop();
    this.fast.removeAllListeners('close');
    this.fast.disconnect();
    await Promise.all([
      this.sub.quit().catch(() => this.sub.disconnect()),
      this.redis.quit().catch(() => this.redis.disconnect()),
    ]);
  }

  /** A fresh id for tests that need to namespace several stores in one Redis. */
  static namespace(): string {
    return `keygate-test-${randomUUID().slice(0, 8)}`;
  }
}

/** Whether a stored document passes a page's search and status filters. */
function docMatches(d: Doc, search: string | undefined, status: KeyPageQuery['status'], nowMs: number): boolean {
  if (search !== undefined && !keyMatches(d.name, d.prefix, search)) return false;
  return status === undefined || keyStatus(d, nowMs) === status;
}

/** A stored group; cjson writes an empty table for a null member it kept, so null-or-absent members are normalised. */
function toGroup(g: Record<string, unknown>): KeyGroup {
  const q = g['quota'];
  const r = g['rateLimit'];
  return {
    name: String(g['name']),
    description: typeof g['description'] === 'string' ? g['description'] : '',
    rateLimit: typeof r === 'number' ? r : null,
    quota: q !== null && typeof q === 'object' && !Array.isArray(q) && Object.keys(q).length > 0 ? (q as KeyGroup['quota']) : null,
    createdAt: String(g['createdAt']),
    updatedAt: String(g['updatedAt']),
    createdBy: typeof g['createdBy'] === 'string' ? g['createdBy'] : null,
    updatedBy: typeof g['updatedBy'] === 'string' ? g['updatedBy'] : null,
    managedBy: g['managedBy'] === 'config' ? 'config' : 'api',
  };
}

function parseScanCursor(cursor: string): [string, number] {
  const m = /^(\d+)\.(\d+)$/.exec(cursor);
  if (!m) throw new ValidationError('cursor', 'is not a cursor this gateway returned (use the next cursor of the page before)');
  return [m[1]!, Number(m[2])];
}

function groupHours(groups: Map<string, UsageHour[]>, owner: string): UsageHour[] {
  let hours = groups.get(owner);
  if (hours === undefined) groups.set(owner, (hours = []));
  return hours;
}

function toKey(doc: Doc, usage: Record<string, string>): StoredKey {
  const { version: _v, ...key } = doc;
  const last = Number(usage.last ?? 0);
  return {
    ...key,
    previousDigest: key.previousDigest ?? null,
    previousDigestExpiresAt: key.previousDigestExpiresAt ?? null,
    quota: key.quota ?? null,
    group: key.group ?? null,
    requestCount: Number(usage.count ?? 0),
    lastUsedAt: last > 0 ? new Date(last).toISOString() : null,
  };
}
