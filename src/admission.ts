// Stages 1–6 of a request: normalise the target, match a route, read the credential, look the key
// up, decide. No sockets here: the result says what to do, and the HTTP and WebSocket edges apply
// it. The result is synchronous unless the key had to be fetched from the store.

import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { decide, type Allow } from './auth/decide.js';
import { extractCredential } from './auth/credential.js';
import type { KeyAccess } from './keys/model.js';
import { digestSecret } from './keys/secret.js';
import type { KeyService } from './keys/service.js';
import { normaliseTarget } from './routes/path.js';
import { RouteTable, type Route, type RouteMatch } from './routes/table.js';

export interface Refusal {
  readonly forward: false;
  readonly status: number;
  readonly code: string;
  readonly message: string;
  readonly headers?: OutgoingHttpHeaders;
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
  /** undefined on auth: none routes */
  readonly access: KeyAccess | undefined;
  readonly decision: Allow | undefined;
}

export type Outcome = Refusal | Admission;

const WWW_AUTHENTICATE = { 'www-authenticate': 'Bearer realm="keygate"' };
const WWW_AUTHENTICATE_INVALID = { 'www-authenticate': 'Bearer realm="keygate", error="invalid_token"' };

function refuse(status: number, code: string, message: string, extra?: Partial<Refusal>): Refusal {
  return { forward: false, status, code, message, ...extra };
}

export class Admitter {
  constructor(
    private readonly table: RouteTable,
    private readonly keys: KeyService,
    private readonly now: () => number = Date.now,
  ) {}

  admit(method: string, url: string, headers: IncomingHttpHeaders): Outcome | Promise<Outcome> {
    const target = normaliseTarget(url);
    if (!target.ok) return refuse(400, 'bad_request', target.message);
    const match = this.table.match(method, headers.host, target.path);
    if (match === undefined) {
      return refuse(404, 'not_found', `no route for ${method} ${target.path}`, { path: target.path });
    }
    const route = match.route;
    const upstreamTarget = RouteTable.upstreamPath(route, target.path) + (target.query === '' ? '' : '?' + target.query);
    if (route.config.auth === 'none') {
      return { forward: true, path: target.path, route, upstreamTarget, access: undefined, decision: undefined };
    }

    const credential = extractCredential(headers);
    if (credential.kind === 'none') {
      return refuse(401, 'unauthorized', 'API key required: send X-API-Key or Authorization: Bearer', {
        headers: WWW_AUTHENTICATE,
        path: target.path,
        route,
      });
    }
    if (credential.kind === 'invalid') return refuse(400, 'bad_request', credential.message, { path: target.path, route });

    const found = this.keys.lookup(digestSecret(credential.secret));
    if (found instanceof Promise) return found.then((access) => this.authorise(match, target.path, target.query, upstreamTarget, access));
    return this.authorise(match, target.path, target.query, upstreamTarget, found);
  }

  private authorise(match: RouteMatch, path: string, query: string, upstreamTarget: string, access: KeyAccess | null): Outcome {
    const route = match.route;
    if (access === null) {
      return refuse(401, 'unauthorized', 'API key is not valid', { headers: WWW_AUTHENTICATE_INVALID, path, route });
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
    return { forward: true, path, route, upstreamTarget, access, decision };
  }
}
