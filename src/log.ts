// The gateway's logger: pino, one JSON object per line (ISO-8601 time, level names), asynchronous
// writes (log-file.ts); or `log.format: pretty` for a terminal (pino-pretty, an optional dependency). Nothing
// logs headers or query strings, and redaction below is a second line of defence for fields that
// could carry secrets. The access log (access-log.ts) writes its own lines to the same stream, or
// to a destination of its own.

import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import pino, { type DestinationStream, type Logger } from 'pino';
import { LogFile } from './log-file.js';
import type { LogConfig } from './config/types.js';

export type { Logger };

/** What a log line is written to: a LogFile (log-file.ts), pino-pretty, or a test's stream. */
export interface LogStream {
  write(chunk: string): unknown;
  flush?(cb?: (err?: Error) => void): void;
  reopen?(): void;
  end?(): void;
}

/** Log files open by name, for reopenLogFile (after logrotate). */
const files = new Set<{ reopen(): void }>();

/** A destination by name: "stdout", "stderr" or a file path (created with its directory). */
export function openDestination(destination: string, format: LogConfig['format'] = 'json'): LogStream {
  const toFile = destination !== 'stdout' && destination !== 'stderr';
  if (toFile) mkdirSync(dirname(destination), { recursive: true });
  const dest = toFile ? destination : destination === 'stdout' ? 1 : 2;
  if (format === 'pretty') return prettyStream(dest);
  const stream = new LogFile(dest as string | 1 | 2);
  if (toFile) files.add(stream);
  return stream;
}

function prettyStream(destination: string | number): LogStream {
  let pretty: (opts: Record<string, unknown>) => LogStream;
  try {
    pretty = createRequire(import.meta.url)('pino-pretty') as typeof pretty;
  } catch {
    throw new Error('log.format: pretty needs the optional package pino-pretty (npm install pino-pretty), or use log.format: json');
  }
  return pretty({ destination, sync: false, mkdir: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'service,hostname' });
}

export function createLogger(config: LogConfig): Logger {
  return loggerOn(openDestination(config.destination, config.format), config.level);
}

/** The gateway's line format on any stream (tests log to their own). */
export function loggerOn(stream: LogStream, level: LogConfig['level'] = 'info'): Logger {
  return pino(
    {
      level,
      base: { service: 'keygate', pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: ['secret', 'key', 'token', 'auth_token', 'basic_auth_password', 'headers.authorization', 'headers["x-api-key"]'], censor: '[redacted]' },
    },
    stream as DestinationStream,
  );
}

/** The stream a logger writes to (the access log shares it when it has no destination of its own). */
export function streamOf(logger: Logger): LogStream {
  return (logger as unknown as Record<symbol, LogStream>)[pino.symbols.streamSym];
}

/**
 * Reopen the log files by their names (after logrotate moved them away); called on SIGHUP. A write
 * in flight ends in the old file; lines not yet written go to the new one. No-op for stdout and stderr.
 */
export function reopenLogFile(_logger?: Logger): void {
  for (const f of files) {
    try {
      f.reopen();
    } catch {
      files.delete(f); // closed meanwhile
    }
  }
}

/** Flush and close a destination opened for the access log (the gateway's shutdown). */
export function closeDestination(stream: LogStream): Promise<void> {
  files.delete(stream as { reopen(): void });
  return new Promise((resolve) => {
    if (!stream.flush) return resolve(stream.end?.());
    stream.flush(() => {
      stream.end?.();
      resolve();
    });
  });
}
