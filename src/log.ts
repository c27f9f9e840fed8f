// The gateway's logger: pino, JSON lines, asynchronous writes. Nothing logs headers or query
// strings, and redaction below is a second line of defence for fields that could carry secrets.

import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import pino, { type Logger } from 'pino';
import type { LogConfig } from './config/types.js';

export type { Logger };

export function createLogger(config: LogConfig): Logger {
  const dest =
    config.destination === 'stdout' ? 1 : config.destination === 'stderr' ? 2 : (mkdirSync(dirname(config.destination), { recursive: true }), config.destination);
  return pino(
    {
      level: config.level,
      base: { service: 'keygate', pid: process.pid },
      redact: { paths: ['secret', 'key', 'token', 'auth_token', 'basic_auth_password', 'headers.authorization', 'headers["x-api-key"]'], censor: '[redacted]' },
    },
    pino.destination({ dest, sync: false }),
  );
}
