// Key store on better-sqlite3 (WAL). The default for a single gateway host; several processes on
// one host may share the file (the CLI changes keys while `serve` runs).

import Database from 'better-sqlite3';
import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import { ConflictError, KeygateError, StoreUnavailableError, ValidationError } from '../errors.js';
import type { GroupPatch, KeyGroup } from './group.js';
import { groupOwner } from './group.js';
import { keyMatches, keyStatus, type StoredKey } from './model.js';
import { keyQuotaOwner, type QuotaCount, type QuotaState, type QuotaTick } from './quota.js';
import { createPrivateFile } from './private-file.js';
import type { AuditPage, AuditPageQuery, AuditQuery, AuditRecord, AuditStore, KeyCounts, KeyPage, KeyPageQuery, KeyPatch, KeyStore, UsageDelta, UsageRow } from './store.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS api_keys (
  id                   TEXT PRIMARY KEY,
  name                 TEXT NOT NULL UNIQUE,
  description          TEXT NOT NULL DEFAULT '',
  digest               TEXT NOT NULL UNIQUE,
  prefix               TEXT NOT NULL,
  scopes               TEXT NOT NULL,
  role                 TEXT NOT NULL,
  workspace            TEXT,
  workspace_access     TEXT NOT NULL,
  surfaces             TEXT,
  attribution_class    TEXT NOT NULL,
  service_account_name TEXT,
  owner_user_id        TEXT,
  rate_limit           INTEGER NOT NULL,
  expires_at           TEXT,
  is_active            INTEGER NOT NULL,
  request_count        INTEGER NOT NULL DEFAULT 0,
  last_used_at         TEXT,
  created_at           TEXT NOT NULL,
  updated_at           TEXT NOT NULL,
  created_by           TEXT,
  updated_by           TEXT,
  managed_by           TEXT NOT NULL DEFAULT 'api',
  previous_digest      TEXT,
  previous_digest_expires_at TEXT,
  quota                TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_workspace ON api_keys(workspace);
CREATE TABLE IF NOT EXISTS audit (
  seq            INTEGER PRIMARY KEY AUTOINCREMENT,
  id             TEXT NOT NULL UNIQUE,
  at             TEXT NOT NULL,
  actor          TEXT NOT NULL,
  action         TEXT NOT NULL,
  key_id         TEXT NOT NULL,
  key_name       TEXT NOT NULL,
  remote_address TEXT,
  details        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_key ON audit(key_id, seq);
CREATE TABLE IF NOT EXISTS usage_hourly (
  key_id    TEXT NOT NULL,
  hour      TEXT NOT NULL,
  allowed   INTEGER NOT NULL DEFAULT 0,
  limited   INTEGER NOT NULL DEFAULT 0,
  forbidden INTEGER NOT NULL DEFAULT 0,
  quota     INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (key_id, hour)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_hourly_hour ON usage_hourly(hour);
CREATE TABLE IF NOT EXISTS quota_counters (
  owner   TEXT PRIMARY KEY,
  balance INTEGER NOT NULL,
  period  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage_batches (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id  TEXT NOT NULL UNIQUE
);
`;

/** Usage batch ids remembered (at five flushes a second, more than an hour of them). */
const KEPT_BATCH_IDS = 20_000;

/** Columns added after the first release: added to an older file when it is opened. */
const ADDED_COLUMNS: readonly [table: string, name: string, type: string][] = [
  ['api_keys', 'previous_digest', 'TEXT'],
  ['api_keys', 'previous_digest_expires_at', 'TEXT'],
  ['api_keys', 'quota', 'TEXT'],
  ['usage_hourly', 'quota', 'INTEGER NOT NULL DEFAULT 0'],
  ['api_keys', 'group_name', 'TEXT'],
];
/** Needs the added columns, so it runs after them. */
const LATE_SCHEMA = `
CREATE INDEX IF NOT EXISTS api_keys_previous_digest ON api_keys(previous_digest);
CREATE INDEX IF NOT EXISTS api_keys_page ON api_keys(created_at, name);
CREATE INDEX IF NOT EXISTS api_keys_config ON api_keys(managed_by) WHERE managed_by = 'config';
CREATE INDEX IF NOT EXISTS api_keys_admin ON api_keys(role) WHERE role = 'admin';
CREATE TABLE IF NOT EXISTS store_probe (id INTEGER PRIMARY KEY);
CREATE INDEX IF NOT EXISTS api_keys_group ON api_keys(group_name, created_at, name) WHERE group_name IS NOT NULL;
CREATE TABLE IF NOT EXISTS key_groups (
  name        TEXT PRIMARY KEY,
  description TEXT NOT NULL DEFAULT '',
  rate_limit  INTEGER,
  quota       TEXT,
  created_at  TEXT NOT NULL,
  updated_at  TEXT NOT NULL,
  created_by  TEXT,
  updated_by  TEXT,
  managed_by  TEXT NOT NULL DEFAULT 'api'
) WITHOUT ROWID;
`;

interface GroupRow {
  name: string;
  description: string;
  rate_limit: number | null;
  quota: string | null;
  created_at: string;
  updated_at: string;
  created_by: string | null;
  updated_by: string | null;
  managed_by: string;
}

function fromGroupRow(r: GroupRow): KeyGroup {
  return {
    name: r.name,
    description: r.description,
    rateLimit: r.rate_limit,
    quota: r.quota ? JSON.parse(r.quota) : null,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    createdBy: r.created_by,
    updatedBy: r.updated_by,
    managedBy: r.managed_by === 'config' ? 'config' : 'api',
  };
}

const GROUP_COLUMNS: Record<keyof GroupPatch, string> = {
  description: 'description',
  rateLimit: 'rate_limit',
  quota: 'quota',
  updatedAt: 'updated_at',
  updatedBy: 'updated_by',
};

interface CountRow {
  total: number;
  inactive: number;
  expired: number;
}

/** keygate_status is model.ts keyStatus itself (registered on the connection): one rule for both stores. */
const COUNTS_SQL = `SELECT count(*) AS total, coalesce(sum(is_active = 0), 0) AS inactive,
  coalesce(sum(is_active = 1 AND expires_at IS NOT NULL AND keygate_status(is_active, expires_at, @now) = 'expired'), 0) AS expired FROM api_keys`;

/** quota.ts `refill` in SQL, over the stored row (balance, period) and the tick's parameters. */
const REFILLED = '(CASE WHEN period < @period THEN (CASE WHEN @add = 1 THEN balance + @limit * (@period - period) ELSE @limit END) ELSE balance END)';

/** SQLite result codes that mean the file cannot take writes (or reads) any more, not a bad request. */
const FAULT = /^SQLITE_(READONLY|CORRUPT|NOTADB|IOERR|FULL|CANTOPEN|PERM)/;

function isFault(err: unknown): err is Error & { code: string } {
  return err instanceof Error && typeof (err as { code?: unknown }).code === 'string' && FAULT.test((err as unknown as { code: string }).code);
}

/** A page cursor: the (created_at, name) of the last key of the page before, opaque to callers. */
function encodeCursor(createdAt: string, id: string): string {
  return Buffer.from(JSON.stringify([createdAt, id])).toString('base64url');
}

function decodeCursor(cursor: string): [string, string] {
  try {
    const v = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && typeof v[1] === 'string') return [v[0], v[1]];
  } catch {
    // falls through to the error below
  }
  throw new ValidationError('cursor', 'is not a cursor this gateway returned (use the next cursor of the page before)');
}

interface Row {
  id: string;
  name: string;
  description: string;
  digest: string;
  prefix: string;
  scopes: string;
  role: string;
  workspace: string | null;
  workspace_access: string;
  surfaces: string | null;
  attribution_class: string;
  service_account_name: string | null;
  owner_user_id: string | null;
  rate_limit: number;
  expires_at: string | null;
  is_active: number;
  request_count: number;
  last_used_at: string | null;
  created_at: string;
  updated_at: string;
  created_by: string | null;
  updated_by: string | null;
  managed_by: string;
  previous_digest: string | null;
  previous_digest_expires_at: string | null;
  /** JSON of the quota spec; absent in a read-only file from before quotas */
  quota?: string | null;
  /** absent in a read-only file from before groups */
  group_name?: string | null;
}

interface AuditRow {
  seq: number;
  id: string;
  at: string;
  actor: string;
  action: string;
  key_id: string;
  key_name: string;
  remote_address: string | null;
  details: string;
}

// Model field → column, and how a value is written.
const COLUMNS: Record<keyof KeyPatch | 'id' | 'requestCount' | 'lastUsedAt' | 'createdAt' | 'createdBy' | 'managedBy', string> = {
  id: 'id',
  name: 'name',
  description: 'description',
  digest: 'digest',
  prefix: 'prefix',
  scopes: 'scopes',
  role: 'role',
  workspace: 'workspace',
  workspaceAccess: 'workspace_access',
  surfaces: 'surfaces',
  attributionClass: 'attribution_class',
  serviceAccountName: 'service_account_name',
  ownerUserId: 'owner_user_id',
  rateLimit: 'rate_limit',
  expiresAt: 'expires_at',
  isActive: 'is_active',
  requestCount: 'request_count',
  lastUsedAt: 'last_used_at',
  createdAt: 'created_at',
  updatedAt: 'updated_at',
  createdBy: 'created_by',
  updatedBy: 'updated_by',
  managedBy: 'managed_by',
  previousDigest: 'previous_digest',
  previousDigestExpiresAt: 'previous_digest_expires_at',
  quota: 'quota',
  group: 'group_name',
};

function toColumnValue(field: string, value: unknown): unknown {
  if (field === 'scopes' || field === 'workspaceAccess') return JSON.stringify(value);
  if (field === 'surfaces' || field === 'quota') return value === null || value === undefined ? null : JSON.stringify(value);
  if (field === 'isActive') return value ? 1 : 0;
  return value ?? null;
}

function fromRow(r: Row): StoredKey {
  return {
    id: r.id,
    name: r.name,
    description: r.description,
    digest: r.digest,
    prefix: r.prefix,
    scopes: JSON.parse(r.scopes),
    role: r.role as StoredKey['role'],
    workspace: r.workspace,
    workspaceAccess: JSON.parse(r.workspace_access),
    surfaces: r.surfaces === null ? null : JSON.parse(r.surfaces),
    attributionClass: r.attribution_class as StoredKey['attributionClass'],
    serviceAccountName: r.service_account_name,
    ownerUserId: r.owner_user_id,
    rateLimit: r.rate_limit,
    quota: r.quota ? JSON.parse(r.quota) : null,
    group: r.group_name ?? null,
    expiresAt: r.expires_at,
    isActive: r.is_active === 1,
    requestCount: r.request_count,
    lastUsedAt: r.last_used_at,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    createdBy: r.created_by,
    updatedBy: r.updated_by,
    managedBy: r.managed_by === 'config' ? 'config' : 'api',
    previousDigest: r.previous_digest,
    previousDigestExpiresAt: r.previous_digest_expires_at,
  };
}

function fromAuditRow(r: AuditRow): AuditRecord {
  return {
    id: r.id,
    at: r.at,
    actor: r.actor,
    action: r.action as AuditRecord['action'],
    key_id: r.key_id,
    key_name: r.key_name,
    remote_address: r.remote_address,
    details: JSON.parse(r.details),
  };
}

function codeOf(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? ` (${code})` : '';
}

function isUniqueViolation(err: unknown): err is Error & { message: string } {
  return err instanceof Error && (err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE';
}

/** The WAL-index header at the start of the -shm file (SQLite's WalIndexHdr): every commit changes it. */
const WAL_INDEX_HEADER_BYTES = 48;
/**
 * Check a backup file: SQLite's integrity check passes and the keys table reads; make it one
 * self-contained file (rollback journal, no -wal beside it). Resolves with the number of keys.
 */
export function verifyBackup(file: string): number {
  const db = new Database(file, { fileMustExist: true });
  try {
    db.pragma('journal_mode = DELETE');
    const check = db.pragma('integrity_check', { simple: true });
    if (check !== 'ok') throw new KeygateError('backup_invalid', 1, `the backup in ${file} failed SQLite's integrity check: ${String(check)}`);
    return (db.prepare('SELECT count(*) AS n FROM api_keys').get() as { n: number }).n;
  } finally {
    db.close();
  }
}

export interface SqliteKeyStoreOptions {
  /** refuse to create the file when it does not exist (keygate check, keygate backup) */
  mustExist?: boolean;
}

export class SqliteKeyStore implements KeyStore, AuditStore {
  private readonly db: Database.Database;
  private readonly stmts;
  /** the -shm file, read-only, for changeMark's cheap pre-check; undefined when not in WAL mode */
  private shmFd: number | undefined;
  private readonly shmSeen = Buffer.alloc(WAL_INDEX_HEADER_BYTES);
  private readonly shmNow = Buffer.alloc(WAL_INDEX_HEADER_BYTES);
  private mark = -1;
  /** true when this open created the file: a new, empty store (the caller says so in its log) */
  readonly created: boolean;
  /** why the file cannot take changes (read-only, corrupt, disk full…); undefined while it can */
  private faultReason: string | undefined;

  /**
   * `file` is a path, or ":memory:" for tests. A directory that does not exist is an error (a typo
   * in the path must not become a new, empty store), and so is a file SQLite cannot read.
   */
  constructor(readonly file: string, opts: SqliteKeyStoreOptions = {}) {
    const memory = file === ':memory:';
    if (!memory) {
      const dir = dirname(file);
      if (!existsSync(dir) || !statSync(dir).isDirectory()) {
        throw new KeygateError('store_path', 500, `store.keys sqlite:${file}: the directory ${dir} does not exist; fix the path or create it (mkdir -p ${dir})`);
      }
      if (opts.mustExist && !existsSync(file)) throw new KeygateError('store_path', 500, `store.keys sqlite:${file}: no such file`);
    }
    this.created = !memory && !existsSync(file);
    try {
      if (this.created) createPrivateFile(file);
      this.db = new Database(file);
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = NORMAL');
      this.db.pragma('busy_timeout = 5000');
      this.db.exec(SCHEMA);
      // the search of the key list: the same rule as the Redis store's (model.ts keyMatches)
      this.db.function('keygate_match', { deterministic: true }, (name, prefix, search) => (keyMatches(String(name), String(prefix), String(search)) ? 1 : 0));
      // a key's status at a time (ms), as keyStatus judges it
      this.db.function('keygate_status', { deterministic: true }, (active, expiresAt, nowMs) =>
        keyStatus({ isActive: active === 1, expiresAt: typeof expiresAt === 'string' ? expiresAt : null }, Number(nowMs)),
      );
    } catch (err) {
      throw new KeygateError('store_unreadable', 500, `store.keys sqlite:${file}: cannot open the database: ${(err as Error).message}${codeOf(err)}`);
    }
    try {
      this.migrate();
    } catch (err) {
      // a read-only file of an older version: serve what it holds, report the fault
      if (!isFault(err)) throw err;
      this.noteFault(err);
    }
    this.groupsReady = this.hasTable('key_groups') && this.hasColumn('api_keys', 'group_name');
    this.stmts = {
      get: this.db.prepare<[string], Row>('SELECT * FROM api_keys WHERE id = ?'),
      byName: this.db.prepare<[string], Row>('SELECT * FROM api_keys WHERE name = ?'),
      byDigest: this.db.prepare<[string], Row>('SELECT * FROM api_keys WHERE digest = ?'),
      byPrevious: this.db.prepare<[string, string], Row>('SELECT * FROM api_keys WHERE previous_digest = ? AND previous_digest_expires_at > ?'),
      auditInsert: this.db.prepare<[string, string, string, string, string, string, string | null, string]>(
        'INSERT INTO audit (id, at, actor, action, key_id, key_name, remote_address, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      auditAll: this.db.prepare<[number], AuditRow>('SELECT * FROM audit ORDER BY seq DESC LIMIT ?'),
      // `at` is ISO 8601 in UTC, so text order is time order
      auditPrune: this.db.prepare<[string]>('DELETE FROM audit WHERE at < ?'),
      auditByKey: this.db.prepare<[string, number], AuditRow>('SELECT * FROM audit WHERE key_id = ? ORDER BY seq DESC LIMIT ?'),
      auditBefore: this.db.prepare<[number, number], AuditRow>('SELECT * FROM audit WHERE seq < ? ORDER BY seq DESC LIMIT ?'),
      auditByKeyBefore: this.db.prepare<[string, number, number], AuditRow>('SELECT * FROM audit WHERE key_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?'),
      list: this.db.prepare<[], Row>('SELECT * FROM api_keys ORDER BY created_at, name'),
      pageFirst: this.db.prepare<[number], Row>('SELECT * FROM api_keys ORDER BY created_at, name LIMIT ?'),
      pageAfter: this.db.prepare<[string, string, number], Row>('SELECT * FROM api_keys WHERE (created_at, name) > (?, ?) ORDER BY created_at, name LIMIT ?'),
      config: this.db.prepare<[], Row>("SELECT * FROM api_keys WHERE managed_by = 'config' ORDER BY created_at, id"),
      admin: this.db.prepare<[string], { one: number }>(
        "SELECT 1 AS one FROM api_keys WHERE role = 'admin' AND is_active = 1 AND (expires_at IS NULL OR expires_at > ?) LIMIT 1",
      ),
      probe: this.db.prepare('INSERT OR REPLACE INTO store_probe (id) VALUES (1)'),
      count: this.db.prepare<[], { n: number }>('SELECT count(*) AS n FROM api_keys'),
      counts: this.db.prepare<[{ now: number }], CountRow>(COUNTS_SQL),
      countsMatching: this.db.prepare<[{ now: number; search: string }], CountRow>(`${COUNTS_SQL} WHERE keygate_match(name, prefix, @search) = 1`),
      batchSeen: this.db.prepare<[string]>('INSERT OR IGNORE INTO usage_batches (id) VALUES (?)'),
      batchPrune: this.db.prepare<[number]>('DELETE FROM usage_batches WHERE seq <= ?'),
      del: this.db.prepare<[string]>('DELETE FROM api_keys WHERE id = ?'),
      quotaRefund: this.db.prepare<[string, number]>('UPDATE quota_counters SET balance = balance + 1 WHERE owner = ? AND period = ?'),
      delHistory: this.db.prepare<[string]>('DELETE FROM usage_hourly WHERE key_id = ?'),
      // one statement: refill (quota.ts refill) and take a credit only when one is left; a counter
      // never used starts at the limit. No row back = refused, nothing changed.
      quotaConsume: this.db.prepare<[{ owner: string; limit: number; period: number; add: number }], { balance: number }>(
        `INSERT INTO quota_counters (owner, balance, period) SELECT @owner, @limit - 1, @period WHERE @limit > 0
         ON CONFLICT (owner) DO UPDATE SET balance = ${REFILLED} - 1, period = max(period, @period) WHERE ${REFILLED} > 0
         RETURNING balance`,
      ),
      // the same when a counter never used has nothing (a one-time quota of 0): only an existing one can pay
      quotaConsumeExisting: this.db.prepare<[{ owner: string; limit: number; period: number; add: number }], { balance: number }>(
        `UPDATE quota_counters SET balance = ${REFILLED} - 1, period = max(period, @period) WHERE owner = @owner AND ${REFILLED} > 0 RETURNING balance`,
      ),
      quotaGet: this.db.prepare<[string], { balance: number; period: number }>('SELECT balance, period FROM quota_counters WHERE owner = ?'),
      quotaSet: this.db.prepare<[string, number, number]>('INSERT OR REPLACE INTO quota_counters (owner, balance, period) VALUES (?, ?, ?)'),
      quotaDel: this.db.prepare<[string]>('DELETE FROM quota_counters WHERE owner = ?'),
      // `hour` is ISO 8601 in UTC, so text order is time order
      history: this.db.prepare<[string, string, string], UsageRow>(
        'SELECT hour, allowed, limited, forbidden, quota FROM usage_hourly WHERE key_id = ? AND hour >= ? AND hour < ? ORDER BY hour',
      ),
      historyAdd: this.db.prepare<[string, string, number, number, number, number]>(
        `INSERT INTO usage_hourly (key_id, hour, allowed, limited, forbidden, quota) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (key_id, hour) DO UPDATE SET allowed = allowed + excluded.allowed,
           limited = limited + excluded.limited, forbidden = forbidden + excluded.forbidden, quota = quota + excluded.quota`,
      ),
      historyPrune: this.db.prepare<[string]>('DELETE FROM usage_hourly WHERE hour < ?'),
      usage: this.db.prepare<[number, string, string, string]>(
        `UPDATE api_keys SET request_count = request_count + ?,
           last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < ? THEN ? ELSE last_used_at END
         WHERE id = ?`,
      ),
      dataVersion: this.db.prepare('PRAGMA data_version').pluck(),
    };
    if (file !== ':memory:' && String(this.db.pragma('journal_mode', { simple: true })).toLowerCase() === 'wal') {
      try {
        this.shmFd = openSync(`${file}-shm`, 'r');
      } catch {
        this.shmFd = undefined; // no -shm to read (e.g. exclusive locking): data_version every time
      }
    }
  }

  /** false in a read-only file from before groups (then there are none, and none can be made) */
  private readonly groupsReady: boolean;

  private hasTable(name: string): boolean {
    return this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name) !== undefined;
  }

  private hasColumn(table: string, name: string): boolean {
    return (this.db.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).some((c) => c.name === name);
  }

  /** Group statements, prepared at first use (a read-only file from before groups has no table for them). */
  private groupStmtsCache: ReturnType<SqliteKeyStore['prepareGroupStmts']> | undefined;
  private get groupStmts() {
    if (!this.groupsReady) throw new StoreUnavailableError(`the key store cannot take changes: store.keys sqlite:${this.file} is from before key groups and cannot be migrated (read-only?)`);
    return (this.groupStmtsCache ??= this.prepareGroupStmts());
  }

  private prepareGroupStmts() {
    return {
      insert: this.db.prepare<[GroupRow]>(
        `INSERT INTO key_groups (name, description, rate_limit, quota, created_at, updated_at, created_by, updated_by, managed_by)
         VALUES (@name, @description, @rate_limit, @quota, @created_at, @updated_at, @created_by, @updated_by, @managed_by)`,
      ),
      get: this.db.prepare<[string], GroupRow>('SELECT * FROM key_groups WHERE name = ?'),
      list: this.db.prepare<[], GroupRow>('SELECT * FROM key_groups ORDER BY name'),
      del: this.db.prepare<[string]>('DELETE FROM key_groups WHERE name = ?'),
      members: this.db.prepare<[string], { n: number }>('SELECT count(*) AS n FROM api_keys WHERE group_name = ?'),
    };
  }

  async insertGroup(g: KeyGroup): Promise<void> {
    const row: GroupRow = {
      name: g.name,
      description: g.description,
      rate_limit: g.rateLimit,
      quota: g.quota === null ? null : JSON.stringify(g.quota),
      created_at: g.createdAt,
      updated_at: g.updatedAt,
      created_by: g.createdBy,
      updated_by: g.updatedBy,
      managed_by: g.managedBy,
    };
    const stmts = this.groupStmts;
    try {
      this.write(() => stmts.insert.run(row));
    } catch (err) {
      if (err instanceof Error && String((err as { code?: string }).code).startsWith('SQLITE_CONSTRAINT')) throw new ConflictError(`a group named "${g.name}" already exists`, 'name');
      throw err;
    }
  }

  async updateGroup(name: string, patch: GroupPatch): Promise<KeyGroup | undefined> {
    const stmts = this.groupStmts;
    const fields = Object.keys(patch).filter((f) => f in GROUP_COLUMNS) as (keyof GroupPatch)[];
    if (fields.length > 0) {
      const sets = fields.map((f) => `${GROUP_COLUMNS[f]} = ?`).join(', ');
      const values = fields.map((f) => (f === 'quota' ? (patch.quota == null ? null : JSON.stringify(patch.quota)) : (patch[f] ?? null)));
      this.write(() => this.db.prepare(`UPDATE key_groups SET ${sets} WHERE name = ?`).run(...values, name));
    }
    const row = stmts.get.get(name);
    return row ? fromGroupRow(row) : undefined;
  }

  async deleteGroup(name: string): Promise<boolean> {
    const stmts = this.groupStmts;
    return this.write(() =>
      this.db.transaction(() => {
        this.stmts.quotaDel.run(groupOwner(name));
        this.stmts.delHistory.run(groupOwner(name));
        return stmts.del.run(name).changes > 0;
      })(),
    );
  }

  async getGroup(name: string): Promise<KeyGroup | undefined> {
    if (!this.groupsReady) return undefined;
    const row = this.groupStmts.get.get(name);
    return row ? fromGroupRow(row) : undefined;
  }

  async listGroups(): Promise<KeyGroup[]> {
    if (!this.groupsReady) return [];
    return this.groupStmts.list.all().map(fromGroupRow);
  }

  async countGroupKeys(name: string): Promise<number> {
    if (!this.groupsReady) return 0;
    return this.groupStmts.members.get(name)!.n;
  }

  /** Brings a file made by an older version up to this schema; one process at a time (BEGIN IMMEDIATE). */
  private migrate(): void {
    this.db
      .transaction(() => {
        const columns = (table: string) => new Set((this.db.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).map((c) => c.name));
        const have = new Map<string, Set<string>>();
        for (const [table, name, type] of ADDED_COLUMNS) {
          if (!have.has(table)) have.set(table, columns(table));
          if (!have.get(table)!.has(name)) this.db.exec(`ALTER TABLE ${table} ADD COLUMN ${name} ${type}`);
        }
        this.db.exec(LATE_SCHEMA);
      })
      .immediate();
  }

  /** Remember a fault error so readiness reports it and later changes are refused with its reason. */
  private noteFault(err: Error & { code: string }): void {
    this.faultReason = `${err.message} (${err.code})`;
  }

  /**
   * Run a change; a fault (read-only file, corruption, full disk) becomes a 503 naming it, and is
   * remembered for readiness until a probe finds the file writable again.
   */
  private write<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (!isFault(err)) throw err;
      this.noteFault(err);
      throw new StoreUnavailableError(`the key store cannot take changes: ${this.faultReason}`);
    }
  }

  /**
   * Undefined when the file takes writes, else why not. Tries a write inside a transaction it
   * rolls back, without waiting for a lock another process holds (that one is writing, so it can).
   */
  fault(): string | undefined {
    if (this.file === ':memory:' || !this.db.open) return this.db.open ? undefined : 'the key store is closed';
    const timeout = this.db.pragma('busy_timeout', { simple: true }) as number;
    this.db.pragma('busy_timeout = 0');
    try {
      this.db.exec('BEGIN IMMEDIATE');
      try {
        this.stmts.probe.run();
        this.stmts.count.get();
      } finally {
        this.db.exec('ROLLBACK');
      }
      this.faultReason = undefined;
    } catch (err) {
      if (isFault(err)) this.noteFault(err);
      else if ((err as { code?: string }).code !== 'SQLITE_BUSY') this.faultReason = (err as Error).message;
    } finally {
      this.db.pragma(`busy_timeout = ${timeout}`);
    }
    return this.faultReason;
  }

  async insert(key: StoredKey): Promise<void> {
    const fields = Object.keys(COLUMNS) as (keyof typeof COLUMNS)[];
    const cols = fields.map((f) => COLUMNS[f]);
    const values = fields.map((f) => toColumnValue(f, (key as unknown as Record<string, unknown>)[f]));
    try {
      this.write(() => this.db.prepare(`INSERT INTO api_keys (${cols.join(',')}) VALUES (${cols.map(() => '?').join(',')})`).run(values));
    } catch (err) {
      if (isUniqueViolation(err)) throw new ConflictError(`a key named "${key.name}" already exists`, 'name');
      throw err;
    }
  }

  async update(id: string, patch: KeyPatch): Promise<StoredKey | undefined> {
    const fields = Object.keys(patch).filter((f) => f in COLUMNS) as (keyof KeyPatch)[];
    if (fields.length > 0) {
      const sets = fields.map((f) => `${COLUMNS[f]} = ?`).join(', ');
      const values = fields.map((f) => toColumnValue(f, patch[f]));
      try {
        this.write(() => this.db.prepare(`UPDATE api_keys SET ${sets} WHERE id = ?`).run(...values, id));
      } catch (err) {
        if (isUniqueViolation(err)) throw new ConflictError(`a key named "${patch.name}" already exists`, 'name');
        throw err;
      }
    }
    return this.get(id);
  }

  async delete(id: string): Promise<boolean> {
    return this.write(() =>
      this.db.transaction(() => {
        this.stmts.delHistory.run(id);
        this.stmts.quotaDel.run(keyQuotaOwner(id));
        return this.stmts.del.run(id).changes > 0;
      })(),
    );
  }

  async get(id: string): Promise<StoredKey | undefined> {
    const row = this.stmts.get.get(id);
    return row ? fromRow(row) : undefined;
  }

  async getByName(name: string): Promise<StoredKey | undefined> {
    const row = this.stmts.byName.get(name);
    return row ? fromRow(row) : undefined;
  }

  async findByDigest(digest: string, nowMs = Date.now()): Promise<StoredKey | undefined> {
    const row = this.stmts.byDigest.get(digest) ?? this.stmts.byPrevious.get(digest, new Date(nowMs).toISOString());
    return row ? fromRow(row) : undefined;
  }

  async list(): Promise<StoredKey[]> {
    return this.stmts.list.all().map(fromRow);
  }

  /** Filtered page statements, prepared once per shape (search yes/no × status × cursor yes/no). */
  private readonly filtered = new Map<string, Database.Statement<Record<string, unknown>, Row>>();

  private filteredPage(q: KeyPageQuery): Row[] {
    const shape = `${q.search !== undefined}:${q.status ?? ''}:${q.cursor !== undefined}:${q.group !== undefined}`;
    let stmt = this.filtered.get(shape);
    if (stmt === undefined) {
      const where: string[] = [];
      if (q.cursor !== undefined) where.push('(created_at, name) > (@afterCreated, @afterName)');
      if (q.search !== undefined) where.push('keygate_match(name, prefix, @search) = 1');
      if (q.status !== undefined) where.push('keygate_status(is_active, expires_at, @now) = @status');
      if (q.group !== undefined) where.push('group_name = @group');
      stmt = this.db.prepare<Record<string, unknown>, Row>(`SELECT * FROM api_keys WHERE ${where.join(' AND ')} ORDER BY created_at, name LIMIT @limit`);
      this.filtered.set(shape, stmt);
    }
    const [afterCreated, afterName] = q.cursor === undefined ? [undefined, undefined] : decodeCursor(q.cursor);
    const params: Record<string, unknown> = { limit: q.limit + 1 };
    if (q.cursor !== undefined) Object.assign(params, { afterCreated, afterName });
    if (q.search !== undefined) params['search'] = q.search;
    if (q.status !== undefined) Object.assign(params, { now: q.nowMs ?? Date.now(), status: q.status });
    if (q.group !== undefined) params['group'] = q.group;
    return stmt.all(params);
  }

  async page(q: KeyPageQuery): Promise<KeyPage> {
    if (q.managedBy === 'config') return { keys: this.stmts.config.all().map(fromRow), next: null };
    if (q.group !== undefined && !this.groupsReady) return { keys: [], next: null };
    const rows =
      q.search !== undefined || q.status !== undefined || q.group !== undefined
        ? this.filteredPage(q)
        : q.cursor === undefined
          ? this.stmts.pageFirst.all(q.limit + 1)
          : this.stmts.pageAfter.all(...decodeCursor(q.cursor), q.limit + 1);
    const more = rows.length > q.limit;
    if (more) rows.pop();
    const last = rows[rows.length - 1];
    return { keys: rows.map(fromRow), next: more && last ? encodeCursor(last.created_at, last.name) : null };
  }

  async hasActiveAdmin(nowMs: number): Promise<boolean> {
    return this.stmts.admin.get(new Date(nowMs).toISOString()) !== undefined;
  }

  /**
   * A consistent copy of the database in `dest` while other connections keep reading and writing:
   * SQLite's online backup API, page by page, restarting when a writer changes a page already copied.
   */
  async backup(dest: string): Promise<void> {
    await this.db.backup(dest);
  }

  async count(): Promise<number> {
    return this.stmts.count.get()!.n;
  }

  async counts(nowMs: number, search?: string): Promise<KeyCounts> {
    const r = search === undefined ? this.stmts.counts.get({ now: nowMs }) : this.stmts.countsMatching.get({ now: nowMs, search });
    const total = r?.total ?? 0;
    const inactive = r?.inactive ?? 0;
    const expired = r?.expired ?? 0;
    return { total, active: total - inactive - expired, inactive, expired };
  }

  async addUsage(batch: ReadonlyMap<string, UsageDelta>, batchId: string): Promise<void> {
    if (batch.size === 0) return;
    // the batch id and the counts in one transaction: a batch replayed (from the spool) adds nothing
    const run = this.db.transaction(() => {
      const seen = this.stmts.batchSeen.run(batchId);
      if (seen.changes === 0) return;
      const seq = Number(seen.lastInsertRowid);
      if (seq % 1000 === 0) this.stmts.batchPrune.run(seq - KEPT_BATCH_IDS);
      for (const [id, d] of batch) {
        if (d.count > 0) this.stmts.usage.run(d.count, d.lastUsedAt, d.lastUsedAt, id);
        for (const h of d.hours ?? []) {
          const hour = new Date(h.hourMs).toISOString();
          this.stmts.historyAdd.run(id, hour, h.allowed, h.limited, h.forbidden, h.quota ?? 0);
          // the group's history: rows of its owner ("group:<name>"), added in the same transaction
          if (h.group !== undefined) this.stmts.historyAdd.run(groupOwner(h.group), hour, h.allowed, h.limited, h.forbidden, h.quota ?? 0);
        }
      }
    });
    this.write(() => run.immediate());
  }

  /** Synchronous: better-sqlite3 runs the one statement and returns; no promise on the request path. */
  consumeQuota(owner: string, t: QuotaTick): QuotaCount {
    const stmt = t.limit > 0 ? this.stmts.quotaConsume : this.stmts.quotaConsumeExisting;
    const row = this.write(() => stmt.get({ owner, limit: t.limit, period: t.period, add: t.add ? 1 : 0 }));
    return row === undefined ? { allowed: false, remaining: 0 } : { allowed: true, remaining: row.balance };
  }

  refundQuota(owner: string, t: QuotaTick): void {
    this.write(() => this.stmts.quotaRefund.run(owner, t.period));
  }

  async quotaState(owner: string): Promise<QuotaState | undefined> {
    return this.stmts.quotaGet.get(owner);
  }

  async setQuotaState(owner: string, state: QuotaState | undefined): Promise<void> {
    this.write(() => (state === undefined ? this.stmts.quotaDel.run(owner) : this.stmts.quotaSet.run(owner, state.balance, state.period)));
  }

  async usageHistory(owner: string, fromMs: number, toMs: number): Promise<UsageRow[]> {
    return this.stmts.history.all(owner, new Date(fromMs).toISOString(), new Date(toMs).toISOString());
  }

  async pruneUsage(beforeMs: number): Promise<number> {
    return this.stmts.historyPrune.run(new Date(beforeMs).toISOString()).changes;
  }

  async appendAudit(r: AuditRecord): Promise<void> {
    this.write(() => this.stmts.auditInsert.run(r.id, r.at, r.actor, r.action, r.key_id, r.key_name, r.remote_address, JSON.stringify(r.details)));
  }

  async listAudit(q: AuditQuery): Promise<AuditRecord[]> {
    const rows = q.key_id === undefined ? this.stmts.auditAll.all(q.limit) : this.stmts.auditByKey.all(q.key_id, q.limit);
    return rows.map(fromAuditRow);
  }

  async pageAudit(q: AuditPageQuery): Promise<AuditPage> {
    // the cursor is the sequence number of the last record shown: older ones have smaller ones
    let before = Number.MAX_SAFE_INTEGER;
    if (q.cursor !== undefined) {
      if (!/^\d{1,15}$/.test(q.cursor)) throw new ValidationError('cursor', 'is not a cursor this gateway returned (use the nextCursor of the page before)');
      before = Number(q.cursor);
    }
    const rows = q.key_id === undefined ? this.stmts.auditBefore.all(before, q.limit + 1) : this.stmts.auditByKeyBefore.all(q.key_id, before, q.limit + 1);
    const more = rows.length > q.limit;
    if (more) rows.pop();
    return { records: rows.map(fromAuditRow), next: more ? String(rows[rows.length - 1]!.seq) : null };
  }

  async pruneAudit(before: string): Promise<number> {
    return this.write(() => this.stmts.auditPrune.run(before).changes);
  }

  /**
   * `PRAGMA data_version`: changes only when another connection committed (our own usage flushes
   * do not move it). Asking it costs a read transaction (two fcntl locks), so it is asked only when
   * the WAL-index header in the -shm file changed: every commit, by any process, rewrites that
   * header in the shared mapping before the commit returns, so a change made elsewhere is still
   * seen on the very next call; the header alone cannot tell whose commit it was, data_version can.
   */
  changeMark(): number {
    if (this.shmFd !== undefined) {
      let read = 0;
      try {
        read = readSync(this.shmFd, this.shmNow, 0, WAL_INDEX_HEADER_BYTES, 0);
      } catch {
        read = 0;
      }
      if (read === WAL_INDEX_HEADER_BYTES && this.mark !== -1 && this.shmNow.equals(this.shmSeen)) return this.mark;
      if (read === WAL_INDEX_HEADER_BYTES) this.shmNow.copy(this.shmSeen);
      else this.shmSeen.fill(0); // unreadable: never trust the copy
    }
    this.mark = this.stmts.dataVersion.get() as number;
    return this.mark;
  }

  async close(): Promise<void> {
    if (this.shmFd !== undefined) {
      closeSync(this.shmFd);
      this.shmFd = undefined;
    }
    if (this.db.open) this.db.close();
  }
}
