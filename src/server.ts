// Composition: one public listener, the admission stages, forwarding, usage and the access log.

import { createServer, STATUS_CODES, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { Admitter, type Admission, type Outcome, type Refusal } from './admission.js';
import { AdminServer } from './admin/server.js';
import { ROLES, type GatewayConfig } from './config/types.js';
import { openKeyStore } from './keys/open.js';
import { KeyService } from './keys/service.js';
import { createLogger, type Logger } from './log.js';
import { forwardAgentCard, isAgentCardPath } from './proxy/agent-card.js';
import { forwardHttp, type ForwardResult } from './proxy/forward.js';
import { assignRequestId, upstreamRequestHeaders, type Forwarding, type Identity } from './proxy/headers.js';
import { Upstreams, type Upstream } from './proxy/upstream.js';
import { WebSocketProxy } from './proxy/websocket.js';
import { KeyRateLimiter, UNAVAILABLE } from './limits/limiter.js';
import { rateLimitHeaders } from './limits/headers.js';
import { openRateLimiter, type OpenedLimiter } from './limits/open.js';
import type { LimitDecision } from './limits/window.js';
import { RouteTable } from './routes/table.js';
import { GatewayMetrics } from './metrics.js';
import { PayloadTooLargeError, readBody } from './body.js';
import { FORBIDDEN, INVALID_REQUEST, RATE_LIMITED, UNAUTHORIZED, allowCall, parseCall, rpcError, type RpcId } from './jsonrpc/policy.js';
import { GatewayRequest } from './request.js';
import { loadTls, type TlsMaterial } from './tls.js';
import { UsageCounter } from './usage/counter.js';
import { StoreGuard } from './store-guard.js';

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
}

/** Write a JSON body with the gateway's standard headers; extra headers (WWW-Authenticate…) first. */
function writeJson(res: ServerResponse, status: number, body: string, headers?: Record<string, unknown>): void {
  if (headers) for (const name in headers) res.setHeader(name, headers[name] as string);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
  });
  res.end(body);
}

/** Write a JSON error `{"code","message"}`; the shape every refusal and gateway failure uses. */
export function sendError(res: ServerResponse, status: number, code: string, message: string, headers?: Record<string, unknown>): void {
  writeJson(res, status, JSON.stringify({ code, message }), headers);
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  writeJson(res, status, JSON.stringify(value));
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

/** JSON-RPC error codes for the gateway's HTTP refusals. */
function rpcCodeFor(status: number): number {
  if (status === 401) return UNAUTHORIZED;
  if (status === 403 || status === 404) return FORBIDDEN;
  if (status === 429) return RATE_LIMITED;
  if (status === 400 || status === 413) return INVALID_REQUEST;
  return -32603; // internal error
}

/**
 * A refusal on a JSON-RPC route: the HTTP status stays, the body is a JSON-RPC error with the call's
 * id, and a 403 says why in WWW-Authenticate (MCP's insufficient_scope), as SDK clients expect.
 */
function sendRpcError(res: ServerResponse, status: number, id: RpcId, message: string, headers?: Record<string, unknown>, code?: number): void {
  if (status === 403 && (headers === undefined || headers['www-authenticate'] === undefined)) headers = { ...headers, ...INSUFFICIENT_SCOPE };
  writeJson(res, status, rpcError(id, code ?? rpcCodeFor(status), message), headers);
}

const INSUFFICIENT_SCOPE = { 'www-authenticate': 'Bearer realm="keygate", error="insufficient_scope"' };

const ROLE_NAMES = ['', ...ROLES];

export class Gateway {
  /** the live configuration; replaced as a whole by reload() */
  config: GatewayConfig;
  readonly keys: KeyService;
  readonly logger: Logger;
  routes: RouteTable;
  /** the admin listener (key APIs, audit, OpenAPI); undefined when admin.enabled is false */
  readonly admin: AdminServer | undefined;
  private readonly server: Server;
  private admitter: Admitter;
  private upstreams: Upstreams;
  /** Dagu remote nodes, reached with ?remoteNode= on routes that accept it */
  private remoteNodes: Upstreams;
  private readonly ws = new WebSocketProxy();
  /** client sockets handed over to WebSocket proxying, for the shutdown drain */
  private readonly upgraded = new Set<Duplex>();
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
  /** set when shutdown begins: /readyz says 503 and responses ask clients to reconnect elsewhere */
  private draining = false;

  private constructor(opts: GatewayOptions) {
    this.config = opts.config;
    this.now = opts.now ?? Date.now;
    this.logger = opts.logger ?? createLogger(opts.config.log);
    this.ownsKeys = opts.keys === undefined;
    if (opts.keys) this.keys = opts.keys;
    else {
      const store = openKeyStore(opts.config.store.keys, { redis: opts.config.store.redis, onError: (err) => this.logger.warn({ err: err.message }, 'key store (redis) error') });
      // every key change, whoever makes it, is logged and kept in the store's audit table
      this.keys = new KeyService(store, opts.config.keys, this.now, { store, log: (record) => this.logger.info({ audit: record }, 'key change') }, { staleTtlMs: opts.config.store.stale_ttl * 1000 });
    }
    const gateway = this; // for the admin listener's callbacks, which run after construction
    this.admin = opts.config.admin.enabled
      ? new AdminServer({
          keys: this.keys,
          logger: this.logger,
          token: opts.config.admin.token,
          maxFailedAuth: opts.config.admin.max_failed_auth,
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
    this.upstreams = new Upstreams(opts.config.upstreams);
    this.remoteNodes = new Upstreams(opts.config.remote_nodes);
    this.admitter = new Admitter(this.routes, this.keys, this.now, this.remoteNodes.basePaths());
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
      // the HTTP server still counts the sockets it handed over to WebSocket proxying
      connections: () =>
        new Promise((resolve) => this.server.getConnections((err, n) => resolve({ http: err ? 0 : Math.max(0, n - this.upgraded.size), websocket: this.upgraded.size }))),
    });
    this.metrics.configure(opts.config.metrics);
    const serverOptions = { keepAliveTimeout: 5_000, IncomingMessage: GatewayRequest };
    const onRequest = (req: GatewayRequest, res: ServerResponse) => this.onRequest(req, res);
    const tls = opts.config.listen.tls && this.servedCertificate('public', loadTls(opts.config.listen.tls));
    this.server = tls ? createHttpsServer({ ...serverOptions, cert: tls.cert, key: tls.key }, onRequest) : createServer(serverOptions, onRequest);
    this.server.on('upgrade', (req: GatewayRequest, socket: Duplex, head: Buffer) => this.onUpgrade(req, socket, head));
    this.server.on('clientError', (_err: Error, socket: Duplex) => {
      if (socket.writable && !(socket as { _httpMessage?: unknown })._httpMessage) {
        const body = JSON.stringify({ code: 'bad_request', message: 'malformed HTTP request' });
        socket.end(`HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`);
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
      await new Promise<void>((resolve, reject) => {
        gw.server.once('error', reject);
        gw.server.listen(port, host, () => {
          gw.server.off('error', reject);
          resolve();
        });
      });
      await gw.admin?.listen(opts.adminPort ?? opts.config.admin.port, opts.config.admin.host);
    } catch (err) {
      await gw.close(0, 0);
      throw err;
    }
    gw.usage.start();
    gw.pruneAudit();
    gw.auditTimer = setInterval(() => gw.pruneAudit(), 3_600_000).unref();
    return gw;
  }

  /** Note when a listener's certificate expires (for /metrics); returns what the server needs. */
  private servedCertificate(listener: 'public' | 'admin', tls: TlsMaterial): { cert: Buffer; key: Buffer } {
    this.certificateExpiry[listener] = Math.floor(Date.parse(tls.x509.validTo) / 1000);
    return { cert: tls.cert, key: tls.key };
  }

  /** keys.audit_retention_days: drop older audit records (at start, then hourly; a no-op without it). */
  private pruneAudit(): void {
    this.keys.pruneAudit().then(
      (removed) => {
        if (removed > 0) this.logger.info({ removed, audit_retention_days: this.config.keys.audit_retention_days }, 'audit records past their retention removed');
      },
      (err: Error) => this.logger.warn({ err: err.message }, 'removing old audit records failed; trying again in an hour'),
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
      built = { routes, upstreams, remoteNodes, admitter: new Admitter(routes, this.keys, this.now, remoteNodes.basePaths()) };
    } catch (err) {
      this.reloads.failed++;
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
    const old = { upstreams: this.upstreams, remoteNodes: this.remoteNodes };
    // the swap: plain assignments, no await in between
    this.routes = built.routes;
    this.upstreams = built.upstreams;
    this.remoteNodes = built.remoteNodes;
    this.admitter = built.admitter;
    this.config = { ...next, listen: this.config.listen, admin: this.config.admin, store: this.config.store, log: this.config.log };
    this.keys.setConfig(next.keys);
    this.metrics.configure(next.metrics);
    this.reloads.ok++;
    // close() on an undici pool waits for the requests still running on it
    void old.upstreams.close();
    void old.remoteNodes.close();
    let declaredKeys: string;
    try {
      const c = await this.keys.syncDeclared();
      declaredKeys = `created ${c.created}, updated ${c.updated}, deleted ${c.deleted}`;
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
    if (this.draining) checks.shutdown = 'draining: the gateway is shutting down';
    const keys = this.guard.keyStoreCheck(this.now());
    if (keys.state !== 'ok') checks.key_store = keys.message;
    else {
      try {
        await withTimeout(this.keys.store.count(), 1000);
        checks.key_store = 'ok';
      } catch (err) {
        checks.key_store = `unreachable: ${(err as Error).message}`;
      }
    }
    checks.rate_limit_store = this.limits.reachable()
      ? 'ok'
      : `degraded: rate-limit store unreachable; serving on the fallback policy (${this.config.store.rate_limits_fallback})`;
    // degraded still serves (cached keys, fallback limits): a load balancer should keep sending
    const states = Object.values(checks);
    const ready = states.every((c) => c === 'ok' || c.startsWith('degraded'));
    return { ready, degraded: ready && states.some((c) => c.startsWith('degraded')), checks };
  }

  /** `<prefix>healthz` (alive) and `<prefix>readyz` (ready to serve), on the public listener. */
  private serveHealth(req: GatewayRequest, res: ServerResponse, what: string): void {
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

  /** base URL of the admin listener; undefined when it is disabled */
  get adminUrl(): string | undefined {
    return this.admin?.url;
  }

  // ------------------------------------------------------------------ HTTP

  private onRequest(req: GatewayRequest, res: ServerResponse): void {
    // shutting down: finish this request, then close the connection so the client's next one
    // goes (through the load balancer) to an instance that stays
    if (this.draining) res.setHeader('connection', 'close');
    if (req.url!.startsWith(this.config.listen.health_prefix)) {
      this.serveHealth(req, res, req.url!.slice(this.config.listen.health_prefix.length));
      return;
    }
    const started = performance.now();
    res.setHeader('x-request-id', assignRequestId(req.headers));
    let outcome: Outcome | Promise<Outcome>;
    try {
      outcome = this.admitter.admit(req.method!, req.url!, req.headers);
    } catch (err) {
      this.internalError(req, res, started, err);
      return;
    }
    if (outcome instanceof Promise) {
      outcome.then(
        (o) => this.apply(req, res, o, started),
        (err) => this.internalError(req, res, started, err),
      );
    } else this.apply(req, res, outcome, started);
  }

  private apply(req: GatewayRequest, res: ServerResponse, o: Outcome, started: number): void {
    // JSON-RPC routes read the call first: the method policy needs it, and every refusal
    // (authentication ones too) answers in JSON-RPC with the request's id.
    if (o.route?.config.jsonrpc !== undefined) {
      this.applyRpc(req, res, o, started);
      return;
    }
    if (!o.forward) {
      this.refuse(req, res, o, started);
      return;
    }
    this.limitThenForward(req, res, o, started);
  }

  /** Send a refusal: Keygate's JSON error, or a JSON-RPC error when the request was a call. */
  private refuse(req: GatewayRequest, res: ServerResponse, r: Refusal, started: number, rpcId?: RpcId): void {
    if (rpcId === undefined) sendError(res, r.status, r.code, r.message, r.headers);
    else sendRpcError(res, r.status, rpcId, r.message, r.headers, r.rpcCode);
    req.resume(); // discard an unread body so the connection can be reused
    this.access(req, r, r.status, started, -1);
  }

  private applyRpc(req: GatewayRequest, res: ServerResponse, o: Outcome, started: number): void {
    const policy = o.route!.config.jsonrpc!;
    if (req.method !== 'POST') {
      // GET opens an MCP event stream, DELETE ends a session: no call to check.
      if (!o.forward) this.refuse(req, res, o, started, null);
      else this.limitThenForward(req, res, o, started, undefined, null);
      return;
    }
    readBody(req, policy.max_body_bytes).then(
      (body) => {
        const parsed = parseCall(body);
        const id = parsed.ok ? parsed.call.id : parsed.id;
        if (!o.forward) return this.refuse(req, res, o, started, id);
        if (!parsed.ok) {
          return this.refuse(req, res, { forward: false, status: 400, code: 'bad_request', message: parsed.message, rpcCode: parsed.code, path: o.path, route: o.route }, started, id);
        }
        if (o.decision !== undefined) {
          const verdict = allowCall(policy, o.route.minRoleRank, o.decision.roleRank, parsed.call);
          if (!verdict.allow) {
            const refusal: Refusal = { forward: false, status: 403, code: 'forbidden', message: verdict.message, headers: INSUFFICIENT_SCOPE, path: o.path, route: o.route, ...(o.access ? { access: o.access } : {}) };
            return this.refuse(req, res, refusal, started, id);
          }
        }
        this.limitThenForward(req, res, o, started, body, id);
      },
      (err: Error) => {
        const tooLarge = err instanceof PayloadTooLargeError;
        const refusal: Refusal = { forward: false, status: tooLarge ? 413 : 400, code: tooLarge ? 'payload_too_large' : 'bad_request', message: tooLarge ? err.message : 'the request body could not be read', path: o.path, ...(o.route ? { route: o.route } : {}) };
        if (!res.headersSent) this.refuse(req, res, refusal, started, null);
        if (!tooLarge) req.destroy();
      },
    );
  }

  /** Stage 7, the key's rate limit (after authorisation, before the upstream sees anything), then forward. */
  private limitThenForward(req: GatewayRequest, res: ServerResponse, o: Admission, started: number, body?: Buffer, rpcId?: RpcId): void {
    if (o.access === undefined) {
      this.forward(req, res, o, started, body);
      return;
    }
    this.limiter.check(o.access.key.id, o.access.key.rateLimit).then(
      (d) => {
        const refusal = this.limitRefusal(o, d);
        if (refusal !== undefined) return this.refuse(req, res, refusal, started, rpcId);
        const headers = rateLimitHeaders(d as LimitDecision);
        for (const name in headers) res.setHeader(name, headers[name]!);
        this.forward(req, res, o, started, body);
      },
      (err) => this.internalError(req, res, started, err),
    );
  }

  /** The 429 (or 503 when the limit store is down under the deny policy) for a decision, if any. */
  private limitRefusal(o: Admission, d: LimitDecision | typeof UNAVAILABLE): Refusal | undefined {
    const base = { forward: false as const, path: o.path, route: o.route, access: o.access };
    if (d === UNAVAILABLE) {
      return { ...base, status: 503, code: 'unavailable', message: 'rate limits cannot be checked right now (rate-limit store unreachable); retry shortly', headers: { 'retry-after': '1' } };
    }
    if (d.allowed) return undefined;
    return {
      ...base,
      status: 429,
      code: 'rate_limited',
      message: `rate limit of ${d.limit} requests per minute exceeded; retry in ${d.retryAfterSeconds} s`,
      headers: rateLimitHeaders(d),
    };
  }

  private forward(req: GatewayRequest, res: ServerResponse, o: Admission, started: number, body?: Buffer): void {
    const { upstream, headers } = this.prepareForward(req, o);
    if (o.route.config.surface === 'a2a' && req.method === 'GET' && isAgentCardPath(o.path)) {
      forwardAgentCard(res, req, upstream, o.upstreamTarget, headers, sendError, (r) => this.access(req, o, r.status, started, r.upstreamMs, r.error?.code));
      return;
    }
    forwardHttp(req, res, upstream, o.upstreamTarget, headers, body, sendError, (r: ForwardResult) => {
      this.access(req, o, r.status, started, r.upstreamMs, r.error?.code);
    });
  }

  /** Write the usage counted so far to the key store now (otherwise it is written five times a second). */
  flushUsage(): Promise<void> {
    return this.usage.flush();
  }

  /** Count the use and build what the upstream receives; shared by HTTP and WebSocket. */
  private prepareForward(req: GatewayRequest, o: Admission): { upstream: Upstream; headers: Record<string, string | string[]> } {
    const upstream = o.remoteNode !== undefined ? this.remoteNodes.get(o.remoteNode) : this.upstreams.get(o.route.upstream.name);
    if (o.access) this.usage.record(o.access.key.id, this.now());
    const headers = upstreamRequestHeaders(
      req.headers,
      upstream.host,
      o.route.config.auth === 'none' ? undefined : upstream.credential,
      this.identity(o),
      this.forwarding(req),
      o.route.config.pass_authorization,
    );
    return { upstream, headers };
  }

  private identity(o: Admission): Identity | undefined {
    if (!o.access || !o.decision) return undefined;
    const k = o.access.key;
    return {
      keyId: k.id,
      keyName: k.name,
      role: ROLE_NAMES[o.decision.roleRank]!,
      workspace: o.decision.workspace,
      attribution: o.access.attribution,
    };
  }

  private forwarding(req: GatewayRequest): Forwarding {
    return {
      remoteAddress: req.remoteAddress,
      proto: (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http',
      host: req.headers.host,
      trustForwarded: this.config.listen.trust_forwarded,
    };
  }

  private internalError(req: GatewayRequest, res: ServerResponse, started: number, err: unknown): void {
    this.logger.error({ err, method: req.method }, 'request failed inside the gateway');
    const refusal: Refusal = { forward: false, status: 503, code: 'unavailable', message: 'the gateway could not check this request (key store unavailable)' };
    if (!res.headersSent) sendError(res, refusal.status, refusal.code, refusal.message);
    this.access(req, refusal, 503, started, -1);
  }

  /**
   * The end of every request: metrics always, one access-log line when enabled. Never headers,
   * never the query string: either may carry a secret.
   */
  private access(req: GatewayRequest, o: Outcome, status: number, started: number, upstreamMs: number, error?: string): void {
    const seconds = (performance.now() - started) / 1000;
    const decision = o.forward ? (error ? 'upstream_error' : 'allowed') : refusalDecision(o);
    this.metrics.request(o.route?.config.name ?? '-', status, decision, seconds);
    if (upstreamMs >= 0 && o.forward) this.metrics.upstream(o.remoteNode ?? o.route.upstream.name, upstreamMs / 1000);
    const key = o.access?.key;
    if (key !== undefined) this.metrics.keyRequest(key.id, key.name, decision);
    if (!this.config.log.access_log) return;
    this.logger.info({
      request_id: req.headers['x-request-id'],
      remote_address: req.remoteAddress,
      // behind a trusted proxy, the chain it reports (the client first)
      forwarded_for: this.config.listen.trust_forwarded ? req.headers['x-forwarded-for'] : undefined,
      method: req.method,
      path: o.path,
      route: o.route?.config.name,
      key_id: key?.id,
      key_prefix: key?.prefix,
      status,
      decision,
      code: o.forward ? error : o.code,
      bytes_in: Number(req.headers['content-length'] ?? 0) || undefined,
      latency_ms: Math.round(seconds * 100_000) / 100,
      upstream_ms: upstreamMs >= 0 ? Math.round(upstreamMs * 100) / 100 : undefined,
    }, 'request');
  }

  // ------------------------------------------------------------------ WebSocket

  private onUpgrade(req: GatewayRequest, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    this.upgraded.add(socket);
    socket.once('close', () => this.upgraded.delete(socket));
    const started = performance.now();
    assignRequestId(req.headers);
    const apply = (o: Outcome): void => {
      if (!o.forward) {
        refuseUpgrade(socket, o.status, o.code, o.message, o.headers);
        this.access(req, o, o.status, started, -1);
        return;
      }
      if (o.access !== undefined) {
        const access = o.access;
        this.limiter.check(access.key.id, access.key.rateLimit).then(
          (d) => {
            const refusal = this.limitRefusal(o, d);
            if (refusal === undefined) return upgrade(o);
            refuseUpgrade(socket, refusal.status, refusal.code, refusal.message, refusal.headers);
            this.access(req, refusal, refusal.status, started, -1);
          },
          () => refuseUpgrade(socket, 503, 'unavailable', 'rate limits cannot be checked right now'),
        );
        return;
      }
      upgrade(o);
    };
    const upgrade = (o: Admission): void => {
      const { upstream, headers } = this.prepareForward(req, o);
      this.ws.forward(req, socket, head, upstream, o.upstreamTarget, headers, (failure) => {
        refuseUpgrade(socket, failure.status, failure.code, failure.message);
        this.access(req, o, failure.status, started, -1, failure.code);
      });
      this.access(req, o, 101, started, -1);
    };
    try {
      const outcome = this.admitter.admit(req.method!, req.url!, req.headers);
      if (outcome instanceof Promise) outcome.then(apply, () => refuseUpgrade(socket, 503, 'unavailable', 'key store unavailable'));
      else apply(outcome);
    } catch {
      refuseUpgrade(socket, 503, 'unavailable', 'key store unavailable');
    }
  }

  // ------------------------------------------------------------------ lifecycle

  /**
   * Answer /readyz with 503 and keep serving for listen.shutdown_delay (load balancers notice),
   * then stop accepting, let in-flight requests finish (up to listen.drain_timeout), flush usage,
   * close stores.
   */
  close(drainMs = this.config.listen.drain_timeout * 1000, delayMs = this.config.listen.shutdown_delay * 1000): Promise<void> {
    this.closing ??= (async () => {
      this.draining = true;
      clearInterval(this.auditTimer);
      if (delayMs > 0) {
        this.logger.info({ shutdown_delay_s: delayMs / 1000 }, 'shutting down: readyz answers 503; still accepting requests until the delay ends');
        await new Promise((resolve) => setTimeout(resolve, delayMs));
      }
      const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      this.server.closeIdleConnections();
      // Upgraded (WebSocket) sockets are no longer the HTTP server's: drain and, at the deadline, close them too.
      const streamsDone = new Promise<void>((resolve) => {
        const check = () => this.upgraded.size === 0 && resolve();
        for (const socket of this.upgraded) socket.once('close', check);
        check();
      });
      const timer = setTimeout(() => {
        this.server.closeAllConnections();
        for (const socket of this.upgraded) socket.destroy();
      }, drainMs);
      await Promise.all([this.admin?.close(drainMs), closed, streamsDone]);
      clearTimeout(timer);
      this.ws.close();
      const left = await this.usage.stop();
      await this.guard.stop(left);
      await this.limits.close();
      await this.upstreams.close();
      await this.remoteNodes.close();
      if (this.ownsKeys) await this.keys.store.close();
      await new Promise<void>((resolve) => this.logger.flush(() => resolve()));
    })();
    return this.closing;
  }
}

/** Bounded label for logs and (later) metrics: what kind of refusal this was. */
function refusalDecision(o: Refusal): string {
  if (o.route === undefined) return o.status === 404 ? 'no_route' : o.status === 400 ? 'bad_request' : 'error';
  switch (o.status) {
    case 401:
      return 'unauthenticated';
    case 403:
    case 404:
      return 'forbidden';
    case 400:
      return 'bad_request';
    case 429:
      return 'rate_limited';
    default:
      return 'error';
  }
}

function refuseUpgrade(socket: Duplex, status: number, code: string, message: string, headers?: Record<string, unknown>): void {
  if (!socket.writable) return;
  const body = JSON.stringify({ code, message });
  let extra = '';
  if (headers) for (const name in headers) extra += `${name}: ${String(headers[name])}\r\n`;
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}connection: close\r\n\r\n${body}`,
  );
}
