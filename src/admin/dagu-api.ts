// Dagu-shaped key API (camelCase), as Dagu's /api/v1/api-keys: list, create (201), get, PATCH,
// DELETE (204). Shapes only: every rule is the key service's.

import { ROLES, SURFACES } from '../config/types.js';
import { keyStatus, type ApiKey } from '../keys/model.js';
import type { QuotaStatus } from '../keys/quota.js';
import { QUOTA_SET } from './dagen-api.js';
import type { KeyInput, KeyService } from '../keys/service.js';
import { changeBody, checkBody, dryRunAnswer, readJsonObject, type BodyShape, type Fields } from './body.js';
import { queryParam, type AdminRoute } from './router.js';

/** Dagu's APIKey, plus Keygate's own fields (scopes, rateLimit, status…) after them. */
export function daguKey(k: ApiKey, nowMs: number, quota: QuotaStatus | null = null): Record<string, unknown> {
  const out: Record<string, unknown> = {
    id: k.id,
    name: k.name,
    description: k.description,
    role: k.role,
    workspaceAccess: k.workspaceAccess,
    // Dagu: a key without surface metadata is accepted everywhere
    allowedSurfaces: k.surfaces ?? [...SURFACES],
    attributionClass: k.attributionClass,
  };
  if (k.ownerUserId !== null) out['ownerUserId'] = k.ownerUserId;
  if (k.serviceAccountName !== null) out['serviceAccountName'] = k.serviceAccountName;
  Object.assign(out, {
    keyPrefix: k.prefix,
    createdAt: k.createdAt,
    updatedAt: k.updatedAt,
    createdBy: k.createdBy ?? '',
    lastUsedAt: k.lastUsedAt,
    // Keygate's fields
    workspace: k.workspace,
    scopes: k.scopes,
    rateLimit: k.rateLimit,
    expiresAt: k.expiresAt,
    isActive: k.isActive,
    status: keyStatus(k, nowMs),
    requestCount: k.requestCount,
    updatedBy: k.updatedBy,
    managedBy: k.managedBy,
    quota: k.quota,
    quotaRemaining: quota?.remaining ?? null,
    quotaNextRefillAt: quota?.nextRefillAt ?? null,
    group: k.group,
  });
  return out;
}

/** A key with its quota counter read now. */
async function withQuota(keys: KeyService, k: ApiKey, now: () => number): Promise<Record<string, unknown>> {
  return daguKey(k, now(), await keys.quotaStatus(k));
}

const FIELDS: Fields = {
  name: { type: 'string', description: 'Human-readable name, 1-100 characters, unique (409 when taken).' },
  description: { type: 'string', description: 'Purpose description, at most 500 characters.' },
  role: { type: 'string', enum: ROLES, description: 'admin > manager > developer > operator > viewer.' },
  workspaceAccess: {
    type: 'object',
    ref: 'DaguWorkspaceAccess',
    description: '{all: true} or {all: false, grants: [{workspace, role}]}; grants need the top-level role viewer and cannot be admin.',
  },
  allowedSurfaces: { type: 'array', items: { type: 'string', enum: SURFACES }, description: 'Where the key is accepted: rest_api, mcp (and Keygate\'s a2a); at least one.' },
  attributionClass: { type: 'string', enum: ['service_account', 'user_owned'], description: 'service_account (needs serviceAccountName, default the name) or user_owned (needs ownerUserId).' },
  serviceAccountName: { type: 'string', description: 'Service-account display name when attributionClass is service_account.' },
  ownerUserId: { type: 'string', description: 'Owner user ID when attributionClass is user_owned.' },
  // Keygate's fields, writable here too, so this one shape manages the whole key model
  scopes: { type: 'array', items: { type: 'string', enum: ['agents', 'workflows'] }, description: "Keygate: Dagen scopes, agents and/or workflows (default both)." },
  rateLimit: { type: 'integer', description: 'Keygate: requests per minute, within keys.rate_limit.' },
  expiresAt: { type: 'string', nullable: true, description: 'Keygate: YYYY-MM-DD (00:00 UTC) or ISO 8601 with offset, in the future; null = never.' },
  isActive: { type: 'boolean', description: 'Keygate: false = deactivated (403 until reactivated).' },
  workspace: { type: 'string', nullable: true, description: "Keygate: Dagen's one bound workspace (instead of workspaceAccess grants); null = not bound." },
  quota: { type: 'object', nullable: true, ref: 'Quota', description: 'Keygate: usage credits, {limit, period, refill, start} or {remaining}; null = none. A changed quota starts full.' },
  group: { type: 'string', nullable: true, description: 'Keygate: the name of the key group whose rate limit and quota the key shares, in addition to its own; null = none (400 naming it when no such group exists).' },
};

const OUTPUT_ONLY = ['id', 'key', 'keyPrefix', 'createdAt', 'updatedAt', 'createdBy', 'lastUsedAt', 'status', 'requestCount', 'updatedBy', 'managedBy', 'quotaRemaining', 'quotaNextRefillAt'];

/** Dagu's CreateAPIKeyRequest: these four are required there too. */
export const DAGU_CREATE: BodyShape = { fields: FIELDS, required: ['name', 'role', 'allowedSurfaces', 'attributionClass'], readOnly: OUTPUT_ONLY };
export const DAGU_UPDATE: BodyShape = { fields: FIELDS, readOnly: OUTPUT_ONLY };

export const DAGU_FIELD_NAMES = { surfaces: 'allowedSurfaces' } as const;

function toInput(body: Record<string, unknown>): KeyInput {
  return {
    name: body['name'],
    description: body['description'],
    role: body['role'],
    workspaceAccess: body['workspaceAccess'],
    // passed as given: the key service refuses an empty list
    surfaces: body['allowedSurfaces'],
    attributionClass: body['attributionClass'],
    serviceAccountName: body['serviceAccountName'],
    ownerUserId: body['ownerUserId'],
    scopes: body['scopes'],
    rateLimit: body['rateLimit'],
    expiresAt: body['expiresAt'],
    isActive: body['isActive'],
    workspace: body['workspace'],
    quota: body['quota'],
    group: body['group'],
  };
}

export function daguRoutes(keys: KeyService, now: () => number): AdminRoute[] {
  const fieldNames = DAGU_FIELD_NAMES;
  return [
    {
      method: 'GET',
      path: '/api/v1/api-keys',
      operationId: 'listAPIKeys',
      fieldNames,
      handler: async ({ query }) => {
        const page = await keys.page({
          limit: queryParam(query, 'limit'),
          cursor: queryParam(query, 'cursor'),
          workspace: queryParam(query, 'workspace'),
          q: queryParam(query, 'q'),
          status: queryParam(query, 'status'),
          group: queryParam(query, 'group'),
        });
        const t = now();
        const quotas = await keys.quotaStatuses(page.keys);
        const apiKeys = page.keys.map((k, i) => daguKey(k, t, quotas[i]));
        return { status: 200, body: page.next === null ? { apiKeys } : { apiKeys, nextCursor: page.next } };
      },
    },
    {
      method: 'POST',
      path: '/api/v1/api-keys',
      operationId: 'createAPIKey',
      fieldNames,
      handler: async ({ req, query, actor }) => {
        const body = await changeBody(req, query, 'dryRun', DAGU_CREATE, fieldNames, (clean) => keys.checkCreate(toInput(clean)));
        if (body === undefined) return dryRunAnswer('dryRun');
        const { key, secret } = await keys.create(toInput(body), actor);
        return { status: 201, body: { apiKey: await withQuota(keys, key, now), key: secret } };
      },
    },
    {
      method: 'GET',
      path: '/api/v1/api-keys/{keyId}',
      operationId: 'getAPIKey',
      fieldNames,
      handler: async ({ params }) => ({ status: 200, body: { apiKey: await withQuota(keys, await keys.get(params['keyId']!), now) } }),
    },
    {
      method: 'PATCH',
      path: '/api/v1/api-keys/{keyId}',
      operationId: 'updateAPIKey',
      fieldNames,
      handler: async ({ req, params, query, actor }) => {
        const body = await changeBody(req, query, 'dryRun', DAGU_UPDATE, fieldNames, (clean) => keys.checkUpdate(params['keyId']!, toInput(clean)));
        if (body === undefined) return dryRunAnswer('dryRun');
        const key = await keys.update(params['keyId']!, toInput(body), actor);
        return { status: 200, body: { apiKey: await withQuota(keys, key, now) } };
      },
    },
    {
      method: 'POST',
      path: '/api/v1/api-keys/{keyId}/quota',
      operationId: 'setAPIKeyQuota',
      fieldNames,
      handler: async ({ req, params, actor }) => {
        const body = await readJsonObject(req);
        checkBody(body, QUOTA_SET);
        const { key, status } = await keys.setQuotaRemaining(params['keyId']!, { remaining: body['remaining'], reset: body['reset'] }, actor);
        return { status: 200, body: { apiKey: daguKey(key, now(), status) } };
      },
    },
    {
      method: 'DELETE',
      path: '/api/v1/api-keys/{keyId}',
      operationId: 'deleteAPIKey',
      fieldNames,
      handler: async ({ params, actor }) => {
        await keys.delete(params['keyId']!, actor);
        return { status: 204 };
      },
    },
  ];
}
