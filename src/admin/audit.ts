// GET /api/audit: the key changes the key service recorded (admin APIs, CLI, config sync), newest
// first. The records are written by KeyService itself, so no path that changes a key can skip them.

import { ValidationError } from '../errors.js';
import type { KeyService } from '../keys/service.js';
import { queryParam, type AdminRoute } from './router.js';

export const DEFAULT_AUDIT_LIMIT = 100;
export const MAX_AUDIT_LIMIT = 1000;

function limitOf(v: string | undefined): number {
  if (v === undefined) return DEFAULT_AUDIT_LIMIT;
  const n = /^\d{1,7}$/.test(v) ? Number(v) : NaN;
  if (!(n >= 1 && n <= MAX_AUDIT_LIMIT)) throw new ValidationError('limit', `must be a whole number from 1 to ${MAX_AUDIT_LIMIT}`);
  return n;
}

export function auditRoutes(keys: KeyService): AdminRoute[] {
  return [
    {
      method: 'GET',
      path: '/api/audit',
      operationId: 'listAudit',
      handler: async ({ query }) => {
        const limit = limitOf(queryParam(query, 'limit'));
        const keyId = queryParam(query, 'key_id');
        const page = await keys.auditPage({ limit, keyId, cursor: queryParam(query, 'cursor') });
        return { status: 200, body: page.next === null ? { records: page.records } : { records: page.records, nextCursor: page.next } };
      },
    },
  ];
}
