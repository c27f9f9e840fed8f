// One way to build a Redis client from the config, for every Redis-backed store: a single node
// (the URL), a Sentinel-managed master, or a Cluster.

import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';

export interface RedisSettings {
  mode: 'standalone' | 'sentinel' | 'cluster';
  /** sentinel mode: "host:port" of the sentinels */
  sentinels?: readonly string[];
  /** sentinel mode: the master group name */
  sentinel_name?: string;
  /** cluster mode: "host:port" seed nodes (default: the URL's host and port) */
  nodes?: readonly string[];
}

export type RedisClient = Redis | Cluster;

function hostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  return i === -1 ? { host: s, port: 6379 } : { host: s.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(s.slice(i + 1)) };
}

/**
 * `url` carries credentials, TLS (rediss://) and the database; `settings` says how to find the
 * server. `options` are the caller's client behaviour (offline queue, timeouts).
 */
export function createRedis(url: string, settings: RedisSettings | undefined, options: RedisOptions): RedisClient {
  const mode = settings?.mode ?? 'standalone';
  if (mode === 'standalone') return new Redis(url, options);
  const u = new URL(url);
  const auth: RedisOptions = {
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
  };
  if (mode === 'sentinel') {
    return new Redis({
      ...options,
      ...auth,
      sentinels: (settings?.sentinels ?? []).map(hostPort),
      name: settings?.sentinel_name ?? 'mymaster',
      db: Number(u.pathname.slice(1) || 0),
    });
  }
  // autoResubscribe is a single-node setting; the cluster's subscriber resubscribes on its own
  const { enableOfflineQueue, enableAutoPipelining, retryStrategy, autoResubscribe: _ar, ...redisOptions } = options;
  const cluster: ClusterOptions = {
    redisOptions: { ...redisOptions, ...auth },
    ...(enableOfflineQueue !== undefined ? { enableOfflineQueue } : {}),
    ...(enableAutoPipelining !== undefined ? { enableAutoPipelining } : {}),
    ...(retryStrategy ? { clusterRetryStrategy: (times: number) => retryStrategy(times) ?? null } : {}),
  };
  const seeds = settings?.nodes?.length ? settings.nodes.map(hostPort) : [{ host: u.hostname, port: Number(u.port || 6379) }];
  return new Cluster(seeds, cluster);
}

/**
 * Client behaviour for the request path: commands fail at once while disconnected (no offline
 * queue that would stall requests), time out after 250 ms, and the client reconnects by itself
 * in the background.
 */
export const REQUEST_PATH_OPTIONS: RedisOptions = {
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  commandTimeout: 250,
  connectTimeout: 2000,
  enableAutoPipelining: true,
  retryStrategy: (times) => Math.min(100 * times, 1000),
  lazyConnect: false,
};
