// GET /api/keys/{id}/usage (Dagen's shape, snake_case) and GET /api/v1/api-keys/{keyId}/usage
// (Dagu's, camelCase): a key's usage history — allowed, rate-limited and forbidden requests per
// hour or per day (UTC), zero-filled, from the key service (which reads the store's hourly rows).

import type { KeyService } from '../keys/service.js';
import type { UsagePoint, UsageSeries } from '../keys/usage-history.js';
import { queryParam, type AdminRequest, type AdminRoute } from './router.js';

type Series = UsageSeries & { key: { id: string; name: string } };

function query(r: AdminRequest) {
  return { from: queryParam(r.query, 'from'), to: queryParam(r.query, 'to'), bucket: queryParam(r.query, 'bucket') };
}

export function dagenUsage(s: Series): Record<string, unknown> {
  const point = (p: UsagePoint) => ({ start: p.start, allowed: p.allowed, rate_limited: p.limited, forbidden: p.forbidden, quota_exceeded: p.quota });
  const { start: _s, ...totals } = point({ start: s.from, ...s.totals });
  return { key_id: s.key.id, key_name: s.key.name, bucket: s.bucket, from: s.from, to: s.to, points: s.points.map(point), totals };
}

export function daguUsage(s: Series): Record<string, unknown> {
  const point = (p: UsagePoint) => ({ start: p.start, allowed: p.allowed, rateLimited: p.limited, forbidden: p.forbidden, quotaExceeded: p.quota });
  const { start: _s, ...totals } = point({ start: s.from, ...s.totals });
  return { keyId: s.key.id, keyName: s.key.name, bucket: s.bucket, from: s.from, to: s.to, points: s.points.map(point), totals };
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
  ];
}
