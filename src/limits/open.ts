// Builds the rate limiter a config names: in-process memory, or Redis shared by several instances.

import type { GatewayConfig } from '../config/types.js';
import type { Logger } from '../log.js';
import { CircuitBreaker } from '../breaker.js';
import { createRedis, REQUEST_PATH_OPTIONS, type RedisClient, type RedisSettings } from '../redis.js';
import cluster from 'node:cluster';
import { BatchedCounterClient } from './cluster-store.js';
import { KeyRateLimiter, type WindowStore } from './limiter.js';
import { RedisWindows } from './redis-windows.js';

export interface OpenedLimiter {
  limiter: KeyRateLimiter;
  /** false while a shared store is unreachable (readiness) */
  reachable(): boolean;
  /** true while the shared store's circuit breaker is open (metrics) */
  breakerOpen(): boolean;
  /** settles when the store is reachable, or after a short wait (the gateway then starts degraded) */
  ready: Promise<void>;
  close(): Promise<void>;
}

/** How long start-up waits for a shared store before serving on the fallback policy. */
const STARTUP_WAIT_MS = 3000;
/** Set in the rate-limit Redis: its absence on a reconnect means the counters restarted empty. */
const MARKER = 'keygate:rl:marker';

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
  const client = createRedis(url, settings, REQUEST_PATH_OPTIONS);
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
function primaryCounters(): WindowStore {
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
    // The primary decides by its own clock, atomically (cluster-store.ts).
    // A single process answers from its own windows, synchronously (KeyRateLimiter.checkNow).
    const store = cluster.isWorker ? primaryCounters() : 'local';
    const events = { onSwitch: (degraded: boolean) => logger.warn(degraded ? 'cluster rate-limit counters not answering: per-worker limits until they do' : 'cluster rate-limit counters answer again') };
    return { limiter: new KeyRateLimiter(store, 'memory', events, now), reachable: () => true, breakerOpen: () => false, ready: Promise.resolve(), close: async () => {} };
  }
  const redis = requestPathRedis(spec, config.store.redis, logger, 'rate_limits');
  // decided inside Redis by its clock, one script call per hot key per event-loop turn (coalesce.ts)
  const store = new RedisWindows(redis);
  // After 3 failures in a row (250 ms timeouts when Redis is frozen) requests go straight to the
  // fallback; a background PING closes the breaker again.
  let limiter: KeyRateLimiter | undefined;
  const breaker = new CircuitBreaker({
    name: 'rate-limit store',
    probe: () => redis.ping(),
    onChange: (open, err) => {
      if (open) logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'rate-limit store circuit breaker open: the fallback policy answers without asking Redis; probing in the background');
      else {
        logger.info('rate-limit store circuit breaker closed: Redis answers again');
        limiter?.storeAnswers();
      }
    },
  });
  redis.on('close', () => breaker.trip(new Error('connection to redis lost')));
  redis.on('ready', () => breaker.close());
  limiter = new KeyRateLimiter(store, config.store.rate_limits_fallback, {
    onSwitch: (degraded, err) => {
      if (degraded) {
        logger.warn({ err: err instanceof Error ? err.message : String(err), policy: config.store.rate_limits_fallback }, 'rate-limit store failed: using the fallback policy');
      } else logger.info('rate-limit store answers again: shared limits restored');
    },
  }, now, breaker);
  // Counters that restart empty (Redis restarted without persistence, or flushed) restart every
  // key's window: say so. The marker is set on every connection; gone after it was seen = emptied.
  let markerSeen = false;
  redis.on('ready', () => {
    redis.set(MARKER, new Date().toISOString(), 'NX').then(
      (set) => {
        if (set === 'OK' && markerSeen) logger.warn({ store: redactUrl(spec) }, 'rate-limit store came back EMPTY (restarted or flushed): every key\'s rate-limit window counts from zero');
        else if (set === 'OK') logger.info({ store: redactUrl(spec) }, 'rate-limit store holds no counters from before (new or emptied): rate limits count from zero');
        markerSeen = true;
      },
      () => {},
    );
  });
  const ready = waitReady(redis, STARTUP_WAIT_MS).then((ok) => {
    if (!ok) logger.warn({ store: redactUrl(spec), policy: config.store.rate_limits_fallback }, 'rate-limit store not reachable at start: serving on the fallback policy until it is');
  });
  return {
    limiter,
    reachable: () => redis.status === 'ready' && !breaker.isOpen,
    breakerOpen: () => breaker.isOpen,
    ready,
    async close() {
      breaker.stop();
      redis.disconnect();
    },
  };
}
