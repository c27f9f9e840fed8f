// GET /api/info: what the key page needs besides the keys — the gateway's public base URL for its
// examples, the rate-limit range and key-count limit for the create dialog, and a summary of the
// routes for the API Management tabs. Authenticated like every admin call; it carries no secret
// and no upstream address or credential.

import type { GatewayConfig, RouteConfig, Role, Scope, Surface } from '../../config/types.js';
import type { KeyService } from '../../keys/service.js';
import type { AdminRoute } from '../router.js';

/** What the gateway tells the admin listener about itself; without it /api/info answers nulls. */
export interface InfoSource {
  config: Pick<GatewayConfig, 'listen' | 'keys' | 'routes'>;
  /** the public listener's bound base URL (its real port), used when listen.public_url is unset */
  publicUrl?: () => string;
}

export interface RouteSummary {
  name: string;
  /** upper-case; null = any method */
  methods: string[] | null;
  path: string;
  surface: Surface;
  auth: 'required' | 'none';
  scopes: Scope[];
  role: Role | null;
  /** the query parameter naming the workspace, when the route takes it from the query */
  workspace_query: string | null;
}

export interface GatewayInfo {
  /** base URL clients use for the public listener; null when the admin listener was not told */
  public_url: string | null;
  /** where public_url comes from: listen.public_url, or the listener's own address */
  public_url_source: 'config' | 'listen' | null;
  rate_limit: { default: number; min: number; max: number } | null;
  max_keys: number | null;
  key_count: number;
  key_prefix: string | null;
  routes: RouteSummary[] | null;
}

function hostUrl(host: string, port: number): string {
  const h = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  return `http://${h.includes(':') ? `[${h}]` : h}:${port}`;
}

export function summariseRoute(r: RouteConfig): RouteSummary {
  return {
    name: r.name,
    methods: r.methods ? [...r.methods] : null,
    path: r.path,
    surface: r.surface,
    auth: r.auth,
    scopes: [...r.scopes],
    role: r.role ?? null,
    workspace_query: r.workspace?.from === 'query' ? r.workspace.name : null,
  };
}

export async function gatewayInfo(keys: KeyService, source: InfoSource | undefined): Promise<GatewayInfo> {
  const keyCount = await keys.count();
  if (source === undefined) {
    return { public_url: null, public_url_source: null, rate_limit: null, max_keys: null, key_count: keyCount, key_prefix: null, routes: null };
  }
  const { listen, keys: kc, routes } = source.config;
  const configured = listen.public_url?.replace(/\/+$/, '');
  return {
    public_url: configured ?? source.publicUrl?.() ?? hostUrl(listen.host, listen.port),
    public_url_source: configured === undefined ? 'listen' : 'config',
    rate_limit: { ...kc.rate_limit },
    max_keys: kc.max_keys ?? null,
    key_count: keyCount,
    key_prefix: kc.prefix,
    routes: routes.map(summariseRoute),
  };
}

export function infoRoute(keys: KeyService, source: InfoSource | undefined): AdminRoute {
  return {
    method: 'GET',
    path: '/api/info',
    operationId: 'getGatewayInfo',
    handler: async () => ({ status: 200, body: await gatewayInfo(keys, source) }),
  };
}
