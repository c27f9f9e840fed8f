// The admin listener: its own node:http server (default 127.0.0.1:8081), separate from the public
// one. Every call is authenticated first, then routed; every answer is JSON, errors `{"code","message"}`.
// Only the key page's static files (/api-keys, /api-management, page/serve.ts) skip the credential.

import { createServer, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { isIP, type AddressInfo } from 'node:net';
import { ConflictError, KeygateError, ValidationError } from '../errors.js';
import { apiFieldName } from './body.js';
import type { KeyService } from '../keys/service.js';
import type { Logger } from '../log.js';
import { normaliseTarget } from '../routes/path.js';
import { auditRoutes } from './audit.js';
import { usageRoutes } from './usage-api.js';
import { AdminAuth } from './auth.js';
import { dagenRoutes } from './dagen-api.js';
import { daguRoutes } from './dagu-api.js';
import { groupRoutes } from './groups-api.js';
import { openApiDocument } from './openapi.js';
import { infoRoute, type InfoSource } from './page/info.js';
import { KeyPage } from './page/serve.js';
import { Router, type AdminRoute } from './router.js';
import { FailedAuthThrottle } from './throttle.js';

export interface AdminServerOptions {
  keys: KeyService;
  logger: Logger;
  /** admin.token; undefined = only admin keys are accepted */
  token: string | undefined;
  now?: () => number;
  /** the gateway's public URL, key limits and routes, for GET /api/info (the key page); absent = nulls */
  info?: InfoSource;
  /** /metrics, /healthz and /readyz: served without the admin credential, for scrapers and probes */
  ops?: OpsSource;
  /** admin.max_failed_auth: failed authentications per client address and minute before 429; 0 = off */
  maxFailedAuth?: number;
  /** admin.tls: serve HTTPS with this certificate and key */
  tls?: { cert: Buffer; key: Buffer };
  /** admin.allowed_hosts: Host names answered besides localhost and IP addresses (lower case) */
  allowedHosts?: readonly string[];
}

/**
 * Whether the admin listener answers a request with this Host header: an IP address, localhost, or
 * a configured name (port ignored). A DNS-rebinding page can only send a name it controls. No Host
 * (HTTP/1.0, not a browser) is answered.
 */
export function hostAllowed(host: string | undefined, allowed: ReadonlySet<string>): boolean {
  if (host === undefined) return true;
  let name = host.toLowerCase();
  if (name.startsWith('[')) {
    const end = name.indexOf(']');
    return end !== -1 && isIP(name.slice(1, end)) === 6 && (end === name.length - 1 || name[end + 1] === ':');
  }
  const colon = name.indexOf(':');
  if (colon !== -1) name = name.slice(0, colon);
  if (name.endsWith('.')) name = name.slice(0, -1);
  return name === 'localhost' || isIP(name) === 4 || allowed.has(name);
}

export interface OpsSource {
  metrics(): Promise<{ contentType: string; body: string }>;
  /** degraded: ready, but serving from a cache or fallback while a store is unreachable */
  readiness(): Promise<{ ready: boolean; degraded?: boolean; checks: Record<string, string> }>;
}

/** Operational endpoints: no data about keys, so no credential (the listener is loopback by default). */
const OPS_PATHS = new Set(['/metrics', '/healthz', '/readyz']);

function sendJson(res: ServerResponse, status: number, body: unknown, headers: OutgoingHttpHeaders = {}): void {
  // a request body left unread (refused before or while reading it) is not drained: close instead
  if (!res.req.complete) headers = { ...headers, connection: 'close' };
  if (status === 204) {
    res.writeHead(204, { 'cache-control': 'no-store', ...headers });
    res.end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  });
  res.end(text);
}

export class AdminServer {
  readonly router = new Router();
  private readonly server: Server;
  private readonly auth: AdminAuth;
  private readonly throttle: FailedAuthThrottle;
  private readonly logger: Logger;
  /** the key page (/api-keys, /api-management): static files, see page/serve.ts */
  private readonly page = new KeyPage();

  private readonly allowedHosts: ReadonlySet<string>;

  constructor(private readonly opts: AdminServerOptions) {
    const now = opts.now ?? Date.now;
    this.allowedHosts = new Set(opts.allowedHosts ?? []);
    this.logger = opts.logger;
    this.auth = new AdminAuth(opts.token, opts.keys, now);
    this.throttle = new FailedAuthThrottle(opts.maxFailedAuth ?? 10, 60_000, now);
    this.router.add(
      ...dagenRoutes(opts.keys, now),
      ...daguRoutes(opts.keys, now),
      ...groupRoutes(opts.keys),
      ...auditRoutes(opts.keys),
      ...usageRoutes(opts.keys),
      infoRoute(opts.keys, opts.info),
      { method: 'GET', path: '/openapi.json', operationId: 'getOpenApi', handler: async () => ({ status: 200, body: openApiDocument() }) },
    );
    const handle = (req: IncomingMessage, res: ServerResponse) => void this.handle(req, res);
    this.server = opts.tls ? createHttpsServer({ keepAliveTimeout: 5_000, cert: opts.tls.cert, key: opts.tls.key }, handle) : createServer({ keepAliveTimeout: 5_000 }, handle);
  }

  listen(port: number, host: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  /** Serve a renewed certificate to new connections (admin.tls; on reload). */
  setCertificate(tls: { cert: Buffer; key: Buffer }): void {
    (this.server as HttpsServer).setSecureContext({ cert: tls.cert, key: tls.key });
  }

  /** the address really bound (0.0.0.0 stays 0.0.0.0), for the start-up line */
  get boundUrl(): string {
    const { address, port } = this.server.address() as AddressInfo;
    return `${this.opts.tls ? 'https' : 'http'}://${address.includes(':') ? `[${address}]` : address}:${port}`;
  }

  get url(): string {
    const { address, port } = this.server.address() as AddressInfo;
    const host = address === '0.0.0.0' || address === '::' ? '127.0.0.1' : address;
    return `${this.opts.tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  }

  /** Stop accepting; requests in flight get up to drainMs to finish. */
  async close(drainMs = 10_000): Promise<void> {
    if (!this.server.listening) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    const timer = setTimeout(() => this.server.closeAllConnections(), drainMs);
    await closed;
    clearTimeout(timer);
  }

  private async serveOps(ops: OpsSource, path: string, res: ServerResponse): Promise<void> {
    try {
      if (path === '/metrics') {
        const m = await ops.metrics();
        res.writeHead(200, { 'content-type': m.contentType, 'cache-control': 'no-store' });
        res.end(m.body);
      } else if (path === '/healthz') {
        sendJson(res, 200, { status: 'ok' });
      } else {
        const r = await ops.readiness();
        sendJson(res, r.ready ? 200 : 503, { status: r.ready ? (r.degraded ? 'degraded' : 'ready') : 'not_ready', checks: r.checks });
      }
    } catch (err) {
      if (err instanceof KeygateError) sendJson(res, err.status, { code: err.code, message: err.message });
      else sendJson(res, 500, { code: 'internal', message: (err as Error).message });
    }
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!hostAllowed(req.headers.host, this.allowedHosts)) {
      // DNS rebinding: a web page whose name now resolves to this listener sends its own name
      sendJson(res, 403, { code: 'forbidden', message: 'this admin listener does not answer to that Host; add the name to admin.allowed_hosts' });
      return;
    }
    const ops = this.opts.ops;
    const bare = (req.url ?? '').split('?', 1)[0]!;
    if (ops !== undefined && req.method === 'GET' && OPS_PATHS.has(bare)) {
      await this.serveOps(ops, bare, res);
      return;
    }
    const started = performance.now();
    const remoteAddress = req.socket.remoteAddress ?? null;
    let actor: string | undefined;
    let route: AdminRoute | undefined;
    let path = '';
    try {
      const target = normaliseTarget(req.url ?? '/');
      if (!target.ok) throw new KeygateError('bad_request', 400, target.message);
      path = target.path;
      // the key page's own files hold no data: served without the credential; its API calls need it
      if (this.page.serve(req, res, path)) return;
      // authenticate before routing: without a credential no one learns which paths exist
      const client = remoteAddress ?? '';
      const wait = this.throttle.retryAfter(client);
      if (wait > 0) {
        // refused before the credential is looked at: otherwise a right guess would still get in
        sendJson(res, 429, { code: 'too_many_failed_attempts', message: `too many failed admin authentications from this address; try again in ${wait} s` }, { 'retry-after': String(wait) });
        return;
      }
      const auth = await this.auth.authenticate(req.headers);
      if (!auth.ok) {
        // only a wrong credential is a guess (not a missing one, nor a real key without the right)
        if (auth.wrongCredential && this.throttle.failed(client)) {
          this.logger.warn({ remote_address: client }, 'admin: too many failed authentications from one address; refusing it for the rest of the minute');
        }
        sendJson(res, auth.status, { code: auth.code, message: auth.message }, auth.headers);
        return;
      }
      actor = auth.actor;
      const match = this.router.match(req.method ?? '', target.path);
      if (match === undefined) throw new KeygateError('not_found', 404, `no admin endpoint ${target.path}`);
      if ('allow' in match) {
        sendJson(res, 405, { code: 'method_not_allowed', message: `${req.method} is not allowed on ${target.path}; allowed: ${match.allow.join(', ')}` }, { allow: match.allow.join(', ') });
        return;
      }
      route = match.route;
      const reply = await route.handler({ req, params: match.params, query: new URLSearchParams(target.query), actor: { id: actor, remoteAddress } });
      sendJson(res, reply.status, reply.body, reply.headers);
    } catch (err) {
      this.fail(req, res, err, route);
    } finally {
      this.logger.info(
        { admin: true, method: req.method, path, status: res.statusCode, actor, latency_ms: Math.round((performance.now() - started) * 100) / 100 },
        'admin request',
      );
    }
  }

  private fail(req: IncomingMessage, res: ServerResponse, err: unknown, route: AdminRoute | undefined): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (err instanceof ValidationError) {
      // every problem, each at its field in this API's spelling; message and field are the first (as always)
      const errors = err.errors.map((e) => ({ field: err.apiNamed ? e.field : apiFieldName(e.field, route?.fieldNames), message: e.reason }));
      const first = errors[0]!;
      sendJson(res, 400, { code: err.code, message: `${first.field}: ${first.message}`, field: first.field, errors });
    } else if (err instanceof ConflictError && err.field !== undefined) {
      const field = apiFieldName(err.field, route?.fieldNames);
      sendJson(res, err.status, { code: err.code, message: err.message, field, errors: [{ field, message: err.message }] });
    } else if (err instanceof KeygateError) {
      sendJson(res, err.status, { code: err.code, message: err.message });
    } else {
      this.logger.error({ err, method: req.method }, 'admin request failed');
      sendJson(res, 500, { code: 'internal', message: 'the admin request failed inside the gateway; see its log' });
    }
  }
}
