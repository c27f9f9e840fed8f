// The gateway's logger: pino, JSON lines, asynchronous writes. Nothing logs headers or query
// strings, and redaction below is a second line of defence for fields that could carry secrets.

import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import pino, { type Logger } from 'pino';
import type { LogConfig } from './config/types.js';

export type { Logger };

/** Loggers writing to a file, with their stream, for reopenLogFile. */
const files = new WeakMap<Logger, { reopen(): void }>();

export function createLogger(config: LogConfig): Logger {
  const toFile = config.destination !== 'stdout' && config.destination !== 'stderr';
  if (toFile) mkdirSync(dirname(config.destination), { recursive: true });
  const stream = pino.destination({ dest: toFile ? config.destination : config.destination === 'stdout' ? 1 : 2, sync: false });
  const logger = pino(
    {
      level: config.level,
      base: { service: 'keygate', pid: process.pid },
      redact: { paths: ['secret', 'key', 'token', 'auth_token', 'basic_auth_password', 'headers.authorization', 'headers["x-api-key"]'], censor: '[redacted]' },
    },
    stream,
  );
  if (toFile) files.set(logger, stream);
  return logger;
}

/**
 * Reopen the log file by its name (after logrotate moved it away); called on SIGHUP. Lines
 * still buffered go to the old file, later ones to the new. No-op for stdout and stderr.
 */
export function reopenLogFile(logger: Logger): void {
  files.get(logger)?.reopen();
}
