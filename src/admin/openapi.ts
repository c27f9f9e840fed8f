// GET /openapi.json: an OpenAPI 3.0 description of every admin route. The paths are written out here
// (a test checks them against the router both ways); request bodies come from the same field lists
// the handlers check, so the two cannot drift.

import { ROLES, SURFACES } from '../config/types.js';
import { KEY_STATUSES } from '../keys/model.js';
import { DEFAULT_PAGE, MAX_GRACE_SECONDS, MAX_PAGE, MAX_QUOTA } from '../keys/service.js';
import { DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT } from './audit.js';
import { DEFAULT_BODY_LIMIT, type BodyShape, type FieldSpec } from './body.js';
import { DAGEN_CREATE, DAGEN_UPDATE, QUOTA_SET } from './dagen-api.js';
import { QUOTA_PERIODS, QUOTA_REFILLS } from '../keys/quota.js';
import { DAGU_CREATE, DAGU_UPDATE } from './dagu-api.js';
import { DAGEN_GROUP_CREATE, DAGEN_GROUP_UPDATE, DAGU_GROUP_CREATE, DAGU_GROUP_UPDATE } from './groups-api.js';

type Json = Record<string, unknown>;

const ref = (name: string): Json => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: Json): Json => ({ 'application/json': { schema } });

function fieldSchema(f: FieldSpec): Json {
  if (f.ref) return { allOf: [ref(f.ref)], description: f.description, ...(f.nullable ? { type: f.type, nullable: true } : {}) };
  const s: Json = { type: f.type, description: f.description };
  if (f.nullable) s['nullable'] = true;
  if (f.enum) s['enum'] = [...f.enum];
  if (f.items) s['items'] = { type: f.items.type, ...(f.items.enum ? { enum: [...f.items.enum] } : {}) };
  return s;
}

function bodySchema(shape: BodyShape, description: string): Json {
  const properties: Json = {};
  for (const [name, f] of Object.entries(shape.fields)) properties[name] = fieldSchema(f);
  return { type: 'object', description, additionalProperties: false, properties, ...(shape.required ? { required: [...shape.required] } : {}) };
}

const ERRORS: Record<string, string> = {
  '400': 'Invalid request: the message (and `field`) names the field',
  '401': 'No or wrong admin credential',
  '403': 'The key is not an active admin key, or keys.max_keys is reached (create)',
  '404': 'No key with this id (or name)',
  '409': 'Name already taken, or the key is declared in the configuration file',
  '413': `Body larger than ${DEFAULT_BODY_LIMIT} bytes`,
  '415': 'Body is not application/json',
};

function errors(...codes: string[]): Json {
  const out: Json = {};
  for (const c of ['401', ...codes]) out[c] = { description: ERRORS[c], content: json(ref('Error')) };
  return out;
}

const keyIdParam = (name: string): Json => ({ name, in: 'path', required: true, description: 'Key id (a name is accepted too)', schema: { type: 'string' } });
const PAGE_PARAMETERS: Json[] = [
  { name: 'limit', in: 'query', required: false, description: `Keys per page (default ${DEFAULT_PAGE})`, schema: { type: 'integer', minimum: 1, maximum: MAX_PAGE, default: DEFAULT_PAGE } },
  { name: 'cursor', in: 'query', required: false, description: 'Where the page starts: the next cursor of the page before', schema: { type: 'string' } },
];
const FILTER_PARAMETERS: Json[] = [
  { name: 'q', in: 'query', required: false, description: 'Only keys whose name or key prefix contains this text (case-insensitive, at most 100 characters)', schema: { type: 'string', maxLength: 100 } },
  { name: 'status', in: 'query', required: false, description: 'Only keys with this status now', schema: { type: 'string', enum: [...KEY_STATUSES] } },
  { name: 'group', in: 'query', required: false, description: 'Only the keys of this group', schema: { type: 'string' } },
];

/** The errors of a group operation: 404 and 409 say what they mean for groups. */
function groupErrors(...codes: string[]): Json {
  const out = errors(...codes);
  const say: Record<string, string> = {
    '403': 'The key is not an active admin key',
    '404': 'No group with this name',
    '409': 'Name already taken (create), the group is declared in the configuration file, or (delete) keys still belong to it',
  };
  for (const c of Object.keys(say)) if (c in out) out[c] = { description: say[c], content: json(ref('Error')) };
  return out;
}

const groupParam = (name: string): Json => ({ name, in: 'path', required: true, description: 'The group\'s name', schema: { type: 'string' } });

/** The six operations of one shape of the group API. */
function groupPaths(base: string, param: string, tag: string, ids: string[], flag: string, one: string, list: string, create: string, update: string): Json {
  const [listId, createId, getId, updateId, deleteId, quotaId] = ids;
  return {
    [base]: {
      get: op(listId!, tag, 'List key groups (by name) with their member count and quota now', { responses: { '200': ok('Groups', ref(list)), ...groupErrors('403') } }),
      post: op(createId!, tag, 'Create a key group: a rate limit and a quota shared by its keys, in addition to each key\'s own', {
        parameters: [dryRun(flag)],
        requestBody: bodyOf(ref(create)),
        responses: { '201': ok('Created', ref(one)), '200': ok(`${flag}=true: the body would be accepted; nothing was created`, DRY_RUN_OK(flag)), ...groupErrors('400', '403', '409', '413', '415') },
      }),
    },
    [`${base}/{${param}}`]: {
      get: op(getId!, tag, 'Get a key group with its member count and quota now', { parameters: [groupParam(param)], responses: { '200': ok('The group', ref(one)), ...groupErrors('403', '404') } }),
      patch: op(updateId!, tag, "Change a group's description, rate limit or quota (its name is its identity); its keys' cached limits are dropped at once", {
        parameters: [groupParam(param), dryRun(flag)],
        requestBody: bodyOf(ref(update)),
        responses: { '200': ok(`Updated (with ${flag}=true: {${flag}, valid, errors: []}, nothing changed)`, { oneOf: [ref(one), DRY_RUN_OK(flag)] }), ...groupErrors('400', '403', '404', '409', '413', '415') },
      }),
      delete: op(deleteId!, tag, 'Delete a key group; 409 while keys belong to it (move them to another group or to none first)', {
        parameters: [groupParam(param)],
        responses: { '204': { description: 'Deleted' }, ...groupErrors('403', '404', '409') },
      }),
    },
    [`${base}/{${param}}/quota`]: {
      post: op(quotaId!, tag, "Top up (credits left now) or reset (full again) a group's quota counter; audited (action group.quota)", {
        parameters: [groupParam(param)],
        requestBody: bodyOf(ref('QuotaSetRequest')),
        responses: { '200': ok('The group with its quota now', ref(one)), ...groupErrors('400', '403', '404', '413', '415') },
      }),
    },
  };
}

function groupSchema(snake: boolean): Json {
  const n = (camel: string, under: string) => (snake ? under : camel);
  return {
    type: 'object',
    properties: {
      name: { type: 'string' },
      description: { type: 'string' },
      [n('rateLimit', 'rate_limit')]: { type: 'integer', nullable: true, description: 'requests per minute shared by the group\'s keys; null = none' },
      quota: { type: 'object', allOf: [ref('Quota')], nullable: true, description: 'usage credits shared by the group\'s keys; null = none' },
      keys: { type: 'integer', description: 'how many keys belong to the group' },
      [n('quotaStatus', 'quota_status')]: {
        type: 'object',
        nullable: true,
        description: 'the quota now; null without one',
        properties: { remaining: { type: 'integer' }, [n('nextRefillAt', 'next_refill_at')]: { type: 'string', format: 'date-time', nullable: true, description: 'null for one-time credits' } },
        required: ['remaining', n('nextRefillAt', 'next_refill_at')],
      },
      [n('createdAt', 'created_at')]: { type: 'string', format: 'date-time' },
      [n('updatedAt', 'updated_at')]: { type: 'string', format: 'date-time' },
      [n('createdBy', 'created_by')]: { type: 'string', nullable: true },
      [n('updatedBy', 'updated_by')]: { type: 'string', nullable: true },
      [n('managedBy', 'managed_by')]: { type: 'string', enum: ['api', 'config'], description: 'config: declared in groups.declared, changed there only' },
    },
    required: ['name', 'description', n('rateLimit', 'rate_limit'), 'quota', 'keys', n('quotaStatus', 'quota_status'), n('managedBy', 'managed_by')],
  };
}
/** ?dryRun=true (Dagu) / ?dry_run=true (Dagen): validate only. */
const dryRun = (name: string): Json => ({
  name,
  in: 'query',
  required: false,
  description: 'true: check the body against every rule (all problems at once, as a 400 with errors[]) and change nothing; 200 {valid: true} when it would be accepted',
  schema: { type: 'boolean', default: false },
});
const DRY_RUN_OK = (flag: string): Json => ({ type: 'object', properties: { [flag]: { type: 'boolean', enum: [true] }, valid: { type: 'boolean', enum: [true] }, errors: { type: 'array', maxItems: 0, items: { type: 'object' } } }, required: [flag, 'valid', 'errors'] });
const ok = (description: string, schema: Json): Json => ({ description, content: json(schema) });
const bodyOf = (schema: Json): Json => ({ required: true, content: json(schema) });

const USAGE_PARAMS: Json[] = [
  { name: 'from', in: 'query', required: false, description: 'Start (YYYY-MM-DD UTC or ISO 8601 with offset), rounded down to a bucket; default 7 days (hour) or 30 days (day) before to', schema: { type: 'string' } },
  { name: 'to', in: 'query', required: false, description: 'End, exclusive, rounded up to a bucket; default the end of the current bucket', schema: { type: 'string' } },
  { name: 'bucket', in: 'query', required: false, description: 'hour (at most 744 buckets) or day (at most 366)', schema: { type: 'string', enum: ['hour', 'day'], default: 'hour' } },
];

const groupNameParam = (name: string): Json => ({ name, in: 'path', required: true, description: 'Group name', schema: { type: 'string' } });
const NO_GROUP: Json = { '404': { description: 'No group with this name', content: json(ref('Error')) } };

/** `ids`: the fields naming whose history it is (a key's id and name; a group's name). */
function usageSchema(limited: string, quota: string, ...ids: string[]): Json {
  const counts = {
    allowed: { type: 'integer' },
    [limited]: { type: 'integer', description: 'refused with 429 by the rate limit' },
    forbidden: { type: 'integer', description: 'refused with 403' },
    [quota]: { type: 'integer', description: 'refused with 429 quota_exceeded' },
  };
  return {
    type: 'object',
    properties: {
      ...Object.fromEntries(ids.map((id) => [id, { type: 'string' }])),
      bucket: { type: 'string', enum: ['hour', 'day'] },
      from: { type: 'string', format: 'date-time' },
      to: { type: 'string', format: 'date-time' },
      points: { type: 'array', items: { type: 'object', properties: { start: { type: 'string', format: 'date-time' }, ...counts } } },
      totals: { type: 'object', properties: counts },
    },
  };
}

function op(operationId: string, tag: string, summary: string, rest: Json): Json {
  return { operationId, tags: [tag], summary, ...rest };
}

export function openApiDocument(): Json {
  return {
    openapi: '3.0.3',
    info: {
      title: 'Keygate admin API',
      version: '1',
      description:
        "Key management on Keygate's admin listener, in Dagen's shape (snake_case, /api/keys, /api/groups) and in Dagu's (camelCase, /api/v1/api-keys, /api/v1/api-key-groups); both manage the same keys and key groups. Every call needs the admin token or an admin key.",
      license: { name: 'MIT', url: 'https://opensource.org/licenses/MIT' },
    },
    // relative: the admin listener this document was fetched from (admin.host:admin.port, http or https)
    servers: [{ url: '/', description: 'This admin listener' }],
    security: [{ bearer: [] }, { apiKey: [] }],
    tags: [
      { name: 'dagen', description: "Dagen's key backend" },
      { name: 'dagu', description: "Dagu's API-key endpoints" },
      { name: 'admin', description: 'Audit trail and this document' },
    ],
    paths: {
      '/api/keys': {
        get: op('dagenListKeys', 'dagen', 'List keys (optionally of one workspace)', {
          parameters: [{ name: 'workspace_id', in: 'query', required: false, description: 'Only keys bound to or granted this workspace', schema: { type: 'string' } }, ...FILTER_PARAMETERS, ...PAGE_PARAMETERS],
          responses: { '200': ok('Keys, prefix only; when more follow, the X-Next-Cursor and Link headers name the next page', { type: 'array', items: ref('DagenKey') }), ...errors('400') },
        }),
        post: op('dagenCreateKey', 'dagen', 'Create a key; the response carries the one-time `key`', {
          parameters: [dryRun('dry_run')],
          requestBody: bodyOf(ref('DagenCreateRequest')),
          responses: { '201': ok('Created', ref('DagenCreatedKey')), '200': ok('dry_run=true: the body would be accepted; nothing was created', DRY_RUN_OK('dry_run')), ...errors('400', '403', '409', '413', '415') },
        }),
      },
      '/api/keys/{id}': {
        put: op('dagenUpdateKey', 'dagen', 'Update name, scopes, rate_limit, expires_at, is_active (e.g. deactivate)', {
          parameters: [keyIdParam('id'), dryRun('dry_run')],
          requestBody: bodyOf(ref('DagenUpdateRequest')),
          responses: { '200': ok('Updated (with dry_run=true: {dry_run, valid, errors: []}, nothing changed)', { oneOf: [ref('DagenKey'), DRY_RUN_OK('dry_run')] }), ...errors('400', '403', '404', '409', '413', '415') },
        }),
        delete: op('dagenDeleteKey', 'dagen', 'Delete a key: every consumer loses access', {
          parameters: [keyIdParam('id')],
          responses: { '204': { description: 'Deleted' }, ...errors('403', '404', '409') },
        }),
      },
      '/api/keys/{id}/regenerate': {
        post: op('dagenRegenerateKey', 'dagen', 'New secret; the old one stops at once, or after grace_seconds', {
          parameters: [
            keyIdParam('id'),
            {
              name: 'grace_seconds',
              in: 'query',
              required: false,
              description: 'Seconds the previous secret keeps working (default 0: it stops on the very next request)',
              schema: { type: 'integer', minimum: 0, maximum: MAX_GRACE_SECONDS, default: 0 },
            },
          ],
          responses: { '200': ok('The new one-time `key`', ref('DagenRegeneratedKey')), ...errors('400', '403', '404', '409') },
        }),
      },
      '/api/keys/{id}/quota': {
        post: op('dagenSetKeyQuota', 'dagen', "Top up (credits left now) or reset (full again) a key's quota counter; audited (action quota)", {
          parameters: [keyIdParam('id')],
          requestBody: bodyOf(ref('QuotaSetRequest')),
          responses: { '200': ok('The key with its quota now', ref('DagenKey')), ...errors('400', '403', '404', '413', '415') },
        }),
      },
      '/api/v1/api-keys/{keyId}/quota': {
        post: op('setAPIKeyQuota', 'dagu', "Top up (credits left now) or reset (full again) a key's quota counter; audited (action quota)", {
          parameters: [keyIdParam('keyId')],
          requestBody: bodyOf(ref('QuotaSetRequest')),
          responses: { '200': ok('The key with its quota now', ref('DaguAPIKeyResponse')), ...errors('400', '403', '404', '413', '415') },
        }),
      },
      '/api/keys/{id}/usage': {
        get: op('dagenKeyUsage', 'dagen', 'Usage history: allowed, rate-limited and forbidden requests per hour or day (UTC)', {
          parameters: [keyIdParam('id'), ...USAGE_PARAMS],
          responses: { '200': ok('Zero-filled buckets, oldest first', usageSchema('rate_limited', 'quota_exceeded', 'key_id', 'key_name')), ...errors('400', '403', '404') },
        }),
      },
      '/api/v1/api-keys/{keyId}/usage': {
        get: op('getAPIKeyUsage', 'dagu', 'Usage history: allowed, rate-limited and forbidden requests per hour or day (UTC)', {
          parameters: [keyIdParam('keyId'), ...USAGE_PARAMS],
          responses: { '200': ok('Zero-filled buckets, oldest first', usageSchema('rateLimited', 'quotaExceeded', 'keyId', 'keyName')), ...errors('400', '403', '404') },
        }),
      },
      '/api/groups/{name}/usage': {
        get: op('dagenGroupUsage', 'dagen', "A group's usage history, as a key's: what its keys did while they belonged to it (a key that moved or was deleted still counts)", {
          parameters: [groupNameParam('name'), ...USAGE_PARAMS],
          responses: { '200': ok('Zero-filled buckets, oldest first', usageSchema('rate_limited', 'quota_exceeded', 'group_name')), ...errors('400', '403'), ...NO_GROUP },
        }),
      },
      '/api/v1/api-key-groups/{groupName}/usage': {
        get: op('getAPIKeyGroupUsage', 'dagu', "A group's usage history, as a key's: what its keys did while they belonged to it (a key that moved or was deleted still counts)", {
          parameters: [groupNameParam('groupName'), ...USAGE_PARAMS],
          responses: { '200': ok('Zero-filled buckets, oldest first', usageSchema('rateLimited', 'quotaExceeded', 'groupName')), ...errors('400', '403'), ...NO_GROUP },
        }),
      },
      '/api/keys/counts': {
        get: op('countKeys', 'dagen', 'How many keys there are by status, of every key or of those matching q (the key page header and pager)', {
          parameters: [FILTER_PARAMETERS[0]!],
          responses: { '200': ok('Counts now', ref('KeyCounts')), ...errors('400', '403') },
        }),
      },
      '/api/v1/api-keys': {
        get: op('listAPIKeys', 'dagu', 'List API keys, a page at a time', {
          parameters: [{ name: 'workspace', in: 'query', required: false, description: 'Only keys bound to or granted this workspace', schema: { type: 'string' } }, ...FILTER_PARAMETERS, ...PAGE_PARAMETERS],
          responses: { '200': ok('Keys; nextCursor when more follow', ref('DaguAPIKeysListResponse')), ...errors('400', '403') } }),
        post: op('createAPIKey', 'dagu', 'Create an API key; the full key is returned only here', {
          parameters: [dryRun('dryRun')],
          requestBody: bodyOf(ref('DaguCreateAPIKeyRequest')),
          responses: { '201': ok('Created', ref('DaguCreateAPIKeyResponse')), '200': ok('dryRun=true: the body would be accepted; nothing was created', DRY_RUN_OK('dryRun')), ...errors('400', '403', '409', '413', '415') },
        }),
      },
      '/api/v1/api-keys/{keyId}': {
        get: op('getAPIKey', 'dagu', 'Get an API key', {
          parameters: [keyIdParam('keyId')],
          responses: { '200': ok('The key', ref('DaguAPIKeyResponse')), ...errors('403', '404') },
        }),
        patch: op('updateAPIKey', 'dagu', 'Update an API key', {
          parameters: [keyIdParam('keyId'), dryRun('dryRun')],
          requestBody: bodyOf(ref('DaguUpdateAPIKeyRequest')),
          responses: { '200': ok('Updated (with dryRun=true: {dryRun, valid, errors: []}, nothing changed)', { oneOf: [ref('DaguAPIKeyResponse'), DRY_RUN_OK('dryRun')] }), ...errors('400', '403', '404', '409', '413', '415') },
        }),
        delete: op('deleteAPIKey', 'dagu', 'Delete (revoke) an API key', {
          parameters: [keyIdParam('keyId')],
          responses: { '204': { description: 'Deleted' }, ...errors('403', '404', '409') },
        }),
      },
      ...groupPaths('/api/groups', 'name', 'dagen', ['dagenListGroups', 'dagenCreateGroup', 'dagenGetGroup', 'dagenUpdateGroup', 'dagenDeleteGroup', 'dagenSetGroupQuota'], 'dry_run', 'DagenGroup', 'DagenGroupList', 'DagenGroupCreateRequest', 'DagenGroupUpdateRequest'),
      ...groupPaths(
        '/api/v1/api-key-groups',
        'groupName',
        'dagu',
        ['listAPIKeyGroups', 'createAPIKeyGroup', 'getAPIKeyGroup', 'updateAPIKeyGroup', 'deleteAPIKeyGroup', 'setAPIKeyGroupQuota'],
        'dryRun',
        'DaguAPIKeyGroupResponse',
        'DaguAPIKeyGroupsListResponse',
        'DaguCreateAPIKeyGroupRequest',
        'DaguUpdateAPIKeyGroupRequest',
      ),
      '/api/audit': {
        get: op('listAudit', 'admin', 'Audit records of key changes, newest first', {
          parameters: [
            { name: 'limit', in: 'query', required: false, description: 'At most this many', schema: { type: 'integer', minimum: 1, maximum: MAX_AUDIT_LIMIT, default: DEFAULT_AUDIT_LIMIT } },
            { name: 'key_id', in: 'query', required: false, description: 'Only records of this key', schema: { type: 'string' } },
            { name: 'cursor', in: 'query', required: false, description: 'Older records: the nextCursor of the page before', schema: { type: 'string' } },
          ],
          responses: {
            '200': ok('Records, newest first; nextCursor when older ones follow', {
              type: 'object',
              properties: { records: { type: 'array', items: ref('AuditRecord') }, nextCursor: { type: 'string', description: 'pass as cursor for older records; absent on the last page' } },
              required: ['records'],
            }),
            ...errors('400', '403'),
          },
        }),
      },
      '/api/info': {
        get: op('getGatewayInfo', 'admin', "What the key page shows besides the keys: public base URL, key limits, routes", {
          responses: { '200': ok('Gateway facts (null where the admin listener was not told)', ref('GatewayInfo')), ...errors('403') },
        }),
      },
      '/openapi.json': {
        get: op('getOpenApi', 'admin', 'This document', { responses: { '200': ok('OpenAPI 3.0 document', { type: 'object' }), ...errors('403') } }),
      },
    },
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'admin.token, or a Keygate key with the role admin' },
        apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key', description: 'admin.token, or a Keygate key with the role admin' },
      },
      schemas: {
        Error: {
          type: 'object',
          properties: {
            code: { type: 'string' },
            message: { type: 'string', description: 'the first problem, "field: reason" for a 400' },
            field: { type: 'string', description: 'the field of the first problem (400; 409 for a taken name)' },
            errors: {
              type: 'array',
              description: 'every problem of the request body at once (400), each at its field as this API names it',
              items: { type: 'object', properties: { field: { type: 'string' }, message: { type: 'string' } }, required: ['field', 'message'] },
            },
          },
          required: ['code', 'message'],
        },
        DagenKey: {
          type: 'object',
          properties: {
            id: { type: 'string' },
            name: { type: 'string' },
            key_prefix: { type: 'string', description: 'first 8 characters of the key' },
            scopes: { type: 'array', items: { type: 'string', enum: ['agents', 'workflows'] } },
            workspace_id: { type: 'string', nullable: true },
            rate_limit: { type: 'integer', description: 'requests per minute' },
            status: { type: 'string', enum: ['active', 'inactive', 'expired'] },
            is_active: { type: 'boolean' },
            expires_at: { type: 'string', format: 'date-time', nullable: true },
            request_count: { type: 'integer' },
            last_used_at: { type: 'string', format: 'date-time', nullable: true },
            created_at: { type: 'string', format: 'date-time' },
            updated_at: { type: 'string', format: 'date-time' },
            managed_by: { type: 'string', enum: ['api', 'config'] },
            role: { type: 'string', enum: [...ROLES], description: 'Keygate: minimum-role grant of the key (viewer unless set through the Dagu-shaped API or the CLI)' },
            surfaces: { type: 'array', items: { type: 'string', enum: [...SURFACES] }, nullable: true, description: 'Keygate: allowed surfaces; null = every surface' },
            quota: { type: 'object', allOf: [ref('Quota')], nullable: true, description: 'Keygate: usage credits; null = none' },
            quota_remaining: { type: 'integer', nullable: true, description: 'Keygate: credits left now; null without a quota' },
            quota_next_refill_at: { type: 'string', format: 'date-time', nullable: true, description: 'Keygate: the next refill; null without a quota or for one-time credits' },
            group: { type: 'string', nullable: true, description: "Keygate: the key's group (a rate limit and quota shared with its other keys); null = none" },
          },
        },
        DagenGroup: groupSchema(true),
        DagenGroupList: { type: 'array', items: ref('DagenGroup') },
        DagenGroupCreateRequest: bodySchema(DAGEN_GROUP_CREATE, 'Create a key group'),
        DagenGroupUpdateRequest: bodySchema(DAGEN_GROUP_UPDATE, 'Fields to change; the others stay (the name cannot change)'),
        DaguAPIKeyGroup: groupSchema(false),
        DaguAPIKeyGroupResponse: { type: 'object', properties: { group: ref('DaguAPIKeyGroup') }, required: ['group'] },
        DaguAPIKeyGroupsListResponse: { type: 'object', properties: { groups: { type: 'array', items: ref('DaguAPIKeyGroup') } }, required: ['groups'] },
        DaguCreateAPIKeyGroupRequest: bodySchema(DAGU_GROUP_CREATE, 'Create a key group'),
        DaguUpdateAPIKeyGroupRequest: bodySchema(DAGU_GROUP_UPDATE, 'Fields to change; the others stay (the name cannot change)'),
        DagenCreatedKey: { allOf: [ref('DagenKey'), { type: 'object', properties: { key: { type: 'string', description: 'the full key, shown only once' } }, required: ['key'] }] },
        DagenRegeneratedKey: {
          allOf: [
            ref('DagenCreatedKey'),
            { type: 'object', properties: { previous_key_expires_at: { type: 'string', format: 'date-time', nullable: true, description: 'end of the grace period of the replaced key' } } },
          ],
        },
        DagenCreateRequest: bodySchema(DAGEN_CREATE, 'Create a Dagen-style key'),
        DagenUpdateRequest: bodySchema(DAGEN_UPDATE, 'Fields to change; the others stay'),
        Quota: {
          description:
            'Usage credits. Periodic: {limit, period, refill, start}: limit requests per period (UTC day from 00:00, week from Monday 00:00, month from the 1st; or repeating from start), refill reset (back to limit) or add (limit added per period elapsed). One-time: {remaining} (never refilled). Over it: 429 quota_exceeded.',
          type: 'object',
          oneOf: [
            {
              type: 'object',
              title: 'PeriodicQuota',
              additionalProperties: false,
              properties: {
                limit: { type: 'integer', minimum: 1, maximum: MAX_QUOTA },
                period: { type: 'string', enum: [...QUOTA_PERIODS] },
                refill: { type: 'string', enum: [...QUOTA_REFILLS], default: 'reset' },
                start: { type: 'string', nullable: true, description: 'YYYY-MM-DD or ISO 8601 with an offset: periods repeat from it (a day of month the month lacks is its last day); null = calendar boundaries' },
              },
              required: ['limit', 'period'],
            },
            {
              type: 'object',
              title: 'OneTimeQuota',
              additionalProperties: false,
              properties: { remaining: { type: 'integer', minimum: 0, maximum: MAX_QUOTA } },
              required: ['remaining'],
            },
          ],
        },
        QuotaSetRequest: bodySchema(QUOTA_SET, 'remaining (credits left now) or reset: true, one of them'),
        DaguWorkspaceAccess: {
          type: 'object',
          properties: {
            all: { type: 'boolean' },
            grants: {
              type: 'array',
              items: { type: 'object', properties: { workspace: { type: 'string' }, role: { type: 'string', enum: [...ROLES] } }, required: ['workspace', 'role'] },
            },
          },
        },
        DaguAPIKey: {
          type: 'object',
          properties: {
            id: { type: 'string' },
            name: { type: 'string' },
            description: { type: 'string' },
            role: { type: 'string', enum: [...ROLES] },
            workspaceAccess: ref('DaguWorkspaceAccess'),
            allowedSurfaces: { type: 'array', items: { type: 'string', enum: [...SURFACES] } },
            attributionClass: { type: 'string', enum: ['service_account', 'user_owned'] },
            ownerUserId: { type: 'string' },
            serviceAccountName: { type: 'string' },
            keyPrefix: { type: 'string' },
            createdAt: { type: 'string', format: 'date-time' },
            updatedAt: { type: 'string', format: 'date-time' },
            createdBy: { type: 'string' },
            lastUsedAt: { type: 'string', format: 'date-time', nullable: true },
            workspace: { type: 'string', nullable: true, description: "Keygate: Dagen's one bound workspace" },
            scopes: { type: 'array', items: { type: 'string', enum: ['agents', 'workflows'] }, description: 'Keygate: Dagen scopes' },
            rateLimit: { type: 'integer', description: 'Keygate: requests per minute' },
            expiresAt: { type: 'string', format: 'date-time', nullable: true },
            isActive: { type: 'boolean' },
            status: { type: 'string', enum: ['active', 'inactive', 'expired'] },
            requestCount: { type: 'integer' },
            updatedBy: { type: 'string', nullable: true },
            managedBy: { type: 'string', enum: ['api', 'config'] },
            quota: { type: 'object', allOf: [ref('Quota')], nullable: true, description: 'Keygate: usage credits; null = none' },
            quotaRemaining: { type: 'integer', nullable: true, description: 'Keygate: credits left now; null without a quota' },
            quotaNextRefillAt: { type: 'string', format: 'date-time', nullable: true, description: 'Keygate: the next refill; null without a quota or for one-time credits' },
            group: { type: 'string', nullable: true, description: "Keygate: the key's group (a rate limit and quota shared with its other keys); null = none" },
          },
          required: ['id', 'name', 'role', 'workspaceAccess', 'allowedSurfaces', 'attributionClass', 'keyPrefix', 'createdAt', 'updatedAt', 'createdBy'],
        },
        DaguAPIKeyResponse: { type: 'object', properties: { apiKey: ref('DaguAPIKey') }, required: ['apiKey'] },
        DaguAPIKeysListResponse: {
          type: 'object',
          properties: { apiKeys: { type: 'array', items: ref('DaguAPIKey') }, nextCursor: { type: 'string', description: 'pass as cursor for the next page; absent on the last' } },
          required: ['apiKeys'],
        },
        DaguCreateAPIKeyResponse: {
          type: 'object',
          properties: { apiKey: ref('DaguAPIKey'), key: { type: 'string', description: 'Full key secret, only returned once' } },
          required: ['apiKey', 'key'],
        },
        DaguCreateAPIKeyRequest: bodySchema(DAGU_CREATE, "Dagu's CreateAPIKeyRequest"),
        DaguUpdateAPIKeyRequest: bodySchema(DAGU_UPDATE, "Dagu's UpdateAPIKeyRequest"),
        GatewayInfo: {
          type: 'object',
          properties: {
            public_url: { type: 'string', nullable: true, description: 'base URL of the public listener: listen.public_url, else derived from the listener' },
            public_url_source: { type: 'string', enum: ['config', 'listen'], nullable: true },
            rate_limit: {
              type: 'object',
              nullable: true,
              description: 'keys.rate_limit (requests per minute)',
              properties: { default: { type: 'integer' }, min: { type: 'integer' }, max: { type: 'integer' } },
              required: ['default', 'min', 'max'],
            },
            max_keys: { type: 'integer', nullable: true, description: 'keys.max_keys; null = no limit (or not known)' },
            key_count: { type: 'integer', description: 'keys in the store, declared ones included' },
            key_prefix: { type: 'string', nullable: true, description: 'keys.prefix' },
            routes: {
              type: 'array',
              nullable: true,
              description: 'the configured routes, in order (no upstream addresses or credentials)',
              items: {
                type: 'object',
                properties: {
                  name: { type: 'string' },
                  methods: { type: 'array', items: { type: 'string' }, nullable: true, description: 'null = any method' },
                  path: { type: 'string' },
                  surface: { type: 'string', enum: [...SURFACES] },
                  auth: { type: 'string', enum: ['required', 'none'] },
                  scopes: { type: 'array', items: { type: 'string', enum: ['agents', 'workflows'] } },
                  role: { type: 'string', enum: [...ROLES], nullable: true },
                  workspace_query: { type: 'string', nullable: true, description: 'query parameter naming the workspace' },
                },
                required: ['name', 'methods', 'path', 'surface', 'auth', 'scopes', 'role', 'workspace_query'],
              },
            },
          },
          required: ['public_url', 'public_url_source', 'rate_limit', 'max_keys', 'key_count', 'key_prefix', 'routes'],
        },
        KeyCounts: {
          type: 'object',
          properties: {
            total: { type: 'integer', description: 'keys (matching q when given)' },
            active: { type: 'integer' },
            inactive: { type: 'integer', description: 'deactivated' },
            expired: { type: 'integer', description: 'active but past expiresAt' },
          },
          required: ['total', 'active', 'inactive', 'expired'],
        },
        AuditRecord: {
          type: 'object',
          properties: {
            id: { type: 'string' },
            at: { type: 'string', format: 'date-time' },
            actor: { type: 'string', description: 'admin-token, key:<id>, cli:<user> or config' },
            action: {
              type: 'string',
              enum: ['create', 'update', 'activate', 'deactivate', 'regenerate', 'delete', 'quota', 'group.create', 'group.update', 'group.delete', 'group.quota'],
              description: "quota: a top-up or reset of the quota counter; group.*: a key group's change (key_id group:<name>, key_name the group's name)",
            },
            key_id: { type: 'string', description: 'the key\'s id, or group:<name> for a group\'s change' },
            key_name: { type: 'string' },
            remote_address: { type: 'string', nullable: true },
            details: { type: 'object', description: 'what changed; never a secret' },
          },
          required: ['id', 'at', 'actor', 'action', 'key_id', 'key_name', 'remote_address', 'details'],
        },
      },
    },
  };
}
