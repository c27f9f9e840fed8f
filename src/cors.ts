// CORS: browsers calling Dagu through Keygate with an X-API-Key need a preflight answered. Off by
// default; `cors:` at the top level applies to every route, a route's own `cors:` replaces it
// (`cors: false` turns it off there). Keygate owns CORS on such a route: preflights are answered
// here without a key and never forwarded, and the upstream's own Access-Control-* headers are
// replaced by Keygate's. Pure functions over a policy compiled once per configuration.

import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { CorsConfig } from './config/types.js';

interface CompiledCors {
  anyOrigin: boolean;
  origins: ReadonlySet<string>;
  /** upper-case */
  methods: ReadonlySet<string>;
  /** lower-case */
  headers: ReadonlySet<string>;
  credentials: boolean;
  /** Access-Control-Allow-Methods / -Headers / -Max-Age as sent */
  allowMethods: string;
  allowHeaders: string;
  maxAge: string;
  expose: string;
}

const compiled = new WeakMap<CorsConfig, CompiledCors>();

function compile(c: CorsConfig): CompiledCors {
  let out = compiled.get(c);
  if (out === undefined) {
    out = {
      anyOrigin: c.allowed_origins.includes('*'),
      origins: new Set(c.allowed_origins),
      methods: new Set(c.allowed_methods.map((m) => m.toUpperCase())),
      headers: new Set(c.allowed_headers.map((h) => h.toLowerCase())),
      credentials: c.allow_credentials,
      allowMethods: c.allowed_methods.map((m) => m.toUpperCase()).join(', '),
      allowHeaders: c.allowed_headers.join(', '),
      maxAge: String(c.max_age),
      expose: c.expose_headers.join(', '),
    };
    compiled.set(c, out);
  }
  return out;
}

function originAllowed(p: CompiledCors, origin: string): boolean {
  return p.anyOrigin || p.origins.has(origin);
}

/** Access-Control-Allow-Origin (and -Credentials): the origin itself unless "*" without credentials. */
function allowOrigin(p: CompiledCors, origin: string, out: OutgoingHttpHeaders): void {
  out['access-control-allow-origin'] = p.anyOrigin && !p.credentials ? '*' : origin;
  if (p.credentials) out['access-control-allow-credentials'] = 'true';
}

/** Is this request a CORS preflight (OPTIONS with Origin and Access-Control-Request-Method)? */
export function isPreflight(method: string, headers: IncomingHttpHeaders): boolean {
  return method === 'OPTIONS' && headers.origin !== undefined && headers['access-control-request-method'] !== undefined;
}

export interface PreflightAnswer {
  status: 204 | 403;
  headers: OutgoingHttpHeaders;
  /** why it was refused (403) */
  message?: string;
}

/** The answer to a preflight for a route with a CORS policy. */
export function answerPreflight(policy: CorsConfig, headers: IncomingHttpHeaders): PreflightAnswer {
  const p = compile(policy);
  const origin = headers.origin as string;
  const method = String(headers['access-control-request-method']).toUpperCase();
  const vary = { vary: 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers' };
  if (!originAllowed(p, origin)) return { status: 403, headers: vary, message: `origin ${origin} is not allowed (cors.allowed_origins)` };
  if (!p.methods.has(method)) return { status: 403, headers: vary, message: `method ${method} is not allowed (cors.allowed_methods)` };
  const requested = headers['access-control-request-headers'];
  if (requested !== undefined) {
    for (const h of String(requested).split(',')) {
      const name = h.trim().toLowerCase();
      if (name !== '' && !p.headers.has(name)) return { status: 403, headers: vary, message: `header ${name} is not allowed (cors.allowed_headers)` };
    }
  }
  const out: OutgoingHttpHeaders = { ...vary, 'access-control-allow-methods': p.allowMethods, 'access-control-allow-headers': p.allowHeaders, 'access-control-max-age': p.maxAge };
  allowOrigin(p, origin, out);
  return { status: 204, headers: out };
}

/**
 * The CORS headers of an actual response on a route with a policy (always Vary: Origin; the
 * Allow-Origin headers only for an allowed origin).
 */
export function responseCors(policy: CorsConfig, origin: string | undefined): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = { vary: 'Origin' };
  if (origin === undefined) return out;
  const p = compile(policy);
  if (!originAllowed(p, origin)) return out;
  allowOrigin(p, origin, out);
  if (p.expose !== '') out['access-control-expose-headers'] = p.expose;
  return out;
}

/** Drop the upstream's own CORS headers (Keygate's policy answers for the route). */
export function withoutUpstreamCors(headers: OutgoingHttpHeaders): OutgoingHttpHeaders {
  for (const name of Object.keys(headers)) if (name.startsWith('access-control-')) delete headers[name];
  return headers;
}
