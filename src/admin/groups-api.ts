// Key groups on the admin listener, in both shapes: Dagen's (snake_case, /api/groups) and Dagu's
// (camelCase, /api/v1/api-key-groups). Shapes only: every rule is the key service's. A group's
// answer carries its member count and its quota now.

import type { QuotaStatus } from '../keys/quota.js';
import type { GroupInput, GroupStatus, KeyService } from '../keys/service.js';
import { changeBody, checkBody, dryRunAnswer, readJsonObject, type BodyShape, type Fields } from './body.js';
import { QUOTA_SET } from './dagen-api.js';
import type { AdminRoute } from './router.js';

const QUOTA_FIELD = 'usage credits shared by the group\'s keys, {limit, period, refill, start} or {remaining}; null = none. A changed quota starts full.';

function fields(rateLimit: string): Fields {
  return {
    name: { type: 'string', description: 'Unique name, 1-100 characters; the group\'s identity (it cannot change). Keys name it in their group field.' },
    description: { type: 'string', description: 'What the group is for, at most 500 characters.' },
    [rateLimit]: { type: 'integer', nullable: true, description: 'Requests per minute shared by all keys of the group, in addition to each key\'s own; null = none.' },
    quota: { type: 'object', nullable: true, ref: 'Quota', description: QUOTA_FIELD },
  };
}

const DAGEN_OUTPUT = ['created_at', 'updated_at', 'created_by', 'updated_by', 'managed_by', 'keys', 'quota_status'];
const DAGU_OUTPUT = ['createdAt', 'updatedAt', 'createdBy', 'updatedBy', 'managedBy', 'keys', 'quotaStatus'];

export const DAGEN_GROUP_CREATE: BodyShape = { fields: fields('rate_limit'), required: ['name'], readOnly: DAGEN_OUTPUT };
export const DAGEN_GROUP_UPDATE: BodyShape = { fields: fields('rate_limit'), readOnly: DAGEN_OUTPUT };
export const DAGU_GROUP_CREATE: BodyShape = { fields: fields('rateLimit'), required: ['name'], readOnly: DAGU_OUTPUT };
export const DAGU_GROUP_UPDATE: BodyShape = { fields: fields('rateLimit'), readOnly: DAGU_OUTPUT };

const DAGEN_NAMES = { rateLimit: 'rate_limit' } as const;
const DAGU_NAMES = {} as const;

/** A group as Dagen's shape answers it. */
export function dagenGroup(g: GroupStatus): Record<string, unknown> {
  return {
    name: g.name,
    description: g.description,
    rate_limit: g.rateLimit,
    quota: g.quota,
    keys: g.keys,
    quota_status: g.quotaStatus && { remaining: g.quotaStatus.remaining, next_refill_at: g.quotaStatus.nextRefillAt },
    created_at: g.createdAt,
    updated_at: g.updatedAt,
    created_by: g.createdBy,
    updated_by: g.updatedBy,
    managed_by: g.managedBy,
  };
}

/** A group as Dagu's shape answers it. */
export function daguGroup(g: GroupStatus): Record<string, unknown> {
  return {
    name: g.name,
    description: g.description,
    rateLimit: g.rateLimit,
    quota: g.quota,
    keys: g.keys,
    quotaStatus: g.quotaStatus satisfies QuotaStatus | null,
    createdAt: g.createdAt,
    updatedAt: g.updatedAt,
    createdBy: g.createdBy,
    updatedBy: g.updatedBy,
    managedBy: g.managedBy,
  };
}

function input(body: Record<string, unknown>, rateLimit: string): GroupInput {
  return { name: body['name'], description: body['description'], rateLimit: body[rateLimit], quota: body['quota'] };
}

interface Shape {
  base: string;
  param: string;
  ids: { list: string; create: string; get: string; update: string; delete: string; quota: string };
  create: BodyShape;
  update: BodyShape;
  rateLimit: string;
  dryRun: string;
  fieldNames: Readonly<Record<string, string>>;
  one: (g: GroupStatus) => unknown;
  many: (gs: GroupStatus[]) => unknown;
}

const DAGEN: Shape = {
  base: '/api/groups',
  param: 'name',
  ids: { list: 'dagenListGroups', create: 'dagenCreateGroup', get: 'dagenGetGroup', update: 'dagenUpdateGroup', delete: 'dagenDeleteGroup', quota: 'dagenSetGroupQuota' },
  create: DAGEN_GROUP_CREATE,
  update: DAGEN_GROUP_UPDATE,
  rateLimit: 'rate_limit',
  dryRun: 'dry_run',
  fieldNames: DAGEN_NAMES,
  one: dagenGroup,
  many: (gs) => gs.map(dagenGroup),
};

const DAGU: Shape = {
  base: '/api/v1/api-key-groups',
  param: 'groupName',
  ids: { list: 'listAPIKeyGroups', create: 'createAPIKeyGroup', get: 'getAPIKeyGroup', update: 'updateAPIKeyGroup', delete: 'deleteAPIKeyGroup', quota: 'setAPIKeyGroupQuota' },
  create: DAGU_GROUP_CREATE,
  update: DAGU_GROUP_UPDATE,
  rateLimit: 'rateLimit',
  dryRun: 'dryRun',
  fieldNames: DAGU_NAMES,
  one: (g) => ({ group: daguGroup(g) }),
  many: (gs) => ({ groups: gs.map(daguGroup) }),
};

function routesOf(keys: KeyService, s: Shape): AdminRoute[] {
  const item = `${s.base}/{${s.param}}`;
  const fieldNames = s.fieldNames;
  return [
    {
      method: 'GET',
      path: s.base,
      operationId: s.ids.list,
      fieldNames,
      handler: async () => ({ status: 200, body: s.many(await keys.listGroups()) }),
    },
    {
      method: 'POST',
      path: s.base,
      operationId: s.ids.create,
      fieldNames,
      handler: async ({ req, query, actor }) => {
        const body = await changeBody(req, query, s.dryRun, s.create, fieldNames, (clean) => keys.checkCreateGroup(input(clean, s.rateLimit)));
        if (body === undefined) return dryRunAnswer(s.dryRun);
        const g = await keys.createGroup(input(body, s.rateLimit), actor);
        return { status: 201, body: s.one(await keys.groupStatus(g)) };
      },
    },
    {
      method: 'GET',
      path: item,
      operationId: s.ids.get,
      fieldNames,
      handler: async ({ params }) => ({ status: 200, body: s.one(await keys.groupStatus(params[s.param]!)) }),
    },
    {
      method: 'PATCH',
      path: item,
      operationId: s.ids.update,
      fieldNames,
      handler: async ({ req, params, query, actor }) => {
        const name = params[s.param]!;
        const body = await changeBody(req, query, s.dryRun, s.update, fieldNames, (clean) => keys.checkUpdateGroup(name, input(clean, s.rateLimit)));
        if (body === undefined) return dryRunAnswer(s.dryRun);
        const g = await keys.updateGroup(name, input(body, s.rateLimit), actor);
        return { status: 200, body: s.one(await keys.groupStatus(g)) };
      },
    },
    {
      method: 'DELETE',
      path: item,
      operationId: s.ids.delete,
      fieldNames,
      handler: async ({ params, actor }) => {
        await keys.deleteGroup(params[s.param]!, actor);
        return { status: 204 };
      },
    },
    {
      method: 'POST',
      path: `${item}/quota`,
      operationId: s.ids.quota,
      fieldNames,
      handler: async ({ req, params, actor }) => {
        const body = await readJsonObject(req);
        checkBody(body, QUOTA_SET);
        const { group } = await keys.setGroupQuotaRemaining(params[s.param]!, { remaining: body['remaining'], reset: body['reset'] }, actor);
        return { status: 200, body: s.one(await keys.groupStatus(group)) };
      },
    },
  ];
}

export function groupRoutes(keys: KeyService): AdminRoute[] {
  return [...routesOf(keys, DAGEN), ...routesOf(keys, DAGU)];
}
