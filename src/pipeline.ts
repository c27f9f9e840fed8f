// The request pipeline, start to end: the public listener hands every request (and every
// WebSocket upgrade) here; admission (stages 1–6), the key's rate limit, usage, forwarding and the
// access line follow in the order they run. Lifecycle (listen, reload, shutdown, health) is in
// server.ts; reload swaps the fields marked "live" below as plain assignments.

import type { Duplex } from 'node:stream';
import type { AccessLog } from './access-log.js';
import type { Admission, Admitter, Outcome, Refusal } from './admission.js';
import { ROLES, type GatewayConfig } from './config/types.js';
import type { Logger } from './log.js';
import { forwardAgentCard, isAgentCardPath } from './proxy/agent-card.js';
import { CREDENTIAL_REJECTED, forwardHttp, type ForwardSink } from './proxy/forward.js';
import { isPreflight, responseCors } from './cors.js';
import type { Route } from './routes/table.js';
import { currentUser, forDagu130 } from './answers/current-user.js';
import type { VersionGate, VersionRefusal } from './upstream-version/gate.js';
import { FailedAuthThrottle } from './admin/throttle.js';
import { assignRequestId, headerPolicy, headersObject, identityPairs, underscoreHeader, upstreamRequestHeaderList, type Forwarding, type HeaderList, type Identity, type IdentityPairs } from './proxy/headers.js';
import type { KeyAccess } from './keys/model.js';
import type { Upstream, Upstreams } from './proxy/upstream.js';
import { WebSocketProxy } from './proxy/websocket.js';
import { UNAVAILABLE, type KeyRateLimiter } from './limits/limiter.js';
import { rateLimitHeaders, stageRateLimitHeaders } from './limits/headers.js';
import type { LimitDecision } from './limits/window.js';
import type { GatewayMetrics } from './metrics.js';
import { PayloadTooLargeError, carriesBody, readBody } from './body.js';
import { INVALID_REQUEST, argumentFields, authoriseCall, mirrorMismatch, parseCall, type RpcId } from './jsonrpc/policy.js';
import type { GatewayRequest, GatewayResponse } from './request.js';
import { UNTRUSTED, allowHeaders, originalRequest, refusalHeaders, type ForwardAuth } from './forward-auth.js';
import { takeParam } from './routes/query.js';
import { INSUFFICIENT_SCOPE, refuseUpgrade, sendError, sendFailure, sendJson } from './respond.js';
import type { UsageCounter } from './usage/counter.js';
import { keyQuotaOwner, type Quota } from './keys/quota.js';
import { quotaMessage, quotaRefusalHeaders, stageQuotaHeaders, type QuotaDecision, type QuotaGate } from './limits/quota.js';
import { GroupStage, type GroupResult } from './limits/group-stage.js';

const ROLE_NAMES = ['', ...ROLES];

export interface PipelineOptions {
  config: GatewayConfig;
  admitter: Admitter;
  upstreams: Upstreams;
  remoteNodes: Upstreams;
  versions: VersionGate;
  logger: Logger;
  usage: UsageCounter;
  limiter: KeyRateLimiter;
  /** quotas (usage credits) of the keys that have one, counted in the key store */
  quotas: QuotaGate;
  metrics: GatewayMetrics;
  /** undefined when log.access_log is false */
  accessLog: AccessLog | undefined;
  now: () => number;
  /** answers `<listen.health_prefix>…`; `what` is the rest of the target */
  health: (req: GatewayRequest, res: GatewayResponse, what: string) => void;
  /** the forward-auth endpoint (forward_auth in the config); undefined = off */
  forwardAuth?: ForwardAuth | undefined;
}

export class Pipeline implements ForwardSink<Admission> {
  /** live: the configuration; replaced as a whole by a reload */
  config: GatewayConfig;
  /** live: stages 1–6 over the current route table */
  admitter: Admitter;
  /** live: upstream pools */
  upstreams: Upstreams;
  /** live: Dagu remote nodes, reached with ?remoteNode= on routes that accept it */
  remoteNodes: Upstreams;
  /** live: the upstream version check (routes with requires) */
  versions: VersionGate;
  /** live: the forward-auth endpoint; undefined when forward_auth is not configured */
  forwardAuth: ForwardAuth | undefined;
  /** set when shutdown begins: responses ask clients to reconnect elsewhere */
  draining = false;
  readonly ws = new WebSocketProxy();
  /** client sockets handed over to WebSocket proxying, for the shutdown drain */
  readonly upgraded = new Set<Duplex>();
  private readonly logger: Logger;
  private readonly usage: UsageCounter;
  private readonly limiter: KeyRateLimiter;
  private readonly quotas: QuotaGate;
  /** the limits of a key's group, for keys in one */
  private readonly groups: GroupStage;
  private readonly metrics: GatewayMetrics;
  private readonly accessLog: AccessLog | undefined;
  private readonly now: () => number;
  private readonly health: PipelineOptions['health'];
  /** listen.max_failed_auth: unknown keys per client address (a listen change needs a restart) */
  private readonly failedAuth: FailedAuthThrottle;

  constructor(opts: PipelineOptions) {
    this.config = opts.config;
    this.admitter = opts.admitter;
    this.upstreams = opts.upstreams;
    this.remoteNodes = opts.remoteNodes;
    this.versions = opts.versions;
    this.forwardAuth = opts.forwardAuth;
    this.logger = opts.logger;
    this.usage = opts.usage;
    this.limiter = opts.limiter;
    this.quotas = opts.quotas;
    this.groups = new GroupStage(opts.limiter, opts.quotas);
    this.metrics = opts.metrics;
    this.accessLog = opts.accessLog;
    this.now = opts.now;
    this.health = opts.health;
    this.failedAuth = new FailedAuthThrottle(opts.config.listen.max_failed_auth, 60_000, opts.now);
  }

  // ------------------------------------------------------------------ HTTP

  onRequest(req: GatewayRequest, res: GatewayResponse): void {
    // shutting down: finish this request, then close the connection so the client's next one
    // goes (through the load balancer) to an instance that stays
    if (this.draining) res.stage('connection', 'close');
    const fa = this.forwardAuth;
    if (fa !== undefined && fa.matches(req.url!)) {
      this.onForwardAuth(req, res, fa);
      return;
    }
    if (req.url!.startsWith(this.config.listen.health_prefix)) {
      this.health(req, res, req.url!.slice(this.config.listen.health_prefix.length));
      return;
    }
    const started = performance.now();
    res.stage('x-request-id', assignRequestId(req.headers));
    if (req.method === 'OPTIONS' && isPreflight(req.method, req.headers) && this.preflight(req, res, started)) return;
    this.admitThenApply(req, res, started);
  }

  /**
   * A proxy asks about the request it is about to forward (forward-auth.ts). Once the asker is
   * known to be the proxy, the request becomes the original one (method, target, Host, client
   * address from the proxy's headers) and goes through the same admission as any other; only the
   * end differs: answer() instead of forward(), and refusals carry X-Keygate-Status/-Error.
   */
  private onForwardAuth(req: GatewayRequest, res: GatewayResponse, fa: ForwardAuth): void {
    const started = performance.now();
    res.stage('x-request-id', assignRequestId(req.headers));
    req.forwardAuth = true;
    const trusted = fa.trusts(req.remoteAddress, req.headers);
    fa.forgetSecret(req.headers);
    if (!trusted) return this.refuse(req, res, { forward: false, ...UNTRUSTED }, started);
    const original = originalRequest(req.url!, fa.path, req.method!, req.headers, fa.proxy);
    if (typeof original === 'string') return this.refuse(req, res, { forward: false, status: 400, code: 'bad_request', message: original }, started);
    req.method = original.method;
    req.url = original.target;
    if (original.host !== undefined) req.headers.host = original.host;
    else delete req.headers.host;
    if (original.client !== undefined) req.remoteAddress = original.client;
    this.admitThenApply(req, res, started);
  }

  /** Stages 1–6 (admission), then what the outcome says. */
  private admitThenApply(req: GatewayRequest, res: GatewayResponse, started: number): void {
    let outcome: Outcome | Promise<Outcome> | undefined = this.screen(req);
    try {
      outcome ??= this.admitter.admit(req.method!, req.url!, req.headers);
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

  /** Answer a CORS preflight for a route with a CORS policy; false if none applies. */
  private preflight(req: GatewayRequest, res: GatewayResponse, started: number): boolean {
    const p = this.admitter.preflight(req.url!, req.headers);
    if (p === undefined) return false;
    req.resume();
    const { status, headers, message } = p.answer;
    if (status === 204) {
      for (const name in headers) res.stage(name, headers[name] as string);
      res.writeHead(204).end();
    } else sendError(res, 403, 'cors_forbidden', message!, headers);
    this.access(req, { forward: false, status, code: status === 204 ? 'preflight' : 'cors_forbidden', message: message ?? '', path: p.path, route: p.route }, status, started, -1);
    return true;
  }

  /** A route with a CORS policy: its headers on Keygate's own answers too (refusals, auth/me). */
  private corsOnAnswer(req: GatewayRequest, res: GatewayResponse, route: Route | undefined): void {
    const policy = route?.config.cors;
    if (policy === undefined) return;
    const headers = responseCors(policy, req.headers.origin);
    for (const name in headers) res.stage(name, headers[name] as string);
  }

  private apply(req: GatewayRequest, res: GatewayResponse, o: Outcome, started: number): void {
    // JSON-RPC routes read the call first: the method policy needs it, and every refusal
    // (authentication ones too) answers in JSON-RPC with the request's id.
    if (o.route?.config.jsonrpc !== undefined) {
      this.applyRpc(req, res, o, started);
      return;
    }
    if (!o.forward) {
      if (o.route === undefined) this.refuseUnrouted(req, res, o, started);
      else this.refuse(req, res, o, started);
      return;
    }
    this.limitThenForward(req, res, o, started);
  }

  /**
   * Send a refusal. Its shape is decided in one place (sendFailure): a JSON-RPC error on a
   * JSON-RPC path (the call's id when it was read, else null), Keygate's JSON error elsewhere.
   */
  private refuse(req: GatewayRequest, res: GatewayResponse, r: Refusal, started: number, rpcId?: RpcId): void {
    this.corsOnAnswer(req, res, r.route);
    // forward-auth: the proxy may not pass the status or the body on (nginx): say them in headers too
    const headers = req.forwardAuth === true ? refusalHeaders(r.status, r.code, r.message, r.headers) : r.headers;
    sendFailure(res, rpcId !== undefined ? rpcId : r.route?.rpc === true ? null : undefined, r.status, r.code, r.message, headers, r.rpcCode);
    req.resume(); // discard an unread body so the connection can be reused
    this.access(req, r, r.status, started, -1);
  }

  /**
   * A refusal made before a route matched (the failed-key throttle, underscore_headers: reject, a
   * malformed target, no route for this method): on a JSON-RPC path (POST /mcp, /a2a…) it is still
   * a JSON-RPC error, with the call's id when the body is a readable call. Only refusals look the
   * path up, so allowed requests pay nothing for it.
   */
  private refuseUnrouted(req: GatewayRequest, res: GatewayResponse, r: Refusal, started: number): void {
    const rpc = this.admitter.rpcRoute(req.url, req.headers.host);
    if (rpc === undefined) return this.refuse(req, res, r, started);
    if (req.method !== 'POST' || !carriesBody(req)) return this.refuse(req, res, r, started, null);
    readBody(req, rpc.config.jsonrpc!.max_body_bytes).then(
      (body) => {
        const call = parseCall(body);
        this.refuse(req, res, r, started, call.ok ? call.call.id : call.id);
      },
      (err: Error) => {
        if (!res.headersSent) this.refuse(req, res, r, started, null);
        if (!(err instanceof PayloadTooLargeError)) req.destroy();
      },
    );
  }

  private applyRpc(req: GatewayRequest, res: GatewayResponse, o: Outcome, started: number): void {
    const policy = o.route!.config.jsonrpc!;
    if (req.method !== 'POST') {
      // GET opens an MCP event stream, DELETE ends a session: no call to check, so no body either
      // (one would reach the upstream unread).
      if (carriesBody(req)) {
        return this.refuse(req, res, { forward: false, status: 400, code: 'bad_request', message: `a ${req.method} on this JSON-RPC route carries no body; send calls with POST`, rpcCode: INVALID_REQUEST, path: o.path, ...(o.route ? { route: o.route } : {}) }, started, null);
      }
      if (!o.forward) this.refuse(req, res, o, started, null);
      else this.limitThenForward(req, res, o, started, undefined, null);
      return;
    }
    if (req.forwardAuth === true && !carriesBody(req)) {
      // the method policy cannot be checked without the call: closed, never the route's role alone
      if (!o.forward) return this.refuse(req, res, o, started);
      return this.refuse(req, res, { forward: false, status: 400, code: 'bad_request', message: "this route's JSON-RPC policy needs the call: the proxy must pass the request body to the forward-auth endpoint (Envoy: with_request_body; Traefik: forwardBody: true; nginx auth_request cannot)", path: o.path, route: o.route, ...(o.access ? { access: o.access } : {}) }, started);
    }
    readBody(req, policy.max_body_bytes).then(
      (body) => {
        const parsed = parseCall(body, argumentFields(policy));
        const id = parsed.ok ? parsed.call.id : parsed.id;
        if (!o.forward) return this.refuse(req, res, o, started, id);
        if (!parsed.ok) {
          return this.refuse(req, res, { forward: false, status: 400, code: 'bad_request', message: parsed.message, rpcCode: parsed.code, path: o.path, route: o.route }, started, id);
        }
        if (o.route.config.surface === 'mcp') {
          const h = req.headers;
          const mismatch = h['mcp-method'] === undefined && h['mcp-name'] === undefined ? undefined : mirrorMismatch(parsed.call, h['mcp-method'], h['mcp-name']);
          if (mismatch !== undefined) return this.refuse(req, res, { forward: false, status: 400, code: 'bad_request', message: `Invalid Request: ${mismatch}`, rpcCode: INVALID_REQUEST, path: o.path, route: o.route }, started, id);
        }
        if (o.decision !== undefined && o.access !== undefined) {
          const verdict = authoriseCall(policy, o.route.minRoleRank, o.access, o.decision, parsed.call, o.route.config.surface);
          if (!verdict.allow) {
            const refusal: Refusal = { forward: false, status: verdict.status, code: verdict.code, message: verdict.message, ...(verdict.status === 403 ? { headers: INSUFFICIENT_SCOPE } : {}), path: o.path, route: o.route, access: o.access };
            return this.refuse(req, res, refusal, started, id);
          }
          // the identity headers say where the call acts (a tool's workspace, not the URL's)
          if (verdict.roleRank !== o.decision.roleRank || verdict.workspace !== o.decision.workspace) {
            return this.limitThenForward(req, res, { ...o, decision: { allow: true, roleRank: verdict.roleRank, workspace: verdict.workspace } }, started, body, id);
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

  /**
   * The upstream's version first (a route map for another Dagu is never forwarded: 502), then
   * stage 7, the key's rate limit (after authorisation, before the upstream sees anything), then forward.
   */
  private limitThenForward(req: GatewayRequest, res: GatewayResponse, o: Admission, started: number, body?: Buffer, rpcId?: RpcId): void {
    const v = o.route.config.answer === undefined ? this.versions.check(o.route.config, o.remoteNode) : undefined;
    if (v === undefined) this.limitThenForwardChecked(req, res, o, started, body, rpcId);
    else if (v instanceof Promise) {
      v.then(
        (r) => (r === undefined ? this.limitThenForwardChecked(req, res, o, started, body, rpcId) : this.refuse(req, res, this.versionRefusal(o, r), started, rpcId)),
        (err) => this.internalError(req, res, started, err),
      );
    } else this.refuse(req, res, this.versionRefusal(o, v), started, rpcId);
  }

  private versionRefusal(o: Admission, v: VersionRefusal): Refusal {
    return { forward: false, status: v.status, code: v.code, message: v.message, path: o.path, route: o.route, ...(o.access ? { access: o.access } : {}) };
  }

  private limitThenForwardChecked(req: GatewayRequest, res: GatewayResponse, o: Admission, started: number, body?: Buffer, rpcId?: RpcId): void {
    if (o.access === undefined) {
      this.forward(req, res, o, started, body, rpcId);
      return;
    }
    // in-process counters answer at once: no promise on the common path
    const now = this.limiter.checkNow(o.access.key.id, o.access.key.rateLimit);
    if (now !== undefined) {
      this.limited(req, res, o, started, now, body, rpcId);
      return;
    }
    this.limiter.check(o.access.key.id, o.access.key.rateLimit).then(
      (d) => this.limited(req, res, o, started, d, body, rpcId),
      (err) => this.internalError(req, res, started, err),
    );
  }

  /** The rate-limit decision made: refuse, or (after the quota, for a key with one) forward with the rate-limit headers. */
  private limited(req: GatewayRequest, res: GatewayResponse, o: Admission, started: number, d: LimitDecision | typeof UNAVAILABLE, body: Buffer | undefined, rpcId: RpcId | undefined): void {
    const refusal = this.limitRefusal(o, d);
    if (refusal !== undefined) return this.refuse(req, res, refusal, started, rpcId);
    if (o.access!.group !== null) return this.grouped(req, res, o, started, d as LimitDecision, body, rpcId);
    stageRateLimitHeaders(res, d as LimitDecision);
    const quota = o.access!.key.quota;
    if (quota === null) return this.forward(req, res, o, started, body, rpcId);
    this.quotaThenForward(req, res, o, quota, started, body, rpcId);
  }

  /**
   * Stage 7b, a key with a quota: take one credit (synchronously from SQLite, a promise from
   * Redis), then forward with the quota headers, or refuse 429 quota_exceeded (nothing taken).
   */
  private quotaThenForward(req: GatewayRequest, res: GatewayResponse, o: Admission, quota: Quota, started: number, body: Buffer | undefined, rpcId: RpcId | undefined): void {
    const decided = (d: QuotaDecision) => {
      if (!d.allowed) return this.refuse(req, res, this.quotaRefusal(o, d), started, rpcId);
      stageQuotaHeaders(res, d);
      this.forward(req, res, o, started, body, rpcId);
    };
    const unavailable = (err: unknown) => this.refuse(req, res, this.quotaUnavailable(o, err), started, rpcId);
    let d: QuotaDecision | Promise<QuotaDecision>;
    try {
      d = this.quotas.check(keyQuotaOwner(o.access!.key.id), quota);
    } catch (err) {
      return unavailable(err);
    }
    if (d instanceof Promise) d.then(decided, unavailable);
    else decided(d);
  }

  /**
   * A key in a group: the group's window, the key's quota and the group's quota (group-stage.ts),
   * each given back when a later one refuses; the headers describe the budget with the least left.
   */
  private grouped(req: GatewayRequest, res: GatewayResponse, o: Admission, started: number, key: LimitDecision, body: Buffer | undefined, rpcId: RpcId | undefined): void {
    const decided = (r: GroupResult) => {
      if (!r.allowed) return this.refuse(req, res, { forward: false, status: r.status, code: r.code, message: r.message, headers: r.headers, path: o.path, route: o.route, access: o.access }, started, rpcId);
      stageRateLimitHeaders(res, r.rate, r.ratePolicy);
      if (r.quota !== undefined) stageQuotaHeaders(res, r.quota);
      this.forward(req, res, o, started, body, rpcId);
    };
    const r = this.groups.admit(o.access!, key);
    if (r instanceof Promise) r.then(decided, (err) => this.internalError(req, res, started, err));
    else decided(r);
  }

  /** A refusal after the key's window counted the request: the count is given back (a refused request consumes nothing). */
  private quotaRefusal(o: Admission, d: QuotaDecision): Refusal {
    this.giveBackWindow(o);
    return { forward: false, status: 429, code: 'quota_exceeded', message: quotaMessage(d), headers: quotaRefusalHeaders(d), path: o.path, route: o.route, access: o.access };
  }

  /** The quota's counter could not be reached: refused (a quota is not waived while its store is down). */
  private quotaUnavailable(o: Admission, err: unknown): Refusal {
    this.giveBackWindow(o);
    const why = err instanceof Error ? err.message : String(err);
    return { forward: false, status: 503, code: 'unavailable', message: `this key's quota cannot be checked right now (key store: ${why}); retry shortly`, headers: { 'retry-after': '1' }, path: o.path, route: o.route, access: o.access };
  }

  private giveBackWindow(o: Admission): void {
    const r = this.limiter.giveBack(o.access!.key.id);
    if (r instanceof Promise) r.catch(() => undefined);
  }

  /** The 429 (or 503 when the limit store is down under the deny policy) for a decision, if any. */
  private limitRefusal(o: Admission, d: LimitDecision | typeof UNAVAILABLE): Refusal | undefined {
    if (d !== UNAVAILABLE && d.allowed) return undefined;
    const base = { forward: false as const, path: o.path, route: o.route, access: o.access };
    if (d === UNAVAILABLE) {
      return { ...base, status: 503, code: 'unavailable', message: 'rate limits cannot be checked right now (rate-limit store unreachable); retry shortly', headers: { 'retry-after': '1' } };
    }
    return {
      ...base,
      status: 429,
      code: 'rate_limited',
      message: `rate limit of ${d.limit} requests per minute exceeded; retry in ${d.retryAfterSeconds} s`,
      headers: rateLimitHeaders(d),
    };
  }

  private forward(req: GatewayRequest, res: GatewayResponse, o: Admission, started: number, body?: Buffer, rpcId?: RpcId): void {
    if (req.forwardAuth === true) {
      this.answer(req, res, o, started);
      return;
    }
    if (o.route.config.answer === 'current_user' && o.access !== undefined) {
      // Keygate's answer from the key; nothing reaches the upstream
      this.usage.record(o.access.key.id, o.access.key.group, this.now());
      req.resume();
      this.corsOnAnswer(req, res, o.route);
      sendJson(res, 200, currentUser(o.access.key, forDagu130(o.route.config)));
      this.access(req, o, 200, started, -1);
      return;
    }
    const upstream = this.upstreamOf(o);
    const headers = this.prepareForward(req, o, upstream);
    if (o.route.config.surface === 'a2a' && req.method === 'GET' && isAgentCardPath(o.path)) {
      forwardAgentCard(res, req, upstream, o.upstreamTarget, headersObject(headers), sendError, (r) => this.access(req, o, r.status, started, r.upstreamMs, r.error?.code));
      return;
    }
    const guard = o.route.config.auth !== 'none' && upstream.credential !== undefined;
    const cors = o.route.config.cors && responseCors(o.route.config.cors, req.headers.origin);
    // a failed upstream on a JSON-RPC path is a JSON-RPC error too (502/503/504, -32603)
    const id = rpcId !== undefined ? rpcId : o.route.rpc ? null : undefined;
    // the pipeline is the sink: the end is reported to forwarded() below, no callback per request
    forwardHttp(req, res, upstream, o.upstreamTarget, headers, body, id, guard, cors || undefined, this, o, started);
  }

  /** ForwardSink: a forwarded request ended (its response finished or broke, or the client left). */
  forwarded(req: GatewayRequest, o: Admission, started: number, status: number, upstreamMs: number, errorCode: string | undefined, upstream: string): void {
    if (errorCode === CREDENTIAL_REJECTED) this.credentialRejected(o, upstream);
    this.access(req, o, status, started, upstreamMs, errorCode);
  }

  /**
   * Forward-auth's end of an admitted request: 200 with the identity and the route's upstream
   * credential for the proxy to copy (the proxy forwards to its own upstream: a ?remoteNode= is
   * that Dagu's to follow), usage counted as for a forwarded request. A ?token= key is refused: the
   * proxy would forward it in the URL.
   */
  private answer(req: GatewayRequest, res: GatewayResponse, o: Admission, started: number): void {
    if (o.route.config.query_token) {
      const q = req.url!.indexOf('?');
      if (q !== -1 && takeParam(req.url!.slice(q + 1), 'token').values.length > 0) {
        return this.refuse(req, res, { forward: false, status: 400, code: 'bad_request', message: 'a key in ?token= cannot be checked by forward-auth: the proxy would forward it to the upstream in the URL; send X-API-Key or Authorization: Bearer', path: o.path, route: o.route, ...(o.access ? { access: o.access } : {}) }, started);
      }
    }
    req.resume();
    if (o.access) this.usage.record(o.access.key.id, o.access.key.group, this.now());
    const upstream = this.upstreams.get(o.route.upstream.name);
    res.writeHead(200, allowHeaders(this.identity(o), o.route.config.auth === 'none' ? undefined : upstream.credential, o.route.config.pass_authorization)).end();
    this.access(req, o, 200, started, -1);
  }

  /** The upstream refused the gateway's own credential: the operator must act (log, metric, alert). */
  private credentialRejected(o: Admission, upstream: string): void {
    const kind = o.remoteNode !== undefined ? 'remote_node' : 'upstream';
    this.metrics.credentialRejected(upstream, kind);
    this.logger.warn({ upstream, kind, route: o.route.config.name }, `${kind === 'upstream' ? 'upstream' : 'remote node'} "${upstream}" refused the gateway's own credential (401/403): check its auth_type/auth_token in the configuration`);
  }

  /**
   * Before anything else: an address over listen.max_failed_auth (429), and under
   * listen.underscore_headers: reject a header name with "_" (400). HTTP and WebSocket alike.
   */
  private screen(req: GatewayRequest): Refusal | undefined {
    const wait = this.failedAuth.retryAfter(req.remoteAddress);
    if (wait > 0) {
      return { forward: false, status: 429, code: 'rate_limited', message: `too many unknown keys from this address; retry in ${wait} s`, headers: { 'retry-after': String(wait) } };
    }
    if (this.config.listen.underscore_headers === 'reject') {
      const name = underscoreHeader(req.headers);
      if (name !== undefined) return { forward: false, status: 400, code: 'bad_request', message: `header names with "_" are refused (${JSON.stringify(name.slice(0, 64))}): upstreams may read them as "-"` };
    }
    return undefined;
  }

  /** Where an admitted request goes: the route's upstream, or the remote node it names. */
  private upstreamOf(o: Admission): Upstream {
    return o.remoteNode !== undefined ? this.remoteNodes.get(o.remoteNode) : this.upstreams.get(o.route.upstream.name);
  }

  /** Count the use and build what the upstream receives; shared by HTTP and WebSocket. */
  private prepareForward(req: GatewayRequest, o: Admission, upstream: Upstream): HeaderList {
    if (o.access) this.usage.record(o.access.key.id, o.access.key.group, this.now());
    return upstreamRequestHeaderList(
      req.headers,
      upstream.host,
      o.route.config.auth === 'none' ? undefined : upstream.credential,
      this.identityOf(o),
      this.forwarding(req),
      o.route.config.pass_authorization,
      headerPolicy(this.config.listen.underscore_headers, o.route.config.pass_headers),
    );
  }

  /**
   * The identity headers of an admitted key, made once per key and (role, workspace) and kept with
   * its cached access: a changed key is a new access object (the key cache refills), so the pairs
   * never outlive what they were made from.
   */
  private identityOf(o: Admission): IdentityPairs | undefined {
    const { access, decision } = o;
    if (access === undefined || decision === undefined) return undefined;
    const known = this.identities.get(access);
    if (known !== undefined && known.roleRank === decision.roleRank && known.workspace === decision.workspace) return known.pairs;
    const pairs = identityPairs(this.identity(o)!);
    this.identities.set(access, { roleRank: decision.roleRank, workspace: decision.workspace, pairs });
    return pairs;
  }

  private readonly identities = new WeakMap<KeyAccess, { roleRank: number; workspace: string | null; pairs: IdentityPairs }>();

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

  private internalError(req: GatewayRequest, res: GatewayResponse, started: number, err: unknown): void {
    this.logger.error({ err, method: req.method }, 'request failed inside the gateway');
    const refusal: Refusal = { forward: false, status: 503, code: 'unavailable', message: 'the gateway could not check this request (key store unavailable)' };
    const headers = req.forwardAuth === true ? refusalHeaders(refusal.status, refusal.code, refusal.message, undefined) : undefined;
    if (!res.headersSent) sendFailure(res, this.admitter.rpcRoute(req.url, req.headers.host) === undefined ? undefined : null, refusal.status, refusal.code, refusal.message, headers);
    this.access(req, refusal, 503, started, -1);
  }

  /**
   * The end of every request: metrics always, one access-log line when enabled. Never headers,
   * never the query string: either may carry a secret.
   */
  private access(req: GatewayRequest, o: Outcome, status: number, started: number, upstreamMs: number, error?: string): void {
    const seconds = (performance.now() - started) / 1000;
    const decision = o.forward ? (error ? 'upstream_error' : 'allowed') : refusalDecision(o);
    if (!o.forward && o.unknownKey === true && this.failedAuth.failed(req.remoteAddress)) {
      this.logger.warn({ remote_address: req.remoteAddress, max_failed_auth: this.config.listen.max_failed_auth }, 'too many unknown keys from one address: refused with 429 for the rest of the minute');
    }
    this.metrics.request(o.route?.config.name ?? '-', status, decision, seconds);
    if (upstreamMs >= 0 && o.forward) this.metrics.upstream(o.remoteNode ?? o.route.upstream.name, upstreamMs / 1000);
    const key = o.access?.key;
    if (key !== undefined) {
      this.metrics.keyRequest(key.id, key.name, decision);
      // the usage history's refused split (allowed requests were counted when forwarded)
      if (decision === 'rate_limited') this.usage.refused(key.id, key.group, 'limited', this.now());
      else if (decision === 'quota_exceeded') this.usage.refused(key.id, key.group, 'quota', this.now());
      else if (decision === 'forbidden') this.usage.refused(key.id, key.group, 'forbidden', this.now());
    }
    const log = this.accessLog;
    if (log === undefined) return;
    const h = req.headers;
    log.write({
      request_id: h['x-request-id'] as string | undefined,
      remote_address: req.remoteAddress,
      // behind a trusted proxy, the chain it reports (the client first)
      forwarded_for: this.config.listen.trust_forwarded ? (h['x-forwarded-for'] as string | undefined) : undefined,
      method: req.method,
      host: h.host,
      path: o.path,
      route: o.route?.config.name,
      key_id: key?.id,
      key_prefix: key?.prefix,
      status,
      decision,
      code: o.forward ? error : o.code,
      // forward-auth: Keygate forwarded nothing (the proxy did)
      upstream: o.forward && req.forwardAuth !== true ? (o.remoteNode ?? o.route.upstream.name) : undefined,
      via: req.forwardAuth === true ? 'forward_auth' : undefined,
      bytes_in: Number(h['content-length'] ?? 0) || undefined,
      // the WebSocket's line is written at the upgrade: its bytes are the stream's, not counted here
      bytes_out: status === 101 ? undefined : req.bytesOut(),
      user_agent: h['user-agent'],
      latency_ms: Math.round(seconds * 100_000) / 100,
      upstream_ms: upstreamMs >= 0 ? Math.round(upstreamMs * 100) / 100 : undefined,
    });
  }

  // ------------------------------------------------------------------ WebSocket

  onUpgrade(req: GatewayRequest, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    if (this.forwardAuth?.matches(req.url!)) {
      refuseUpgrade(socket, 400, 'bad_request', 'the forward-auth endpoint answers plain HTTP requests: the proxy must not pass Upgrade/Connection to it');
      return;
    }
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
      const v = this.versions.check(o.route.config, o.remoteNode);
      const refuse = (r: VersionRefusal) => {
        refuseUpgrade(socket, r.status, r.code, r.message);
        this.access(req, this.versionRefusal(o, r), r.status, started, -1);
      };
      if (v instanceof Promise) {
        v.then((r) => (r === undefined ? limit(o) : refuse(r)), () => refuseUpgrade(socket, 503, 'unavailable', 'upstream version could not be checked'));
      } else if (v !== undefined) refuse(v);
      else limit(o);
    };
    const limit = (o: Admission): void => {
      if (o.access !== undefined) {
        const access = o.access;
        this.limiter.check(access.key.id, access.key.rateLimit).then(
          (d) => {
            const refusal = this.limitRefusal(o, d);
            if (refusal === undefined) return access.group !== null ? grouped(o, d as LimitDecision) : access.key.quota === null ? upgrade(o) : quota(o, access.key.quota);
            refuseUpgrade(socket, refusal.status, refusal.code, refusal.message, refusal.headers);
            this.access(req, refusal, refusal.status, started, -1);
          },
          () => refuseUpgrade(socket, 503, 'unavailable', 'rate limits cannot be checked right now'),
        );
        return;
      }
      upgrade(o);
    };
    const quota = (o: Admission, q: Quota): void => {
      const refuse = (r: Refusal) => {
        refuseUpgrade(socket, r.status, r.code, r.message, r.headers);
        this.access(req, r, r.status, started, -1);
      };
      const decided = (d: QuotaDecision) => (d.allowed ? upgrade(o) : refuse(this.quotaRefusal(o, d)));
      try {
        const d = this.quotas.check(keyQuotaOwner(o.access!.key.id), q);
        if (d instanceof Promise) d.then(decided, (err) => refuse(this.quotaUnavailable(o, err)));
        else decided(d);
      } catch (err) {
        refuse(this.quotaUnavailable(o, err));
      }
    };
    const grouped = (o: Admission, key: LimitDecision): void => {
      const decided = (r: GroupResult) => {
        if (r.allowed) return upgrade(o);
        refuseUpgrade(socket, r.status, r.code, r.message, r.headers);
        this.access(req, { forward: false, status: r.status, code: r.code, message: r.message, path: o.path, route: o.route, access: o.access }, r.status, started, -1);
      };
      const r = this.groups.admit(o.access!, key);
      if (r instanceof Promise) r.then(decided, () => refuseUpgrade(socket, 503, 'unavailable', 'rate limits cannot be checked right now'));
      else decided(r);
    };
    const upgrade = (o: Admission): void => {
      const upstream = this.upstreamOf(o);
      const headers = this.prepareForward(req, o, upstream);
      this.ws.forward(req, socket, head, upstream, o.upstreamTarget, headersObject(headers), (failure) => {
        refuseUpgrade(socket, failure.status, failure.code, failure.message);
        this.access(req, o, failure.status, started, -1, failure.code);
      });
      this.access(req, o, 101, started, -1);
    };
    try {
      const outcome = this.screen(req) ?? this.admitter.admit(req.method!, req.url!, req.headers);
      if (outcome instanceof Promise) outcome.then(apply, () => refuseUpgrade(socket, 503, 'unavailable', 'key store unavailable'));
      else apply(outcome);
    } catch {
      refuseUpgrade(socket, 503, 'unavailable', 'key store unavailable');
    }
  }
}

/** Bounded label for logs and (later) metrics: what kind of refusal this was. */
function refusalDecision(o: Refusal): string {
  if (o.code === UNTRUSTED.code) return 'unauthenticated'; // forward-auth: the asker is not the proxy
  if (o.route === undefined) return o.status === 404 ? 'no_route' : o.status === 400 ? 'bad_request' : 'error';
  if (o.code === 'quota_exceeded') return 'quota_exceeded';
  switch (o.status) {
    case 204:
      return 'preflight';
    case 401:
      return 'unauthenticated';
    case 403:
    case 404:
      return 'forbidden';
    case 400:
      return 'bad_request';
    case 429:
      return 'rate_limited';
    case 502:
      return o.code === 'upstream_version_mismatch' ? 'upstream_version_mismatch' : 'upstream_error';
    default:
      return 'error';
  }
}
