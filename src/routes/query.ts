// Reading and removing single query parameters without re-encoding the rest: what is not removed
// is forwarded byte for byte. Names are compared decoded, as upstreams (Go's url.ParseQuery) do,
// so "remote%4Eode=x" cannot slip past a check for "remoteNode".

function decodeName(raw: string): string {
  if (raw.indexOf('%') === -1 && raw.indexOf('+') === -1) return raw;
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' '));
  } catch {
    return raw;
  }
}

export interface Taken {
  /** decoded values of `name`, in order */
  values: string[];
  /** the query without any `name` parameter, other parts unchanged */
  rest: string;
}

/** All values of `name` and the query without them. Cheap when the name cannot be present. */
export function takeParam(query: string, name: string, mayBeEncoded = true): Taken {
  if (query === '' || (!mayBeEncoded && query.indexOf(name) === -1)) return { values: [], rest: query };
  const values: string[] = [];
  const kept: string[] = [];
  for (const part of query.split('&')) {
    const eq = part.indexOf('=');
    const rawName = eq === -1 ? part : part.slice(0, eq);
    if (decodeName(rawName) === name) {
      values.push(eq === -1 ? '' : decodeName(part.slice(eq + 1)));
    } else kept.push(part);
  }
  return values.length === 0 ? { values, rest: query } : { values, rest: kept.join('&') };
}

/** Whether the raw query might contain `name` in any encoding (a fast pre-check). */
export function mayContain(query: string, name: string): boolean {
  return query !== '' && (query.indexOf(name) !== -1 || query.indexOf('%') !== -1);
}

/** Query parameter names that carry a credential (compared decoded, in any case). */
const CREDENTIAL_PARAMS: ReadonlySet<string> = new Set([
  'token', 'access_token', 'access-token', 'accesstoken', 'auth_token', 'auth-token', 'authtoken', 'api_token', 'api-token', 'apitoken',
  'api_key', 'api-key', 'apikey', 'x-api-key', 'x_api_key', 'key', 'auth', 'authorization', 'bearer', 'id_token', 'refresh_token', 'jwt',
]);

/** a cheap pre-check: one of those names could be in the query (or it is encoded) */
const MAY_NAME_CREDENTIAL = /token|key|auth|bearer|jwt|%/i;

/**
 * Why the query carries a credential, or undefined: a parameter named like one, or any parameter
 * (name or value) holding `secret` (the key presented in a header). Such a query would be written
 * into upstream access logs, so the request is refused rather than forwarded.
 */
export function credentialInQuery(query: string, secret: string | undefined): string | undefined {
  if (query === '') return undefined;
  const named = MAY_NAME_CREDENTIAL.test(query);
  const holds = secret !== undefined && secret.length >= 8;
  if (!named && !holds) return undefined;
  for (const part of query.split('&')) {
    const eq = part.indexOf('=');
    const name = decodeName(eq === -1 ? part : part.slice(0, eq));
    if (named && CREDENTIAL_PARAMS.has(name.toLowerCase())) return `query parameter "${name.slice(0, 64)}" carries a credential`;
    if (holds && (part.includes(secret) || decodeName(part).includes(secret))) return 'the query string carries the API key';
  }
  return undefined;
}
