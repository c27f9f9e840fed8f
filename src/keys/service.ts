// The one key service: the CLI, both admin APIs and the key page call these functions, so every
// rule about keys (names, scopes, roles, workspaces, limits, expiry) lives here once.
// It also owns the in-memory cache the request path authenticates against.

import { randomUUID } from 'node:crypto';
import type { DeclaredGroupConfig, DeclaredKeyConfig, GatewayConfig, KeysConfig } from '../config/types.js';
import { ConflictError, KeygateError, LimitError, NotFoundError, Problems, ValidationError, type FieldError } from '../errors.js';
import {
  accessOf,
  isRole,
  isScope,
  isSurface,
  KEY_STATUSES,
  type ApiKey,
  type KeyStatus,
  type AttributionClass,
  type KeyAccess,
  type StoredKey,
  type WorkspaceAccess,
  type WorkspaceGrant,
} from './model.js';
import { groupOwner, type GroupPatch, type KeyGroup } from './group.js';
import { keyQuotaOwner, QUOTA_PERIODS, QUOTA_REFILLS, statusOf, tickOf, refill, type Quota, type QuotaStatus } from './quota.js';
import { digestSecret, displayPrefix, generateSecret } from './secret.js';
import type { AuditAction, AuditRecord, AuditStore, KeyCounts, KeyPatch, KeyStore } from './store.js';
import { DAY_MS, HOUR_MS, usageRange, usageSeries, type UsageQuery, type UsageSeries } from './usage-history.js';

/** Input to create/update, as parsed from a CLI flag or a JSON body: checked here, not trusted. */
export interface KeyInput {
  name?: unknown;
  description?: unknown;
  scopes?: unknown;
  role?: unknown;
  workspace?: unknown;
  workspaceAccess?: unknown;
  surfaces?: unknown;
  attributionClass?: unknown;
  serviceAccountName?: unknown;
  ownerUserId?: unknown;
  rateLimit?: unknown;
  /** {limit, period, refill?, start?} | {remaining} | null (no quota) */
  quota?: unknown;
  /** the name of an existing group; null or '' = none */
  group?: unknown;
  expiresAt?: unknown;
  isActive?: unknown;
}

/** Input to a group's create/update (CLI flags, JSON bodies, groups.declared): checked here. */
export interface GroupInput {
  name?: unknown;
  description?: unknown;
  /** requests per minute shared by the group's keys; null or '' = none */
  rateLimit?: unknown;
  /** as a key's quota; null = none */
  quota?: unknown;
}

/** A group as the admin APIs and the CLI show it: the group, its member count and its quota now. */
export interface GroupStatus extends KeyGroup {
  keys: number;
  /** what is left of the group's quota and when it refills; null without a quota */
  quotaStatus: QuotaStatus | null;
}

/** The key service's rules: keys, and the groups declared in the YAML (groups.declared). */
export type ServiceConfig = KeysConfig & { declaredGroups?: DeclaredGroupConfig[] | undefined };

/** What the key service needs of a gateway configuration. */
export function serviceConfig(cfg: Pick<GatewayConfig, 'keys' | 'groups'>): ServiceConfig {
  return cfg.groups?.declared === undefined ? cfg.keys : { ...cfg.keys, declaredGroups: cfg.groups.declared };
}

/** A listing's query, as given by a CLI flag or a query parameter: checked here. */
export interface PageQuery {
  limit?: unknown;
  cursor?: unknown;
  workspace?: string | undefined;
  /** only keys whose name or key prefix contains this (case-insensitive); '' = every key */
  q?: unknown;
  /** only keys with this status now: active, inactive or expired */
  status?: unknown;
  /** only the keys of this group */
  group?: unknown;
}

export interface CreatedKey {
  key: ApiKey;
  /** the full secret: returned here once, never stored, never shown again */
  secret: string;
}

export interface RegeneratedKey extends CreatedKey {
  /** ISO 8601 end of the grace period during which the previous secret still works; null = none */
  previousValidUntil: string | null;
}

/** Who makes a change: a plain string ("cli:alice") or an id with the client's address (admin API). */
export type Actor = string | { id: string; remoteAddress?: string | null };

/** Where audit records go: the store (listed by GET /api/audit) and a log line. */
export interface AuditOptions {
  store?: AuditStore;
  /** called with every record before it is stored */
  log?: (record: AuditRecord) => void;
}

/** Longest grace period a regenerate may give the previous secret (one day). */
export const MAX_GRACE_SECONDS = 86_400;
/** The actor of changes made by syncing keys.declared from the config file. */
export const CONFIG_ACTOR = 'config';

/** Fields a create or update may set; also the fields an audit record compares. */
const EDITABLE = [
  'name',
  'description',
  'scopes',
  'role',
  'workspace',
  'workspaceAccess',
  'surfaces',
  'attributionClass',
  'serviceAccountName',
  'ownerUserId',
  'rateLimit',
  'quota',
  'group',
  'expiresAt',
  'isActive',
] as const satisfies readonly (keyof ApiKey)[];
type Editable = (typeof EDITABLE)[number];

const WORKSPACE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const DATE_ONLY = /^(\d{4})-(\d{2})-(\d{2})$/;
/** Keys in a page of a listing when the caller does not say, and at most. */
export const DEFAULT_PAGE = 100;
export const MAX_PAGE = 1000;
/** Bound on remembered unknown digests, so a flood of random keys cannot grow memory. */
const MAX_UNKNOWN = 10_000;
/** Bound on cached answers (and on the snapshot file). */
const MAX_CACHED = 100_000;

/** Whether a key is scoped to a workspace: bound to it, or granted it. */
function inWorkspace(k: ApiKey, ws: string): boolean {
  return k.workspace !== null ? k.workspace === ws : k.workspaceAccess.grants.some((g) => g.workspace === ws);
}

export function publicKey(stored: StoredKey): ApiKey {
  const { digest: _digest, previousDigest: _previous, previousDigestExpiresAt: _until, ...key } = stored;
  return key;
}

/** {field: {from, to}} for the editable fields that differ. */
function changes(before: ApiKey, after: Pick<ApiKey, Editable>): Record<string, { from: unknown; to: unknown }> {
  const out: Record<string, { from: unknown; to: unknown }> = {};
  for (const f of EDITABLE) {
    if (JSON.stringify(before[f]) !== JSON.stringify(after[f])) out[f] = { from: before[f], to: after[f] };
  }
  return out;
}

/** The editable fields of a key, for an audit record (no secret, no digest). */
function auditView(k: ApiKey): Record<string, unknown> {
  const out: Record<string, unknown> = { prefix: k.prefix };
  for (const f of EDITABLE) out[f] = k[f];
  return out;
}

// ---- validation: each returns the clean value or throws ValidationError naming the field ----

function str(field: string, v: unknown, min: number, max: number): string {
  if (typeof v !== 'string') throw new ValidationError(field, 'must be a string');
  const s = v.trim();
  if (s.length < min) throw new ValidationError(field, min === 1 ? 'is required' : `must be at least ${min} characters`);
  if (s.length > max) throw new ValidationError(field, `must be at most ${max} characters`);
  return s;
}

function optionalStr(field: string, v: unknown, max: number): string | null {
  if (v === undefined || v === null || v === '') return null;
  return str(field, v, 1, max);
}

function listOf<T extends string>(field: string, v: unknown, is: (x: unknown) => x is T, allowed: readonly string[]): T[] {
  const items = typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : v;
  if (!Array.isArray(items) || items.length === 0) {
    throw new ValidationError(field, `must name at least one of ${allowed.join(', ')}`);
  }
  const out: T[] = [];
  for (const item of items) {
    if (!is(item)) throw new ValidationError(field, `"${String(item)}" is not one of ${allowed.join(', ')}`);
    if (!out.includes(item)) out.push(item);
  }
  return out;
}

function role(field: string, v: unknown) {
  if (!isRole(v)) throw new ValidationError(field, 'must be one of viewer, operator, developer, manager, admin');
  return v;
}

function workspaceName(field: string, v: unknown): string {
  if (typeof v !== 'string' || !WORKSPACE_NAME.test(v)) {
    throw new ValidationError(field, 'must be a workspace name (letters, digits, "_", "-", "."; at most 128)');
  }
  // "all" is how a request asks for every workspace; a grant of it could never be used.
  if (v === 'all') throw new ValidationError(field, '"all" is reserved: use workspaceAccess {"all": true} for every workspace');
  return v;
}

function workspaceAccess(v: unknown): WorkspaceAccess {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new ValidationError('workspaceAccess', 'must be an object {all, grants}');
  }
  const o = v as { all?: unknown; grants?: unknown };
  const all = o.all === undefined ? !Array.isArray(o.grants) || o.grants.length === 0 : o.all;
  if (typeof all !== 'boolean') throw new ValidationError('workspaceAccess.all', 'must be true or false');
  const grantsIn = o.grants ?? [];
  if (!Array.isArray(grantsIn)) throw new ValidationError('workspaceAccess.grants', 'must be a list');
  if (all && grantsIn.length > 0) throw new ValidationError('workspaceAccess.grants', 'must be empty when all is true');
  if (!all && grantsIn.length === 0) throw new ValidationError('workspaceAccess.grants', 'must name at least one workspace when all is false');
  // every grant is checked: a form shows each grant's problem at once
  const problems = new Problems();
  const seen = new Set<string>();
  const grants = grantsIn.map((g: unknown, i: number) => {
    const field = `workspaceAccess.grants[${i}]`;
    if (typeof g !== 'object' || g === null) {
      problems.add(field, 'must be {workspace, role}');
      return undefined;
    }
    const { workspace, role: r } = g as { workspace?: unknown; role?: unknown };
    const ws = problems.check(() => workspaceName(`${field}.workspace`, workspace));
    if (ws !== undefined && seen.has(ws)) problems.add(`${field}.workspace`, `"${ws}" is granted twice`);
    if (ws !== undefined) seen.add(ws);
    const gr = problems.check(() => role(`${field}.role`, r));
    if (gr === 'admin') problems.add(`${field}.role`, 'admin cannot be granted per workspace');
    return ws === undefined || gr === undefined ? undefined : { workspace: ws, role: gr };
  });
  problems.throwIfAny();
  return { all, grants: grants as WorkspaceGrant[] };
}

/** The search text of a listing, lower-case; undefined for none. */
function searchText(v: unknown): string | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw new ValidationError('q', 'must be a string');
  const s = v.trim();
  if (s.length > 100) throw new ValidationError('q', 'must be at most 100 characters');
  return s === '' ? undefined : s.toLowerCase();
}

function keyStatusFilter(v: unknown): KeyStatus {
  if (typeof v !== 'string' || !(KEY_STATUSES as readonly string[]).includes(v)) {
    throw new ValidationError('status', `must be one of ${KEY_STATUSES.join(', ')}`);
  }
  return v as KeyStatus;
}

/** A whole number from min to max, given as a number or a string of digits (a CLI flag, a query). */
function wholeNumber(field: string, v: unknown, min: number, max: number, unit: string): number {
  const n = typeof v === 'string' && /^\s*\d+\s*$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
    throw new ValidationError(field, `must be a whole number of ${unit} from ${min} to ${max}`);
  }
  return n;
}

function rateLimit(v: unknown, limits: KeysConfig['rate_limit']): number {
  return wholeNumber('rateLimit', v, limits.min, limits.max, 'requests per minute');
}

const DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2})$/;

/** Whether y-m-d names a real calendar day (Date.parse would roll 2031-02-30 over to March). */
function realDay(y: string, m: string, d: string): boolean {
  const t = new Date(Date.UTC(Number(y), Number(m) - 1, Number(d)));
  return t.getUTCFullYear() === Number(y) && t.getUTCMonth() === Number(m) - 1 && t.getUTCDate() === Number(d);
}

/**
 * ISO instant of a date (00:00 UTC of that day) or an ISO 8601 date-time with an explicit offset
 * (never the server's local time); null when empty.
 */
function parseInstant(field: string, v: unknown): string | null {
  if (v === undefined || v === null || v === '') return null;
  const shape = 'must be a date (YYYY-MM-DD) or an ISO 8601 date-time with an offset (2031-01-31T12:00:00Z)';
  if (typeof v !== 'string') throw new ValidationError(field, shape);
  const date = DATE_ONLY.exec(v);
  const dateTime = date ? null : DATE_TIME.exec(v);
  const parts = date ?? dateTime;
  if (!parts || !realDay(v.slice(0, 4), v.slice(5, 7), v.slice(8, 10))) throw new ValidationError(field, `"${v}" ${shape}`);
  if (dateTime && (Number(dateTime[4]) > 23 || Number(dateTime[5]) > 59 || Number(dateTime[6] ?? 0) > 59)) {
    throw new ValidationError(field, `"${v}" is not a valid time of day`);
  }
  const ms = Date.parse(date ? `${v}T00:00:00Z` : v);
  if (Number.isNaN(ms)) throw new ValidationError(field, `"${v}" ${shape}`);
  return new Date(ms).toISOString();
}

/** The ISO instant of an expiry (see parseInstant); must be in the future. */
export function parseExpiry(v: unknown, nowMs: number, requireFuture = true): string | null {
  const at = parseInstant('expiresAt', v);
  if (at !== null && requireFuture && Date.parse(at) <= nowMs) throw new ValidationError('expiresAt', 'must be in the future (a date after today)');
  return at;
}

/** Largest quota limit or balance (far beyond any real use, well inside exact integers everywhere). */
export const MAX_QUOTA = 1_000_000_000_000;

/** A value from a fixed list (a CLI flag, a JSON field). */
function oneOf<T extends string>(field: string, v: unknown, allowed: readonly T[]): T {
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) throw new ValidationError(field, `must be one of ${allowed.join(', ')}`);
  return v as T;
}

/**
 * A key's quota: {limit, period, refill (default reset), start (optional anchor)} or {remaining}
 * (one-time credits); null, '' or false = none. Errors name the member (quota.limit…).
 */
export function parseQuota(v: unknown): Quota | null {
  if (v === undefined || v === null || v === '' || v === false) return null;
  if (typeof v !== 'object' || Array.isArray(v)) {
    throw new ValidationError('quota', 'must be {limit, period, refill, start} or {remaining}, or null for none');
  }
  const o = v as Record<string, unknown>;
  const p = new Problems();
  const members = ['limit', 'period', 'refill', 'start', 'remaining'];
  for (const name of Object.keys(o)) {
    if (!members.includes(name)) p.add(`quota.${name}`, `unknown field; allowed: ${members.join(', ')}`);
  }
  const given = (name: string) => o[name] !== undefined && o[name] !== null && o[name] !== '';
  if (given('remaining')) {
    for (const name of ['limit', 'period', 'refill', 'start'].filter(given)) {
      p.add(`quota.${name}`, 'a one-time quota (remaining) has no limit, period, refill or start: give one kind');
    }
    const remaining = p.check(() => wholeNumber('quota.remaining', o['remaining'], 0, MAX_QUOTA, 'requests'));
    p.throwIfAny();
    return { remaining: remaining! };
  }
  // every problem of the quota at once, like the key's other fields
  const limit = given('limit')
    ? p.check(() => wholeNumber('quota.limit', o['limit'], 1, MAX_QUOTA, 'requests'))
    : p.add('quota.limit', 'is required (with period), or give remaining for one-time credits');
  const period = given('period') ? p.check(() => oneOf('quota.period', o['period'], QUOTA_PERIODS)) : p.add('quota.period', `is required: one of ${QUOTA_PERIODS.join(', ')}`);
  const refill = given('refill') ? p.check(() => oneOf('quota.refill', o['refill'], QUOTA_REFILLS)) : 'reset';
  const start = p.check(() => parseInstant('quota.start', o['start']));
  p.throwIfAny();
  return { limit: limit!, period: period!, refill: refill!, start: start ?? null };
}

/** Highest group rate limit (requests per minute shared by its keys). */
export const MAX_GROUP_RATE = 100_000_000;

/** A group's name: the rules of key names. */
function groupName(field: string, v: unknown): string {
  return str(field, v, 1, 100);
}

/** A key's `group` field: undefined = not given, null = none, else a group name (its existence is checked apart). */
function groupRef(v: unknown): string | null | undefined {
  if (v === undefined) return undefined;
  if (v === null || v === '' || v === false) return null;
  return groupName('group', v);
}

/** A group's rate limit: null (none) or requests per minute from 1. */
function groupRate(v: unknown): number | null {
  if (v === undefined || v === null || v === '' || v === false) return null;
  return wholeNumber('rateLimit', v, 1, MAX_GROUP_RATE, 'requests per minute');
}

function attribution(cls: unknown): AttributionClass {
  if (cls !== 'service_account' && cls !== 'user_owned') {
    throw new ValidationError('attributionClass', 'must be service_account or user_owned');
  }
  return cls;
}

/**
 * Cross-field rules, checked on the key as it would be after a create or update. A rule is not
 * judged on a field that already has a problem of its own (its value is not known).
 */
function checkConsistency(k: Partial<Omit<StoredKey, 'digest'>>, p: Problems): void {
  const known = (...fields: string[]) => fields.every((f) => !p.has(f));
  if (known('workspaceAccess', 'role') && k.workspaceAccess && !k.workspaceAccess.all && k.role !== 'viewer') {
    p.add('role', 'a key with per-workspace grants must have the top-level role viewer');
  }
  if (known('workspace', 'workspaceAccess') && k.workspace != null && k.workspaceAccess && !k.workspaceAccess.all) {
    p.add('workspace', 'a key is bound to one workspace or has workspace grants, not both');
  }
  if (known('attributionClass', 'ownerUserId') && k.attributionClass === 'user_owned' && !k.ownerUserId) {
    p.add('ownerUserId', 'is required for a user_owned key');
  }
  if (known('attributionClass', 'serviceAccountName', 'name') && k.attributionClass === 'service_account' && !k.serviceAccountName) {
    p.add('serviceAccountName', 'is required for a service_account key');
  }
}

/** A cached answer: the key (or null: no key has this digest) and the store epoch it was read in. */
interface CacheEntry {
  access: KeyAccess | null;
  /** what it was built from, for the local snapshot (digests, never a secret) */
  stored: StoredKey | null;
  /** the key's group as read with it (null: none) */
  group: KeyGroup | null;
  /** the epoch it was validated in; older entries are revalidated, and served only if that fails */
  epoch: number;
}

/** The store could not answer and nothing usable was cached: the request gets 503. */
export class KeyStoreUnavailableError extends KeygateError {
  constructor(reason: string) {
    super('unavailable', 503, `the key store is unreachable and this key is not known to this instance (${reason}); retry shortly`);
  }
}

/** One line of the local snapshot file: a key as last read from the store, found by `digest`. */
export interface SnapshotEntry {
  digest: string;
  key: StoredKey | null;
  /** the key's group (its limits); absent in snapshots from before groups */
  group?: KeyGroup | null;
}

export interface CacheOptions {
  /** how long into a store outage cached keys are still served (ms, default 300 s) */
  staleTtlMs?: number;
}

export class KeyService {
  /** digest → last known answer; bounded by MAX_CACHED (unknown digests by MAX_UNKNOWN) */
  private readonly cache = new Map<string, CacheEntry>();
  /** key id → the digests cached for it (two during a regenerate's grace period) */
  private readonly digestsById = new Map<string, Set<string>>();
  private unknownCount = 0;
  /** bumped on every invalidation so a lookup started before it does not refill stale data */
  private generation = 0;
  private mark: number;
  /**
   * Entries validated in an older epoch are revalidated on their next lookup. The epoch moves when
   * the store says changes may have been missed (another process wrote SQLite, a Redis reconnect
   * or disconnect); the entries stay, so a failed revalidation can still serve them.
   */
  private epoch = 1;
  /** when the current run of store failures began (stale answers are bounded from there) */
  private failingSince: number | undefined;
  private lastFailure = '';
  private staleTtlMs: number;

  constructor(
    readonly store: KeyStore,
    private config: ServiceConfig,
    private readonly now: () => number = Date.now,
    private readonly audit: AuditOptions = {},
    cache: CacheOptions = {},
  ) {
    this.mark = store.changeMark();
    this.staleTtlMs = cache.staleTtlMs ?? 300_000;
    // a change of one key (told by a networked store): forget it; revocations apply at once
    // (a group's change is told as "group:<name>": its keys are forgotten)
    store.onKeyChanged?.((id) => (id.startsWith(GROUP_CHANGE) ? this.invalidateGroup(id.slice(GROUP_CHANGE.length)) : this.invalidate(id)));
  }

  // ---------------------------------------------------------------- request path

  /** key-cache lookups answered from memory or from the store, and stale answers during outages */
  readonly cacheStats = { hits: 0, misses: 0, stale: 0 };

  /**
   * The key for a secret's digest: from the cache when it can (synchronously), else from the store.
   * null = no such key. Changes made by another process (the CLI) are noticed on the next call.
   * A previous secret kept for a regenerate's grace period resolves until the grace ends, not after,
   * cached or not. While the store fails, the last known answer is served for store.stale_ttl
   * (counted in cacheStats.stale); a digest never seen rejects with KeyStoreUnavailableError.
   */
  lookup(digest: string): KeyAccess | null | Promise<KeyAccess | null> {
    return this.lookupAt(this.store.changeMark(), digest);
  }

  /**
   * lookup() for the request path: the store's change mark is read once per event-loop turn, not
   * once per request (on SQLite, a read of the -shm file each time). Every request handled in a
   * turn was received before that turn's first read, so a change committed by another process
   * before a request arrived is still seen by it; changes made through this service apply at once.
   */
  lookupForRequest(digest: string): KeyAccess | null | Promise<KeyAccess | null> {
    let mark = this.turnMark;
    if (mark === undefined) {
      mark = this.turnMark = this.store.changeMark();
      setImmediate(this.endTurn);
    }
    return this.lookupAt(mark, digest);
  }

  /** the change mark read in this event-loop turn (lookupForRequest); undefined once the turn ends */
  private turnMark: number | undefined = undefined;
  private readonly endTurn = (): void => {
    this.turnMark = undefined;
  };

  private lookupAt(mark: number, digest: string): KeyAccess | null | Promise<KeyAccess | null> {
    if (mark !== this.mark) {
      this.mark = mark;
      this.epoch++;
    }
    const hit = this.cache.get(digest);
    if (hit !== undefined && hit.access !== null && !(hit.access.validUntilMs === Infinity || hit.access.validUntilMs > this.now())) {
      this.invalidate(hit.access.key.id); // grace over: the store no longer matches this digest either
    } else if (hit !== undefined && hit.epoch === this.epoch) {
      this.cacheStats.hits++;
      return hit.access;
    }
    this.cacheStats.misses++;
    return this.fill(digest);
  }

  private async fill(digest: string): Promise<KeyAccess | null> {
    const gen = this.generation;
    const epoch = this.epoch;
    let stored: StoredKey | undefined;
    let group: KeyGroup | null = null;
    try {
      stored = await this.store.findByDigest(digest, this.now());
      // the group's limits travel with the key: read once per cache fill, never per request
      if (stored?.group) group = (await this.store.getGroup(stored.group)) ?? null;
    } catch (err) {
      return this.stale(digest, err);
    }
    this.failingSince = undefined;
    const access = stored ? accessOf(stored, stored.digest !== digest, group) : null;
    if (gen === this.generation) this.remember(digest, access, stored ?? null, epoch, group);
    return access;
  }

  /** The store failed: the last known answer while within stale_ttl of the failures' start. */
  private stale(digest: string, err: unknown): KeyAccess | null {
    const now = this.now();
    this.failingSince ??= now;
    this.lastFailure = err instanceof Error ? err.message : String(err);
    const known = this.cache.get(digest);
    if (known === undefined || now - this.failingSince > this.staleTtlMs) throw new KeyStoreUnavailableError(this.lastFailure);
    this.cacheStats.stale++;
    return known.access;
  }

  private remember(digest: string, access: KeyAccess | null, stored: StoredKey | null, epoch: number, group: KeyGroup | null = null): void {
    const before = this.cache.get(digest);
    if (before?.access === null) this.unknownCount--;
    if (before === undefined && this.cache.size >= MAX_CACHED) this.evictUnknown();
    this.cache.set(digest, { access, stored, epoch, group });
    if (access) {
      const digests = this.digestsById.get(access.key.id);
      if (digests) digests.add(digest);
      else this.digestsById.set(access.key.id, new Set([digest]));
    } else if (++this.unknownCount > MAX_UNKNOWN) this.evictUnknown();
  }

  /** A digest that now opens a key (just created or regenerated) is no longer "unknown". */
  private forgetUnknown(digest: string): void {
    if (this.cache.get(digest)?.access !== null) return;
    this.cache.delete(digest);
    this.unknownCount--;
  }

  /** Drop the remembered unknown digests (a flood of random keys must not grow memory). */
  private evictUnknown(): void {
    for (const [d, e] of this.cache) if (e.access === null) this.cache.delete(d);
    this.unknownCount = 0;
  }

  /** Whether cached answers are being served stale, and why: for readiness and metrics. */
  get staleState(): { since: number; reason: string } | undefined {
    return this.failingSince === undefined ? undefined : { since: this.failingSince, reason: this.lastFailure };
  }

  /** Forget one key (after a change made through this service or told by the store). */
  invalidate(id: string): void {
    this.generation++;
    this.countsVersion++;
    const digests = this.digestsById.get(id);
    if (digests !== undefined) {
      for (const d of digests) this.cache.delete(d);
      this.digestsById.delete(id);
    }
  }

  /** Forget the cached keys of a group (its limits changed, or it was deleted). */
  invalidateGroup(name: string): void {
    this.generation++;
    const ids: string[] = [];
    for (const e of this.cache.values()) if (e.stored?.group === name) ids.push(e.stored.id);
    for (const id of ids) this.invalidate(id);
  }

  /** Revalidate every cached entry on its next lookup (a failed revalidation still serves it). */
  revalidate(): void {
    this.generation++;
    this.epoch++;
  }

  clearCache(): void {
    this.generation++;
    this.cache.clear();
    this.digestsById.clear();
    this.unknownCount = 0;
  }

  /** The known keys of the cache, for the local snapshot file (digests and fields, never a secret). */
  snapshot(limit = MAX_CACHED): SnapshotEntry[] {
    const out: SnapshotEntry[] = [];
    for (const [digest, e] of this.cache) {
      if (e.stored === null) continue;
      out.push(e.group === null ? { digest, key: e.stored } : { digest, key: e.stored, group: e.group });
      if (out.length >= limit) break;
    }
    return out;
  }

  /**
   * Load a snapshot (at start): its entries are unverified, so they are served only while the
   * store fails; otherwise the first lookup revalidates them. Returns how many were loaded.
   */
  restore(entries: readonly SnapshotEntry[]): number {
    let n = 0;
    for (const e of entries) {
      if (e.key === null || this.cache.has(e.digest)) continue;
      const viaPrevious = e.key.digest !== e.digest;
      if (viaPrevious && e.key.previousDigest !== e.digest) continue;
      const group = e.group ?? null;
      this.remember(e.digest, accessOf(e.key, viaPrevious, group), e.key, 0, group);
      n++;
    }
    return n;
  }

  /**
   * Revalidate the cached keys against the store now (at start and after a reconnect), so requests
   * find them fresh. Bounded concurrency; resolves with how many are still keys.
   */
  async warm(): Promise<number> {
    const digests = [...this.cache.keys()];
    let alive = 0;
    for (let i = 0; i < digests.length; i += 100) {
      const gen = this.generation;
      const epoch = this.epoch;
      const chunk = digests.slice(i, i + 100);
      // a failure ends the warm-up: the entries stay as they are (served stale while it lasts)
      const found = await Promise.all(chunk.map((d) => this.store.findByDigest(d, this.now())));
      const groups = await this.groupsOf(found);
      if (gen !== this.generation) continue;
      chunk.forEach((d, j) => {
        const stored = found[j];
        const group = stored?.group ? (groups.get(stored.group) ?? null) : null;
        this.remember(d, stored ? accessOf(stored, stored.digest !== d, group) : null, stored ?? null, epoch, group);
        if (stored) alive++;
      });
    }
    this.failingSince = undefined;
    return alive;
  }

  /** The groups of some keys, each read once. */
  private async groupsOf(keys: readonly (StoredKey | undefined)[]): Promise<Map<string, KeyGroup>> {
    const names = new Set<string>();
    for (const k of keys) if (k?.group) names.add(k.group);
    const out = new Map<string, KeyGroup>();
    for (const name of names) {
      const g = await this.store.getGroup(name);
      if (g) out.set(name, g);
    }
    return out;
  }

  // ---------------------------------------------------------------- management

  /** keys.max_keys reached: a LimitError (403) before anything else is looked at. */
  private async checkKeyLimit(): Promise<void> {
    const max = this.config.max_keys;
    if (max === undefined) return;
    const n = await this.store.count();
    if (n >= max) {
      throw new LimitError(
        `${n} API keys exist and the configured limit (keys.max_keys) is ${max}: delete a key you no longer use or raise keys.max_keys to create more. Existing keys keep working.`,
      );
    }
  }

  async create(input: KeyInput, actor: Actor): Promise<CreatedKey> {
    await this.checkKeyLimit();
    const p = new Problems();
    const fields = p.check(() => this.build(input, actorId(actor), true));
    await this.knownGroup(input.group, p);
    p.throwIfAny();
    const secret = generateSecret(this.config.prefix);
    const stored: StoredKey = {
      ...fields!,
      id: randomUUID(),
      digest: digestSecret(secret),
      prefix: displayPrefix(secret),
      managedBy: 'api',
    };
    await this.store.insert(stored);
    this.forgetUnknown(stored.digest);
    this.adminCache = undefined;
    this.countsVersion++;
    const key = publicKey(stored);
    await this.record('create', key, actor, auditView(key));
    return { key, secret };
  }

  /**
   * A dry run of create: what create would refuse, with every field's problem at once (a taken
   * name among them); nothing is stored or audited. Resolves when create would succeed.
   * `known` are problems the caller found already (e.g. wrongly typed JSON fields): they are
   * reported with the rest.
   */
  async checkCreate(input: KeyInput, known: readonly FieldError[] = []): Promise<void> {
    await this.checkKeyLimit();
    const p = new Problems();
    p.list.push(...known);
    p.check(() => this.build(input, '', true));
    await this.knownGroup(input.group, p);
    await this.nameTaken(input.name, undefined, p);
  }

  /** A dry run of update (see checkCreate). */
  async checkUpdate(idOrName: string, input: KeyInput, known: readonly FieldError[] = []): Promise<void> {
    const current = await this.findChangeable(idOrName);
    const p = new Problems();
    p.list.push(...known);
    p.check(() => this.plan(current, input));
    await this.knownGroup(input.group, p);
    await this.nameTaken(input.name, current.id, p);
  }

  /** A key's group must exist: a problem at `group` naming it otherwise (none when the field has a problem of its own). */
  private async knownGroup(v: unknown, p: Problems): Promise<void> {
    if (typeof v !== 'string' || p.has('group')) return;
    const name = v.trim();
    if (name === '' || (await this.store.getGroup(name)) !== undefined) return;
    p.add('group', `no group named "${name}"; create it first (keygate groups create ${name}) or leave the key without a group`);
  }

  /**
   * Ends a dry run: a name another key holds joins the other problems (400); alone it is the 409
   * the real call would answer.
   */
  private async nameTaken(nameIn: unknown, ownId: string | undefined, p: Problems): Promise<void> {
    // (an update that does not rename: nameIn is undefined, and only the other problems count)
    const name = typeof nameIn === 'string' ? nameIn.trim() : '';
    const other = name && !p.has('name') ? await this.store.getByName(name) : undefined;
    const taken = other !== undefined && other.id !== ownId;
    if (taken && p.list.length === 0) throw new ConflictError(`a key named "${name}" already exists`, 'name');
    if (taken) p.add('name', `a key named "${name}" already exists`);
    p.throwIfAny();
  }

  /** A new key's fields from input, checked (every problem at once); everything but id, digest, prefix and managedBy. */
  private build(input: KeyInput, by: string, requireFutureExpiry: boolean): Omit<StoredKey, 'id' | 'digest' | 'prefix' | 'managedBy'> {
    const nowIso = new Date(this.now()).toISOString();
    const p = new Problems();
    const name = p.check(() => str('name', input.name, 1, 100));
    const cls = input.attributionClass === undefined ? 'service_account' : p.check(() => attribution(input.attributionClass));
    const fields = {
      name,
      description: p.check(() => optionalStr('description', input.description, 500) ?? ''),
      scopes: input.scopes === undefined ? ['agents', 'workflows'] : p.check(() => listOf('scopes', input.scopes, isScope, ['agents', 'workflows'])),
      role: input.role === undefined ? 'viewer' : p.check(() => role('role', input.role)),
      workspace: input.workspace === undefined || input.workspace === null || input.workspace === '' ? null : p.check(() => workspaceName('workspace', input.workspace)),
      workspaceAccess: input.workspaceAccess === undefined ? { all: true, grants: [] } : p.check(() => workspaceAccess(input.workspaceAccess)),
      surfaces: input.surfaces === undefined || input.surfaces === null ? null : p.check(() => listOf('surfaces', input.surfaces, isSurface, ['rest_api', 'mcp', 'a2a'])),
      attributionClass: cls,
      serviceAccountName: cls === 'service_account' ? (p.check(() => optionalStr('serviceAccountName', input.serviceAccountName, 100)) ?? name) : null,
      ownerUserId: cls === 'user_owned' ? (p.check(() => optionalStr('ownerUserId', input.ownerUserId, 100)) ?? null) : null,
      rateLimit: input.rateLimit === undefined ? this.config.rate_limit.default : p.check(() => rateLimit(input.rateLimit, this.config.rate_limit)),
      quota: p.check(() => parseQuota(input.quota)),
      group: p.check(() => groupRef(input.group)) ?? null,
      expiresAt: p.check(() => parseExpiry(input.expiresAt, this.now(), requireFutureExpiry)),
      isActive: input.isActive === undefined ? true : p.check(() => bool('isActive', input.isActive)),
      requestCount: 0,
      lastUsedAt: null,
      createdAt: nowIso,
      updatedAt: nowIso,
      createdBy: by,
      updatedBy: by,
    };
    checkConsistency(fields as Partial<StoredKey>, p);
    p.throwIfAny();
    return fields as Omit<StoredKey, 'id' | 'digest' | 'prefix' | 'managedBy'>;
  }

  /**
   * One page of keys (default 100, at most 1000), or of the keys scoped to one workspace (bound to
   * it or granted it); `next` continues. Never reads more than a page's worth at a time from the
   * store, so a million keys cost what a hundred do.
   */
  async page(q: PageQuery = {}): Promise<{ keys: ApiKey[]; next: string | null }> {
    const limit = q.limit === undefined ? DEFAULT_PAGE : wholeNumber('limit', q.limit, 1, MAX_PAGE, 'keys');
    let cursor = q.cursor === undefined || q.cursor === '' ? undefined : str('cursor', q.cursor, 1, 200);
    const ws = q.workspace;
    const search = searchText(q.q);
    const status = q.status === undefined || q.status === '' ? undefined : keyStatusFilter(q.status);
    const group = q.group === undefined || q.group === '' ? undefined : groupName('group', q.group);
    const nowMs = this.now();
    const keys: ApiKey[] = [];
    for (;;) {
      const page = await this.store.page({ limit: limit - keys.length, cursor, search, status, nowMs, ...(group === undefined ? {} : { group }) });
      for (const k of page.keys) if (ws === undefined || inWorkspace(k, ws)) keys.push(publicKey(k));
      cursor = page.next ?? undefined;
      if (page.next === null || keys.length >= limit) return { keys, next: page.next };
    }
  }

  /** Every key, page by page (tests and small stores; the CLI and the APIs page). */
  async list(filter?: { workspace?: string; q?: string; status?: KeyStatus; group?: string }): Promise<ApiKey[]> {
    const all: ApiKey[] = [];
    let cursor: string | undefined;
    do {
      const p = await this.page({ limit: MAX_PAGE, cursor, workspace: filter?.workspace, q: filter?.q, status: filter?.status, group: filter?.group });
      all.push(...p.keys);
      cursor = p.next ?? undefined;
    } while (cursor !== undefined);
    return all;
  }

  /** Keys in the store (SELECT COUNT(*), HLEN): never a listing. */
  count(): Promise<number> {
    return this.store.count();
  }

  /**
   * How many keys there are by status (active, inactive, expired), of all keys or of those whose
   * name or prefix contains `q`. Remembered until a key changes or 5 s pass (a Redis store scans).
   */
  async counts(query: { q?: unknown } = {}): Promise<KeyCounts> {
    const search = searchText(query.q);
    const mark = this.store.changeMark();
    const c = this.countsCache;
    if (c !== undefined && c.search === search && c.version === this.countsVersion && c.mark === mark && this.now() - c.at < 5_000) return { ...c.counts };
    const version = this.countsVersion;
    const at = this.now();
    const counts = await this.store.counts(at, search);
    this.countsCache = { search, counts, version, mark, at };
    return { ...counts };
  }

  private countsCache: { search: string | undefined; counts: KeyCounts; version: number; mark: number; at: number } | undefined;
  /** moves on every change of a key made or told here: a remembered count from before it is not used */
  private countsVersion = 0;

  /**
   * Whether an active admin key exists; asked when an admin credential fails and no token is
   * configured (to say how to set one up). Remembered until a key changes or 10 s pass, so a flood
   * of wrong credentials does not become a flood of store scans.
   */
  async hasActiveAdmin(): Promise<boolean> {
    const c = this.adminCache;
    const mark = this.store.changeMark();
    if (c !== undefined && c.generation === this.generation && c.mark === mark && this.now() - c.at < 10_000) return c.answer;
    const generation = this.generation;
    const answer = await this.store.hasActiveAdmin(this.now());
    this.adminCache = { answer, generation, mark, at: this.now() };
    return answer;
  }

  private adminCache: { answer: boolean; generation: number; mark: number; at: number } | undefined;

  /** A key by id, or by exact name (what a person at the CLI knows). */
  async get(idOrName: string): Promise<ApiKey> {
    return publicKey(await this.find(idOrName));
  }

  private async find(idOrName: string): Promise<StoredKey> {
    const key = (await this.store.get(idOrName)) ?? (await this.store.getByName(idOrName));
    if (!key) throw new NotFoundError(`no API key with id or name "${idOrName}"`);
    return key;
  }

  /** A key that may be changed: keys declared in the YAML are changed there, not through the service. */
  private async findChangeable(idOrName: string): Promise<StoredKey> {
    const key = await this.find(idOrName);
    if (key.managedBy === 'config') {
      throw new ConflictError(`API key "${key.name}" is declared in the configuration file; change it there`);
    }
    return key;
  }

  /** The patch an update would apply to `current`, checked (every problem at once). */
  private plan(current: StoredKey, input: KeyInput): KeyPatch {
    const p = new Problems();
    const patch: KeyPatch = {};
    const set = <K extends keyof KeyPatch>(field: K, check: () => KeyPatch[K]): void => {
      const before = p.list.length;
      const v = p.check(check);
      if (p.list.length === before) patch[field] = v;
    };
    if (input.name !== undefined) set('name', () => str('name', input.name, 1, 100));
    if (input.description !== undefined) set('description', () => optionalStr('description', input.description, 500) ?? '');
    if (input.scopes !== undefined) set('scopes', () => listOf('scopes', input.scopes, isScope, ['agents', 'workflows']));
    if (input.role !== undefined) set('role', () => role('role', input.role));
    if (input.workspace !== undefined) {
      set('workspace', () => (input.workspace === null || input.workspace === '' ? null : workspaceName('workspace', input.workspace)));
    }
    if (input.workspaceAccess !== undefined) set('workspaceAccess', () => workspaceAccess(input.workspaceAccess));
    if (input.surfaces !== undefined) {
      set('surfaces', () => (input.surfaces === null ? null : listOf('surfaces', input.surfaces, isSurface, ['rest_api', 'mcp', 'a2a'])));
    }
    if (input.attributionClass !== undefined) set('attributionClass', () => attribution(input.attributionClass));
    if (input.serviceAccountName !== undefined) set('serviceAccountName', () => optionalStr('serviceAccountName', input.serviceAccountName, 100));
    if (input.ownerUserId !== undefined) set('ownerUserId', () => optionalStr('ownerUserId', input.ownerUserId, 100));
    if (input.rateLimit !== undefined) set('rateLimit', () => rateLimit(input.rateLimit, this.config.rate_limit));
    if (input.quota !== undefined) {
      const quota = p.check(() => parseQuota(input.quota));
      if (quota !== undefined && JSON.stringify(quota) !== JSON.stringify(current.quota)) patch.quota = quota;
    }
    if (input.group !== undefined) set('group', () => groupRef(input.group) ?? null);
    if (input.expiresAt !== undefined) set('expiresAt', () => parseExpiry(input.expiresAt, this.now()));
    if (input.isActive !== undefined) set('isActive', () => bool('isActive', input.isActive));
    const next = { ...current, ...patch };
    if (next.attributionClass === 'service_account' && !next.serviceAccountName) next.serviceAccountName = next.name;
    if (next.attributionClass === 'service_account') next.ownerUserId = null;
    else next.serviceAccountName = null;
    checkConsistency(next, p);
    p.throwIfAny();
    patch.serviceAccountName = next.serviceAccountName;
    patch.ownerUserId = next.ownerUserId;
    return patch;
  }

  async update(idOrName: string, input: KeyInput, actor: Actor): Promise<ApiKey> {
    const current = await this.findChangeable(idOrName);
    const p = new Problems();
    const patch = p.check(() => this.plan(current, input)) ?? {};
    await this.knownGroup(input.group, p);
    p.throwIfAny();
    patch.updatedAt = new Date(this.now()).toISOString();
    patch.updatedBy = actorId(actor);
    const updated = await this.apply(current.id, patch);
    const diff = changes(publicKey(current), updated);
    const fields = Object.keys(diff);
    // a change of isActive alone is what the key pages call Activate / Deactivate
    const action = fields.length === 1 && fields[0] === 'isActive' ? (updated.isActive ? 'activate' : 'deactivate') : 'update';
    await this.record(action, updated, actor, action === 'update' ? { changes: diff } : {});
    return updated;
  }

  async setActive(idOrName: string, active: boolean, actor: Actor): Promise<ApiKey> {
    const current = await this.findChangeable(idOrName);
    const key = await this.apply(current.id, { isActive: active, updatedAt: new Date(this.now()).toISOString(), updatedBy: actorId(actor) });
    await this.record(active ? 'activate' : 'deactivate', key, actor, {});
    return key;
  }

  /**
   * A new secret for the key. Without a grace period the old one stops working on the very next
   * request; with `graceSeconds` (0–86400) it keeps working until then and stops by itself. A
   * second regenerate ends the grace of the first: only the secret just replaced is kept.
   */
  async regenerate(idOrName: string, actor: Actor, opts: { graceSeconds?: unknown } = {}): Promise<RegeneratedKey> {
    const grace = opts.graceSeconds === undefined ? 0 : wholeNumber('graceSeconds', opts.graceSeconds, 0, MAX_GRACE_SECONDS, 'seconds');
    const current = await this.findChangeable(idOrName);
    const nowMs = this.now();
    const previousValidUntil = grace > 0 ? new Date(nowMs + grace * 1000).toISOString() : null;
    const secret = generateSecret(this.config.prefix);
    const digest = digestSecret(secret);
    const key = await this.apply(current.id, {
      digest,
      prefix: displayPrefix(secret),
      previousDigest: grace > 0 ? current.digest : null,
      previousDigestExpiresAt: previousValidUntil,
      updatedAt: new Date(nowMs).toISOString(),
      updatedBy: actorId(actor),
    });
    this.forgetUnknown(digest);
    await this.record('regenerate', key, actor, { prefix: { from: current.prefix, to: key.prefix }, graceSeconds: grace, previousValidUntil });
    return { key, secret, previousValidUntil };
  }

  async delete(idOrName: string, actor: Actor = 'unknown'): Promise<ApiKey> {
    const current = await this.findChangeable(idOrName);
    await this.store.delete(current.id);
    this.invalidate(current.id);
    const key = publicKey(current);
    await this.record('delete', key, actor, auditView(key));
    return key;
  }

  private async apply(id: string, patch: KeyPatch): Promise<ApiKey> {
    const updated = await this.store.update(id, patch);
    this.invalidate(id);
    if (!updated) throw new NotFoundError(`no API key with id "${id}"`);
    // a changed quota starts afresh (full) at the key's next request
    if (patch.quota !== undefined) await this.store.setQuotaState(keyQuotaOwner(id), undefined);
    return publicKey(updated);
  }

  // ---------------------------------------------------------------- keys declared in the config

  /**
   * Makes the store hold exactly the keys of keys.declared as config-managed keys: inserts new
   * ones, updates changed ones (secret included), deletes config-managed keys no longer declared.
   * Each change is audited with the actor "config". keys.max_keys does not apply: the config is the
   * operator's own statement. A declared name held by a key made through the API or CLI is a
   * ConflictError, rather than silently taking that key over.
   */
  /** New key rules after a configuration reload (prefix, rate-limit bounds, limits, declared keys). */
  setConfig(config: ServiceConfig): void {
    this.config = config;
  }

  async syncDeclared(): Promise<{ created: number; updated: number; deleted: number; groups: { created: number; updated: number; deleted: number } }> {
    // groups first (declared keys may name them), removed ones last (once no declared key names them)
    const groups = await this.syncDeclaredGroups();
    const keys = await this.syncDeclaredKeys();
    groups.deleted = await this.deleteUndeclaredGroups();
    return { ...keys, groups };
  }

  private async syncDeclaredKeys(): Promise<{ created: number; updated: number; deleted: number }> {
    const declared = this.config.declared ?? [];
    // only the config-managed keys and the declared names: a million other keys are not read
    const existing = (await this.store.page({ limit: MAX_PAGE, managedBy: 'config' })).keys;
    for (const d of declared) {
      if (existing.some((k) => k.name === d.name)) continue;
      const other = await this.store.getByName(d.name);
      if (other) existing.push(other);
    }
    const byName = new Map(existing.map((k) => [k.name, k]));
    const counts = { created: 0, updated: 0, deleted: 0 };
    for (const [i, d] of declared.entries()) {
      const current = byName.get(d.name);
      if (current && current.managedBy !== 'config') {
        throw new ConflictError(
          `keys.declared[${i}]: a key named "${d.name}" already exists and is managed through the API or CLI; delete it (keygate keys delete ${d.name}) or declare another name`,
        );
      }
      let fields;
      try {
        const p = new Problems();
        fields = p.check(() => this.build(declaredInput(d), CONFIG_ACTOR, false));
        await this.knownGroup(d.group, p);
        p.throwIfAny();
        fields = fields!;
      } catch (err) {
        if (err instanceof ValidationError) throw ValidationError.of(err.errors.map((e) => ({ field: `keys.declared[${i}].${configField(e.field)}`, reason: e.reason })));
        throw err;
      }
      const digest = d.secret !== undefined ? digestSecret(d.secret) : d.secret_digest!.toLowerCase();
      const prefix = d.secret !== undefined ? displayPrefix(d.secret) : '';
      if (!current) {
        const stored: StoredKey = { ...fields, id: randomUUID(), digest, prefix, managedBy: 'config' };
        await this.store.insert(stored);
        counts.created++;
        await this.record('create', stored, CONFIG_ACTOR, auditView(publicKey(stored)));
        continue;
      }
      const diff: Record<string, unknown> = changes(publicKey(current), fields);
      const patch: KeyPatch = {};
      for (const f of Object.keys(diff) as Editable[]) (patch as Record<string, unknown>)[f] = fields[f];
      if (current.digest !== digest) {
        Object.assign(patch, { digest, prefix, previousDigest: null, previousDigestExpiresAt: null });
        diff['secret'] = 'replaced';
      }
      if (Object.keys(patch).length === 0) continue;
      const updated = await this.apply(current.id, { ...patch, updatedAt: fields.updatedAt, updatedBy: CONFIG_ACTOR });
      counts.updated++;
      await this.record('update', updated, CONFIG_ACTOR, { changes: diff });
    }
    const names = new Set(declared.map((d) => d.name));
    for (const k of existing) {
      if (k.managedBy !== 'config' || names.has(k.name)) continue;
      await this.store.delete(k.id);
      this.invalidate(k.id);
      counts.deleted++;
      await this.record('delete', k, CONFIG_ACTOR, auditView(publicKey(k)));
    }
    this.evictUnknown();
    this.adminCache = undefined;
    this.countsVersion++;
    return counts;
  }

  // ---------------------------------------------------------------- groups

  /** A new group's fields from input, checked (every problem at once). */
  private buildGroup(input: GroupInput, by: string, managedBy: KeyGroup['managedBy']): KeyGroup {
    const p = new Problems();
    const nowIso = new Date(this.now()).toISOString();
    const group: KeyGroup = {
      name: p.check(() => groupName('name', input.name))!,
      description: p.check(() => optionalStr('description', input.description, 500) ?? '')!,
      rateLimit: p.check(() => groupRate(input.rateLimit)) ?? null,
      quota: p.check(() => parseQuota(input.quota)) ?? null,
      createdAt: nowIso,
      updatedAt: nowIso,
      createdBy: by,
      updatedBy: by,
      managedBy,
    };
    p.throwIfAny();
    return group;
  }

  /** The patch an update would apply to a group, checked (every problem at once); the name never changes. */
  private planGroup(current: KeyGroup, input: GroupInput): GroupPatch {
    const p = new Problems();
    const patch: GroupPatch = {};
    if (input.name !== undefined && input.name !== current.name) {
      p.add('name', `a group's name is its identity and cannot change (create a group "${String(input.name)}" and move the keys to it)`);
    }
    if (input.description !== undefined) {
      const d = p.check(() => optionalStr('description', input.description, 500) ?? '');
      if (d !== undefined && d !== current.description) patch.description = d;
    }
    if (input.rateLimit !== undefined) {
      const r = p.check(() => groupRate(input.rateLimit));
      if (r !== undefined && r !== current.rateLimit) patch.rateLimit = r;
    }
    if (input.quota !== undefined) {
      const q = p.check(() => parseQuota(input.quota));
      if (q !== undefined && JSON.stringify(q) !== JSON.stringify(current.quota)) patch.quota = q;
    }
    p.throwIfAny();
    return patch;
  }

  async createGroup(input: GroupInput, actor: Actor): Promise<KeyGroup> {
    const group = this.buildGroup(input, actorId(actor), 'api');
    await this.store.insertGroup(group);
    await this.recordGroup('group.create', group.name, actor, groupAuditView(group));
    return group;
  }

  /** A dry run of createGroup: every problem at once (a taken name among them); nothing stored. */
  async checkCreateGroup(input: GroupInput, known: readonly FieldError[] = []): Promise<void> {
    const p = new Problems();
    p.list.push(...known);
    p.check(() => this.buildGroup(input, '', 'api'));
    const name = typeof input.name === 'string' ? input.name.trim() : '';
    const taken = name !== '' && !p.has('name') && (await this.store.getGroup(name)) !== undefined;
    if (taken && p.list.length === 0) throw new ConflictError(`a group named "${name}" already exists`, 'name');
    if (taken) p.add('name', `a group named "${name}" already exists`);
    p.throwIfAny();
  }

  async updateGroup(name: string, input: GroupInput, actor: Actor): Promise<KeyGroup> {
    const current = await this.findChangeableGroup(name);
    const patch = this.planGroup(current, input);
    const diff = groupChanges(current, { ...current, ...patch });
    if (Object.keys(diff).length === 0) return current;
    const updated = await this.applyGroup(current.name, { ...patch, updatedAt: new Date(this.now()).toISOString(), updatedBy: actorId(actor) });
    await this.recordGroup('group.update', updated.name, actor, { changes: diff });
    return updated;
  }

  /** A dry run of updateGroup. */
  async checkUpdateGroup(name: string, input: GroupInput, known: readonly FieldError[] = []): Promise<void> {
    const current = await this.findChangeableGroup(name);
    const p = new Problems();
    p.list.push(...known);
    p.check(() => this.planGroup(current, input));
    p.throwIfAny();
  }

  /** Store a group's change; its keys' cached limits are dropped here (other instances: the store's change detection). */
  private async applyGroup(name: string, patch: GroupPatch): Promise<KeyGroup> {
    const updated = await this.store.updateGroup(name, patch);
    this.invalidateGroup(name);
    if (!updated) throw new NotFoundError(`no group named "${name}"`);
    // a changed quota starts afresh (full) at the group's next request
    if (patch.quota !== undefined) await this.store.setQuotaState(groupOwner(name), undefined);
    return updated;
  }

  /**
   * Delete a group. A group that still has keys is not deleted (409): move its keys to another
   * group or to none first (keygate keys update KEY --no-group), so no key loses a limit silently.
   */
  async deleteGroup(name: string, actor: Actor): Promise<KeyGroup> {
    const current = await this.findChangeableGroup(name);
    await this.refuseIfMembers(current.name, `delete it`);
    await this.store.deleteGroup(current.name);
    this.invalidateGroup(current.name);
    await this.recordGroup('group.delete', current.name, actor, groupAuditView(current));
    return current;
  }

  private async refuseIfMembers(name: string, what: string): Promise<void> {
    const n = await this.store.countGroupKeys(name);
    if (n > 0) {
      throw new ConflictError(
        `group "${name}" still has ${n} key${n === 1 ? '' : 's'}: move ${n === 1 ? 'it' : 'them'} to another group or to none (keygate keys update KEY --no-group, or PATCH the key with "group": null) before you ${what}`,
      );
    }
  }

  /** A group by name (404 when none). */
  async getGroup(name: string): Promise<KeyGroup> {
    const g = typeof name === 'string' ? await this.store.getGroup(name) : undefined;
    if (!g) throw new NotFoundError(`no group named "${name}"`);
    return g;
  }

  private async findChangeableGroup(name: string): Promise<KeyGroup> {
    const g = await this.getGroup(name);
    if (g.managedBy === 'config') throw new ConflictError(`group "${g.name}" is declared in the configuration file (groups.declared); change it there`);
    return g;
  }

  /** A group with its member count and its quota now. */
  async groupStatus(nameOrGroup: string | KeyGroup): Promise<GroupStatus> {
    const g = typeof nameOrGroup === 'string' ? await this.getGroup(nameOrGroup) : nameOrGroup;
    const [keys, quotaStatus] = await Promise.all([this.store.countGroupKeys(g.name), this.groupQuotaStatus(g)]);
    return { ...g, keys, quotaStatus };
  }

  /** Every group (by name) with its member count and its quota now. */
  async listGroups(): Promise<GroupStatus[]> {
    const groups = await this.store.listGroups();
    return Promise.all(groups.map((g) => this.groupStatus(g)));
  }

  async groupQuotaStatus(g: Pick<KeyGroup, 'name' | 'quota'>): Promise<QuotaStatus | null> {
    if (g.quota === null) return null;
    return statusOf(g.quota, await this.store.quotaState(groupOwner(g.name)), this.now());
  }

  /** Top up or reset a group's quota counter (as setQuotaRemaining for a key). Audited. */
  async setGroupQuotaRemaining(name: string, input: { remaining?: unknown; reset?: unknown }, actor: Actor): Promise<{ group: KeyGroup; status: QuotaStatus }> {
    const group = await this.getGroup(name);
    const { status, details } = await this.setRemaining(groupOwner(group.name), group.quota, `group "${group.name}"`, input);
    await this.recordGroup('group.quota', group.name, actor, details);
    return { group, status };
  }

  /** A top-up (`remaining`) or a reset of the quota counter of `owner`: the status after it and the audit details. */
  private async setRemaining(owner: string, quota: Quota | null, what: string, input: { remaining?: unknown; reset?: unknown }): Promise<{ status: QuotaStatus; details: Record<string, unknown> }> {
    if (quota === null) throw new ValidationError('quota', `${what} has no quota; set one first (quota {limit, period} or {remaining})`);
    const reset = input.reset === undefined ? false : bool('reset', input.reset);
    if (reset === (input.remaining !== undefined)) throw new ValidationError('remaining', 'give remaining (credits left now) or reset: true, one of them');
    const before = statusOf(quota, await this.store.quotaState(owner), this.now());
    if (reset) await this.store.setQuotaState(owner, undefined);
    else {
      const remaining = wholeNumber('remaining', input.remaining, 0, MAX_QUOTA, 'requests');
      await this.store.setQuotaState(owner, { balance: remaining, period: refill(undefined, tickOf(quota, this.now())).period });
    }
    const status = statusOf(quota, await this.store.quotaState(owner), this.now());
    return { status, details: { remaining: { from: before.remaining, to: status.remaining }, ...(reset ? { reset: true } : {}) } };
  }

  /** Makes the store hold the groups of groups.declared (created or updated; removals after the keys' sync). */
  private async syncDeclaredGroups(): Promise<{ created: number; updated: number; deleted: number }> {
    const counts = { created: 0, updated: 0, deleted: 0 };
    for (const [i, d] of (this.config.declaredGroups ?? []).entries()) {
      let fields: KeyGroup;
      try {
        fields = this.buildGroup(declaredGroupInput(d), CONFIG_ACTOR, 'config');
      } catch (err) {
        if (err instanceof ValidationError) throw ValidationError.of(err.errors.map((e) => ({ field: `groups.declared[${i}].${configField(e.field)}`, reason: e.reason })));
        throw err;
      }
      const current = await this.store.getGroup(fields.name);
      if (current && current.managedBy !== 'config') {
        throw new ConflictError(
          `groups.declared[${i}]: a group named "${fields.name}" already exists and is managed through the API or CLI; delete it (keygate groups delete ${fields.name}) or declare another name`,
        );
      }
      if (!current) {
        await this.store.insertGroup(fields);
        counts.created++;
        await this.recordGroup('group.create', fields.name, CONFIG_ACTOR, groupAuditView(fields));
        continue;
      }
      const diff = groupChanges(current, fields);
      if (Object.keys(diff).length === 0) continue;
      const patch: GroupPatch = { description: fields.description, rateLimit: fields.rateLimit, updatedAt: fields.updatedAt, updatedBy: CONFIG_ACTOR };
      if ('quota' in diff) patch.quota = fields.quota;
      await this.applyGroup(current.name, patch);
      counts.updated++;
      await this.recordGroup('group.update', current.name, CONFIG_ACTOR, { changes: diff });
    }
    return counts;
  }

  /** Config-managed groups no longer declared are deleted, unless keys still belong to them (ConflictError). */
  private async deleteUndeclaredGroups(): Promise<number> {
    const names = new Set((this.config.declaredGroups ?? []).map((d) => d.name.trim()));
    let deleted = 0;
    for (const g of await this.store.listGroups()) {
      if (g.managedBy !== 'config' || names.has(g.name)) continue;
      await this.refuseIfMembers(g.name, 'remove it from groups.declared');
      await this.store.deleteGroup(g.name);
      this.invalidateGroup(g.name);
      deleted++;
      await this.recordGroup('group.delete', g.name, CONFIG_ACTOR, groupAuditView(g));
    }
    return deleted;
  }

  // ---------------------------------------------------------------- quotas

  /** What is left of a key's quota now and when it refills; null for a key without a quota. */
  async quotaStatus(key: Pick<ApiKey, 'id' | 'quota'>): Promise<QuotaStatus | null> {
    if (key.quota === null) return null;
    return statusOf(key.quota, await this.store.quotaState(keyQuotaOwner(key.id)), this.now());
  }

  /** quotaStatus of each key, in order (a page of a listing). */
  quotaStatuses(keys: readonly Pick<ApiKey, 'id' | 'quota'>[]): Promise<(QuotaStatus | null)[]> {
    return Promise.all(keys.map((k) => this.quotaStatus(k)));
  }

  /**
   * Top up or reset a key's quota counter: `remaining` sets what is left in the current period
   * (the next refill still comes on time); `reset: true` forgets the counter, so it starts full.
   * The spec does not change, so keys declared in the config file can be topped up too. Audited.
   */
  async setQuotaRemaining(idOrName: string, input: { remaining?: unknown; reset?: unknown }, actor: Actor): Promise<{ key: ApiKey; status: QuotaStatus }> {
    const key = publicKey(await this.find(idOrName));
    const { status, details } = await this.setRemaining(keyQuotaOwner(key.id), key.quota, `API key "${key.name}"`, input);
    await this.record('quota', key, actor, details);
    return { key, status };
  }

  // ---------------------------------------------------------------- usage history

  /** A key's usage history (allowed / rate limited / forbidden) in hourly or daily buckets. */
  async usage(idOrName: string, query: UsageQuery): Promise<UsageSeries & { key: Pick<ApiKey, 'id' | 'name'> }> {
    const { bucket, fromMs, toMs } = usageRange(query, this.now());
    const key = await this.find(idOrName);
    const rows = await this.store.usageHistory(key.id, fromMs, toMs);
    return { key: { id: key.id, name: key.name }, ...usageSeries(rows, bucket, fromMs, toMs) };
  }

  /**
   * A group's usage history, the same series as a key's: what its member keys did while they
   * belonged to it (counted with each request, so a key that moved on or was deleted still counts).
   */
  async groupUsage(name: string, query: UsageQuery): Promise<UsageSeries & { group: Pick<KeyGroup, 'name'> }> {
    const { bucket, fromMs, toMs } = usageRange(query, this.now());
    const g = await this.getGroup(name);
    const rows = await this.store.usageHistory(groupOwner(g.name), fromMs, toMs);
    return { group: { name: g.name }, ...usageSeries(rows, bucket, fromMs, toMs) };
  }

  /** Remove usage history older than keys.usage_retention_days (default 30); resolves with how many hours went. */
  async pruneUsage(): Promise<number> {
    const days = this.config.usage_retention_days ?? 30;
    const cutoff = this.now() - days * DAY_MS;
    return this.store.pruneUsage(cutoff - (cutoff % HOUR_MS));
  }

  // ---------------------------------------------------------------- audit

  /** One record per change: logged, then stored. Never holds a secret or a digest. */
  private async record(action: AuditAction, key: Pick<ApiKey, 'id' | 'name'>, actor: Actor, details: Record<string, unknown>): Promise<void> {
    if (!this.audit.store && !this.audit.log) return;
    const record: AuditRecord = {
      id: randomUUID(),
      at: new Date(this.now()).toISOString(),
      actor: actorId(actor),
      action,
      key_id: key.id,
      key_name: key.name,
      remote_address: typeof actor === 'string' ? null : (actor.remoteAddress ?? null),
      details,
    };
    this.audit.log?.(record);
    await this.audit.store?.appendAudit(record);
  }

  /** A group's change, audited like a key's: key_id "group:<name>", key_name the group's name. */
  private recordGroup(action: AuditAction, name: string, actor: Actor, details: Record<string, unknown>): Promise<void> {
    return this.record(action, { id: groupOwner(name), name }, actor, details);
  }

  /** Remove audit records older than keys.audit_retention_days (none without it); resolves with how many. */
  async pruneAudit(): Promise<number> {
    const days = this.config.audit_retention_days;
    if (days === undefined || !this.audit.store) return 0;
    return this.audit.store.pruneAudit(new Date(this.now() - days * 86_400_000).toISOString());
  }

  /** A page of audit records, newest first; `next` continues with older ones (null: no more). */
  async auditPage(query: { limit: number; keyId?: string | undefined; cursor?: unknown }): Promise<{ records: AuditRecord[]; next: string | null }> {
    const cursor = query.cursor === undefined || query.cursor === '' ? undefined : str('cursor', query.cursor, 1, 100);
    if (!this.audit.store) return { records: [], next: null };
    return this.audit.store.pageAudit({ limit: query.limit, cursor, ...(query.keyId === undefined ? {} : { key_id: query.keyId }) });
  }

  /** Audit records, newest first (the audit store's own; empty when the service has none). */
  async auditTrail(query: { limit: number; keyId?: string }): Promise<AuditRecord[]> {
    if (!this.audit.store) return [];
    return this.audit.store.listAudit(query.keyId === undefined ? { limit: query.limit } : { limit: query.limit, key_id: query.keyId });
  }
}

/** How a group change is told through a store's change feed (key ids never start with it). */
const GROUP_CHANGE = 'group:';

const GROUP_EDITABLE = ['description', 'rateLimit', 'quota'] as const satisfies readonly (keyof KeyGroup)[];

function groupChanges(before: KeyGroup, after: KeyGroup): Record<string, { from: unknown; to: unknown }> {
  const out: Record<string, { from: unknown; to: unknown }> = {};
  for (const f of GROUP_EDITABLE) {
    if (JSON.stringify(before[f]) !== JSON.stringify(after[f])) out[f] = { from: before[f], to: after[f] };
  }
  return out;
}

function groupAuditView(g: KeyGroup): Record<string, unknown> {
  return { name: g.name, description: g.description, rateLimit: g.rateLimit, quota: g.quota };
}

/** A groups.declared entry as key-service input. */
function declaredGroupInput(d: DeclaredGroupConfig): GroupInput {
  return { name: d.name, description: d.description, rateLimit: d.rate_limit, quota: d.quota };
}

function actorId(actor: Actor): string {
  return typeof actor === 'string' ? actor : actor.id;
}

/** A keys.declared entry as key-service input. */
function declaredInput(d: DeclaredKeyConfig): KeyInput {
  const input: KeyInput = {
    name: d.name,
    description: d.description,
    scopes: d.scopes,
    role: d.role,
    workspace: d.workspace,
    surfaces: d.surfaces,
    rateLimit: d.rate_limit,
    quota: d.quota,
    group: d.group,
    expiresAt: d.expires_at,
    attributionClass: d.attribution,
    serviceAccountName: d.service_account_name,
    ownerUserId: d.owner_user_id,
  };
  if (d.grants !== undefined) input.workspaceAccess = { all: false, grants: d.grants };
  return input;
}

/** A key-service field as keys.declared spells it, for error messages. */
function configField(field: string): string {
  const map: Record<string, string> = {
    rateLimit: 'rate_limit',
    expiresAt: 'expires_at',
    attributionClass: 'attribution',
    serviceAccountName: 'service_account_name',
    ownerUserId: 'owner_user_id',
  };
  if (field.startsWith('workspaceAccess.grants')) return field.replace('workspaceAccess.grants', 'grants');
  if (field.startsWith('workspaceAccess')) return 'grants';
  return map[field] ?? field;
}

function bool(field: string, v: unknown): boolean {
  if (v === true || v === 'true') return true;
  if (v === false || v === 'false') return false;
  throw new ValidationError(field, 'must be true or false');
}
