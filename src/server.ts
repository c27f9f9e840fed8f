// Composition and lifecycle: build the parts, listen, reload, health, shutdown. What happens to
// one request, start to end, is in pipeline.ts.

import { STATUS_CODES, createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { Admitter } from './admission.js';
import { AdminServer } from './admin/server.js';
import type { GatewayConfig } from './config/types.js';
import { KeygateError } from './errors.js';
import { openKeyStore } from './keys/open.js';
import { KeyService, serviceConfig } from './keys/service.js';
import { SqliteKeyStore } from './keys/sqlite-store.js';
import { AccessLog } from './access-log.js';
import { closeDestination, createLogger, openDestination, streamOf, type Logger, type LogStream } from './log.js';
import { Upstreams } from './proxy/upstream.js';
import type { KeyRateLimiter } from './limits/limiter.js';
import { openRateLimiter, type OpenedLimiter } from './limits/open.js';
import { RouteTable } from './routes/table.js';
import { GatewayMetrics } from './metrics.js';
import { Pipeline } from './pipeline.js';
import { QuotaGate } from './limits/quota.js';
import { ForwardAuth } from './forward-auth.js';
import { INVALID_REQUEST, rpcError } from './jsonrpc/policy.js';
import { GatewayRequest, GatewayResponse } from './request.js';
import { sendError, sendJson } from './respond.js';
import { loadTls, type TlsMaterial } from './tls.js';
import { UsageCounter } from './usage/counter.js';
import { StoreGuard } from './store-guard.js';
import { VersionGate, type Finding } from './upstream-version/gate.js';

export interface GatewayOptions {
  config: GatewayConfig;
  /** defaults to a logger built from config.log */
  logger?: Logger;
  /** defaults to a service over the store named by config.store.keys */
  keys?: KeyService;
  /** listen on this port instead of config.listen.port (0 = any free port; tests) */
  port?: number;
  /** admin listener on this port instead of config.admin.port (0 = any free port; tests) */
  adminPort?: number;
  now?: () => number;
  /** ms between re-checks of the upstreams' versions (default one minute; tests) */
  versionRecheckMs?: number;
}

/** `METHOD target HTTP/1.x` at the start of the bytes node could not parse, if they hold it. */
const REQUEST_LINE = /^([A-Z]{1,16}) (\/[^ \r\n]{0,8190}) HTTP\/1\.[01]\r?\n/;

export function requestLineOf(raw: unknown): { method: string; target: string } | undefined {
  if (!Buffer.isBuffer(raw)) return undefined;
  const m = REQUEST_LINE.exec(raw.toString('latin1', 0, Math.min(raw.length, 8300)));
  return m === null ? undefined : { method: m[1]!, target: m[2]! };
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    p.then(
      (v) => (clearTimeout(timer), resolve(v)),
      (e) => (clearTimeout(timer), reject(e)),
    );
  });
}

export class Gateway {
  /** the live configuration; replaced as a whole by reload() */
  config: GatewayConfig;
  readonly keys: KeyService;
  readonly logger: Logger;
  routes: RouteTable;
  /** the admin listener (key APIs, audit, OpenAPI); undefined when admin.enabled is false */
  readonly admin: AdminServer | undefined;
  private readonly server: Server;
  /** one line per finished request; undefined with log.access_log: false */
  private readonly accessLog: AccessLog | undefined;
  /** the access log's own destination, when log.access_log names one */
  private readonly accessStream: LogStream | undefined;
  /** what every request goes through; holds the live admitter and upstream pools */
  private readonly pipeline: Pipeline;
  private readonly usage: UsageCounter;
  private readonly guard: StoreGuard;
  private readonly limits: OpenedLimiter;
  private readonly limiter: KeyRateLimiter;
  private readonly now: () => number;
  private readonly ownsKeys: boolean;
  private closing: Promise<void> | undefined;
  private auditTimer: NodeJS.Timeout | undefined;
  /** notAfter of the certificates served (unix seconds), by listener, for /metrics */
  private readonly certificateExpiry: Record<string, number> = {};

  private constructor(opts: GatewayOptions) {
    this.config = opts.config;
    this.now = opts.now ?? Date.now;
    this.logger = opts.logger ?? createLogger(opts.config.log);
    this.ownsKeys = opts.keys === undefined;
    if (opts.keys) this.keys = opts.keys;
    else {
      const store = openKeyStore(opts.config.store.keys, { redis: opts.config.store.redis, onError: (err) => this.logger.warn({ err: err.message }, 'key store (redis) error') });
      // every key change, whoever makes it, is logged and kept in the store's audit table
      this.keys = new KeyService(store, serviceConfig(opts.config), this.now, { store, log: (record) => this.logger.info({ audit: record }, 'key change') }, { staleTtlMs: opts.config.store.stale_ttl * 1000 });
      if (store instanceof SqliteKeyStore && store.created) {
        this.logger.warn({ store: opts.config.store.keys }, `key store ${store.file} did not exist: created a new, empty one (no key works until keys are created or restored)`);
      }
    }
    const gateway = this; // for the admin listener's callbacks, which run after construction
    this.admin = opts.config.admin.enabled
      ? new AdminServer({
          keys: this.keys,
          logger: this.logger,
          token: opts.config.admin.token,
          maxFailedAuth: opts.config.admin.max_failed_auth,
          allowedHosts: [...opts.config.admin.allowed_hosts, opts.config.admin.host.toLowerCase()],
          ...(opts.config.admin.tls ? { tls: this.servedCertificate('admin', loadTls(opts.config.admin.tls)) } : {}),
          now: this.now,
          // a getter: the key page sees the configuration a reload made live
          info: { get config() { return gateway.config; }, publicUrl: () => gateway.url },
          ops: {
            metrics: () => gateway.metrics.scrape(),
            readiness: () => gateway.readiness(),
          },
        })
      : undefined;
    this.routes = RouteTable.compile(opts.config);
    const remoteNodes = new Upstreams(opts.config.remote_nodes);
    const upstreams = new Upstreams(opts.config.upstreams);
    this.versionRecheckMs = opts.versionRecheckMs ?? 60_000;
    this.limits = openRateLimiter(opts.config, this.logger, this.now);
    this.limiter = this.limits.limiter;
    this.usage = new UsageCounter(this.keys.store, 200, (err, inRow) => {
      if (inRow === 1) this.logger.error({ err: (err as Error).message ?? String(err) }, 'usage flush failed; the batch is kept and retried (applied at most once)');
    });
    this.guard = new StoreGuard({ keys: this.keys, usage: this.usage, logger: this.logger, dir: opts.config.store.state_dir, staleTtlSeconds: opts.config.store.stale_ttl });
    this.metrics = new GatewayMetrics({
      limiter: () => this.limiterState,
      keyCache: () => this.keys.cacheStats,
      keyStoreContentLost: () => this.guard.contentLost,
      breakers: () => ({ keys: this.keys.store.unreachable?.() !== undefined, rate_limits: this.limits.breakerOpen() }),
      reloads: () => this.reloads,
      usageFlushLag: () => (Date.now() - this.usage.lastFlushMs) / 1000,
      certificateExpiry: () => this.certificateExpiry,
      upstreamVersions: () => this.pipeline.versions.findings(),
      // the HTTP server still counts the sockets it handed over to WebSocket proxying
      connections: () =>
        new Promise((resolve) => {
          const upgraded = this.pipeline.upgraded;
          this.server.getConnections((err, n) => resolve({ http: err ? 0 : Math.max(0, n - upgraded.size), websocket: upgraded.size }));
        }),
    });
    this.metrics.configure(opts.config.metrics);
    const access = opts.config.log.access_log;
    // access lines are info lines: a logger set to warn or above writes none to its own stream
    this.accessStream = typeof access === 'string' ? openDestination(access, opts.config.log.format) : undefined;
    this.accessLog =
      this.accessStream !== undefined ? new AccessLog(this.accessStream)
      : access === true && this.logger.isLevelEnabled('info') ? new AccessLog(streamOf(this.logger))
      : undefined;
    this.pipeline = new Pipeline({
      config: opts.config,
      admitter: new Admitter(this.routes, this.keys, this.now, remoteNodes.basePaths()),
      upstreams,
      remoteNodes,
      versions: versionGate(opts.config, upstreams, remoteNodes),
      logger: this.logger,
      usage: this.usage,
      limiter: this.limiter,
      quotas: new QuotaGate(this.keys.store, this.now),
      metrics: this.metrics,
      accessLog: this.accessLog,
      now: this.now,
      health: (req, res, what) => this.serveHealth(req, res, what),
      forwardAuth: opts.config.forward_auth && new ForwardAuth(opts.config.forward_auth),
    });
    const pipeline = this.pipeline;
    const { header_timeout, request_timeout } = opts.config.listen;
    // node builds these classes for every request (typed loosely: node's generics do not follow subclasses)
    const serverOptions = {
      keepAliveTimeout: 5_000,
      IncomingMessage: GatewayRequest as typeof IncomingMessage,
      ServerResponse: GatewayResponse as typeof ServerResponse,
      headersTimeout: header_timeout * 1000,
      requestTimeout: request_timeout * 1000,
      // how often Node looks for clients past those timeouts (its default, 30 s, let a slow client
      // hold a socket three times the timeout)
      connectionsCheckingInterval: CLIENT_TIMEOUT_CHECK_MS,
    };
    const onRequest = (req: IncomingMessage, res: ServerResponse) => pipeline.onRequest(req as GatewayRequest, res as GatewayResponse);
    const tls = opts.config.listen.tls && this.servedCertificate('public', loadTls(opts.config.listen.tls));
    this.server = tls ? createHttpsServer({ ...serverOptions, cert: tls.cert, key: tls.key }, onRequest) : createServer(serverOptions, onRequest);
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => pipeline.onUpgrade(req as GatewayRequest, socket, head));
    // A malformed request gets 400, a header block over node's limit 431, a client too slow to
    // send its request (slow loris) 408; either way the socket is destroyed once the answer is
    // written, never left half-open. On a JSON-RPC path (when the request line arrived) the answer
    // is a JSON-RPC error, as every other refusal there.
    this.server.on('clientError', (err: Error & { code?: string; rawPacket?: unknown }, socket: Duplex) => {
      if (socket.writable && !(socket as { _httpMessage?: unknown })._httpMessage) {
        const slow = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
        const large = err.code === 'HPE_HEADER_OVERFLOW';
        const [status, code, message] = slow
          ? [408, 'request_timeout', `the request was not received in time (headers within ${header_timeout} s${request_timeout > 0 ? `, all of it within ${request_timeout} s` : ''})`]
          : large
            ? [431, 'header_too_large', 'the request header block is larger than this server accepts']
            : [400, 'bad_request', 'malformed HTTP request'];
        const line = requestLineOf(err.rawPacket);
        const rpc = line !== undefined && pipeline.admitter.rpcRoute(line.target, undefined) !== undefined;
        const body = rpc ? rpcError(null, INVALID_REQUEST, message) : JSON.stringify({ code, message });
        socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`, () => socket.destroy());
      } else socket.destroy();
    });
  }

  static async start(opts: GatewayOptions): Promise<Gateway> {
    const gw = new Gateway(opts);
    const { host } = opts.config.listen;
    const port = opts.port ?? opts.config.listen.port;
    try {
      // neither store has to be reachable: the gateway serves what it can and catches up
      await Promise.all([gw.limits.ready, gw.guard.start()]);
      await gw.checkVersions(gw.pipeline.versions);
      await listening('listen', host, port, new Promise<void>((resolve, reject) => {
        gw.server.once('error', reject);
        gw.server.listen(port, host, () => {
          gw.server.off('error', reject);
          resolve();
        });
      }));
      const adminPort = opts.adminPort ?? opts.config.admin.port;
      if (gw.admin) await listening('admin', opts.config.admin.host, adminPort, gw.admin.listen(adminPort, opts.config.admin.host));
    } catch (err) {
      await gw.close(0, 0);
      throw err;
    }
    gw.pipeline.versions.start(gw.versionRecheckMs, (f) => gw.logFinding(f));
    gw.usage.start();
    gw.pruneAudit();
    gw.auditTimer = setInterval(() => gw.pruneAudit(), 3_600_000).unref();
    return gw;
  }

  private readonly versionRecheckMs: number;

  /**
   * Ask every upstream with versioned routes its version: a mismatch throws (start and reload
   * refuse the configuration), an unreachable one is a warning (checked again before the first
   * request is forwarded to it).
   */
  private async checkVersions(gate: VersionGate): Promise<void> {
    const findings = await gate.probeAll();
    for (const f of findings) if (f.status !== 'mismatch') this.logFinding(f);
    const bad = findings.filter((f) => f.status === 'mismatch');
    if (bad.length > 0) throw new KeygateError('upstream_version_mismatch', 502, bad.map((f) => f.message).join('\n'));
  }

  private logFinding(f: Finding): void {
    const fields = { upstream: f.name, kind: f.kind, version: f.version, requires: f.requires };
    if (f.status === 'ok') this.logger.info(fields, f.message);
    else if (f.status === 'unreachable') this.logger.warn(fields, f.message);
    else this.logger.error(fields, `${f.message}; its routes answer 502 upstream_version_mismatch`);
  }

  /** Note when a listener's certificate expires (for /metrics); returns what the server needs. */
  private servedCertificate(listener: 'public' | 'admin', tls: TlsMaterial): { cert: Buffer; key: Buffer } {
    this.certificateExpiry[listener] = Math.floor(Date.parse(tls.x509.validTo) / 1000);
    return { cert: tls.cert, key: tls.key };
  }

  /**
   * keys.audit_retention_days: drop older audit records (at start, then hourly; a no-op without it);
   * keys.usage_retention_days: the same for the hourly usage history.
   */
  private pruneAudit(): void {
    this.keys.pruneAudit().then(
      (removed) => {
        if (removed > 0) this.logger.info({ removed, audit_retention_days: this.config.keys.audit_retention_days }, 'audit records past their retention removed');
      },
      (err: Error) => this.logger.warn({ err: err.message }, 'removing old audit records failed; trying again in an hour'),
    );
    this.keys.pruneUsage().then(
      (removed) => {
        if (removed > 0) this.logger.info({ removed_hours: removed, usage_retention_days: this.config.keys.usage_retention_days }, 'usage history past its retention removed');
      },
      (err: Error) => this.logger.warn({ err: err.message }, 'removing old usage history failed; trying again in an hour'),
    );
  }

  /** Prometheus metrics; rendered by the admin listener at /metrics. */
  readonly metrics: GatewayMetrics;

  /** Successful and failed reloads, for logs and metrics. */
  readonly reloads = { ok: 0, failed: 0 };

  /**
   * Make a new configuration live without dropping a request. Everything is compiled aside first
   * (a bad config throws and changes nothing); then the references are swapped, so new requests
   * use the new routes and pools while in-flight ones finish on the old pools, which close once
   * idle. Listener addresses, stores and logging need a restart; a change there is reported.
   */
  async reload(next: GatewayConfig): Promise<{ restartNeeded: string[]; declaredKeys: string }> {
    let built;
    try {
      const routes = RouteTable.compile(next);
      const upstreams = new Upstreams(next.upstreams);
      const remoteNodes = new Upstreams(next.remote_nodes);
      built = {
        routes,
        upstreams,
        remoteNodes,
        admitter: new Admitter(routes, this.keys, this.now, remoteNodes.basePaths()),
        versions: versionGate(next, upstreams, remoteNodes),
        forwardAuth: next.forward_auth && new ForwardAuth(next.forward_auth),
      };
    } catch (err) {
      this.reloads.failed++;
      throw err;
    }
    try {
      await this.checkVersions(built.versions);
    } catch (err) {
      this.reloads.failed++;
      void built.upstreams.close();
      void built.remoteNodes.close();
      throw err;
    }
    const restartNeeded = (['listen', 'admin', 'store', 'log'] as const).filter((section) => JSON.stringify(next[section]) !== JSON.stringify(this.config[section]));
    // the same certificate files, perhaps with new contents (rotation): new connections get them
    let publicTls, adminTls;
    try {
      if (this.config.listen.tls && !restartNeeded.includes('listen')) publicTls = loadTls(this.config.listen.tls);
      if (this.config.admin.tls && !restartNeeded.includes('admin')) adminTls = loadTls(this.config.admin.tls);
    } catch (err) {
      this.reloads.failed++;
      throw err;
    }
    if (publicTls) (this.server as HttpsServer).setSecureContext(this.servedCertificate('public', publicTls));
    if (adminTls) this.admin?.setCertificate(this.servedCertificate('admin', adminTls));
    const pipeline = this.pipeline;
    const old = { upstreams: pipeline.upstreams, remoteNodes: pipeline.remoteNodes, versions: pipeline.versions };
    // the swap: plain assignments, no await in between
    this.routes = built.routes;
    pipeline.upstreams = built.upstreams;
    pipeline.remoteNodes = built.remoteNodes;
    pipeline.admitter = built.admitter;
    pipeline.versions = built.versions;
    pipeline.forwardAuth = built.forwardAuth;
    this.config = { ...next, listen: this.config.listen, admin: this.config.admin, store: this.config.store, log: this.config.log };
    pipeline.config = this.config;
    this.keys.setConfig(serviceConfig(next));
    this.metrics.configure(next.metrics);
    this.reloads.ok++;
    // close() on an undici pool waits for the requests still running on it
    void old.upstreams.close();
    void old.remoteNodes.close();
    old.versions.stop();
    built.versions.start(this.versionRecheckMs, (f) => this.logFinding(f));
    let declaredKeys: string;
    try {
      const c = await this.keys.syncDeclared();
      const g = c.groups;
      declaredKeys = `created ${c.created}, updated ${c.updated}, deleted ${c.deleted}${g.created + g.updated + g.deleted > 0 ? `; groups created ${g.created}, updated ${g.updated}, deleted ${g.deleted}` : ''}`;
    } catch (err) {
      declaredKeys = `not synced: ${(err as Error).message}`;
    }
    return { restartNeeded, declaredKeys };
  }

  /**
   * Readiness: config loaded (it is, or this object would not exist), key store answering, Redis
   * reachable when configured. Shared by the public and admin listeners.
   */
  async readiness(): Promise<{ ready: boolean; degraded: boolean; checks: Record<string, string> }> {
    const checks: Record<string, string> = { config: 'ok' };
    if (this.pipeline.draining) checks.shutdown = 'draining: the gateway is shutting down';
    const keys = this.guard.keyStoreCheck(this.now());
    if (keys.state !== 'ok') checks.key_store = keys.message;
    else {
      try {
        await withTimeout(this.keys.store.count(), 1000);
        const fault = this.keys.store.fault?.();
        checks.key_store = fault === undefined ? 'ok' : `cannot take changes: ${fault}`;
      } catch (err) {
        checks.key_store = `unreachable: ${(err as Error).message}`;
      }
    }
    checks.rate_limit_store = this.limits.reachable()
      ? 'ok'
      : `degraded: rate-limit store unreachable; serving on the fallback policy (${this.config.store.rate_limits_fallback})`;
    // degraded still serves (cached keys, fallback limits): a load balancer should keep sending
    let ready = Object.values(checks).every((c) => c === 'ok' || c.startsWith('degraded'));
    const degraded = Object.values(checks).some((c) => c.startsWith('degraded'));
    // an upstream with versioned routes: its version, a mismatch (not ready: the configuration is
    // wrong for it), or not checked yet (ready: it is asked before the first request)
    for (const f of this.pipeline.versions.findings()) {
      const key = f.kind === 'upstream' ? `upstream_version.${f.name}` : `remote_node_version.${f.name}`;
      if (f.status === 'ok') checks[key] = `ok: Dagu ${f.version}`;
      else if (f.status === 'unreachable') checks[key] = `not checked: ${f.message}`;
      else {
        checks[key] = `mismatch: ${f.message}`;
        ready = false;
      }
    }
    return { ready, degraded: ready && degraded, checks };
  }

  /** `<prefix>healthz` (alive) and `<prefix>readyz` (ready to serve), on the public listener. */
  private serveHealth(req: GatewayRequest, res: GatewayResponse, what: string): void {
    req.resume();
    const path = what.split('?', 1)[0];
    if ((req.method !== 'GET' && req.method !== 'HEAD') || (path !== 'healthz' && path !== 'readyz')) {
      sendError(res, 404, 'not_found', `${this.config.listen.health_prefix}healthz and ${this.config.listen.health_prefix}readyz are the only endpoints here`);
      return;
    }
    if (path === 'healthz') {
      sendJson(res, 200, { status: 'ok' });
      return;
    }
    this.readiness().then(
      (r) => sendJson(res, r.ready ? 200 : 503, { status: r.ready ? (r.degraded ? 'degraded' : 'ready') : 'not_ready', checks: r.checks }),
      () => sendError(res, 503, 'unavailable', 'readiness could not be determined'),
    );
  }

  /** Rate-limit store health, for tests and (later) metrics. */
  get limiterState(): { degraded: boolean; switches: number; storeErrors: number } {
    return { degraded: this.limiter.isDegraded, switches: this.limiter.switches, storeErrors: this.limiter.storeErrors };
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get url(): string {
    const host = this.config.listen.host === '0.0.0.0' || this.config.listen.host === '::' ? '127.0.0.1' : this.config.listen.host;
    return `${this.config.listen.tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${this.port}`;
  }

  /** The addresses the listeners really bound (0.0.0.0 or :: when listening on every interface). */
  get listening(): { public: string; admin?: string } {
    const { address, port } = this.server.address() as AddressInfo;
    const url = `${this.config.listen.tls ? 'https' : 'http'}://${address.includes(':') ? `[${address}]` : address}:${port}`;
    return this.admin ? { public: url, admin: this.admin.boundUrl } : { public: url };
  }

  /** base URL of the admin listener; undefined when it is disabled */
  get adminUrl(): string | undefined {
    return this.admin?.url;
  }

  /** Write the usage counted so far to the key store now (otherwise it is written five times a second). */
  flushUsage(): Promise<void> {
    return this.usage.flush();
  }


  // ------------------------------------------------------------------ lifecycle

  /**
   * Answer /readyz with 503 and keep serving for listen.shutdown_delay (load balancers notice),
   * then stop accepting, let in-flight requests finish (up to listen.drain_timeout), flush usage,
   * close stores.
   */
  close(drainMs = this.config.listen.drain_timeout * 1000, delayMs = this.config.listen.shutdown_delay * 1000): Promise<void> {
    this.closing ??= (async () => {
      this.pipeline.draining = true;
      this.pipeline.versions.stop();
      clearInterval(this.auditTimer);
      if (delayMs > 0) {
        this.logger.info({ shutdown_delay_s: delayMs / 1000 }, 'shutting down: readyz answers 503; still accepting requests until the delay ends');
        await new Promise((resolve) => setTimeout(resolve, delayMs));
      }
      const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      this.server.closeIdleConnections();
      // Upgraded (WebSocket) sockets are no longer the HTTP server's: drain and, at the deadline, close them too.
      const upgraded = this.pipeline.upgraded;
      const streamsDone = new Promise<void>((resolve) => {
        const check = () => upgraded.size === 0 && resolve();
        for (const socket of upgraded) socket.once('close', check);
        check();
      });
      const timer = setTimeout(() => {
        this.server.closeAllConnections();
        for (const socket of upgraded) socket.destroy();
      }, drainMs);
      await Promise.all([this.admin?.close(drainMs), closed, streamsDone]);
      clearTimeout(timer);
      this.pipeline.ws.close();
      const left = await this.usage.stop();
      await this.guard.stop(left);
      await this.limits.close();
      await this.pipeline.upstreams.close();
      await this.pipeline.remoteNodes.close();
      if (this.ownsKeys) await this.keys.store.close();
      this.accessLog?.flush();
      if (this.accessStream !== undefined) await closeDestination(this.accessStream);
      await new Promise<void>((resolve) => this.logger.flush(() => resolve()));
    })();
    return this.closing;
  }
}

/** How often (ms) the public listener looks for clients past listen.header_timeout / request_timeout. */
const CLIENT_TIMEOUT_CHECK_MS = 500;

/** A listener that cannot bind (port in use, no permission) is one clear error naming the section, not a stack. */
async function listening(section: string, host: string, port: number, p: Promise<void>): Promise<void> {
  try {
    await p;
  } catch (err) {
    const e = err as Error & { code?: string };
    const why = e.code === 'EADDRINUSE' ? 'the address is already in use (another process listens there)' : e.code === 'EACCES' ? 'permission denied (ports below 1024 need privileges)' : e.message;
    throw new KeygateError('listen_failed', 500, `${section}: cannot listen on ${host}:${port}: ${why}`);
  }
}

/** The version check over a configuration's routes and the pools it forwards on. */
function versionGate(config: GatewayConfig, upstreams: Upstreams, remoteNodes: Upstreams): VersionGate {
  return new VersionGate(config, { upstream: (n) => upstreams.get(n), remoteNode: (n) => remoteNodes.get(n) });
}
