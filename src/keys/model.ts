// The key model shared by the store, the key service, the CLI and the admin APIs.
// Field names are camelCase here; the Dagen- and Dagu-shaped APIs map them at their edge.

import { ALL_SURFACES, ROLE_RANK, ROLES, SCOPE_BIT, SCOPES, SURFACE_BIT, SURFACES, type Role, type Scope, type Surface } from '../config/types.js';
import { limitsOf, type GroupLimits, type KeyGroup } from './group.js';
import type { Quota } from './quota.js';

export interface WorkspaceGrant {
  workspace: string;
  role: Role;
}

/** Dagu's workspace access: every workspace, or only the granted ones. */
export interface WorkspaceAccess {
  all: boolean;
  grants: WorkspaceGrant[];
}

export type AttributionClass = 'service_account' | 'user_owned';
export type KeyStatus = 'active' | 'inactive' | 'expired';

export interface ApiKey {
  id: string;
  name: string;
  description: string;
  /** first characters of the secret, for people to recognise a key */
  prefix: string;
  scopes: Scope[];
  role: Role;
  /** Dagen's model: the one workspace id the key is bound to (null = not bound) */
  workspace: string | null;
  /** Dagu's model: all workspaces, or per-workspace grants */
  workspaceAccess: WorkspaceAccess;
  /** null = every surface (Dagu's legacy keys) */
  surfaces: Surface[] | null;
  attributionClass: AttributionClass;
  serviceAccountName: string | null;
  ownerUserId: string | null;
  /** requests per minute */
  rateLimit: number;
  /** usage credits (per day/week/month, or one-time); null = no quota */
  quota: Quota | null;
  /** the name of the group whose rate limit and quota the key shares (in addition to its own); null = none */
  group: string | null;
  /** ISO 8601; null = never expires */
  expiresAt: string | null;
  isActive: boolean;
  requestCount: number;
  lastUsedAt: string | null;
  createdAt: string;
  updatedAt: string;
  createdBy: string | null;
  updatedBy: string | null;
  /** "config" for keys declared in the YAML, which the APIs must not change */
  managedBy: 'api' | 'config';
}

/** What the store holds: the key and the digest of its secret, never the secret. */
export interface StoredKey extends ApiKey {
  digest: string;
  /**
   * After a regenerate with a grace period: the digest of the secret it replaced, valid until
   * previousDigestExpiresAt (ISO 8601), then ignored. Absent or null = no grace.
   */
  previousDigest?: string | null;
  previousDigestExpiresAt?: string | null;
}

export function keyStatus(key: Pick<ApiKey, 'isActive' | 'expiresAt'>, nowMs: number): KeyStatus {
  if (!key.isActive) return 'inactive';
  if (key.expiresAt !== null && Date.parse(key.expiresAt) <= nowMs) return 'expired';
  return 'active';
}

/**
 * Whether a key matches a search of the key list: `search` (already lower-case) is part of its
 * name or of its key prefix. The one rule both stores apply (SQLite calls it as a SQL function).
 */
export function keyMatches(name: string, prefix: string, search: string): boolean {
  return name.toLowerCase().includes(search) || prefix.toLowerCase().includes(search);
}

export const KEY_STATUSES: readonly KeyStatus[] = ['active', 'inactive', 'expired'];

export function isRole(v: unknown): v is Role {
  return typeof v === 'string' && (ROLES as readonly string[]).includes(v);
}
export function isScope(v: unknown): v is Scope {
  return typeof v === 'string' && (SCOPES as readonly string[]).includes(v);
}
export function isSurface(v: unknown): v is Surface {
  return typeof v === 'string' && (SURFACES as readonly string[]).includes(v);
}

/**
 * A key as the hot path needs it: everything the authorisation decision reads, precomputed once
 * per cache fill so a request does no parsing or list scanning.
 */
export interface KeyAccess {
  readonly key: ApiKey;
  /** the digest this access was found by: the key's current one, or its previous one in grace */
  readonly digest: string;
  /** Infinity for the current digest; the end of the grace period for a previous one */
  readonly validUntilMs: number;
  readonly roleRank: number;
  readonly scopeMask: number;
  readonly surfaceMask: number;
  /** Infinity when the key never expires */
  readonly expiresAtMs: number;
  readonly allWorkspaces: boolean;
  /** workspace → role rank; a Dagen-bound key has one entry at its top-level role */
  readonly grants: ReadonlyMap<string, number>;
  /** value of the attribution header sent upstream */
  readonly attribution: string;
  /** the limits of the key's group, read with the key (no store read per request); null = no group */
  readonly group: GroupLimits | null;
}

/**
 * `viaPrevious`: the key was found by its previous digest, which is valid only until its grace ends.
 * `group`: the key's group as read with it (undefined or null: no group limits).
 */
export function accessOf(stored: StoredKey, viaPrevious = false, group?: KeyGroup | null): KeyAccess {
  const { digest: current, previousDigest, previousDigestExpiresAt, ...key } = stored;
  const digest = viaPrevious && previousDigest ? previousDigest : current;
  const validUntilMs = viaPrevious ? Date.parse(previousDigestExpiresAt ?? '') || 0 : Infinity;
  const grants = new Map<string, number>();
  let all = key.workspaceAccess.all;
  if (key.workspace !== null) {
    all = false;
    grants.set(key.workspace, ROLE_RANK[key.role]);
  } else {
    for (const g of key.workspaceAccess.grants) grants.set(g.workspace, ROLE_RANK[g.role]);
  }
  return Object.freeze({
    key: Object.freeze(key),
    digest,
    validUntilMs,
    roleRank: ROLE_RANK[key.role],
    scopeMask: key.scopes.reduce((m, s) => m | SCOPE_BIT[s], 0),
    surfaceMask: key.surfaces === null ? ALL_SURFACES : key.surfaces.reduce((m, s) => m | SURFACE_BIT[s], 0),
    expiresAtMs: key.expiresAt === null ? Infinity : Date.parse(key.expiresAt),
    allWorkspaces: all,
    grants,
    attribution:
      key.attributionClass === 'user_owned'
        ? `user_owned:${key.ownerUserId ?? ''}`
        : `service_account:${key.serviceAccountName ?? key.name}`,
    // a group without limits costs its keys nothing on the request path
    group: group && stored.group === group.name && (group.rateLimit !== null || group.quota !== null) ? limitsOf(group) : null,
  });
}
