// Prometheus metrics (prom-client), served by the admin listener at /metrics. Labels stay bounded:
// route names come from the configuration, decisions and status classes from fixed sets; never a
// raw path, never a key or secret.

import { Gauge, Registry, collectDefaultMetrics, Counter, type Metric } from 'prom-client';
import { VERSION } from './version.js';

/** What the gateway reports to /metrics; counters it keeps elsewhere are read on scrape. */
export interface MetricSources {
  limiter(): { degraded: boolean; switches: number; storeErrors: number };
  keyCache(): { hits: number; misses: number; stale: number };
  /** times the key store was found empty after it had content (marker key gone) */
  keyStoreContentLost(): number;
  /** circuit breakers of the stores on the request path (keys, rate_limits): open or not */
  breakers(): Record<string, boolean>;
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

/** status classes (the label values), and the index of each hundred in them */
const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx', 'other'];
const CLASS_OF_HUNDRED = [0, 0, 1, 2, 3, 4];
/** the decisions a request can end with (the label values) */
export const DECISIONS = ['allowed', 'unauthenticated', 'forbidden', 'rate_limited', 'quota_exceeded', 'upstream_error', 'upstream_version_mismatch', 'no_route', 'bad_request', 'error'] as const;
const DECISION_INDEX: Record<string, number> = Object.fromEntries(DECISIONS.map((d, i) => [d, i]));
/** seconds: from a cached key check (~1 ms) to a long agent chat */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * The request path counts into plain numbers (an array cell per label combination, no label
 * hashing, no prom-client call); these metrics hand them to the registry when it is scraped,
 * in prom-client's own shapes (text and the JSON the cluster's aggregation sums).
 */
interface Sample {
  metricName?: string;
  labels: Record<string, string | number>;
  sharedLabels?: Record<string, string>;
  value: number;
}

class ScrapedMetric {
  readonly aggregator = 'sum';
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'counter' | 'histogram',
    private readonly samples: () => Sample[],
    readonly reset: () => void = () => {},
  ) {}

  /** text exposition: histogram buckets keep `le` first and the series' labels after it, as prom-client writes them */
  getForPromString() {
    return { name: this.name, help: this.help, type: this.type, values: this.samples(), aggregator: this.aggregator };
  }

  /** JSON (getMetricsAsJSON, the cluster's aggregation): all labels in one object */
  get() {
    const values = this.samples().map(({ sharedLabels, labels, ...rest }) => ({ ...rest, labels: sharedLabels ? Object.assign(labels, sharedLabels) : labels }));
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }
}

/** One histogram series: per-bucket counts (not cumulative), sum and count. */
class Observed {
  readonly buckets = new Float64Array(LATENCY_BUCKETS.length);
  sum = 0;
  count = 0;

  observe(seconds: number): void {
    this.sum += seconds;
    this.count++;
    for (let i = 0; i < LATENCY_BUCKETS.length; i++) {
      if (seconds <= LATENCY_BUCKETS[i]!) {
        this.buckets[i]!++;
        return;
      }
    }
  }
}

function histogramSamples(name: string, label: string, series: ReadonlyMap<string, Observed>): Sample[] {
  const out: Sample[] = [];
  for (const [value, h] of series) {
    const shared = { [label]: value };
    let acc = 0;
    for (let i = 0; i < LATENCY_BUCKETS.length; i++) {
      acc += h.buckets[i]!;
      out.push({ metricName: `${name}_bucket`, labels: { le: LATENCY_BUCKETS[i]! }, sharedLabels: shared, value: acc });
    }
    out.push({ metricName: `${name}_bucket`, labels: { le: '+Inf' }, sharedLabels: shared, value: h.count });
    out.push({ metricName: `${name}_sum`, labels: {}, sharedLabels: shared, value: h.sum });
    out.push({ metricName: `${name}_count`, labels: {}, sharedLabels: shared, value: h.count });
  }
  return out;
}

/** Requests of one route: counts by (status class, decision), and the duration histogram. */
class RouteSeries {
  readonly counts = new Float64Array(STATUS_CLASSES.length * DECISIONS.length);
  readonly duration = new Observed();
}

export class GatewayMetrics {
  readonly registry = new Registry();
  /** route name → its counts; upstream name → its histogram; key id (or "other") → counts by decision */
  private readonly routes = new Map<string, RouteSeries>();
  private readonly upstreams = new Map<string, Observed>();
  private readonly keyCounts = new Map<string, Float64Array>();
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
    const scraped = (m: ScrapedMetric) => this.registry.registerMetric(m as unknown as Metric);
    scraped(new ScrapedMetric(
      'keygate_requests_total',
      'Requests by route, HTTP status class and decision (allowed, unauthenticated, forbidden, rate_limited, quota_exceeded, upstream_error, upstream_version_mismatch, no_route, bad_request, error).',
      'counter',
      () => {
        const out: Sample[] = [];
        for (const [route, r] of this.routes) {
          for (let i = 0; i < r.counts.length; i++) {
            const n = r.counts[i]!;
            if (n > 0) out.push({ labels: { route, status_class: STATUS_CLASSES[Math.floor(i / DECISIONS.length)]!, decision: DECISIONS[i % DECISIONS.length]! }, value: n });
          }
        }
        return out;
      },
    ));
    scraped(new ScrapedMetric('keygate_request_duration_seconds', 'Time from request to the end of the response, by route.', 'histogram', () =>
      histogramSamples('keygate_request_duration_seconds', 'route', new Map([...this.routes].map(([name, r]) => [name, r.duration]))),
    ));
    scraped(new ScrapedMetric('keygate_upstream_duration_seconds', "Time from forwarding to the upstream's response headers, by upstream.", 'histogram', () =>
      histogramSamples('keygate_upstream_duration_seconds', 'upstream', this.upstreams),
    ));
    scraped(new ScrapedMetric(
      'keygate_key_requests_total',
      'Requests made with each API key, by decision (with metrics.per_key; keys beyond metrics.max_keys count as key_id="other").',
      'counter',
      () => {
        const out: Sample[] = [];
        for (const [key_id, counts] of this.keyCounts) {
          for (let i = 0; i < counts.length; i++) if (counts[i]! > 0) out.push({ labels: { key_id, decision: DECISIONS[i]! }, value: counts[i]! });
        }
        return out;
      },
      () => this.keyCounts.clear(),
    ));
    // `max` across workers: "is any worker degraded", "the oldest unflushed counts" (sums would mean nothing)
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
    counter('keygate_key_cache_stale_total', 'Key lookups answered with the last known entry because the key store failed (store.stale_ttl).', () => sources.keyCache().stale);
    counter('keygate_key_store_content_lost_total', 'Times the key store came back empty (its marker key gone); declared keys were synced again.', () => sources.keyStoreContentLost());
    new Gauge({ name: 'keygate_store_breaker_open', help: '1 while the circuit breaker of a store (keys, rate_limits) is open: requests use the cache or fallback without asking it.', labelNames: ['store'], registers, aggregator: 'max',
      collect() {
        for (const [store, b] of Object.entries(sources.breakers())) this.set({ store }, b ? 1 : 0);
      } });
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
    let r = this.routes.get(route);
    if (r === undefined) this.routes.set(route, (r = new RouteSeries()));
    const statusClass = CLASS_OF_HUNDRED[Math.floor(status / 100)] ?? STATUS_CLASSES.length - 1;
    r.counts[statusClass * DECISIONS.length + (DECISION_INDEX[decision] ?? DECISIONS.length - 1)]!++;
    r.duration.observe(seconds);
  }

  /** metrics.per_key and metrics.max_keys; turning it off drops the per-key series. */
  configure(opts: { per_key: boolean; max_keys: number }): void {
    if (this.perKey && !opts.per_key) {
      this.keyCounts.clear();
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
    let counts = this.keyCounts.get(keyId);
    if (counts === undefined) this.keyCounts.set(keyId, (counts = new Float64Array(DECISIONS.length)));
    counts[DECISION_INDEX[decision] ?? DECISIONS.length - 1]!++;
  }

  credentialRejected(upstream: string, kind: 'upstream' | 'remote_node'): void {
    this.credentialRejections.inc({ upstream, kind });
  }

  upstream(name: string, seconds: number): void {
    let h = this.upstreams.get(name);
    if (h === undefined) this.upstreams.set(name, (h = new Observed()));
    h.observe(seconds);
  }

  /** What /metrics serves: this process's registry, or the cluster's aggregate once a worker (see cluster.ts). */
  scrape: () => Promise<{ contentType: string; body: string }> = async () => ({
    contentType: this.registry.contentType,
    body: await this.registry.metrics(),
  });
}
