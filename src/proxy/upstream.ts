// One connection pool per upstream, with the upstream's own credential prepared once.

import { Pool } from 'undici';
import type { UpstreamConfig } from '../config/types.js';

export class Upstream {
  readonly name: string;
  readonly config: UpstreamConfig;
  readonly origin: string;
  /** Host header sent upstream (the upstream's own authority, as a reverse proxy should) */
  readonly host: string;
  /** header name → value injected on every forwarded request, undefined for auth_type none */
  readonly credential: readonly [string, string] | undefined;
  readonly pool: Pool;
  /** the gateway's own deadline for the response headers, queueing for a connection included (ms) */
  readonly timeoutMs: number;
  /** requests on this upstream now: on a connection or queued for one */
  inflight = 0;
  /** beyond connections + max_pending, a request is refused at once (503 upstream_overloaded) */
  readonly maxInflight: number;

  constructor(config: UpstreamConfig) {
    const url = new URL(config.api_base_url);
    this.name = config.name;
    this.config = config;
    this.origin = url.origin;
    this.host = url.host;
    this.credential = credentialOf(config);
    this.timeoutMs = config.timeout * 1000;
    this.maxInflight = config.connections + (config.max_pending ?? 1024);
    this.pool = new Pool(url.origin, {
      connections: config.connections,
      pipelining: 1,
      // The response-headers deadline (`timeout`) is the gateway's own exact timer (forward.ts);
      // undici's is only a backstop, given the body's value: with the two equal, undici refreshes
      // one timer per connection instead of making (and later sweeping) a new one for every
      // response, which under load was most of the garbage that lived long enough to need a full GC.
      headersTimeout: config.idle_timeout * 1000,
      bodyTimeout: config.idle_timeout * 1000,
      connect: { timeout: config.timeout * 1000, rejectUnauthorized: !config.skip_tls_verify },
      keepAliveTimeout: 4_000,
    });
  }

  /** Take a place (true), or false when connections and the pending queue are full. */
  admit(): boolean {
    if (this.inflight >= this.maxInflight) return false;
    this.inflight++;
    return true;
  }

  release(): void {
    this.inflight--;
  }

  /** requests waiting for a connection beyond the pool's */
  get pending(): number {
    return Math.max(0, this.inflight - this.config.connections);
  }

  close(): Promise<void> {
    return this.pool.close();
  }

  destroy(): Promise<void> {
    return this.pool.destroy();
  }
}

export function credentialOf(c: UpstreamConfig): readonly [string, string] | undefined {
  switch (c.auth_type) {
    case 'token':
      return c.auth_token ? ['authorization', `Bearer ${c.auth_token}`] : undefined;
    case 'basic':
      return c.basic_auth_username !== undefined
        ? ['authorization', 'Basic ' + Buffer.from(`${c.basic_auth_username}:${c.basic_auth_password ?? ''}`).toString('base64')]
        : undefined;
    case 'header':
      return c.auth_header && c.auth_token ? [c.auth_header.toLowerCase(), c.auth_token] : undefined;
    default:
      return undefined;
  }
}

/** All upstreams of a config, by name. */
export class Upstreams {
  private readonly byName = new Map<string, Upstream>();

  constructor(configs: readonly UpstreamConfig[]) {
    for (const c of configs) this.byName.set(c.name, new Upstream(c));
  }

  get(name: string): Upstream {
    const u = this.byName.get(name);
    if (!u) throw new Error(`unknown upstream "${name}"`); // the route table was compiled against the same config
    return u;
  }

  /** name → api_base_url path without a trailing slash, for mapping request paths onto each */
  basePaths(): Map<string, string> {
    return new Map([...this.byName].map(([name, u]) => [name, new URL(u.config.api_base_url).pathname.replace(/\/+$/, '')]));
  }

  async close(): Promise<void> {
    await Promise.all([...this.byName.values()].map((u) => u.close()));
  }
}
