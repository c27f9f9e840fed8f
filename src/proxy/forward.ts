// HTTP forwarding through undici's Pool.dispatch: the response body is written straight into the
// client's ServerResponse (SSE and chunked bodies stream as they come), the request body streams
// from the client, and a client that goes away aborts the upstream request.

import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { errors, type Dispatcher } from 'undici';
import { withoutUpstreamCors } from '../cors.js';
import type { RpcId } from '../jsonrpc/policy.js';
import { sendFailure } from '../respond.js';
import { clientResponseHeaders, type HeaderList } from './headers.js';
import type { Upstream } from './upstream.js';

export interface ForwardResult {
  /** status sent to the client (the upstream's, or 502/504 from the gateway) */
  status: number;
  /** ms from forwarding to the upstream's response headers; -1 if none arrived */
  upstreamMs: number;
  /** set when the gateway answered for a failing upstream, or the stream broke */
  error?: { code: string; message: string };
}

/**
 * Told once how a forwarded request ended: the pipeline itself, so forwarding allocates no callback
 * per request. `context` and `started` are what the caller handed to forwardHttp, given back.
 */
export interface ForwardSink<C> {
  forwarded(req: IncomingMessage, context: C, started: number, status: number, upstreamMs: number, errorCode: string | undefined, upstream: string): void;
}

export interface UpstreamFailure {
  status: 502 | 504;
  code: 'bad_gateway' | 'timeout';
  message: string;
}

export const UPSTREAM_OVERLOADED = 'upstream_overloaded';

export function timeoutFailure(upstream: string, ms: number): UpstreamFailure {
  return { status: 504, code: 'timeout', message: `upstream "${upstream}" did not answer within ${ms / 1000} s` };
}

/** Map an undici/socket error to what the client is told. */
export function upstreamFailure(err: Error & { code?: string }, upstream: string): UpstreamFailure {
  if (
    err instanceof errors.HeadersTimeoutError ||
    err instanceof errors.ConnectTimeoutError ||
    err instanceof errors.BodyTimeoutError ||
    err.code === 'ETIMEDOUT'
  ) {
    return { status: 504, code: 'timeout', message: `upstream "${upstream}" did not answer in time` };
  }
  return { status: 502, code: 'bad_gateway', message: `upstream "${upstream}" is unreachable or failed (${err.code ?? err.name})` };
}

function hasBody(req: IncomingMessage): boolean {
  const len = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (len !== undefined && len !== '0');
}

/** Where the gateway's credential went, a 401/403 means the upstream refused it, not the client. */
export const CREDENTIAL_REJECTED = 'upstream_credential_rejected';

/** Stage the route's CORS headers on the gateway's response (GatewayResponse), or set them on a plain one. */
function stageCors(res: ServerResponse, cors: OutgoingHttpHeaders): void {
  const staging = res as ServerResponse & { stage?: (name: string, value: string) => void };
  for (const name in cors) {
    const v = cors[name];
    if (v === undefined) continue;
    if (staging.stage !== undefined) staging.stage(name, String(v));
    else res.setHeader(name, v);
  }
}

/** Keygate's CORS headers instead of the upstream's own; Vary keeps the upstream's values too. */
function withCors(headers: OutgoingHttpHeaders, cors: OutgoingHttpHeaders): OutgoingHttpHeaders {
  const vary = headers.vary;
  withoutUpstreamCors(headers);
  Object.assign(headers, cors);
  if (vary !== undefined && cors.vary !== undefined) headers.vary = `${String(vary)}, ${String(cors.vary)}`;
  return headers;
}

export function forwardHttp<C>(
  req: IncomingMessage,
  res: ServerResponse,
  upstream: Upstream,
  path: string,
  headers: HeaderList,
  /** the body already read (JSON-RPC policy); otherwise the client's body streams through */
  body: Buffer | undefined,
  /** on a JSON-RPC path the gateway's own failures are JSON-RPC errors with this id (sendFailure) */
  rpcId: RpcId | undefined,
  /**
   * The request carries the upstream's own credential on behalf of an accepted key: a 401 or 403
   * from the upstream is its verdict on that credential, answered 502 upstream_credential_rejected
   * (never passed on as if the client's key had been refused).
   */
  guardCredential: boolean,
  /** the route's CORS headers: they replace the upstream's Access-Control-* headers */
  cors: OutgoingHttpHeaders | undefined,
  sink: ForwardSink<C>,
  context: C,
  /** when the request arrived (performance.now()), handed back to the sink */
  started: number,
): void {
  const ex = new Exchange(req, res, upstream, rpcId, guardCredential, cors, sink as ForwardSink<unknown>, context, started);
  // Beyond the pool's connections and max_pending queued requests: refuse now, not after a wait
  // nobody would sit through (Envoy's max_pending_requests).
  if (!upstream.admit()) {
    const message = `upstream "${upstream.name}" has ${upstream.pending} requests waiting for a connection (max_pending); retry shortly`;
    ex.fail(503, UPSTREAM_OVERLOADED, message);
    req.resume();
    sink.forwarded(req, context, started, 503, -1, UPSTREAM_OVERLOADED, upstream.name);
    return;
  }
  // The gateway's own deadline for the response headers, from now: time queued for a connection
  // counts. undici's timers tick in whole seconds above 1 s; this one is exact.
  ex.timer = setTimeout(onDeadline, upstream.timeoutMs, ex);
  // The response's one 'close' (after it finished, or when the client went away) ends the exchange.
  (res as ExchangeCarrier)[EXCHANGE] = ex;
  res.on('close', onResponseClose);
  // The exchange is undici's handler itself (dispatch, not Pool.stream): no stream wrapper, abort
  // signal, finished() watcher or async resource per request, and no closure.
  upstream.pool.dispatch({ path, method: req.method as 'GET', headers: headers as string[], body: body ?? (hasBody(req) ? req : null) }, ex);
}

const EXCHANGE = Symbol('keygate.exchange');
type ExchangeCarrier = ServerResponse & { [EXCHANGE]?: Exchange | undefined };

/**
 * One forwarded request: undici's handler for it (onConnect … onComplete/onError), the gateway's
 * deadline, and what the access line will say. Every path ends the client's response, and its
 * 'close' reports the result (once): the status sent, or 499 when the client left first.
 */
class Exchange implements Dispatcher.DispatchHandler {
  readonly started = performance.now();
  upstreamMs = -1;
  timer: NodeJS.Timeout | undefined = undefined;
  timedOut = false;
  /** the upstream's 401/403 to our credential (guardCredential), 0 = none; its body is dropped */
  rejected = 0;
  clientGone = false;
  /** the upstream's headers were written to the client: its body streams into the response */
  streaming = false;
  /** undici's request ended (completed or failed): nothing left to abort, the pool slot released */
  settled = false;
  /** set when the gateway answered for the upstream or the stream broke; else the status sent */
  result: ForwardResult | undefined = undefined;
  /** undici's abort for this request, once it left the pool's queue */
  private abortRequest: ((err?: Error) => void) | undefined = undefined;
  private resume: (() => void) | undefined = undefined;

  constructor(
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly upstream: Upstream,
    readonly rpcId: RpcId | undefined,
    readonly guardCredential: boolean,
    readonly cors: OutgoingHttpHeaders | undefined,
    readonly sink: ForwardSink<unknown>,
    readonly context: unknown,
    readonly requestStarted: number,
  ) {}

  /** the gateway's own failures carry the route's CORS headers too: a browser must be able to read why */
  fail(status: number, code: string, message: string): void {
    if (this.cors !== undefined) stageCors(this.res, this.cors);
    sendFailure(this.res, this.rpcId, status, code, message);
  }

  /** The one report of how this exchange ended. */
  report(status: number, upstreamMs: number, errorCode: string | undefined): void {
    this.sink.forwarded(this.req, this.context, this.requestStarted, status, upstreamMs, errorCode, this.upstream.name);
  }

  /** Stop the upstream request (the client left, or the deadline passed): now, or as it leaves the queue. */
  abort(): void {
    if (this.settled) return;
    const abort = this.abortRequest;
    if (abort !== undefined) abort(new errors.RequestAbortedError());
  }

  onConnect(abort: (err?: Error) => void): void {
    if (this.clientGone || this.timedOut) abort(new errors.RequestAbortedError());
    else this.abortRequest = abort;
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void): boolean {
    if (statusCode < 200) return true; // 1xx: the final answer follows
    clearTimeout(this.timer);
    this.upstreamMs = performance.now() - this.started;
    if (this.guardCredential && (statusCode === 401 || statusCode === 403)) {
      this.rejected = statusCode;
      return true;
    }
    const res = this.res;
    if (this.clientGone || res.headersSent) return true; // answered already (deadline) or nobody to tell
    const headers = clientResponseHeaders(rawHeaders);
    res.writeHead(statusCode, this.cors ? withCors(headers, this.cors) : headers);
    // A body of unknown length may be a stream (SSE): send the headers now, not with its first chunk.
    if (headers['content-length'] === undefined) res.flushHeaders();
    this.streaming = true;
    this.resume = resume;
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (!this.streaming || this.res.destroyed) return true;
    if (this.res.write(chunk)) return true;
    // the client reads slower than the upstream sends: undici pauses until the response drains
    this.res.once('drain', this.resume!);
    return false;
  }

  onComplete(): void {
    this.settle();
    if (this.rejected !== 0) return this.credentialRejected();
    if (this.streaming && !this.res.destroyed) this.res.end();
  }

  onError(err: Error & { code?: string }): void {
    this.settle();
    const { res, upstream, upstreamMs } = this;
    if (this.clientGone) return; // the client left first: its 'close' reported 499
    if (this.rejected !== 0) return this.credentialRejected();
    if (this.result !== undefined || (res.headersSent && !this.streaming)) return; // answered already (the deadline)
    const failure = this.timedOut ? timeoutFailure(upstream.name, upstream.timeoutMs) : upstreamFailure(err, upstream.name);
    if (!res.headersSent) {
      this.result = { status: failure.status, upstreamMs, error: failure };
      this.fail(failure.status, failure.code, failure.message);
    } else {
      // Mid-stream failure: the status is sent; cut the response so the client sees it broke.
      this.result = { status: res.statusCode, upstreamMs, error: { code: failure.code, message: failure.message } };
      res.destroy(err);
    }
  }

  private settle(): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timer);
    this.upstream.release();
  }

  private credentialRejected(): void {
    if (this.clientGone || this.res.headersSent) return;
    const message = `upstream "${this.upstream.name}" refused the gateway's own credential (${this.rejected}): its auth settings in the gateway configuration are wrong or expired`;
    this.result = { status: 502, upstreamMs: this.upstreamMs, error: { code: CREDENTIAL_REJECTED, message } };
    this.fail(502, CREDENTIAL_REJECTED, message);
  }
}

/** The deadline for the response headers passed: 504 now, and the upstream request stopped. */
function onDeadline(ex: Exchange): void {
  ex.timedOut = true;
  const { res, upstream } = ex;
  if (!res.headersSent && !ex.clientGone) {
    const failure = timeoutFailure(upstream.name, upstream.timeoutMs);
    ex.result = { status: failure.status, upstreamMs: -1, error: failure };
    ex.fail(failure.status, failure.code, failure.message);
  }
  ex.abort();
}

/** The response closed: finished (report what was sent), or the client went away first (499, upstream stopped). */
function onResponseClose(this: ExchangeCarrier): void {
  const ex = this[EXCHANGE];
  if (ex === undefined) return;
  this[EXCHANGE] = undefined;
  const failed = ex.result;
  if (failed !== undefined) return ex.report(failed.status, failed.upstreamMs, failed.error?.code);
  if (this.writableFinished) return ex.report(this.statusCode, ex.upstreamMs, undefined);
  ex.clientGone = true;
  ex.abort();
  ex.report(499, ex.upstreamMs, 'client_closed');
}
