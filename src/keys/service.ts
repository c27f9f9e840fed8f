// The one key service: the CLI, both admin APIs and the key page call these functions, so every
// rule about keys (names, scopes, roles, workspaces, limits, expiry) lives here once.
// It also owns the in-memory cache the request path authenticates against.

import { randomUUID } from 'node:crypto';
import type { KeysConfig } from '../config/types.js';
import { ConflictError, LimitError, NotFoundError, ValidationError } from '../errors.js';
import {
  accessOf,
  isRole,
  isScope,
  isSurface,
  type ApiKey,
  type AttributionClass,
  type KeyAccess,
  type StoredKey,
  type WorkspaceAccess,
} from './model.js';
import { digestSecret, displayPrefix, generateSecret } from './secret.js';
import type { KeyPatch, KeyStore } from './store.js';

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
  expiresAt?: unknown;
  isActive?: unknown;
}

export interface CreatedKey {
  key: ApiKey;
  /** the full secret: returned here once, never stored, never shown again */
  secret: string;
}

const WORKSPACE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const DATE_ONLY = /^(\d{4})-(\d{2})-(\d{2})$/;
/** Bound on remembered unknown digests, so a flood of random keys cannot grow memory. */
const MAX_UNKNOWN = 10_000;

function publicKey(stored: StoredKey): ApiKey {
  const { digest: _digest, ...key } = stored;
  return key;
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
  const seen = new Set<string>();
  const grants = grantsIn.map((g: unknown, i: number) => {
    const field = `workspaceAccess.grants[${i}]`;
    if (typeof g !== 'object' || g === null) throw new ValidationError(field, 'must be {workspace, role}');
    const { workspace, role: r } = g as { workspace?: unknown; role?: unknown };
    const ws = workspaceName(`${field}.workspace`, workspace);
    if (seen.has(ws)) throw new ValidationError(`${field}.workspace`, `"${ws}" is granted twice`);
    seen.add(ws);
    const gr = role(`${field}.role`, r);
    if (gr === 'admin') throw new ValidationError(`${field}.role`, 'admin cannot be granted per workspace');
    return { workspace: ws, role: gr };
  });
  return { all, grants };
}

function rateLimit(v: unknown, limits: KeysConfig['rate_limit']): number {
  const n = typeof v === 'string' && /^\s*\d+\s*$/.test(v) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < limits.min || n > limits.max) {
    throw new ValidationError('rateLimit', `must be a whole number of requests per minute from ${limits.min} to ${limits.max}`);
  }
  return n;
}

const DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2})$/;

/** Whether y-m-d names a real calendar day (Date.parse would roll 2031-02-30 over to March). */
function realDay(y: string, m: string, d: string): boolean {
  const t = new Date(Date.UTC(Number(y), Number(m) - 1, Number(d)));
  return t.getUTCFullYear() === Number(y) && t.getUTCMonth() === Number(m) - 1 && t.getUTCDate() === Number(d);
}

/**
 * ISO instant of an expiry given as a date (00:00 UTC of that day) or an ISO 8601 date-time with
 * an explicit offset (never the server's local time); must be in the future.
 */
export function parseExpiry(v: unknown, nowMs: number): string | null {
  if (v === undefined || v === null || v === '') return null;
  const shape = 'must be a date (YYYY-MM-DD) or an ISO 8601 date-time with an offset (2031-01-31T12:00:00Z)';
  if (typeof v !== 'string') throw new ValidationError('expiresAt', shape);
  const date = DATE_ONLY.exec(v);
  const dateTime = date ? null : DATE_TIME.exec(v);
  const parts = date ?? dateTime;
  if (!parts || !realDay(v.slice(0, 4), v.slice(5, 7), v.slice(8, 10))) throw new ValidationError('expiresAt', `"${v}" ${shape}`);
  if (dateTime && (Number(dateTime[4]) > 23 || Number(dateTime[5]) > 59 || Number(dateTime[6] ?? 0) > 59)) {
    throw new ValidationError('expiresAt', `"${v}" is not a valid time of day`);
  }
  const ms = Date.parse(date ? `${v}T00:00:00Z` : v);
  if (Number.isNaN(ms)) throw new ValidationError('expiresAt', `"${v}" ${shape}`);
  if (ms <= nowMs) throw new ValidationError('expiresAt', 'must be in the future (a date after today)');
  return new Date(ms).toISOString();
}

function attribution(cls: unknown): AttributionClass {
  if (cls !== 'service_account' && cls !== 'user_owned') {
    throw new ValidationError('attributionClass', 'must be service_account or user_owned');
  }
  return cls;
}

/** Cross-field rules, checked on the key as it would be after a create or update. */
function checkConsistency(k: Omit<StoredKey, 'digest'>): void {
  if (!k.workspaceAccess.all && k.role !== 'viewer') {
    throw new ValidationError('role', 'a key with per-workspace grants must have the top-level role viewer');
  }
  if (k.workspace !== null && !k.workspaceAccess.all) {
    throw new ValidationError('workspace', 'a key is bound to one workspace or has workspace grants, not both');
  }
  if (k.attributionClass === 'user_owned' && !k.ownerUserId) {
    throw new ValidationError('ownerUserId', 'is required for a user_owned key');
  }
  if (k.attributionClass === 'service_account' && !k.serviceAccountName) {
    throw new ValidationError('serviceAccountName', 'is required for a service_account key');
  }
}

export class KeyService {
  private readonly byDigest = new Map<string, KeyAccess>();
  private readonly digestById = new Map<string, string>();
  private readonly unknown = new Set<string>();
  /** bumped on every invalidation so a lookup started before it does not refill stale data */
  private generation = 0;
  private mark: number;

  constructor(
    readonly store: KeyStore,
    private readonly config: KeysConfig,
    private readonly now: () => number = Date.now,
  ) {
    this.mark = store.changeMark();
  }

  // ---------------------------------------------------------------- request path

  /**
   * The key for a secret's digest: from the cache when it can (synchronously), else from the store.
   * null = no such key. Changes made by another process (the CLI) are noticed on the next call.
   */
  lookup(digest: string): KeyAccess | null | Promise<KeyAccess | null> {
    const mark = this.store.changeMark();
    if (mark !== this.mark) {
      this.mark = mark;
      this.clearCache();
    }
    const hit = this.byDigest.get(digest);
    if (hit !== undefined) return hit;
    if (this.unknown.has(digest)) return null;
    return this.fill(digest);
  }

  private async fill(digest: string): Promise<KeyAccess | null> {
    const gen = this.generation;
    const stored = await this.store.findByDigest(digest);
    const access = stored ? accessOf(stored) : null;
    if (gen === this.generation) {
      if (access) {
        this.byDigest.set(digest, access);
        this.digestById.set(access.key.id, digest);
      } else {
        if (this.unknown.size >= MAX_UNKNOWN) this.unknown.clear();
        this.unknown.add(digest);
      }
    }
    return access;
  }

  /** Forget one key (after a change made through this service) or everything. */
  invalidate(id: string): void {
    this.generation++;
    const digest = this.digestById.get(id);
    if (digest !== undefined) {
      this.byDigest.delete(digest);
      this.digestById.delete(id);
    }
  }

  clearCache(): void {
    this.generation++;
    this.byDigest.clear();
    this.digestById.clear();
    this.unknown.clear();
  }

  // ---------------------------------------------------------------- management

  async create(input: KeyInput, actor: string): Promise<CreatedKey> {
    const max = this.config.max_keys;
    if (max !== undefined) {
      const n = await this.store.count();
      if (n >= max) {
        throw new LimitError(
          `${n} API keys exist and the configured limit (keys.max_keys) is ${max}: delete a key you no longer use or raise keys.max_keys to create more. Existing keys keep working.`,
        );
      }
    }
    const nowIso = new Date(this.now()).toISOString();
    const name = str('name', input.name, 1, 100);
    const cls = input.attributionClass === undefined ? 'service_account' : attribution(input.attributionClass);
    const fields: Omit<StoredKey, 'digest' | 'prefix'> = {
      id: randomUUID(),
      name,
      description: optionalStr('description', input.description, 500) ?? '',
      scopes: input.scopes === undefined ? ['agents', 'workflows'] : listOf('scopes', input.scopes, isScope, ['agents', 'workflows']),
      role: input.role === undefined ? 'viewer' : role('role', input.role),
      workspace: input.workspace === undefined || input.workspace === null || input.workspace === '' ? null : workspaceName('workspace', input.workspace),
      workspaceAccess: input.workspaceAccess === undefined ? { all: true, grants: [] } : workspaceAccess(input.workspaceAccess),
      surfaces: input.surfaces === undefined || input.surfaces === null ? null : listOf('surfaces', input.surfaces, isSurface, ['rest_api', 'mcp', 'a2a']),
      attributionClass: cls,
      serviceAccountName: cls === 'service_account' ? (optionalStr('serviceAccountName', input.serviceAccountName, 100) ?? name) : null,
      ownerUserId: cls === 'user_owned' ? optionalStr('ownerUserId', input.ownerUserId, 100) : null,
      rateLimit: input.rateLimit === undefined ? this.config.rate_limit.default : rateLimit(input.rateLimit, this.config.rate_limit),
      expiresAt: parseExpiry(input.expiresAt, this.now()),
      isActive: input.isActive === undefined ? true : bool('isActive', input.isActive),
      requestCount: 0,
      lastUsedAt: null,
      createdAt: nowIso,
      updatedAt: nowIso,
      createdBy: actor,
      updatedBy: actor,
      managedBy: 'api',
    };
    checkConsistency({ ...fields, prefix: '' });
    const secret = generateSecret(this.config.prefix);
    const stored: StoredKey = { ...fields, digest: digestSecret(secret), prefix: displayPrefix(secret) };
    await this.store.insert(stored);
    this.unknown.delete(stored.digest);
    return { key: publicKey(stored), secret };
  }

  /** All keys, or the keys scoped to one workspace (bound to it or granted it). */
  async list(filter?: { workspace?: string }): Promise<ApiKey[]> {
    const keys = (await this.store.list()).map(publicKey);
    const ws = filter?.workspace;
    if (ws === undefined) return keys;
    return keys.filter((k) =>
      k.workspace !== null ? k.workspace === ws : k.workspaceAccess.grants.some((g) => g.workspace === ws),
    );
  }

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

  async update(idOrName: string, input: KeyInput, actor: string): Promise<ApiKey> {
    const current = await this.findChangeable(idOrName);
    const patch: KeyPatch = {};
    if (input.name !== undefined) patch.name = str('name', input.name, 1, 100);
    if (input.description !== undefined) patch.description = optionalStr('description', input.description, 500) ?? '';
    if (input.scopes !== undefined) patch.scopes = listOf('scopes', input.scopes, isScope, ['agents', 'workflows']);
    if (input.role !== undefined) patch.role = role('role', input.role);
    if (input.workspace !== undefined) {
      patch.workspace = input.workspace === null || input.workspace === '' ? null : workspaceName('workspace', input.workspace);
    }
    if (input.workspaceAccess !== undefined) patch.workspaceAccess = workspaceAccess(input.workspaceAccess);
    if (input.surfaces !== undefined) {
      patch.surfaces = input.surfaces === null ? null : listOf('surfaces', input.surfaces, isSurface, ['rest_api', 'mcp', 'a2a']);
    }
    if (input.attributionClass !== undefined) patch.attributionClass = attribution(input.attributionClass);
    if (input.serviceAccountName !== undefined) patch.serviceAccountName = optionalStr('serviceAccountName', input.serviceAccountName, 100);
    if (input.ownerUserId !== undefined) patch.ownerUserId = optionalStr('ownerUserId', input.ownerUserId, 100);
    if (input.rateLimit !== undefined) patch.rateLimit = rateLimit(input.rateLimit, this.config.rate_limit);
    if (input.expiresAt !== undefined) patch.expiresAt = parseExpiry(input.expiresAt, this.now());
    if (input.isActive !== undefined) patch.isActive = bool('isActive', input.isActive);
    const next = { ...current, ...patch };
    if (next.attributionClass === 'service_account' && !next.serviceAccountName) next.serviceAccountName = next.name;
    if (next.attributionClass === 'service_account') next.ownerUserId = null;
    else next.serviceAccountName = null;
    checkConsistency(next);
    patch.serviceAccountName = next.serviceAccountName;
    patch.ownerUserId = next.ownerUserId;
    patch.updatedAt = new Date(this.now()).toISOString();
    patch.updatedBy = actor;
    return this.apply(current.id, patch);
  }

  async setActive(idOrName: string, active: boolean, actor: string): Promise<ApiKey> {
    const current = await this.findChangeable(idOrName);
    return this.apply(current.id, { isActive: active, updatedAt: new Date(this.now()).toISOString(), updatedBy: actor });
  }

  /** A new secret for the key; the old one stops working on the very next request. */
  async regenerate(idOrName: string, actor: string): Promise<CreatedKey> {
    const current = await this.findChangeable(idOrName);
    const secret = generateSecret(this.config.prefix);
    const key = await this.apply(current.id, {
      digest: digestSecret(secret),
      prefix: displayPrefix(secret),
      updatedAt: new Date(this.now()).toISOString(),
      updatedBy: actor,
    });
    return { key, secret };
  }

  async delete(idOrName: string): Promise<ApiKey> {
    const current = await this.findChangeable(idOrName);
    await this.store.delete(current.id);
    this.invalidate(current.id);
    return publicKey(current);
  }

  private async apply(id: string, patch: KeyPatch): Promise<ApiKey> {
    const updated = await this.store.update(id, patch);
    this.invalidate(id);
    if (!updated) throw new NotFoundError(`no API key with id "${id}"`);
    return publicKey(updated);
  }
}

function bool(field: string, v: unknown): boolean {
  if (v === true || v === 'true') return true;
  if (v === false || v === 'false') return false;
  throw new ValidationError(field, 'must be true or false');
}
