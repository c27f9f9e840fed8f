// Opens the key store a config names.

import { KeygateError } from '../errors.js';
import { SqliteKeyStore } from './sqlite-store.js';
import type { KeyStore } from './store.js';

export function openKeyStore(spec: string): KeyStore {
  if (spec.startsWith('sqlite:')) return new SqliteKeyStore(spec.slice('sqlite:'.length));
  throw new KeygateError(
    'store_unsupported',
    500,
    `store.keys "${spec.replace(/\/\/[^@/]*@/, '//***@')}": only sqlite: is available in this version (the Redis key store is planned)`,
  );
}
