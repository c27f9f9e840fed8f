// Moving keys between stores and hosts: export as JSON Lines (every field and the digest, never a
// secret, which no store holds), import idempotently (by id: created, updated or skipped).
// Export from SQLite + import into Redis is the migration path between the two stores.

import { randomUUID } from 'node:crypto';
import { ValidationError } from '../errors.js';
import type { KeyGroup } from './group.js';
import { isRole, isScope, isSurface, type StoredKey } from './model.js';
import { parseQuota } from './service.js';
import type { AuditRecord, AuditStore, KeyPatch, KeyStore } from './store.js';

/** One line of an export file. */
export type ExportLine = ({ type: 'group' } & KeyGroup) | ({ type: 'key' } & StoredKey) | ({ type: 'audit' } & AuditRecord);

/** Keys read from the store per round trip while exporting. */
const EXPORT_PAGE = 1000;

/** Every key group, then every key (then, with `audit`, every audit record, oldest first), one JSON line each, page by page. */
export async function* exportLines(store: KeyStore & AuditStore, opts: { audit?: boolean } = {}): AsyncGenerator<string> {
  // groups first: an import creates them before the keys that name them
  for (const g of await store.listGroups()) yield JSON.stringify({ type: 'group', ...g });
  let cursor: string | undefined;
  do {
    const page = await store.page({ limit: EXPORT_PAGE, cursor });
    for (const k of page.keys) yield JSON.stringify({ type: 'key', ...k });
    cursor = page.next ?? undefined;
  } while (cursor !== undefined);
  if (opts.audit) {
    const records = await store.listAudit({ limit: Number.MAX_SAFE_INTEGER });
    for (let i = records.length - 1; i >= 0; i--) yield JSON.stringify({ type: 'audit', ...records[i] });
  }
}

const HEX64 = /^[0-9a-f]{64}$/;
const ISO = /^\d{4}-\d{2}-\d{2}T[\d:.]+(Z|[+-]\d{2}:\d{2})$/;

function need<T>(ok: boolean, field: string, what: string, value: T): T {
  if (!ok) throw new ValidationError(field, what);
  return value;
}

const isStr = (v: unknown): v is string => typeof v === 'string';
/** Key ids name the key's rate-limit window and quota counter, where "group:<name>" names a group's. */
const isKeyId = (v: unknown): v is string => isStr(v) && v.length > 0 && !v.includes(':');
const KEY_ID_RULE = 'must be a non-empty string without ":" (a "group:…" id would share a key group\'s counters)';
const strOrNull = (v: unknown): v is string | null => v === null || typeof v === 'string';
const isoOrNull = (v: unknown): v is string | null => v === null || (typeof v === 'string' && ISO.test(v));

/** A key line, checked field by field (an export from another version or a hand edit must not store junk). */
export function parseKeyLine(o: Record<string, unknown>): StoredKey {
  need(isKeyId(o['id']), 'id', KEY_ID_RULE, 0);
  need(isStr(o['name']) && o['name'].length > 0, 'name', 'must be a non-empty string', 0);
  const wa = o['workspaceAccess'] as { all?: unknown; grants?: unknown } | undefined;
  if (typeof wa !== 'object' || wa === null || typeof wa.all !== 'boolean' || !Array.isArray(wa.grants)) {
    throw new ValidationError('workspaceAccess', 'must be {all, grants}');
  }
  for (const g of wa.grants as unknown[]) {
    const x = g as { workspace?: unknown; role?: unknown };
    need(typeof x === 'object' && x !== null && isStr(x.workspace) && isRole(x.role), 'workspaceAccess.grants', 'must be {workspace, role} items', 0);
  }
  const scopes = o['scopes'];
  const surfaces = o['surfaces'];
  const count = o['requestCount'];
  const key: StoredKey = {
    id: need(isKeyId(o['id']), 'id', KEY_ID_RULE, o['id'] as string),
    name: need(isStr(o['name']) && o['name'].length > 0, 'name', 'must be a non-empty string', o['name'] as string),
    description: need(isStr(o['description']), 'description', 'must be a string', o['description'] as string),
    digest: need(isStr(o['digest']) && HEX64.test(o['digest']), 'digest', 'must be 64 lower-case hex digits (SHA-256)', o['digest'] as string),
    prefix: need(isStr(o['prefix']), 'prefix', 'must be a string', o['prefix'] as string),
    scopes: need(Array.isArray(scopes) && scopes.length > 0 && scopes.every(isScope), 'scopes', 'must list agents and/or workflows', scopes as StoredKey['scopes']),
    role: need(isRole(o['role']), 'role', 'must be a role', o['role'] as StoredKey['role']),
    workspace: need(strOrNull(o['workspace']), 'workspace', 'must be a string or null', o['workspace'] as string | null),
    workspaceAccess: wa as StoredKey['workspaceAccess'],
    surfaces: need(surfaces === null || (Array.isArray(surfaces) && surfaces.every(isSurface)), 'surfaces', 'must be null or a list of surfaces', surfaces as StoredKey['surfaces']),
    attributionClass: need(o['attributionClass'] === 'service_account' || o['attributionClass'] === 'user_owned', 'attributionClass', 'must be service_account or user_owned', o['attributionClass'] as StoredKey['attributionClass']),
    serviceAccountName: need(strOrNull(o['serviceAccountName']), 'serviceAccountName', 'must be a string or null', o['serviceAccountName'] as string | null),
    ownerUserId: need(strOrNull(o['ownerUserId']), 'ownerUserId', 'must be a string or null', o['ownerUserId'] as string | null),
    rateLimit: need(Number.isInteger(o['rateLimit']) && (o['rateLimit'] as number) > 0, 'rateLimit', 'must be a positive whole number', o['rateLimit'] as number),
    // an export from before quotas has none
    quota: parseQuota(o['quota']),
    // an export from before groups has none
    group: need(o['group'] === undefined || o['group'] === null || (isStr(o['group']) && o['group'].length > 0), 'group', 'must be a group name or null', (o['group'] as string | null | undefined) ?? null),
    expiresAt: need(isoOrNull(o['expiresAt']), 'expiresAt', 'must be an ISO 8601 date-time or null', o['expiresAt'] as string | null),
    isActive: need(typeof o['isActive'] === 'boolean', 'isActive', 'must be true or false', o['isActive'] as boolean),
    requestCount: need(Number.isInteger(count) && (count as number) >= 0, 'requestCount', 'must be a whole number', count as number),
    lastUsedAt: need(isoOrNull(o['lastUsedAt']), 'lastUsedAt', 'must be an ISO 8601 date-time or null', o['lastUsedAt'] as string | null),
    createdAt: need(isStr(o['createdAt']) && ISO.test(o['createdAt']), 'createdAt', 'must be an ISO 8601 date-time', o['createdAt'] as string),
    updatedAt: need(isStr(o['updatedAt']) && ISO.test(o['updatedAt']), 'updatedAt', 'must be an ISO 8601 date-time', o['updatedAt'] as string),
    createdBy: need(strOrNull(o['createdBy']), 'createdBy', 'must be a string or null', o['createdBy'] as string | null),
    updatedBy: need(strOrNull(o['updatedBy']), 'updatedBy', 'must be a string or null', o['updatedBy'] as string | null),
    managedBy: need(o['managedBy'] === 'api' || o['managedBy'] === 'config', 'managedBy', 'must be api or config', o['managedBy'] as StoredKey['managedBy']),
    previousDigest: need(o['previousDigest'] === undefined || o['previousDigest'] === null || (isStr(o['previousDigest']) && HEX64.test(o['previousDigest'])), 'previousDigest', 'must be 64 hex digits or null', (o['previousDigest'] as string | null | undefined) ?? null),
    previousDigestExpiresAt: need(o['previousDigestExpiresAt'] === undefined || isoOrNull(o['previousDigestExpiresAt']), 'previousDigestExpiresAt', 'must be an ISO 8601 date-time or null', (o['previousDigestExpiresAt'] as string | null | undefined) ?? null),
  };
  return key;
}

/** A group line, checked field by field (the quota by the key service's rules). */
export function parseGroupLine(o: Record<string, unknown>): KeyGroup {
  const rate = o['rateLimit'];
  return {
    name: need(isStr(o['name']) && o['name'].length > 0 && o['name'].length <= 100, 'name', 'must be a group name (1-100 characters)', o['name'] as string),
    description: need(isStr(o['description']), 'description', 'must be a string', o['description'] as string),
    rateLimit: need(rate === null || (Number.isInteger(rate) && (rate as number) > 0), 'rateLimit', 'must be a positive whole number or null', rate as number | null),
    quota: parseQuota(o['quota']),
    createdAt: need(isStr(o['createdAt']) && ISO.test(o['createdAt']), 'createdAt', 'must be an ISO 8601 date-time', o['createdAt'] as string),
    updatedAt: need(isStr(o['updatedAt']) && ISO.test(o['updatedAt']), 'updatedAt', 'must be an ISO 8601 date-time', o['updatedAt'] as string),
    createdBy: need(strOrNull(o['createdBy']), 'createdBy', 'must be a string or null', o['createdBy'] as string | null),
    updatedBy: need(strOrNull(o['updatedBy']), 'updatedBy', 'must be a string or null', o['updatedBy'] as string | null),
    managedBy: need(o['managedBy'] === 'api' || o['managedBy'] === 'config', 'managedBy', 'must be api or config', o['managedBy'] as KeyGroup['managedBy']),
  };
}

function parseAuditLine(o: Record<string, unknown>): AuditRecord {
  for (const f of ['id', 'at', 'actor', 'action', 'key_id', 'key_name'] as const) need(isStr(o[f]), f, 'must be a string', 0);
  need(strOrNull(o['remote_address']), 'remote_address', 'must be a string or null', 0);
  need(typeof o['details'] === 'object' && o['details'] !== null, 'details', 'must be an object', 0);
  const { type: _t, ...record } = o;
  return record as unknown as AuditRecord;
}

/** Fields an import may set on a key that exists (all but id, usage, creation and management). */
const PATCHABLE = [
  'name', 'description', 'digest', 'prefix', 'scopes', 'role', 'workspace', 'workspaceAccess', 'surfaces', 'attributionClass',
  'serviceAccountName', 'ownerUserId', 'rateLimit', 'quota', 'group', 'expiresAt', 'isActive', 'updatedAt', 'updatedBy', 'previousDigest', 'previousDigestExpiresAt',
] as const satisfies readonly (keyof KeyPatch)[];

export interface ImportReport {
  created: number;
  updated: number;
  skipped: number;
  audit: { created: number; skipped: number };
  /** key groups, by name */
  groups: { created: number; updated: number; skipped: number };
  /** "line N: why" for each line that was not imported */
  errors: string[];
}

/**
 * Import export lines into a store. By key id: a key the store lacks is created, one that differs
 * is updated to the exported fields, one that matches is skipped; usage only moves up to the
 * exported count (never down, never counted twice), so importing a file twice changes nothing.
 * A name or digest held by another key is an error for that line. `dryRun` reads and reports only.
 */
export async function importLines(store: KeyStore & AuditStore, lines: AsyncIterable<string>, opts: { dryRun?: boolean } = {}): Promise<ImportReport> {
  const report: ImportReport = { created: 0, updated: 0, skipped: 0, audit: { created: 0, skipped: 0 }, groups: { created: 0, updated: 0, skipped: 0 }, errors: [] };
  /** groups created by this dry run (nothing stored), so its keys naming them are judged as the real import would */
  const planned = new Set<string>();
  let auditIds: Set<string> | undefined;
  let n = 0;
  for await (const raw of lines) {
    n++;
    const line = raw.trim();
    if (line === '') continue;
    try {
      let o: unknown;
      try {
        o = JSON.parse(line);
      } catch {
        throw new Error('not a JSON object');
      }
      if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new Error('not a JSON object');
      const obj = o as Record<string, unknown>;
      if (obj['type'] === 'audit') {
        const record = parseAuditLine(obj);
        auditIds ??= new Set((await store.listAudit({ limit: Number.MAX_SAFE_INTEGER })).map((r) => r.id));
        if (auditIds.has(record.id)) report.audit.skipped++;
        else {
          if (!opts.dryRun) await store.appendAudit(record);
          auditIds.add(record.id);
          report.audit.created++;
        }
        continue;
      }
      if (obj['type'] === 'group') {
        const { type: _g, ...fields } = obj;
        await importGroup(store, parseGroupLine(fields), report, opts.dryRun === true, planned);
        continue;
      }
      if (obj['type'] !== 'key') throw new Error('"type" must be "group", "key" or "audit"');
      const { type: _t, ...fields } = obj;
      const key = parseKeyLine(fields);
      if (key.group !== null && !planned.has(key.group) && (await store.getGroup(key.group)) === undefined) {
        throw new Error(`key "${key.name}" (id ${key.id}): its group "${key.group}" is neither in the store nor earlier in the file`);
      }
      await importKey(store, key, report, opts.dryRun === true);
    } catch (err) {
      const e = err as Error;
      report.errors.push(`line ${n}: ${e.message}`);
    }
  }
  return report;
}

/** By name: created when missing, updated when its limits differ, else skipped. */
async function importGroup(store: KeyStore, g: KeyGroup, report: ImportReport, dryRun: boolean, planned: Set<string>): Promise<void> {
  const current = await store.getGroup(g.name);
  if (current === undefined) {
    if (!dryRun) await store.insertGroup(g);
    else planned.add(g.name);
    report.groups.created++;
    return;
  }
  const same = current.description === g.description && current.rateLimit === g.rateLimit && JSON.stringify(current.quota) === JSON.stringify(g.quota);
  if (same) {
    report.groups.skipped++;
    return;
  }
  if (!dryRun) await store.updateGroup(g.name, { description: g.description, rateLimit: g.rateLimit, quota: g.quota, updatedAt: g.updatedAt, updatedBy: g.updatedBy });
  report.groups.updated++;
}

async function importKey(store: KeyStore, key: StoredKey, report: ImportReport, dryRun: boolean): Promise<void> {
  const current = await store.get(key.id);
  const byName = await store.getByName(key.name);
  if (byName && byName.id !== key.id) throw new Error(`key "${key.name}" (id ${key.id}): the name is held by another key (id ${byName.id})`);
  const byDigest = await store.findByDigest(key.digest);
  if (byDigest && byDigest.id !== key.id) throw new Error(`key "${key.name}" (id ${key.id}): its digest belongs to another key (id ${byDigest.id})`);
  if (current === undefined) {
    if (!dryRun) {
      await store.insert(key);
      await topUpUsage(store, key, 0);
    }
    report.created++;
    return;
  }
  const patch: KeyPatch = {};
  for (const f of PATCHABLE) {
    if (JSON.stringify(current[f] ?? null) !== JSON.stringify(key[f] ?? null)) (patch as Record<string, unknown>)[f] = key[f];
  }
  const usageBehind = current.requestCount < key.requestCount || (key.lastUsedAt !== null && (current.lastUsedAt === null || current.lastUsedAt < key.lastUsedAt));
  if (Object.keys(patch).length === 0 && !usageBehind) {
    report.skipped++;
    return;
  }
  if (!dryRun) {
    if (Object.keys(patch).length > 0) await store.update(key.id, patch);
    await topUpUsage(store, key, current.requestCount);
  }
  report.updated++;
}

/** Raise the stored usage to the exported count and last use (stores only add and move forward). */
async function topUpUsage(store: KeyStore, key: StoredKey, have: number): Promise<void> {
  if (key.lastUsedAt === null) return; // never used: nothing to carry over
  const stored = await store.get(key.id);
  const add = Math.max(0, key.requestCount - (stored?.requestCount ?? have));
  if (add === 0 && stored?.lastUsedAt != null && stored.lastUsedAt >= key.lastUsedAt) return;
  await store.addUsage(new Map([[key.id, { count: add, lastUsedAt: key.lastUsedAt }]]), randomUUID());
}
