// HTTP forwarding through undici's Pool.stream: the response body is written straight into the
// client's ServerResponse (SSE and chunked bodies stream as they come), the request body streams
// from the client, and a client that goes away aborts the upstream request.

import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { Writable } from 'node:stream';
import { errors } from 'undici';
import { withoutUpstreamCors } from '../cors.js';
import { clientResponseHeaders } from './headers.js';
import type { Upstream } from './upstream.js';

export interface ForwardResult {
  /** status sent to the client (the upstream's, or 502/504 from the gateway) */
  status: number;
  /** ms from forwarding to the upstream's response headers; -1 if none arrived */
  upstreamMs: number;
  /** set when the gateway answered for a failing upstream, or the stream broke */
  error?: { code: string; message: string };
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

export interface ForwardOptions {
  /**
   * The request carries the upstream's own credential on behalf of an accepted key: a 401 or 403
   * from the upstream is its verdict on that credential, answered 502 upstream_credential_rejected
   * (never passed on as if the client's key had been refused).
   */
  guardCredential?: boolean;
  /** the route's CORS headers: they replace the upstream's Access-Control-* headers */
  cors?: OutgoingHttpHeaders;
}

/** Keygate's CORS headers instead of the upstream's own; Vary keeps the upstream's values too. */
/** Stage headers on the gateway's response (GatewayResponse), or set them on a plain one. */
function stageCors(res: ServerResponse, cors: OutgoingHttpHeaders): void {
  const staging = res as ServerResponse & { stage?: (name: string, value: string) => void };
  for (const name in cors) {
    const v = cors[name];
    if (v === undefined) continue;
    if (staging.stage !== undefined) staging.stage(name, String(v));
    else res.setHeader(name, v);
  }
}

function withCors(headers: OutgoingHttpHeaders, cors: OutgoingHttpHeaders): OutgoingHttpHeaders {
  const vary = headers.vary;
  withoutUpstreamCors(headers);
  Object.assign(headers, cors);
  if (vary !== undefined && cors.vary !== undefined) headers.vary = `${String(vary)}, ${String(cors.vary)}`;
  return headers;
}

/** Swallows a refused upstream's body (its 401/403 must not reach the client). */
function discard(): Writable {
  return new Writable({ write: (_chunk, _enc, cb) => cb() });
}

export function forwardHttp(
  req: IncomingMessage,
  res: ServerResponse,
  upstream: Upstream,
  path: string,
  headers: Record<string, string | string[]>,
  /** the body already read (JSON-RPC policy); otherwise the client's body streams through */
  body: Buffer | undefined,
  sendError: (res: ServerResponse, status: number, code: string, message: string) => void,
  done: (result: ForwardResult) => void,
  opts: ForwardOptions = {},
): void {
  const ex = new Exchange(res, upstream, sendError, done, opts.guardCredential === true, opts.cors);
  // Beyond the pool's connections and max_pending queued requests: refuse now, not after a wait
  // nobody would sit through (Envoy's max_pending_requests).
  if (!upstream.admit()) {
    const message = `upstream "${upstream.name}" has ${upstream.pending} requests waiting for a connection (max_pending); retry shortly`;
    ex.fail(503, UPSTREAM_OVERLOADED, message);
    req.resume();
    done({ status: 503, upstreamMs: -1, error: { code: UPSTREAM_OVERLOADED, message } });
    return;
  }
  // The gateway's own deadline for the response headers, from now: time queued for a connection
  // counts. undici's timers tick in whole seconds above 1 s; this one is exact.
  ex.timer = setTimeout(onDeadline, upstream.timeoutMs, ex);
  // undici takes any EventEmitter as its abort signal: the response itself serves, which spares an
  // AbortController (and its DOMException) per request — measured at ~10% of the gateway's CPU.
  // No closure per request: the exchange rides on the response (close) and in undici's opaque.
  (res as ExchangeCarrier)[EXCHANGE] = ex;
  res.on('close', onClientClose);
  upstream.pool.stream(
    {
      path,
      method: req.method as 'GET',
      headers,
      body: body ?? (hasBody(req) ? req : null),
      signal: res,
      opaque: ex,
    },
    onUpstreamHeaders,
    onUpstreamDone,
  );
}

const EXCHANGE = Symbol('keygate.exchange');
type ExchangeCarrier = ServerResponse & { [EXCHANGE]?: Exchange };

/** One forwarded request's state, shared by undici's callbacks (as `opaque`) and the response's close. */
class Exchange {
  readonly started = performance.now();
  upstreamMs = -1;
  timer: NodeJS.Timeout | undefined = undefined;
  timedOut = false;
  /** the upstream's 401/403 to our credential (guardCredential), 0 = none */
  rejected = 0;
  clientGone = false;

  constructor(
    readonly res: ServerResponse,
    readonly upstream: Upstream,
    readonly sendError: (res: ServerResponse, status: number, code: string, message: string) => void,
    readonly done: (result: ForwardResult) => void,
    readonly guardCredential: boolean,
    readonly cors: OutgoingHttpHeaders | undefined,
  ) {}

  /** the gateway's own failures carry the route's CORS headers too: a browser must be able to read why */
  fail(status: number, code: string, message: string): void {
    if (this.cors !== undefined) stageCors(this.res, this.cors);
    this.sendError(this.res, status, code, message);
  }
}

function onDeadline(ex: Exchange): void {
  ex.timedOut = true;
  ex.res.emit('abort');
}

function onClientClose(this: ExchangeCarrier): void {
  const ex = this[EXCHANGE];
  if (ex !== undefined && !this.writableFinished) {
    ex.clientGone = true;
    this.emit('abort');
  }
}

function onUpstreamHeaders({ statusCode, headers: upstreamHeaders, opaque }: { statusCode: number; headers: Record<string, string | string[] | undefined>; opaque: unknown }): Writable {
  const ex = opaque as Exchange;
  clearTimeout(ex.timer);
  ex.upstreamMs = performance.now() - ex.started;
  if (ex.guardCredential && (statusCode === 401 || statusCode === 403)) {
    ex.rejected = statusCode;
    return discard();
  }
  const res = ex.res;
  res.writeHead(statusCode, ex.cors ? withCors(clientResponseHeaders(upstreamHeaders), ex.cors) : clientResponseHeaders(upstreamHeaders));
  // A body of unknown length may be a stream (SSE): send the headers now, not with its first chunk.
  if (upstreamHeaders['content-length'] === undefined) res.flushHeaders();
  return res;
}

function onUpstreamDone(err: Error | null, data: { opaque: unknown }): void {
  const ex = data.opaque as Exchange;
  const { res, upstream, upstreamMs } = ex;
  clearTimeout(ex.timer);
  upstream.release();
  if (ex.rejected !== 0 && !ex.clientGone) {
    const message = `upstream "${upstream.name}" refused the gateway's own credential (${ex.rejected}): its auth settings in the gateway configuration are wrong or expired`;
    ex.fail(502, CREDENTIAL_REJECTED, message);
    ex.done({ status: 502, upstreamMs, error: { code: CREDENTIAL_REJECTED, message } });
    return;
  }
  if (!err) {
    ex.done({ status: res.statusCode, upstreamMs });
    return;
  }
  const e = err as Error & { code?: string };
  if (ex.clientGone) {
    // the client left; nothing to answer
    ex.done({ status: 499, upstreamMs, error: { code: 'client_closed', message: 'client closed the connection' } });
    return;
  }
  const failure = ex.timedOut ? timeoutFailure(upstream.name, upstream.timeoutMs) : upstreamFailure(e, upstream.name);
  if (!res.headersSent) {
    ex.fail(failure.status, failure.code, failure.message);
    ex.done({ status: failure.status, upstreamMs, error: failure });
  } else {
    // Mid-stream failure: the status is sent; cut the response so the client sees it broke.
    res.destroy(e);
    ex.done({ status: res.statusCode, upstreamMs, error: { code: failure.code, message: failure.message } });
  }
}
