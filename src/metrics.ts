// Prometheus metrics (prom-client), served by the admin listener at /metrics. Labels stay bounded:
// route names come from the configuration, decisions and status classes from fixed sets; never a
// raw path, never a key or secret.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { VERSION } from './version.js';

/** What the gateway reports to /metrics; counters it keeps elsewhere are read on scrape. */
export interface MetricSources {
  limiter(): { degraded: boolean; switches: number; storeErrors: number };
  keyCache(): { hits: number; misses: number };
  reloads(): { ok: number; failed: number };
  /** seconds since the last flush attempt that wrote its counts or had nothing to write */
  usageFlushLag(): number;
  /** client connections open on the public listener, and those of them upgraded to WebSocket */
  connections(): Promise<{ http: number; websocket: number }>;
  /** when the served TLS certificates expire (unix seconds), by listener; empty without TLS */
  certificateExpiry(): Record<string, number>;
  /** what the last version check found for each upstream and remote node with versioned routes */
  upstreamVersions(): { name: string; kind: string; version?: string; status: 'ok' | 'mismatch' | 'unreachable' }[];
}

const STATUS_CLASS = ['1xx', '1xx', '2xx', '3xx', '4xx', '5xx'];
/** seconds: from a cached key check (~1 ms) to a long agent chat */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'route' | 'status_class' | 'decision'>;
  private readonly duration: Histogram<'route'>;
  private readonly upstreamDuration: Histogram<'upstream'>;
  private readonly keyRequests: Counter<'key_id' | 'decision'>;
  private readonly credentialRejections: Counter<'upstream' | 'kind'>;
  /** metrics.per_key: the keys with their own series (id → latest name seen), at most maxKeys */
  private perKey = false;
  private maxKeys = 100;
  private readonly keyNames = new Map<string, string>();

  constructor(sources: MetricSources) {
    const registers = [this.registry];
    // prom-client's defaults are process_* and nodejs_*: keygate_process_cpu_seconds_total, keygate_nodejs_heap_size_used_bytes, …
    collectDefaultMetrics({ register: this.registry, prefix: 'keygate_' });
    new Gauge({ name: 'keygate_build_info', help: 'Always 1; the version of Keygate and of Node.js serving.', labelNames: ['version', 'node'], registers, aggregator: 'max' })
      .set({ version: VERSION, node: process.version }, 1);
    this.requests = new Counter({
      name: 'keygate_requests_total',
      help: 'Requests by route, HTTP status class and decision (allowed, unauthenticated, forbidden, rate_limited, upstream_error, upstream_version_mismatch, no_route, bad_request, error).',
      labelNames: ['route', 'status_class', 'decision'],
      registers,
    });
    this.duration = new Histogram({
      name: 'keygate_request_duration_seconds',
      help: 'Time from request to the end of the response, by route.',
      labelNames: ['route'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.upstreamDuration = new Histogram({
      name: 'keygate_upstream_duration_seconds',
      help: "Time from forwarding to the upstream's response headers, by upstream.",
      labelNames: ['upstream'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    // `max` across workers: "is any worker degraded", "the oldest unflushed counts" (sums would mean nothing)
    this.keyRequests = new Counter({
      name: 'keygate_key_requests_total',
      help: 'Requests made with each API key, by decision (with metrics.per_key; keys beyond metrics.max_keys count as key_id="other").',
      labelNames: ['key_id', 'decision'],
      registers,
    });
    const keyNames = this.keyNames;
    new Gauge({
      name: 'keygate_key_info',
      help: 'The name of each API key counted in keygate_key_requests_total (join on key_id), as last seen.',
      labelNames: ['key_id', 'key_name'],
      registers,
      aggregator: 'max',
      collect() {
        this.reset();
        for (const [key_id, key_name] of keyNames) this.set({ key_id, key_name }, 1);
      },
    });
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({ name, help, registers, aggregator: 'max', collect() { this.set(read()); } });
    // Counts kept by other modules become Prometheus counters, advanced by the delta at each scrape.
    const counter = (name: string, help: string, read: () => number) => {
      let seen = 0;
      return new Counter({ name, help, registers, collect() { const v = read(); if (v > seen) { this.inc(v - seen); seen = v; } } });
    };
    counter('keygate_rate_limit_store_errors_total', 'Errors of the shared rate-limit store.', () => sources.limiter().storeErrors);
    counter('keygate_rate_limit_fallback_switches_total', 'Switches to and from the rate-limit fallback policy.', () => sources.limiter().switches);
    gauge('keygate_rate_limit_degraded', '1 while the shared rate-limit store is unreachable and the fallback policy applies.', () => (sources.limiter().degraded ? 1 : 0));
    counter('keygate_key_cache_hits_total', 'Key lookups answered from the in-memory cache.', () => sources.keyCache().hits);
    counter('keygate_key_cache_misses_total', 'Key lookups that went to the key store.', () => sources.keyCache().misses);
    counter('keygate_config_reloads_total', 'Configuration reloads that took effect.', () => sources.reloads().ok);
    counter('keygate_config_reload_failures_total', 'Configuration reloads refused (the old configuration stayed).', () => sources.reloads().failed);
    gauge('keygate_usage_flush_lag_seconds', 'Seconds since the last usage flush that succeeded or had nothing to write (an idle gateway stays near 0).', () => sources.usageFlushLag());
    new Gauge({ name: 'keygate_tls_certificate_expiry_seconds', help: 'When the certificate a listener serves expires (unix time), by listener (public, admin).', labelNames: ['listener'], registers, aggregator: 'min',
      collect() {
        this.reset();
        for (const [listener, at] of Object.entries(sources.certificateExpiry())) this.set({ listener }, at);
      } });
    new Gauge({ name: 'keygate_upstream_version_info', help: 'Always 1: the Dagu version each upstream (kind=upstream) or remote node (kind=remote_node) with versioned routes reported at the last check.', labelNames: ['upstream', 'kind', 'version'], registers, aggregator: 'max',
      collect() {
        this.reset();
        for (const f of sources.upstreamVersions()) if (f.version !== undefined) this.set({ upstream: f.name, kind: f.kind, version: f.version }, 1);
      } });
    new Gauge({ name: 'keygate_upstream_version_mismatch', help: "1 while an upstream or remote node reports a version outside its routes' requires (those routes answer 502 upstream_version_mismatch), else 0.", labelNames: ['upstream', 'kind'], registers, aggregator: 'max',
      collect() {
        this.reset();
        for (const f of sources.upstreamVersions()) this.set({ upstream: f.name, kind: f.kind }, f.status === 'mismatch' ? 1 : 0);
      } });
    this.credentialRejections = new Counter({
      name: 'keygate_upstream_credential_rejections_total',
      help: "Responses where an upstream (kind=upstream) or remote node (kind=remote_node) refused the gateway's own credential with 401/403 (answered 502 upstream_credential_rejected).",
      labelNames: ['upstream', 'kind'],
      registers,
    });
    // summed across workers: every worker holds its own connections
    new Gauge({ name: 'keygate_open_connections', help: 'Client connections open on the public listener, by kind (http, websocket).', labelNames: ['kind'], registers,
      async collect() {
        const c = await sources.connections();
        this.set({ kind: 'http' }, c.http);
        this.set({ kind: 'websocket' }, c.websocket);
      } });
  }

  /** One finished request. `route` is a configured route name or "-" for none. */
  request(route: string, status: number, decision: string, seconds: number): void {
    this.requests.inc({ route, status_class: STATUS_CLASS[Math.floor(status / 100)] ?? 'other', decision });
    this.duration.observe({ route }, seconds);
  }

  /** metrics.per_key and metrics.max_keys; turning it off drops the per-key series. */
  configure(opts: { per_key: boolean; max_keys: number }): void {
    if (this.perKey && !opts.per_key) {
      this.keyRequests.reset();
      this.keyNames.clear();
    }
    this.perKey = opts.per_key;
    this.maxKeys = opts.max_keys;
  }

  /** One finished request made with a key (counted only with metrics.per_key). */
  keyRequest(id: string, name: string, decision: string): void {
    if (!this.perKey) return;
    let keyId = 'other';
    const known = this.keyNames.get(id);
    if (known !== undefined) {
      keyId = id;
      if (known !== name) this.keyNames.set(id, name); // renamed
    } else if (this.keyNames.size < this.maxKeys) {
      keyId = id;
      this.keyNames.set(id, name);
    }
    this.keyRequests.inc({ key_id: keyId, decision });
  }

  credentialRejected(upstream: string, kind: 'upstream' | 'remote_node'): void {
    this.credentialRejections.inc({ upstream, kind });
  }

  upstream(name: string, seconds: number): void {
    this.upstreamDuration.observe({ upstream: name }, seconds);
  }

  /** What /metrics serves: this process's registry, or the cluster's aggregate once a worker (see cluster.ts). */
  scrape: () => Promise<{ contentType: string; body: string }> = async () => ({
    contentType: this.registry.contentType,
    body: await this.registry.metrics(),
  });
}
