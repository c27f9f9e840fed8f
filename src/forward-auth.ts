// forward_auth: Keygate as the key check of a proxy already in front of the upstream. The proxy asks
// the endpoint about each request it is about to forward (nginx auth_request, Traefik ForwardAuth,
// Envoy's ext_authz HTTP service); this module decides whether the asker is the proxy (shared
// secret, allowed addresses) and reads the ORIGINAL request from the asker's headers. The pipeline
// then runs its own admission on that request (pipeline.ts: the same stages as a proxied request)
// and answers instead of forwarding: 200 with the identity and the upstream's credential for the
// proxy to copy, or the refusal with its status and JSON body.

import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { BlockList, isIP } from 'node:net';
import type { ForwardAuthConfig } from './config/types.js';
import type { Identity } from './proxy/headers.js';
import { IDENTITY_HEADER_NAMES, identityHeaders } from './proxy/headers.js';

/** Which proxy's way of describing the original request was used. */
export type ForwardForm = 'nginx' | 'traefik' | 'envoy';

/** The request the proxy asks about, as its headers describe it. */
export interface OriginalRequest {
  readonly form: ForwardForm;
  readonly method: string;
  /** origin-form target: path and query, as the client sent it */
  readonly target: string;
  readonly host: string | undefined;
  /** the client's address as the proxy saw it (rightmost X-Forwarded-For), when it sent one */
  readonly client: string | undefined;
}

/** The refusal sent to an asker that is not the configured proxy (never says which check failed). */
export const UNTRUSTED = {
  status: 403,
  code: 'forward_auth_untrusted',
  message: 'the forward-auth endpoint answers only the configured proxy (shared secret header and/or allowed address)',
} as const;

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** IPv4-mapped IPv6 (::ffff:10.0.0.1, a dual-stack listener's view of an IPv4 client) as IPv4. */
function plainAddress(a: string): string {
  return a.startsWith('::ffff:') && a.indexOf('.') !== -1 ? a.slice(7) : a;
}

/** The endpoint as one configuration compiles it: built at start and at each reload, never per request. */
export class ForwardAuth {
  readonly path: string;
  readonly proxy: ForwardProxy;
  private readonly secretHeader: string;
  private readonly secretDigest: Buffer | undefined;
  private readonly allow: BlockList | undefined;

  constructor(cfg: ForwardAuthConfig) {
    this.path = cfg.path;
    this.proxy = cfg.proxy;
    this.secretHeader = cfg.secret_header;
    this.secretDigest = cfg.secret === undefined ? undefined : sha256(cfg.secret);
    if (cfg.allow_from !== undefined) {
      const list = new BlockList();
      for (const entry of cfg.allow_from) {
        const [addr = '', prefix] = entry.split('/');
        const type = isIP(addr) === 6 ? 'ipv6' : 'ipv4';
        if (prefix === undefined) list.addAddress(plainAddress(addr), type);
        else list.addSubnet(addr, Number(prefix), type);
      }
      this.allow = list;
    }
  }

  /** Is this request target the endpoint: the path itself (with a query or not), or below it (Envoy's form)? */
  matches(url: string): boolean {
    if (!url.startsWith(this.path)) return false;
    if (url.length === this.path.length) return true;
    const c = url.charCodeAt(this.path.length);
    return c === 0x2f /* / */ || c === 0x3f /* ? */;
  }

  /**
   * Is the asker the proxy: its address in allow_from, and the shared secret in its header (both,
   * when both are configured). The secret is compared as digests of equal length, in constant time.
   */
  trusts(remoteAddress: string, headers: IncomingHttpHeaders): boolean {
    if (this.allow !== undefined) {
      const a = plainAddress(remoteAddress);
      const family = isIP(a);
      if (family === 0 || !this.allow.check(a, family === 6 ? 'ipv6' : 'ipv4')) return false;
    }
    if (this.secretDigest !== undefined) {
      const given = headers[this.secretHeader];
      if (typeof given !== 'string' || !timingSafeEqual(sha256(given), this.secretDigest)) return false;
    }
    return true;
  }

  /** Remove the shared secret from the request's headers once checked (nothing later may see it). */
  forgetSecret(headers: IncomingHttpHeaders): void {
    delete headers[this.secretHeader];
  }
}

/** An HTTP method token (RFC 9110: tchar), upper-case letters in practice. */
function isMethod(m: string): boolean {
  if (m.length === 0 || m.length > 32) return false;
  for (let i = 0; i < m.length; i++) {
    const c = m.charCodeAt(i);
    if (!((c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x2d || c === 0x5f)) return false;
  }
  return true;
}

/** An origin-form request target: starts with "/", visible ASCII only (no space: two values joined by ", " fail too). */
function isTarget(t: string): boolean {
  if (t.length === 0 || t.charCodeAt(0) !== 0x2f) return false;
  for (let i = 1; i < t.length; i++) {
    const c = t.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) return false;
  }
  return true;
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** The rightmost X-Forwarded-For entry: the address the proxy itself saw (it appends it). */
function clientOf(headers: IncomingHttpHeaders): string | undefined {
  const xff = header(headers, 'x-forwarded-for');
  if (xff === undefined) return undefined;
  const last = xff.slice(xff.lastIndexOf(',') + 1).trim();
  return isIP(last) !== 0 ? last : undefined;
}

/** Which proxy the endpoint answers (forward_auth.proxy): its form only, or any one form (auto). */
export type ForwardProxy = 'auto' | 'nginx' | 'traefik' | 'caddy' | 'envoy';

/** The form each configured proxy describes requests in (Caddy's forward_auth asks as Traefik does). */
const FORM_OF: Record<Exclude<ForwardProxy, 'auto'>, ForwardForm> = { nginx: 'nginx', traefik: 'traefik', caddy: 'traefik', envoy: 'envoy' };

const HOW = {
  nginx: 'X-Original-URI and X-Original-Method (nginx auth_request)',
  traefik: 'X-Forwarded-Uri and X-Forwarded-Method (Traefik ForwardAuth, Caddy forward_auth)',
  envoy: 'the original path appended to the endpoint (Envoy ext_authz path_prefix)',
} as const;

/**
 * The original request from the asker's request (pure):
 * - Envoy (ext_authz HTTP service, path_prefix): the original path appended to the endpoint's
 *   path, the original method and Host;
 * - nginx (auth_request): X-Original-URI, X-Original-Method (else the subrequest's method), the host
 *   from X-Original-Host, else Host;
 * - Traefik (ForwardAuth) and Caddy (forward_auth): X-Forwarded-Uri, X-Forwarded-Method,
 *   X-Forwarded-Host (else Host).
 * These proxies pass the CLIENT's headers on to the endpoint and set only their own form's: a client
 * behind Traefik can send X-Original-URI. So with `proxy` set only that form is read, and with
 * `auto` a request that carries more than one form is refused, never resolved by a precedence.
 * A string is the reason it cannot be read.
 */
export function originalRequest(url: string, path: string, method: string, headers: IncomingHttpHeaders, proxy: ForwardProxy = 'auto'): OriginalRequest | string {
  const envoy = url.length > path.length && url.charCodeAt(path.length) === 0x2f;
  const nginx = headers['x-original-uri'] !== undefined;
  const traefik = headers['x-forwarded-uri'] !== undefined;
  let form: ForwardForm;
  if (proxy !== 'auto') {
    form = FORM_OF[proxy];
    if (!(form === 'envoy' ? envoy : form === 'nginx' ? nginx : traefik)) return `no original request in the form forward_auth.proxy (${proxy}) sends: ${HOW[form]}`;
  } else {
    const n = Number(envoy) + Number(nginx) + Number(traefik);
    if (n === 0) return `no original request: send ${HOW.nginx}, ${HOW.traefik}, or ${HOW.envoy}`;
    if (n > 1) {
      const which = [envoy ? 'a path below the endpoint (Envoy)' : '', nginx ? 'X-Original-URI (nginx)' : '', traefik ? 'X-Forwarded-Uri (Traefik, Caddy)' : ''].filter(Boolean).join(' and ');
      return `more than one description of the original request (${which}): a client may have sent one of them; set forward_auth.proxy to the proxy in front of Keygate`;
    }
    form = envoy ? 'envoy' : nginx ? 'nginx' : 'traefik';
  }
  let target: string | undefined;
  let m: string | undefined;
  let host: string | undefined;
  if (form === 'envoy') {
    target = url.slice(path.length);
    m = method;
    host = header(headers, 'host');
  } else if (form === 'nginx') {
    target = header(headers, 'x-original-uri');
    m = header(headers, 'x-original-method') ?? method;
    host = header(headers, 'x-original-host') ?? header(headers, 'host');
  } else {
    target = header(headers, 'x-forwarded-uri');
    m = header(headers, 'x-forwarded-method') ?? method;
    host = header(headers, 'x-forwarded-host') ?? header(headers, 'host');
  }
  if (target === undefined || !isTarget(target)) return `the original request target (${form}) must be one path starting with "/", visible ASCII only`;
  if (!isMethod(m)) return `the original method (${form}) is not an HTTP method`;
  return { form, method: m.toUpperCase(), target, host, client: clientOf(headers) };
}

/** JSON with every non-ASCII character escaped (\uXXXX): still the same JSON, and a valid header value. */
const NOT_ASCII = /[^\x20-\x7e]/g;

export function asciiJson(value: unknown): string {
  return JSON.stringify(value).replace(NOT_ASCII, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Longest message in X-Keygate-Error (characters, before escaping). */
const MAX_HEADER_MESSAGE = 1000;

/**
 * Headers of a refusal for the proxy to reproduce: X-Keygate-Status and X-Keygate-Error (the JSON
 * body). nginx's auth_request turns any status but 401/403 into 500 and never passes the body: its
 * error_page reads these (README, deploy/nginx-forward-auth.conf).
 */
export function refusalHeaders(status: number, code: string, message: string, headers: OutgoingHttpHeaders | undefined): OutgoingHttpHeaders {
  // a message quoting a long path stays well inside a proxy's header buffer (nginx: 4 or 8 kB)
  const short = message.length > MAX_HEADER_MESSAGE ? `${message.slice(0, MAX_HEADER_MESSAGE)}…` : message;
  return { ...headers, 'x-keygate-status': String(status), 'x-keygate-error': asciiJson({ code, message: short }) };
}

/**
 * The allow answer's headers: the key's identity (the names a proxied request carries upstream,
 * X-Keygate-Key-Id…, and X-Request-Source) and the upstream's credential under its own header name
 * (Authorization, or auth_header), for the proxy to copy onto the request it forwards.
 *
 * Every identity name is present, empty when there is no value (an auth: none route, a key without
 * a workspace), and so is Authorization unless the route passes the client's own: a proxy that copies
 * the answer's headers onto the request (Caddy's copy_headers, Traefik's authResponseHeaders) then
 * replaces what a client sent under those names, and Caddy 2.6 never sends its literal placeholder
 * for a header the answer lacks (seen with Debian's Caddy 2.6.2, test/forward-auth-caddy.test.ts).
 * nginx reads an empty value as none: its proxy_set_header removes the header.
 */
export function allowHeaders(identity: Identity | undefined, credential: readonly [string, string] | undefined, passAuthorization: boolean): OutgoingHttpHeaders {
  const out: Record<string, string> = { 'content-length': '0', 'cache-control': 'no-store' };
  for (const name of IDENTITY_HEADER_NAMES) out[name] = '';
  if (!passAuthorization) out.authorization = '';
  if (identity !== undefined) identityHeaders(identity, out);
  if (credential !== undefined) out[credential[0]] = credential[1];
  return out;
}
