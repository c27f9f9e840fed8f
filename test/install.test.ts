// Installing Keygate on a host: the key store's files are private to the service user.

import { statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { SqliteKeyStore } from '../src/keys/sqlite-store.js';

t.test('the SQLite key store is created 0600 (its -wal and -shm too) in a 0700 directory', async (t) => {
  const old = process.umask(0o022); // the usual umask, which alone would leave the files world-readable
  t.teardown(() => void process.umask(old));
  const dir = join(t.testdir(), 'data');
  const file = join(dir, 'keygate.db');
  const store = new SqliteKeyStore(file);
  await store.addUsage(new Map()); // a write: WAL and shared-memory files exist now
  const mode = (f: string) => (statSync(f).mode & 0o777).toString(8);
  t.equal(mode(dir), '700', 'directory');
  for (const f of [file, `${file}-wal`, `${file}-shm`]) t.equal(mode(f), '600', f.slice(dir.length + 1));
  await store.close();
});
