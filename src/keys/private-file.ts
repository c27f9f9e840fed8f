// The key store's SQLite file holds key digests, names and the audit trail: readable by its owner
// only. SQLite gives the -wal and -shm files it creates the mode of the database file.

import { closeSync, openSync } from 'node:fs';

/** Create `file` empty with mode 0600 ('wx': never touches an existing file). */
export function createPrivateFile(file: string): void {
  closeSync(openSync(file, 'wx', 0o600));
}
