// Dagen-shaped key API (snake_case), as Dagen's admin backend: GET/POST /api/keys,
// PUT/DELETE /api/keys/{id}, POST /api/keys/{id}/regenerate. Shapes only: every rule is the key
// service's.

import { SCOPES, type Role, type Surface } from '../config/types.js';
import { keyStatus, type ApiKey } from '../keys/model.js';
import type { Quota, QuotaStatus } from '../keys/quota.js';
import type { KeyInput, KeyService } from '../keys/service.js';
import { changeBody, checkBody, dryRunAnswer, readJsonObject, type BodyShape, type Fields } from './body.js';
import { queryParam, type AdminRoute } from './router.js';

/** A key as Dagen's key table shows it: the prefix only, never the secret. */
export interface DagenKey {
  id: string;
  name: string;
  key_prefix: string;
  scopes: string[];
  workspace_id: string | null;
  rate_limit: number;
  status: 'active' | 'inactive' | 'expired';
  is_active: boolean;
  expires_at: string | null;
  request_count: number;
  last_used_at: string | null;
  created_at: string;
  updated_at: string;
  /** "config" for keys declared in the YAML, which cannot be changed here */
  managed_by: 'api' | 'config';
  /** Keygate: the key's role and surfaces (set through the Dagu-shaped API or the CLI), for the key page */
  role: Role;
  /** null = every surface */
  surfaces: Surface[] | null;
  /** Keygate: usage credits ({limit, period, refill, start} or {remaining}); null = none */
  quota: Quota | null;
  /** Keygate: credits left now; null without a quota */
  quota_remaining: number | null;
  /** Keygate: when the quota refills next; null without one or for one-time credits */
  quota_next_refill_at: string | null;
  /** Keygate: the key's group (shared rate limit and quota); null = none */
  group: string | null;
}

export function dagenKey(k: ApiKey, nowMs: number, quota: QuotaStatus | null = null): DagenKey {
  return {
    id: k.id,
    name: k.name,
    key_prefix: k.prefix,
    scopes: k.scopes,
    workspace_id: k.workspace,
    rate_limit: k.rateLimit,
    status: keyStatus(k, nowMs),
    is_active: k.isActive,
    expires_at: k.expiresAt,
    request_count: k.requestCount,
    last_used_at: k.lastUsedAt,
    created_at: k.createdAt,
    updated_at: k.updatedAt,
    managed_by: k.managedBy,
    role: k.role,
    surfaces: k.surfaces,
    quota: k.quota,
    quota_remaining: quota?.remaining ?? null,
    quota_next_refill_at: quota?.nextRefillAt ?? null,
    group: k.group,
  };
}

/** A key with its quota counter read now. */
async function withQuota(keys: KeyService, k: ApiKey, now: () => number): Promise<DagenKey> {
  return dagenKey(k, now(), await keys.quotaStatus(k));
}

const UPDATE_FIELDS: Fields = {
  name: { type: 'string', description: 'Name shown in the key table (required on create).' },
  scopes: { type: 'array', items: { type: 'string', enum: SCOPES }, description: 'agents and/or workflows; at least one (required on create).' },
  rate_limit: { type: 'integer', description: 'Requests per minute, within keys.rate_limit (default 1-600, default value 60).' },
  expires_at: { type: 'string', nullable: true, description: 'YYYY-MM-DD (00:00 UTC) or ISO 8601 date-time with offset; after today. null = never.' },
  is_active: { type: 'boolean', description: 'false = deactivated: the key gets 403 until reactivated.' },
  quota: { type: 'object', nullable: true, ref: 'Quota', description: 'Keygate: usage credits, {limit, period, refill, start} or {remaining}; null = none. A changed quota starts full.' },
  group: { type: 'string', nullable: true, description: 'Keygate: the name of the key group whose rate limit and quota the key shares, in addition to its own; null = none (400 naming it when no such group exists).' },
};

const OUTPUT_ONLY = ['id', 'key', 'key_prefix', 'status', 'request_count', 'last_used_at', 'created_at', 'updated_at', 'managed_by', 'role', 'surfaces', 'quota_remaining', 'quota_next_refill_at'];

/** POST …/quota: a top-up (credits left now) or a reset (full again). */
export const QUOTA_SET: BodyShape = {
  fields: {
    remaining: { type: 'integer', description: 'Credits left now (0 blocks the key until the next refill); the next refill still comes on time.' },
    reset: { type: 'boolean', description: 'true: the counter starts full again (the limit, or the one-time credits of the quota).' },
  },
};

export const DAGEN_CREATE: BodyShape = {
  fields: { ...UPDATE_FIELDS, workspace_id: { type: 'string', nullable: true, description: 'Workspace the key is bound to (its agents, workflows and jobs only).' } },
  required: ['name', 'scopes'],
  readOnly: OUTPUT_ONLY,
};

export const DAGEN_UPDATE: BodyShape = {
  fields: UPDATE_FIELDS,
  // a Dagen key keeps the workspace it was created in
  readOnly: [...OUTPUT_ONLY, 'workspace_id'],
};

/** Key-service field → Dagen's spelling. */
export const DAGEN_FIELD_NAMES = {
  rateLimit: 'rate_limit',
  expiresAt: 'expires_at',
  isActive: 'is_active',
  workspace: 'workspace_id',
  graceSeconds: 'grace_seconds',
} as const;

function toInput(body: Record<string, unknown>): KeyInput {
  return {
    name: body['name'],
    scopes: body['scopes'],
    rateLimit: body['rate_limit'],
    expiresAt: body['expires_at'],
    isActive: body['is_active'],
    workspace: body['workspace_id'],
    quota: body['quota'],
    group: body['group'],
  };
}

export function dagenRoutes(keys: KeyService, now: () => number): AdminRoute[] {
  const fieldNames = DAGEN_FIELD_NAMES;
  return [
    {
      method: 'GET',
      path: '/api/keys',
      operationId: 'dagenListKeys',
      fieldNames,
      handler: async ({ query }) => {
        const workspace = queryParam(query, 'workspace_id');
        const page = await keys.page({
          limit: queryParam(query, 'limit'),
          cursor: queryParam(query, 'cursor'),
          workspace,
          q: queryParam(query, 'q'),
          status: queryParam(query, 'status'),
          group: queryParam(query, 'group'),
        });
        const t = now();
        const quotas = await keys.quotaStatuses(page.keys);
        // the body stays Dagen's bare list; the next page is named in headers
        const headers: Record<string, string> = {};
        if (page.next !== null) {
          const next = new URLSearchParams(query);
          next.set('cursor', page.next);
          headers['x-next-cursor'] = page.next;
          headers['link'] = `</api/keys?${next}>; rel="next"`;
        }
        return { status: 200, body: page.keys.map((k, i) => dagenKey(k, t, quotas[i])), headers };
      },
    },
    {
      method: 'GET',
      path: '/api/keys/counts',
      operationId: 'countKeys',
      fieldNames,
      // the key page's header and pager: true for every key, not for the page the table shows
      handler: async ({ query }) => ({ status: 200, body: await keys.counts({ q: queryParam(query, 'q') }) }),
    },
    {
      method: 'POST',
      path: '/api/keys',
      operationId: 'dagenCreateKey',
      fieldNames,
      handler: async ({ req, query, actor }) => {
        const body = await changeBody(req, query, 'dry_run', DAGEN_CREATE, fieldNames, (clean) => keys.checkCreate(toInput(clean)));
        if (body === undefined) return dryRunAnswer('dry_run');
        const { key, secret } = await keys.create(toInput(body), actor);
        return { status: 201, body: { ...(await withQuota(keys, key, now)), key: secret } };
      },
    },
    {
      method: 'PUT',
      path: '/api/keys/{id}',
      operationId: 'dagenUpdateKey',
      fieldNames,
      handler: async ({ req, params, query, actor }) => {
        const body = await changeBody(req, query, 'dry_run', DAGEN_UPDATE, fieldNames, (clean) => keys.checkUpdate(params['id']!, toInput(clean)));
        if (body === undefined) return dryRunAnswer('dry_run');
        const key = await keys.update(params['id']!, toInput(body), actor);
        return { status: 200, body: await withQuota(keys, key, now) };
      },
    },
    {
      method: 'POST',
      path: '/api/keys/{id}/quota',
      operationId: 'dagenSetKeyQuota',
      fieldNames,
      handler: async ({ req, params, actor }) => {
        const body = await readJsonObject(req);
        checkBody(body, QUOTA_SET);
        const { key, status } = await keys.setQuotaRemaining(params['id']!, { remaining: body['remaining'], reset: body['reset'] }, actor);
        return { status: 200, body: dagenKey(key, now(), status) };
      },
    },
    {
      method: 'DELETE',
      path: '/api/keys/{id}',
      operationId: 'dagenDeleteKey',
      fieldNames,
      handler: async ({ params, actor }) => {
        await keys.delete(params['id']!, actor);
        return { status: 204 };
      },
    },
    {
      method: 'POST',
      path: '/api/keys/{id}/regenerate',
      operationId: 'dagenRegenerateKey',
      fieldNames,
      handler: async ({ params, query, actor }) => {
        const graceSeconds = queryParam(query, 'grace_seconds');
        const { key, secret, previousValidUntil } = await keys.regenerate(params['id']!, actor, { graceSeconds });
        return { status: 200, body: { ...(await withQuota(keys, key, now)), key: secret, previous_key_expires_at: previousValidUntil } };
      },
    },
  ];
}
