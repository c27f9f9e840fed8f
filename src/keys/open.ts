// Opens the key store a config names. The store also keeps the audit trail of key changes.

import { KeygateError } from '../errors.js';
import type { RedisSettings } from '../redis.js';
import { RedisKeyStore } from './redis-store.js';
import { SqliteKeyStore } from './sqlite-store.js';
import type { AuditStore, KeyStore } from './store.js';

export interface OpenKeyStoreOptions {
  /** topology for redis:// stores (standalone, sentinel, cluster) */
  redis?: RedisSettings | undefined;
  onError?: (err: Error) => void;
}

export function openKeyStore(spec: string, opts: OpenKeyStoreOptions = {}): KeyStore & AuditStore {
  if (spec.startsWith('sqlite:')) return new SqliteKeyStore(spec.slice('sqlite:'.length));
  if (/^rediss?:\/\//.test(spec)) return new RedisKeyStore(spec, opts);
  throw new KeygateError('store_unsupported', 500, `store.keys "${spec.replace(/\/\/[^@/]*@/, '//***@')}": expected sqlite:PATH or redis://…`);
}
