// The storage contract every key store (SQLite now, Redis for several instances) fulfils.
// Async so that a networked store fits; the SQLite store answers synchronously inside.

import type { GroupPatch, KeyGroup } from './group.js';
import type { KeyStatus, StoredKey } from './model.js';
import type { QuotaCount, QuotaState, QuotaTick } from './quota.js';

/** Fields an update may change; the service decides which are allowed. */
export type KeyPatch = Partial<
  Pick<
    StoredKey,
    | 'name'
    | 'description'
    | 'scopes'
    | 'role'
    | 'workspace'
    | 'workspaceAccess'
    | 'surfaces'
    | 'attributionClass'
    | 'serviceAccountName'
    | 'ownerUserId'
    | 'rateLimit'
    | 'quota'
    | 'group'
    | 'expiresAt'
    | 'isActive'
    | 'digest'
    | 'prefix'
    | 'previousDigest'
    | 'previousDigestExpiresAt'
    | 'updatedAt'
    | 'updatedBy'
  >
>;

/** One key's requests within one clock hour (UTC), as counted for the usage history. */
export interface UsageHour {
  /** start of the hour, ms since the epoch (a multiple of 3,600,000) */
  hourMs: number;
  /** forwarded to the upstream (the same requests requestCount counts) */
  allowed: number;
  /** refused with 429 by the key's rate limit */
  limited: number;
  /** refused with 403: inactive, expired, or not allowed (scope, role, workspace, surface, method) */
  forbidden: number;
  /** refused with 429 because the key's quota was used up (quota_exceeded); absent = 0 (batches from before quotas) */
  quota?: number;
  /**
   * the key's group when these requests were counted: the store adds them to that group's history
   * too (owner `group:<name>`), in the same write; absent = no group
   */
  group?: string;
}

/** Usage gathered in memory, written in one batch: per key id. */
export interface UsageDelta {
  /** allowed requests: added to requestCount */
  count: number;
  /** ISO 8601 of the latest allowed use in the batch; '' when the batch holds refusals only */
  lastUsedAt: string;
  /** the same requests (and the refused ones) per hour, for the usage history; absent = none */
  hours?: UsageHour[];
}

/** A stored hour of the usage history (hour as ISO 8601). */
export interface UsageRow {
  hour: string;
  allowed: number;
  limited: number;
  forbidden: number;
  quota: number;
}

/** One page of keys in a stable order; `cursor` is the `next` of the page before (opaque). */
export interface KeyPageQuery {
  /** at most this many keys */
  limit: number;
  cursor?: string | undefined;
  /** only the keys declared in the configuration file (few: read without touching the others) */
  managedBy?: 'config';
  /** only keys that `keyMatches` this (lower-case) search text; a cursor belongs to one filter */
  search?: string;
  /** only keys with this status at `nowMs` */
  status?: KeyStatus;
  /** the instant `status` is judged at (default now) */
  nowMs?: number;
  /** only the keys of this group */
  group?: string;
}

/** How many keys there are, by status (the key page's header), of all keys or of those matching a search. */
export interface KeyCounts {
  total: number;
  active: number;
  inactive: number;
  expired: number;
}

export interface KeyPage {
  keys: StoredKey[];
  /** where the next page starts; null when this was the last */
  next: string | null;
}

/**
 * Quota counters by owner (a key's id; a group's later), exact across instances: one consume is
 * one atomic statement (SQLite) or script (Redis) that refills the balance for `t` (quota.ts
 * `refill`) and takes a credit only when one is left; a refused consume changes nothing.
 */
export interface QuotaCounters {
  /** SQLite answers synchronously (no promise on the request path); Redis with a promise. */
  consumeQuota(owner: string, t: QuotaTick): QuotaCount | Promise<QuotaCount>;
  /** The stored counter; undefined when never used (or reset: it starts full). */
  quotaState(owner: string): Promise<QuotaState | undefined>;
  /**
   * Give back one credit taken by consumeQuota in period `t.period` (a later stage refused the
   * request). Nothing happens once the counter moved to another period (the refill replaced it).
   */
  refundQuota(owner: string, t: QuotaTick): void | Promise<void>;
  /** Replace the counter (a top-up); undefined removes it, so it starts full at its next use. */
  setQuotaState(owner: string, state: QuotaState | undefined): Promise<void>;
}

/**
 * Key groups (group.ts), in the same store as the keys. The stores index keys by group, so a
 * group's member count and its keys are read without a scan of every key.
 */
export interface GroupStore {
  /** Throws ConflictError when the name is taken. */
  insertGroup(group: KeyGroup): Promise<void>;
  /** Undefined when no group has that name. */
  updateGroup(name: string, patch: GroupPatch): Promise<KeyGroup | undefined>;
  /** False when no group has that name. Removes the group's quota counter and usage history; its keys are the caller's concern. */
  deleteGroup(name: string): Promise<boolean>;
  getGroup(name: string): Promise<KeyGroup | undefined>;
  /** Every group, by name (groups are few: one per tenant). */
  listGroups(): Promise<KeyGroup[]>;
  /** How many keys belong to the group (an index read, not a scan). */
  countGroupKeys(name: string): Promise<number>;
}

export interface KeyStore extends QuotaCounters, GroupStore {
  /** Throws ConflictError when the name is taken. */
  insert(key: StoredKey): Promise<void>;
  /** Undefined when no key has that id. Throws ConflictError when a new name is taken. */
  update(id: string, patch: KeyPatch): Promise<StoredKey | undefined>;
  delete(id: string): Promise<boolean>;
  get(id: string): Promise<StoredKey | undefined>;
  getByName(name: string): Promise<StoredKey | undefined>;
  /**
   * The key whose current digest is `digest`, or whose previous digest (kept for a regenerate's
   * grace period) is `digest` and still valid at `nowMs`.
   */
  findByDigest(digest: string, nowMs?: number): Promise<StoredKey | undefined>;
  /** Every key at once: for tests and small stores only; nothing at start, reload or on a request calls it. */
  list(): Promise<StoredKey[]>;
  /** A page of keys; a million keys are read a page at a time. Throws ValidationError on a bad cursor. */
  page(query: KeyPageQuery): Promise<KeyPage>;
  /** Whether an active, unexpired key with the role admin exists (an indexed lookup, not a listing). */
  hasActiveAdmin(nowMs: number): Promise<boolean>;
  count(): Promise<number>;
  /** Keys by status at `nowMs`, of those that `keyMatches` `search` when given (SQLite: one aggregate query; Redis: a scan). */
  counts(nowMs: number, search?: string): Promise<KeyCounts>;
  /**
   * Add counts, move last-used forward (never back) and add the hourly history, all in one
   * transaction (SQLite) or one atomic script per chunk (Redis). A batch is applied at most once:
   * `batchId` is remembered (Redis: for a day), so a retry of a batch whose first attempt did reach
   * the store (e.g. answered after a timeout) or a spool replayed twice adds nothing.
   */
  addUsage(batch: ReadonlyMap<string, UsageDelta>, batchId: string): Promise<void>;
  /**
   * The usage history of a key (its id) or of a group (its owner, `group:<name>`) for the hours
   * from `fromMs` (inclusive) to `toMs` (exclusive), oldest first; hours without requests are absent.
   */
  usageHistory(owner: string, fromMs: number, toMs: number): Promise<UsageRow[]>;
  /** Remove the history of hours before `beforeMs`; resolves with how many hour rows went. */
  pruneUsage(beforeMs: number): Promise<number>;
  /**
   * A number that changes when another process changed the stored keys, read cheaply and
   * synchronously on the request path so a cache can tell it is stale.
   */
  changeMark(): number;
  /** Why the store cannot take changes now (read-only or corrupt file…), undefined when it can. Absent = always can. */
  fault?(): string | undefined;
  /** Resolves when a networked store is reachable; rejects after `ms`. Absent for local stores. */
  ready?(ms: number): Promise<void>;
  /** A networked store tells of a change to one key (made by any instance) as it happens. */
  onKeyChanged?(listener: (id: string) => void): void;
  /**
   * A networked store calls `listener` each time it becomes reachable again (and once it is first
   * reachable); `emptied` says the store lost its content (its marker key was gone).
   */
  onAvailable?(listener: (event: StoreAvailable) => void): void;
  /** A networked store: undefined while the request path reaches it, else why not. */
  unreachable?(): string | undefined;
  close(): Promise<void>;
}

export interface StoreAvailable {
  /** the store had been used before (its marker existed) and its content is gone now */
  emptied: boolean;
  /** first connection of this process (false: a reconnect) */
  first: boolean;
}

/** Audit: one record per change to a key, made through any path (admin APIs, CLI, config sync). */
export type AuditAction =
  | 'create'
  | 'update'
  | 'activate'
  | 'deactivate'
  | 'regenerate'
  | 'delete'
  | 'quota'
  /** a group's changes: key_id is "group:<name>", key_name the group's name */
  | 'group.create'
  | 'group.update'
  | 'group.delete'
  | 'group.quota';

export interface AuditRecord {
  id: string;
  /** ISO 8601 */
  at: string;
  /** "admin-token", "key:<id>", "cli:<user>", "config" */
  actor: string;
  action: AuditAction;
  key_id: string;
  key_name: string;
  /** the client's address for admin API calls; null for the CLI and the config sync */
  remote_address: string | null;
  /** what changed; never a secret */
  details: Record<string, unknown>;
}

export interface AuditQuery {
  /** newest first, at most this many */
  limit: number;
  key_id?: string;
}

export interface AuditPageQuery extends AuditQuery {
  /** the `next` of the page before (opaque) */
  cursor?: string | undefined;
}

export interface AuditPage {
  /** newest first */
  records: AuditRecord[];
  /** where the older records continue; null when this page reached the oldest */
  next: string | null;
}

export interface AuditStore {
  appendAudit(record: AuditRecord): Promise<void>;
  /** newest first */
  listAudit(query: AuditQuery): Promise<AuditRecord[]>;
  /** A page of records, newest first; `next` continues with older ones (records added meanwhile do not shift it). Throws ValidationError on a bad cursor. */
  pageAudit(query: AuditPageQuery): Promise<AuditPage>;
  /** Remove the records older than `before` (ISO 8601); resolves with how many went. */
  pruneAudit(before: string): Promise<number>;
}
