// Config objects for unit tests that do not go through the YAML loader: the loader's defaults.

import type { RouteConfig, UpstreamConfig } from '../src/config/types.js';

export type RouteInput = Partial<RouteConfig> & Pick<RouteConfig, 'path'>;

export function routeConfig(r: RouteInput, index = 0): RouteConfig {
  return {
    index,
    source: 'test.yaml:1:1',
    name: r.name ?? `${r.methods ? r.methods.join(',') : '*'} ${r.path}`,
    upstream: 'dagu',
    auth: 'required',
    surface: 'rest_api',
    scopes: [],
    remote_node: false,
    query_token: false,
    pass_authorization: false,
    ...r,
  };
}

export function upstreamConfig(name: string, api_base_url: string, over: Partial<UpstreamConfig> = {}): UpstreamConfig {
  return { name, api_base_url, auth_type: 'none', skip_tls_verify: false, timeout: 30, idle_timeout: 300, connections: 4, ...over };
}
