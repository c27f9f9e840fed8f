// Config objects for unit tests that do not go through the YAML loader: the loader's defaults.

import type { RouteConfig, UpstreamConfig } from '../src/config/types.js';
import type { StoredKey } from '../src/keys/model.js';

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

/** A stored key with plain defaults (viewer, both scopes, all workspaces and surfaces, active). */
export function storedKey(over: Partial<StoredKey> = {}): StoredKey {
  return {
    id: 'id-1',
    name: 'ci-bot',
    description: '',
    digest: 'a'.repeat(64),
    prefix: 'dg_abcde',
    scopes: ['agents', 'workflows'],
    role: 'viewer',
    workspace: null,
    workspaceAccess: { all: true, grants: [] },
    surfaces: null,
    attributionClass: 'service_account',
    serviceAccountName: 'ci-bot',
    ownerUserId: null,
    rateLimit: 60,
    quota: null,
    group: null,
    expiresAt: null,
    isActive: true,
    requestCount: 0,
    lastUsedAt: null,
    createdAt: '2030-01-01T00:00:00.000Z',
    updatedAt: '2030-01-01T00:00:00.000Z',
    createdBy: 'test',
    updatedBy: 'test',
    managedBy: 'api',
    previousDigest: null,
    previousDigestExpiresAt: null,
    ...over,
  };
}

/** The Dagu upstream most unit tests route to. */
export const DAGU_UPSTREAM: UpstreamConfig = upstreamConfig('dagu', 'http://127.0.0.1:8090/api/v1');
