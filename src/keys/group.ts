// Key groups: an identity several keys belong to (a tenant's CI key, its MCP key, a developer's
// key), with a rate limit and a quota shared by all of them, applied in addition to each key's own.
// The counters are the keys' own machinery under the owner `group:<name>`: the rate-limit window in
// the limiter, the quota counter in the key store.

import type { Quota } from './quota.js';

export interface KeyGroup {
  /** THE identity: unique, immutable, the same rules as key names */
  name: string;
  description: string;
  /** requests per minute shared by all member keys; null = no group rate limit */
  rateLimit: number | null;
  /** usage credits shared by all member keys (same Quota as keys); null = none */
  quota: Quota | null;
  createdAt: string;
  updatedAt: string;
  createdBy: string | null;
  updatedBy: string | null;
  /** "config" for groups declared in the YAML (groups.declared), which the APIs must not change */
  managedBy: 'api' | 'config';
}

/** Fields an update may change. */
export type GroupPatch = Partial<Pick<KeyGroup, 'description' | 'rateLimit' | 'quota' | 'updatedAt' | 'updatedBy'>>;

/**
 * A group's limits as the hot path needs them, carried in the cached KeyAccess of each member key:
 * the counter owner (rate-limit window and quota counter) computed once per cache fill.
 */
export interface GroupLimits {
  readonly name: string;
  /** `group:<name>`: the rate-limit window's key and the quota counter's owner */
  readonly owner: string;
  readonly rateLimit: number | null;
  readonly quota: Quota | null;
}

/** The counter owner of a group (rate-limit window and quota counter); keys use their id. */
export function groupOwner(name: string): string {
  return `group:${name}`;
}

export function limitsOf(g: KeyGroup): GroupLimits {
  return Object.freeze({ name: g.name, owner: groupOwner(g.name), rateLimit: g.rateLimit, quota: g.quota });
}
