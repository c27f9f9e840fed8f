// Key store on better-sqlite3 (WAL). The default for a single gateway host; several processes on
// one host may share the file (the CLI changes keys while `serve` runs).

import Database from 'better-sqlite3';
import { ConflictError } from '../errors.js';
import { createPrivateFile } from './private-file.js';
import type { StoredKey } from './model.js';
import type { AuditQuery, AuditRecord, AuditStore, KeyPatch, KeyStore, UsageDelta } from './store.js';

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
  previous_digest_expires_at TEXT
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
`;

/** Columns added after the first release: added to an older file when it is opened. */
const ADDED_COLUMNS: readonly [name: string, type: string][] = [
  ['previous_digest', 'TEXT'],
  ['previous_digest_expires_at', 'TEXT'],
];
/** Needs the added columns, so it runs after them. */
const LATE_SCHEMA = 'CREATE INDEX IF NOT EXISTS api_keys_previous_digest ON api_keys(previous_digest)';

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
}

interface AuditRow {
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
};

function toColumnValue(field: string, value: unknown): unknown {
  if (field === 'scopes' || field === 'workspaceAccess') return JSON.stringify(value);
  if (field === 'surfaces') return value === null ? null : JSON.stringify(value);
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

function isUniqueViolation(err: unknown): err is Error & { message: string } {
  return err instanceof Error && (err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE';
}

export class SqliteKeyStore implements KeyStore, AuditStore {
  private readonly db: Database.Database;
  private readonly stmts;

  /** `file` is a path, or ":memory:" for tests. */
  constructor(file: string) {
    if (file !== ':memory:') createPrivateFile(file);
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(SCHEMA);
    this.migrate();
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
      list: this.db.prepare<[], Row>('SELECT * FROM api_keys ORDER BY created_at, name'),
      count: this.db.prepare<[], { n: number }>('SELECT count(*) AS n FROM api_keys'),
      del: this.db.prepare<[string]>('DELETE FROM api_keys WHERE id = ?'),
      usage: this.db.prepare<[number, string, string, string]>(
        `UPDATE api_keys SET request_count = request_count + ?,
           last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < ? THEN ? ELSE last_used_at END
         WHERE id = ?`,
      ),
      dataVersion: this.db.prepare('PRAGMA data_version').pluck(),
    };
  }

  /** Brings a file made by an older version up to this schema; one process at a time (BEGIN IMMEDIATE). */
  private migrate(): void {
    this.db
      .transaction(() => {
        const have = new Set((this.db.prepare('PRAGMA table_info(api_keys)').all() as { name: string }[]).map((c) => c.name));
        for (const [name, type] of ADDED_COLUMNS) {
          if (!have.has(name)) this.db.exec(`ALTER TABLE api_keys ADD COLUMN ${name} ${type}`);
        }
        this.db.exec(LATE_SCHEMA);
      })
      .immediate();
  }

  async insert(key: StoredKey): Promise<void> {
    const fields = Object.keys(COLUMNS) as (keyof typeof COLUMNS)[];
    const cols = fields.map((f) => COLUMNS[f]);
    const values = fields.map((f) => toColumnValue(f, (key as unknown as Record<string, unknown>)[f]));
    try {
      this.db.prepare(`INSERT INTO api_keys (${cols.join(',')}) VALUES (${cols.map(() => '?').join(',')})`).run(values);
    } catch (err) {
      if (isUniqueViolation(err)) throw new ConflictError(`a key named "${key.name}" already exists`);
      throw err;
    }
  }

  async update(id: string, patch: KeyPatch): Promise<StoredKey | undefined> {
    const fields = Object.keys(patch).filter((f) => f in COLUMNS) as (keyof KeyPatch)[];
    if (fields.length > 0) {
      const sets = fields.map((f) => `${COLUMNS[f]} = ?`).join(', ');
      const values = fields.map((f) => toColumnValue(f, patch[f]));
      try {
        this.db.prepare(`UPDATE api_keys SET ${sets} WHERE id = ?`).run(...values, id);
      } catch (err) {
        if (isUniqueViolation(err)) throw new ConflictError(`a key named "${patch.name}" already exists`);
        throw err;
      }
    }
    return this.get(id);
  }

  async delete(id: string): Promise<boolean> {
    return this.stmts.del.run(id).changes > 0;
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

  async count(): Promise<number> {
    return this.stmts.count.get()!.n;
  }

  async addUsage(batch: ReadonlyMap<string, UsageDelta>): Promise<void> {
    if (batch.size === 0) return;
    const run = this.db.transaction(() => {
      for (const [id, d] of batch) this.stmts.usage.run(d.count, d.lastUsedAt, d.lastUsedAt, id);
    });
    run.immediate();
  }

  async appendAudit(r: AuditRecord): Promise<void> {
    this.stmts.auditInsert.run(r.id, r.at, r.actor, r.action, r.key_id, r.key_name, r.remote_address, JSON.stringify(r.details));
  }

  async listAudit(q: AuditQuery): Promise<AuditRecord[]> {
    const rows = q.key_id === undefined ? this.stmts.auditAll.all(q.limit) : this.stmts.auditByKey.all(q.key_id, q.limit);
    return rows.map(fromAuditRow);
  }

  async pruneAudit(before: string): Promise<number> {
    return this.stmts.auditPrune.run(before).changes;
  }

  changeMark(): number {
    // Changes only when another connection committed: our own usage flushes do not move it.
    return this.stmts.dataVersion.get() as number;
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
