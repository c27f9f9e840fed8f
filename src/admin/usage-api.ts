// GET /api/keys/{id}/usage (Dagen's shape, snake_case) and GET /api/v1/api-keys/{keyId}/usage
// (Dagu's, camelCase): a key's usage history — allowed, rate-limited, forbidden and quota-refused
// requests per hour or per day (UTC), zero-filled, from the key service (which reads the store's
// hourly rows). GET /api/groups/{name}/usage and /api/v1/api-key-groups/{groupName}/usage: a group's.

import type { KeyService } from '../keys/service.js';
import type { UsagePoint, UsageSeries } from '../keys/usage-history.js';
import { queryParam, type AdminRequest, type AdminRoute } from './router.js';

type Series = UsageSeries & { key: { id: string; name: string } };
type GroupSeries = UsageSeries & { group: { name: string } };

function query(r: AdminRequest) {
  return { from: queryParam(r.query, 'from'), to: queryParam(r.query, 'to'), bucket: queryParam(r.query, 'bucket') };
}

export function dagenUsage(s: Series): Record<string, unknown> {
  return dagenSeries(s, { key_id: s.key.id, key_name: s.key.name });
}

export function dagenGroupUsage(s: GroupSeries): Record<string, unknown> {
  return dagenSeries(s, { group_name: s.group.name });
}

export function daguUsage(s: Series): Record<string, unknown> {
  return daguSeries(s, { keyId: s.key.id, keyName: s.key.name });
}

export function daguGroupUsage(s: GroupSeries): Record<string, unknown> {
  return daguSeries(s, { groupName: s.group.name });
}

/** A series in Dagen's shape (snake_case counts) under the fields naming whose it is. */
function dagenSeries(s: UsageSeries, who: Record<string, string>): Record<string, unknown> {
  const point = (p: UsagePoint) => ({ start: p.start, allowed: p.allowed, rate_limited: p.limited, forbidden: p.forbidden, quota_exceeded: p.quota });
  const { start: _s, ...totals } = point({ start: s.from, ...s.totals });
  return { ...who, bucket: s.bucket, from: s.from, to: s.to, points: s.points.map(point), totals };
}

/** The same in Dagu's (camelCase). */
function daguSeries(s: UsageSeries, who: Record<string, string>): Record<string, unknown> {
  const point = (p: UsagePoint) => ({ start: p.start, allowed: p.allowed, rateLimited: p.limited, forbidden: p.forbidden, quotaExceeded: p.quota });
  const { start: _s, ...totals } = point({ start: s.from, ...s.totals });
  return { ...who, bucket: s.bucket, from: s.from, to: s.to, points: s.points.map(point), totals };
}

export function usageRoutes(keys: KeyService): AdminRoute[] {
  return [
    {
      method: 'GET',
      path: '/api/keys/{id}/usage',
      operationId: 'dagenKeyUsage',
      handler: async (r) => ({ status: 200, body: dagenUsage(await keys.usage(r.params['id']!, query(r))) }),
    },
    {
      method: 'GET',
      path: '/api/v1/api-keys/{keyId}/usage',
      operationId: 'getAPIKeyUsage',
      handler: async (r) => ({ status: 200, body: daguUsage(await keys.usage(r.params['keyId']!, query(r))) }),
    },
    {
      method: 'GET',
      path: '/api/groups/{name}/usage',
      operationId: 'dagenGroupUsage',
      handler: async (r) => ({ status: 200, body: dagenGroupUsage(await keys.groupUsage(r.params['name']!, query(r))) }),
    },
    {
      method: 'GET',
      path: '/api/v1/api-key-groups/{groupName}/usage',
      operationId: 'getAPIKeyGroupUsage',
      handler: async (r) => ({ status: 200, body: daguGroupUsage(await keys.groupUsage(r.params['groupName']!, query(r))) }),
    },
  ];
}
