// Which headers cross the gateway, in each direction.

import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { OVERRIDE_HEADER_NAMES } from '../config/types.js';

// Never forwarded upstream: hop-by-hop headers (RFC 9110 §7.6.1, and those undici refuses),
// the client's credentials, and identity headers only the gateway may set.
const DROP_REQUEST = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'expect',
  'http2-settings',
  'proxy-authorization',
  'host',
  // credentials
  'authorization',
  'x-api-key',
  'cookie',
  // identity and provenance the gateway sets itself
  'x-request-source',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-forwarded-port',
  'forwarded',
  'x-real-ip',
]);
const IDENTITY_PREFIX = 'x-keygate-';

/**
 * Headers that make an upstream reinterpret the request's method or path (frameworks honour them:
 * a viewer's GET must not become a DELETE, nor reach a path the gateway did not authorise).
 * Removed unless the route lists them in pass_headers.
 */
export const OVERRIDE_HEADERS: ReadonlySet<string> = new Set(OVERRIDE_HEADER_NAMES);

/** What crosses besides the fixed rules: listen.underscore_headers and the route's pass_headers. */
export interface HeaderPolicy {
  /** drop (and reject, refused before this point): names with "_" are not forwarded */
  readonly underscores: 'drop' | 'reject' | 'allow';
  /** override headers this route forwards */
  readonly pass?: readonly string[] | undefined;
}

const PLAIN_POLICIES: Readonly<Record<HeaderPolicy['underscores'], HeaderPolicy>> = {
  drop: { underscores: 'drop' },
  reject: { underscores: 'reject' },
  allow: { underscores: 'allow' },
};
const DEFAULT_POLICY = PLAIN_POLICIES.drop;

/** The policy for a route; one shared object per underscores setting when the route passes no override header. */
export function headerPolicy(underscores: HeaderPolicy['underscores'], pass: readonly string[] | undefined): HeaderPolicy {
  return pass === undefined ? PLAIN_POLICIES[underscores] : { underscores, pass };
}

/** The first header name with an underscore, if any (for underscore_headers: reject). */
export function underscoreHeader(headers: IncomingHttpHeaders): string | undefined {
  for (const name in headers) if (name.indexOf('_') !== -1) return name;
  return undefined;
}

/** Whether the gateway removes a header of this name (spelt with "-"). */
function removed(name: string, pass: readonly string[] | undefined): boolean {
  return DROP_REQUEST.has(name) || name.startsWith(IDENTITY_PREFIX) || (OVERRIDE_HEADERS.has(name) && (pass === undefined || !pass.includes(name)));
}

// x-request-id: the client sees the id the gateway logged and sent upstream (set by the gateway)
const DROP_RESPONSE = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'x-request-id']);

/** Longest client-sent X-Request-Id kept; a longer or odd one is replaced by a fresh id. */
const MAX_REQUEST_ID = 128;

/**
 * The request's correlation id: the client's X-Request-Id when it is 1–128 visible ASCII
 * characters, else a new UUID. Written back into `headers`, so it is what goes upstream and what
 * the access log shows; the response carries it too.
 */
export function assignRequestId(headers: IncomingHttpHeaders): string {
  const v = headers['x-request-id'];
  if (typeof v === 'string' && v.length > 0 && v.length <= MAX_REQUEST_ID && visibleAscii(v)) return v;
  const id = randomUUID();
  headers['x-request-id'] = id;
  return id;
}

function visibleAscii(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c <= 0x20 || c > 0x7e) return false;
  }
  return true;
}

/** Identity of the calling key, as the upstream receives it (documented in README). */
export interface Identity {
  keyId: string;
  keyName: string;
  role: string;
  workspace: string | null;
  attribution: string;
}

export interface Forwarding {
  /** client address as the gateway saw it */
  remoteAddress: string;
  proto: 'http' | 'https';
  /** the Host the client asked for */
  host: string | undefined;
  /** keep (and append to) client-sent X-Forwarded-* (only behind a trusted proxy) */
  trustForwarded: boolean;
}

/** Header values must be visible ASCII; names people type may not be. */
function headerSafe(v: string): string {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return encodeURIComponent(v);
  }
  return v;
}

/** Every header name identityHeaders may set. */
export const IDENTITY_HEADER_NAMES = ['x-keygate-key-id', 'x-keygate-key-name', 'x-keygate-role', 'x-keygate-workspace', 'x-keygate-attribution', 'x-request-source'] as const;

/**
 * The key's identity as header name/value pairs, flat ([name, value, name, value…]), values made
 * header-safe: computed once per key and role (the pipeline keeps it with the key's cached access).
 */
export type IdentityPairs = readonly string[];

export function identityPairs(identity: Identity): IdentityPairs {
  const pairs = ['x-keygate-key-id', identity.keyId, 'x-keygate-key-name', headerSafe(identity.keyName), 'x-keygate-role', identity.role];
  if (identity.workspace !== null) pairs.push('x-keygate-workspace', headerSafe(identity.workspace));
  pairs.push('x-keygate-attribution', headerSafe(identity.attribution), 'x-request-source', 'external_api');
  return pairs;
}

/** The key's identity as headers (upstream requests; the forward-auth answer). */
export function identityHeaders(identity: Identity | IdentityPairs, out: Record<string, string | string[]>): void {
  const pairs = isPairs(identity) ? identity : identityPairs(identity);
  for (let i = 0; i < pairs.length; i += 2) out[pairs[i]!] = pairs[i + 1]!;
}

function isPairs(identity: Identity | IdentityPairs): identity is IdentityPairs {
  return Array.isArray(identity);
}

/**
 * Request headers as undici takes them fastest: [name, value, name, value…]. An object with a
 * dozen-odd names set one by one would be a dictionary-mode object for V8, costly to fill and for
 * undici to walk, on every request.
 */
export type HeaderList = (string | string[])[];

/** Headers to send upstream: the client's minus what must not pass, plus the gateway's own. */
export function upstreamRequestHeaderList(
  incoming: IncomingHttpHeaders,
  upstreamHost: string,
  credential: readonly [string, string] | undefined,
  /** the key's identity, or its pairs as identityPairs made them */
  identity: Identity | IdentityPairs | undefined,
  fwd: Forwarding,
  /** keep the client's Authorization (auth: none routes that opted in, e.g. Dagu webhooks) */
  passAuthorization = false,
  policy: HeaderPolicy = DEFAULT_POLICY,
): HeaderList {
  const out: HeaderList = [];
  // the upstream's credential replaces a client's header of the same name, never joins it
  const credentialName = credential?.[0];
  if (passAuthorization && credentialName !== 'authorization' && typeof incoming.authorization === 'string') out.push('authorization', incoming.authorization);
  const listed = connectionTokens(incoming.connection); // headers named in Connection are hop-by-hop too
  for (const name in incoming) {
    if (removed(name, policy.pass) || name === credentialName) continue;
    if (name.indexOf('_') !== -1) {
      // CGI-style upstreams read "_" as "-": X_API_Key is X-API-Key to them
      if (policy.underscores !== 'allow' || removed(name.replaceAll('_', '-'), policy.pass)) continue;
    }
    if (listed !== undefined && listed.includes(name)) continue;
    const v = incoming[name];
    if (v !== undefined) out.push(name, v);
  }
  out.push('host', upstreamHost);
  const prior = fwd.trustForwarded ? incoming['x-forwarded-for'] : undefined;
  out.push('x-forwarded-for', typeof prior === 'string' && prior !== '' ? `${prior}, ${fwd.remoteAddress}` : fwd.remoteAddress);
  out.push('x-forwarded-proto', (fwd.trustForwarded && typeof incoming['x-forwarded-proto'] === 'string' && incoming['x-forwarded-proto']) || fwd.proto);
  const host = (fwd.trustForwarded && typeof incoming['x-forwarded-host'] === 'string' && incoming['x-forwarded-host']) || fwd.host;
  if (host) out.push('x-forwarded-host', host);
  if (identity !== undefined) {
    const pairs = isPairs(identity) ? identity : identityPairs(identity);
    for (let i = 0; i < pairs.length; i++) out.push(pairs[i]!);
  }
  if (credential !== undefined) out.push(credential[0], credential[1]);
  return out;
}

/** A header list as an object (WebSocket upgrades, the agent card); any name is safe as a key. */
export function headersObject(list: HeaderList): Record<string, string | string[]> {
  const out = Object.create(null) as Record<string, string | string[]>;
  for (let i = 0; i < list.length; i += 2) out[list[i] as string] = list[i + 1]!;
  return out;
}

const PLAIN_CONNECTION = /^\s*(?:keep-alive|close)\s*$/i;

/** Header names listed in a Connection header; undefined for the usual "keep-alive"/"close". */
function connectionTokens(connection: string | string[] | undefined): string[] | undefined {
  if (typeof connection !== 'string' || PLAIN_CONNECTION.test(connection)) return undefined;
  return connection.toLowerCase().split(',').map((t) => t.trim());
}

/**
 * Response headers to pass back to the client, from the upstream's raw [name, value, …] as undici
 * read them: names lower-cased, a repeated name as an array, values as the bytes arrived (latin1,
 * which node writes back unchanged), hop-by-hop headers and those named in Connection dropped.
 */
export function clientResponseHeaders(raw: readonly (Buffer | string)[]): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  let connection: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1').toLowerCase();
    const value = raw[i + 1]!.toString('latin1');
    if (DROP_RESPONSE.has(name)) {
      if (name === 'connection') connection = connection === undefined ? value : `${connection}, ${value}`;
      continue;
    }
    const prior = out[name];
    if (prior === undefined) out[name] = value;
    else if (Array.isArray(prior)) prior.push(value);
    else out[name] = [prior as string, value];
  }
  const listed = connectionTokens(connection);
  if (listed !== undefined) for (const name of listed) delete out[name];
  return out;
}
