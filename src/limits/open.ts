// Builds the rate limiter a config names: in-process memory, or Redis shared by several instances.

import { RateLimiterRedis } from 'rate-limiter-flexible';
import type { GatewayConfig } from '../config/types.js';
import type { Logger } from '../log.js';
import { createRedis, type RedisClient, type RedisSettings } from '../redis.js';
import cluster from 'node:cluster';
import { BatchedCounterClient } from './cluster-store.js';
import { KeyRateLimiter, type CounterStore } from './limiter.js';
import { BUCKETS, BUCKET_MS } from './window.js';

export interface OpenedLimiter {
  limiter: KeyRateLimiter;
  /** false while a shared store is unreachable (readiness) */
  reachable(): boolean;
  /** settles when the store is reachable, or after a short wait (the gateway then starts degraded) */
  ready: Promise<void>;
  close(): Promise<void>;
}

/** How long start-up waits for a shared store before serving on the fallback policy. */
const STARTUP_WAIT_MS = 3000;

/** Resolves when the client is ready or after `ms`; false when it was not ready in time. */
export function waitReady(client: RedisClient, ms: number): Promise<boolean> {
  if (client.status === 'ready') return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      client.off('ready', onReady);
      resolve(false);
    }, ms);
    const onReady = () => {
      clearTimeout(timer);
      resolve(true);
    };
    client.once('ready', onReady);
  });
}

/** Hide the password of a redis:// URL in messages. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}

/**
 * A Redis client for the request path: commands fail at once while disconnected (no offline
 * queue that would stall requests ~70 s) and it reconnects by itself in the background.
 */
export function requestPathRedis(url: string, settings: RedisSettings | undefined, logger: Logger, role: string): RedisClient {
  const client = createRedis(url, settings, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    commandTimeout: 500,
    connectTimeout: 2000,
    enableAutoPipelining: true,
    retryStrategy: (times) => Math.min(100 * times, 2000),
    lazyConnect: false,
  });
  let down = false;
  client.on('error', (err) => {
    if (!down) logger.warn({ err: err.message, store: redactUrl(url), role }, 'redis unreachable');
    down = true;
  });
  client.on('ready', () => {
    if (down) logger.info({ store: redactUrl(url), role }, 'redis reachable again');
    down = false;
  });
  return client;
}

/** In a cluster worker: the counters every worker shares, kept in the primary (cluster.ts). */
function primaryCounters(): CounterStore {
  const client = new BatchedCounterClient((msg, onError) => {
    if (!process.send) onError(new Error('no channel to the primary'));
    else process.send(msg, undefined, undefined, onError);
  });
  process.on('message', (msg: unknown) => client.receive(msg));
  return client;
}

export function openRateLimiter(config: GatewayConfig, logger: Logger, now: () => number = Date.now): OpenedLimiter {
  const spec = config.store.rate_limits;
  if (spec === 'memory') {
    // Several workers on one host share counters kept in the primary; if it does not answer, a
    // worker falls back to its own memory counters (the limiter's 'memory' policy).
    // A single process answers from its own windows, synchronously (KeyRateLimiter.checkNow).
    const store = cluster.isWorker ? primaryCounters() : 'local';
    const events = { onSwitch: (degraded: boolean) => logger.warn(degraded ? 'cluster rate-limit counters not answering: per-worker limits until they do' : 'cluster rate-limit counters answer again') };
    return { limiter: new KeyRateLimiter(store, 'memory', events, now), reachable: () => true, ready: Promise.resolve(), close: async () => {} };
  }
  const redis = requestPathRedis(spec, config.store.redis, logger, 'rate_limits');
  const store = new RateLimiterRedis({
    storeClient: redis,
    points: 1_000_000_000,
    duration: Math.ceil(((BUCKETS + 2) * BUCKET_MS) / 1000),
    keyPrefix: 'keygate:rl',
    rejectIfRedisNotReady: true,
  });
  const limiter = new KeyRateLimiter(store, config.store.rate_limits_fallback, {
    onSwitch: (degraded, err) => {
      if (degraded) {
        logger.warn({ err: err instanceof Error ? err.message : String(err), policy: config.store.rate_limits_fallback }, 'rate-limit store failed: using the fallback policy');
      } else logger.info('rate-limit store answers again: shared limits restored');
    },
  }, now);
  const ready = waitReady(redis, STARTUP_WAIT_MS).then((ok) => {
    if (!ok) logger.warn({ store: redactUrl(spec), policy: config.store.rate_limits_fallback }, 'rate-limit store not reachable at start: serving on the fallback policy until it is');
  });
  return {
    limiter,
    reachable: () => redis.status === 'ready',
    ready,
    async close() {
      redis.disconnect();
    },
  };
}
