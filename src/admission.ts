// Stages 1–6 of a request: normalise the target, match a route, read the credential, look the key
// up, decide. No sockets here: the result says what to do, and the HTTP and WebSocket edges apply
// it. The result is synchronous unless the key had to be fetched from the store.

import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { decide, type Allow } from './auth/decide.js';
import { extractCredential } from './auth/credential.js';
import type { KeyAccess } from './keys/model.js';
import { digestSecret } from './keys/secret.js';
import { KeyStoreUnavailableError, type KeyService } from './keys/service.js';
import { normaliseTarget } from './routes/path.js';
import { credentialInQuery, mayContain, takeParam } from './routes/query.js';
import { RouteTable, type Route, type RouteMatch } from './routes/table.js';
import { answerPreflight, type PreflightAnswer } from './cors.js';

export interface Refusal {
  readonly forward: false;
  readonly status: number;
  readonly code: string;
  readonly message: string;
  readonly headers?: OutgoingHttpHeaders;
  /** the JSON-RPC error code, when it is not the one the status implies */
  readonly rpcCode?: number;
  /** a key was presented and is unknown (counted for listen.max_failed_auth) */
  readonly unknownKey?: true;
  /** for the access log */
  readonly path?: string;
  readonly route?: Route;
  readonly access?: KeyAccess;
}

export interface Admission {
  readonly forward: true;
  /** normalised request path (for logs) */
  readonly path: string;
  readonly route: Route;
  /** path and query to request from the upstream */
  readonly upstreamTarget: string;
  /** a remote node to send the request to instead of the route's upstream */
  readonly remoteNode: string | undefined;
  /** undefined on auth: none routes */
  readonly access: KeyAccess | undefined;
  readonly decision: Allow | undefined;
}

export type Outcome = Refusal | Admission;

const RETRY_SOON = { 'retry-after': '1' };
const WWW_AUTHENTICATE = { 'www-authenticate': 'Bearer realm="keygate"' };
const WWW_AUTHENTICATE_INVALID = { 'www-authenticate': 'Bearer realm="keygate", error="invalid_token"' };

/** Dagu's password login and first-run setup: never reached through a route that did not opt in. */
export function isLoginPath(path: string): boolean {
  return path.endsWith('/auth/login') || path.endsWith('/auth/setup') || path.endsWith('/auth/login/') || path.endsWith('/auth/setup/');
}

function notRouted(method: string, path: string): string {
  return `${method} ${path} is not routed: Keygate's clients use API keys, not a password login (a route with expose_login: true opts in)`;
}

function refuse(status: number, code: string, message: string, extra?: Partial<Refusal>): Refusal {
  return { forward: false, status, code, message, ...extra };
}

/** What admission knows about a request between matching and the decision. */
interface Pending {
  readonly match: RouteMatch;
  readonly path: string;
  /** the query to forward: without ?token= and ?remoteNode=, otherwise byte for byte */
  readonly query: string;
  /** a remote node named by ?remoteNode= (not "local"), checked after authorisation */
  readonly remoteNode: string | undefined;
}

export class Admitter {
  /**
   * @param remoteBases remote node name → its api_base_url path (without a trailing slash)
   */
  constructor(
    private readonly table: RouteTable,
    private readonly keys: KeyService,
    private readonly now: () => number = Date.now,
    private readonly remoteBases: ReadonlyMap<string, string> = new Map(),
  ) {}

  /**
   * A CORS preflight for a route with a CORS policy: answered here, without a key, never
   * forwarded. undefined when no route for the requested method has one (the OPTIONS request then
   * goes through admission like any other).
   */
  preflight(url: string, headers: IncomingHttpHeaders): { answer: PreflightAnswer; route: Route; path: string } | undefined {
    const target = normaliseTarget(url);
    if (!target.ok) return undefined;
    const method = String(headers['access-control-request-method']).toUpperCase();
    const match = this.table.match(method, headers.host, target.path);
    const policy = match?.route.config.cors;
    if (match === undefined || policy === undefined) return undefined;
    return { answer: answerPreflight(policy, headers), route: match.route, path: target.path };
  }

  /**
   * The JSON-RPC route (MCP, A2A) a request's target names, whatever its method, for a refusal made
   * before or without a route match; undefined on every other path. Only refusals ask, so the
   * normal path pays nothing. A target that cannot be normalised is tried by its path alone (a
   * bad query or fragment does not hide that the path is a JSON-RPC endpoint).
   */
  rpcRoute(url: string | undefined, host: string | undefined): Route | undefined {
    if (url === undefined) return undefined;
    let target = normaliseTarget(url);
    if (!target.ok) {
      const end = url.search(/[?#]/);
      if (end === -1) return undefined;
      target = normaliseTarget(url.slice(0, end));
      if (!target.ok) return undefined;
    }
    return this.table.rpcRoute(host, target.path);
  }

  admit(method: string, url: string, headers: IncomingHttpHeaders): Outcome | Promise<Outcome> {
    const target = normaliseTarget(url);
    if (!target.ok) return refuse(400, 'bad_request', target.message);
    const match = this.table.match(method, headers.host, target.path);
    if (match === undefined) {
      return refuse(404, 'not_found', isLoginPath(target.path) ? notRouted(method, target.path) : `no route for ${method} ${target.path}`, { path: target.path });
    }
    const route = match.route;
    const path = target.path;
    if (!route.config.expose_login && isLoginPath(path)) {
      return refuse(404, 'not_found', notRouted(method, path), { path });
    }
    let query = target.query;

    // ?token=: a credential for clients that cannot send headers (EventSource), only where allowed.
    let queryToken: string | undefined;
    if (route.config.query_token && mayContain(query, 'token')) {
      const taken = takeParam(query, 'token');
      if (taken.values.length > 1) return refuse(400, 'bad_request', 'query parameter "token" given more than once', { path, route });
      queryToken = taken.values[0] || undefined;
      query = taken.rest;
    }
    // ?remoteNode=: another Dagu server, only on operations that accept it.
    let remoteNode: string | undefined;
    if (mayContain(query, 'remoteNode')) {
      const taken = takeParam(query, 'remoteNode');
      if (taken.values.length > 1) return refuse(400, 'bad_request', 'query parameter "remoteNode" given more than once', { path, route });
      const node = taken.values[0];
      if (node !== undefined && node !== '' && node !== 'local') {
        if (!route.config.remote_node) {
          return refuse(400, 'bad_request', `this operation does not accept remoteNode (asked for "${node}")`, { path, route });
        }
        remoteNode = node;
        query = taken.rest;
      }
    }
    // A credential in the query (other than ?token= where the route accepts it) would land in
    // upstream access logs: refused, on every route.
    const credential = extractCredential(headers);
    const inQuery = credentialInQuery(query, credential.kind === 'key' ? credential.secret : undefined);
    if (inQuery !== undefined) {
      return refuse(400, 'bad_request', `${inQuery}; send the key in X-API-Key or Authorization: Bearer${route.config.query_token ? ' (or as the one ?token= this route accepts)' : ''}`, { path, route });
    }
    const pending: Pending = { match, path, query, remoteNode };
    if (route.config.auth === 'none') return this.admitted(pending, undefined, undefined);

    let secret: string;
    if (credential.kind === 'invalid') return refuse(400, 'bad_request', credential.message, { path, route });
    if (credential.kind === 'key') {
      if (queryToken !== undefined && queryToken !== credential.secret) {
        return refuse(400, 'bad_request', 'the ?token= and header credentials differ; send one', { path, route });
      }
      secret = credential.secret;
    } else if (queryToken !== undefined) {
      secret = queryToken;
    } else {
      return refuse(401, 'unauthorized', 'API key required: send X-API-Key or Authorization: Bearer', { headers: WWW_AUTHENTICATE, path, route });
    }

    const found = this.keys.lookupForRequest(digestSecret(secret));
    if (found instanceof Promise) {
      return found.then(
        (access) => this.authorise(pending, access),
        // the store is down and this key was never seen here (or stale_ttl is over): 503 at once
        (err: Error) => refuse(503, 'unavailable', err instanceof KeyStoreUnavailableError ? err.message : 'the key store could not be asked; retry shortly', { headers: RETRY_SOON, path: pending.path, route: pending.match.route }),
      );
    }
    return this.authorise(pending, found);
  }

  private authorise(p: Pending, access: KeyAccess | null): Outcome {
    const { match, path, query } = p;
    const route = match.route;
    if (access === null) {
      return refuse(401, 'unauthorized', 'API key is not valid', { headers: WWW_AUTHENTICATE_INVALID, path, route, unknownKey: true });
    }
    let workspace: string | undefined;
    const source = route.config.workspace;
    if (source?.from === 'query') {
      const values = query === '' ? [] : new URLSearchParams(query).getAll(source.name);
      if (values.length > 1) return refuse(400, 'bad_request', `query parameter "${source.name}" given more than once`, { path, route, access });
      workspace = values[0] || undefined;
    } else if (source?.from === 'param') {
      workspace = match.params?.[source.name];
    }
    const decision = decide(route, access, { nowMs: this.now(), workspace });
    if (!decision.allow) return refuse(decision.status, decision.code, decision.message, { path, route, access });
    return this.admitted(p, access, decision);
  }

  /** The forward, to the route's upstream or (only now that the key is authorised) a remote node. */
  private admitted(p: Pending, access: KeyAccess | undefined, decision: Allow | undefined): Outcome {
    const route = p.match.route;
    let upstreamPath: string;
    if (p.remoteNode === undefined) {
      upstreamPath = RouteTable.upstreamPath(route, p.path);
    } else {
      const base = this.remoteBases.get(p.remoteNode);
      if (base === undefined) {
        return refuse(404, 'not_found', `remote node "${p.remoteNode}" not found`, { path: p.path, route, ...(access ? { access } : {}) });
      }
      // Dagu's rule: the local base path is replaced by the node's api_base_url.
      const strip = route.config.strip_prefix;
      upstreamPath = base + (strip !== undefined ? p.path.slice(strip.length) : p.path) || '/';
    }
    const upstreamTarget = p.query === '' ? upstreamPath : `${upstreamPath}?${p.query}`;
    return { forward: true, path: p.path, route, upstreamTarget, remoteNode: p.remoteNode, access, decision };
  }
}
