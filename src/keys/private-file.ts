// The key store's SQLite file holds key digests, names and the audit trail: readable by its owner
// only. SQLite gives the -wal and -shm files it creates the mode of the database file.

import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';

/** Create `file` (and its directory, 0700) with mode 0600 unless it exists; an existing file keeps its mode. */
export function createPrivateFile(file: string): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  if (!existsSync(file)) closeSync(openSync(file, 'a', 0o600));
}
