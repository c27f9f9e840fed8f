// The admin listener's router: method + path pattern → handler, no framework. Patterns use
// OpenAPI's spelling ("/api/keys/{id}"), so the document and the router speak of the same paths.

import type { IncomingMessage } from 'node:http';
import { ValidationError } from '../errors.js';
import { decodeSegmentValue } from '../routes/path.js';

export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface AdminRequest {
  req: IncomingMessage;
  /** path parameters, percent-decoded */
  params: Readonly<Record<string, string>>;
  query: URLSearchParams;
  /** who is calling, for the key service's audit records */
  actor: { id: string; remoteAddress: string | null };
}

export interface Reply {
  status: number;
  /** JSON body; absent for 204 */
  body?: unknown;
  headers?: Record<string, string>;
}

export type Handler = (r: AdminRequest) => Promise<Reply>;

export interface AdminRoute {
  method: Method;
  /** e.g. /api/v1/api-keys/{keyId} */
  path: string;
  operationId: string;
  handler: Handler;
  /**
   * Key-service field → this API's spelling (rateLimit → rate_limit), so a ValidationError
   * names the field the client sent.
   */
  fieldNames?: Readonly<Record<string, string>>;
}

export type Match = { route: AdminRoute; params: Record<string, string> } | { allow: Method[] };

export class Router {
  private readonly list: AdminRoute[] = [];

  add(...routes: AdminRoute[]): this {
    for (const r of routes) {
      if (this.list.some((x) => x.method === r.method && x.path === r.path)) throw new Error(`admin route ${r.method} ${r.path} registered twice`);
      this.list.push(r);
    }
    return this;
  }

  /** Every registered route, in registration order. */
  routes(): readonly AdminRoute[] {
    return this.list;
  }

  /** The route for method + path; `{allow}` when the path exists for other methods; undefined when it does not. */
  match(method: string, path: string): Match | undefined {
    const parts = path.split('/');
    const allow: Method[] = [];
    for (const route of this.list) {
      const params = matchPath(route.path, parts);
      if (params === undefined) continue;
      if (route.method === method) return { route, params };
      allow.push(route.method);
    }
    return allow.length > 0 ? { allow } : undefined;
  }
}

function matchPath(pattern: string, parts: string[]): Record<string, string> | undefined {
  const segs = pattern.split('/');
  if (segs.length !== parts.length) return undefined;
  const params = Object.create(null) as Record<string, string>; // lookups find captured segments only
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i]!;
    const part = parts[i]!;
    if (seg.startsWith('{') && seg.endsWith('}')) {
      if (part === '') return undefined;
      params[seg.slice(1, -1)] = decodeSegmentValue(part);
    } else if (seg !== part) return undefined;
  }
  return params;
}

/** One query parameter: undefined when absent; a 400 naming it when given more than once. */
export function queryParam(query: URLSearchParams, name: string): string | undefined {
  const values = query.getAll(name);
  if (values.length > 1) throw new ValidationError(name, 'given more than once');
  return values[0];
}
