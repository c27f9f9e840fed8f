// The storage contract every key store (SQLite now, Redis for several instances) fulfils.
// Async so that a networked store fits; the SQLite store answers synchronously inside.

import type { StoredKey } from './model.js';

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
    | 'expiresAt'
    | 'isActive'
    | 'digest'
    | 'prefix'
    | 'updatedAt'
    | 'updatedBy'
  >
>;

/** Usage gathered in memory, written in one batch: per key id. */
export interface UsageDelta {
  count: number;
  /** ISO 8601 of the latest use in the batch */
  lastUsedAt: string;
}

export interface KeyStore {
  /** Throws ConflictError when the name is taken. */
  insert(key: StoredKey): Promise<void>;
  /** Undefined when no key has that id. Throws ConflictError when a new name is taken. */
  update(id: string, patch: KeyPatch): Promise<StoredKey | undefined>;
  delete(id: string): Promise<boolean>;
  get(id: string): Promise<StoredKey | undefined>;
  getByName(name: string): Promise<StoredKey | undefined>;
  findByDigest(digest: string): Promise<StoredKey | undefined>;
  list(): Promise<StoredKey[]>;
  count(): Promise<number>;
  /** Add counts and move last-used forward (never back), all in one transaction. */
  addUsage(batch: ReadonlyMap<string, UsageDelta>): Promise<void>;
  /**
   * A number that changes when another process changed the stored keys, read cheaply and
   * synchronously on the request path so a cache can tell it is stale.
   */
  changeMark(): number;
  close(): Promise<void>;
}
