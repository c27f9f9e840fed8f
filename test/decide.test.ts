// decide(): every branch, with keys built through accessOf() from StoredKey literals and routes
// compiled by a real RouteTable. Then extractCredential().

import t from 'tap';
import { DAGU_UPSTREAM, routeConfig, storedKey, type RouteInput } from './factories.js';
import { extractCredential } from '../src/auth/credential.js';
import { decide, type Decision } from '../src/auth/decide.js';
import { ROLES, type Role, type RouteConfig } from '../src/config/types.js';
import { accessOf, type StoredKey } from '../src/keys/model.js';
import { RouteTable, type Route } from '../src/routes/table.js';

const NOW = Date.parse('2030-06-15T12:00:00.000Z');

function stored(over: Partial<StoredKey> = {}): StoredKey {
  return storedKey({ role: 'admin', ...over });
}

const UPSTREAM = DAGU_UPSTREAM;

function route(r: RouteInput, index: number): RouteConfig {
  return routeConfig({ name: r.path, ...r }, index);
}

const ROUTES = {
  plain: { path: '/plain' },
  viewer: { path: '/viewer', role: 'viewer' },
  operator: { path: '/operator', role: 'operator' },
  developer: { path: '/developer', role: 'developer' },
  manager: { path: '/manager', role: 'manager' },
  admin: { path: '/admin', role: 'admin' },
  agents: { path: '/agents', scopes: ['agents'] },
  workflows: { path: '/workflows', scopes: ['workflows'] },
  both: { path: '/both', scopes: ['agents', 'workflows'] },
  mcp: { path: '/mcp', surface: 'mcp' },
  a2a: { path: '/a2a', surface: 'a2a' },
  dags: { path: '/dags', role: 'viewer', workspace: { from: 'query', name: 'workspace' } },
  start: { path: '/dags/{fileName}/start', role: 'operator', workspace: { from: 'query', name: 'workspace' } },
  settings: { path: '/workspaces/{ws}/settings', role: 'developer', workspace: { from: 'param', name: 'ws' } },
  agentChat: { path: '/agent/chat', scopes: ['agents'], workspace: { from: 'key' } },
} satisfies Record<string, RouteInput>;
type RouteName = keyof typeof ROUTES;

const table = RouteTable.compile({
  upstreams: [UPSTREAM],
  routes: Object.values(ROUTES).map((r, i) => route(r as RouteInput, i)),
});
const R = Object.fromEntries(Object.keys(ROUTES).map((name, i) => [name, table.routes[i]!])) as Record<RouteName, Route>;

function run(routeName: RouteName, key: StoredKey, workspace?: string, nowMs = NOW): Decision {
  return decide(R[routeName], accessOf(key), { nowMs, workspace });
}

const allow = (roleRank: number, workspace: string | null = null): Decision => ({ allow: true, roleRank, workspace });
const INACTIVE: Decision = { allow: false, status: 403, code: 'key_inactive', message: 'API key is inactive' };
const EXPIRED: Decision = { allow: false, status: 403, code: 'key_expired', message: 'API key has expired' };
const SURFACE: Decision = { allow: false, status: 403, code: 'forbidden', message: 'API key is not allowed for this surface' };
const ROLE: Decision = { allow: false, status: 403, code: 'forbidden', message: 'Insufficient permissions' };
const NOT_FOUND: Decision = { allow: false, status: 404, code: 'not_found', message: 'Resource not found' };
const scope = (needs: string): Decision => ({
  allow: false,
  status: 403,
  code: 'insufficient_scope',
  message: `API key lacks the scope this route needs: ${needs}`,
});
const wsRequired = (granted: string, how: string): Decision => ({
  allow: false,
  status: 403,
  code: 'workspace_required',
  message: `API key is limited to workspaces (${granted}): name one with ${how}`,
});

t.test('accessOf precomputes what decide reads', async (t) => {
  const a = accessOf(stored({ role: 'operator', scopes: ['workflows'], surfaces: ['rest_api', 'a2a'], expiresAt: '2030-07-01T00:00:00.000Z' }));
  t.same(
    { roleRank: a.roleRank, scopeMask: a.scopeMask, surfaceMask: a.surfaceMask, expiresAtMs: a.expiresAtMs, all: a.allWorkspaces, grants: [...a.grants], attribution: a.attribution },
    { roleRank: 2, scopeMask: 2, surfaceMask: 5, expiresAtMs: Date.parse('2030-07-01T00:00:00Z'), all: true, grants: [], attribution: 'service_account:ci-bot' },
  );
  t.equal(a.digest, 'a'.repeat(64));
  t.equal('digest' in a.key, false, 'the key inside the access carries no digest');
  t.equal(Object.isFrozen(a), true);
  t.equal(Object.isFrozen(a.key), true);

  const defaults = accessOf(stored());
  t.equal(defaults.surfaceMask, 7, 'surfaces null = every surface');
  t.equal(defaults.expiresAtMs, Infinity);

  t.equal(accessOf(stored({ serviceAccountName: null })).attribution, 'service_account:ci-bot', 'falls back to the key name');
  t.equal(accessOf(stored({ attributionClass: 'user_owned', ownerUserId: 'u-7', serviceAccountName: null })).attribution, 'user_owned:u-7');

  const scoped = accessOf(stored({ role: 'viewer', workspaceAccess: { all: false, grants: [{ workspace: 'team-a', role: 'operator' }] } }));
  t.same([scoped.allWorkspaces, [...scoped.grants]], [false, [['team-a', 2]]]);
  const bound = accessOf(stored({ role: 'developer', workspace: 'team-b' }));
  t.same([bound.allWorkspaces, [...bound.grants]], [false, [['team-b', 3]]]);
});

t.test('an inactive key is refused with key_inactive', async (t) => {
  t.same(run('plain', stored({ isActive: false })), INACTIVE);
  t.same(run('plain', stored({ isActive: true })), allow(5));
});

t.test('an expired key is refused with key_expired, at and after expiresAt', async (t) => {
  const key = stored({ expiresAt: new Date(NOW).toISOString() });
  t.same(run('plain', key, undefined, NOW - 1), allow(5), 'one millisecond before');
  t.same(run('plain', key, undefined, NOW), EXPIRED, 'at expiresAt');
  t.same(run('plain', key, undefined, NOW + 1), EXPIRED, 'after');
  t.same(run('plain', stored({ expiresAt: null }), undefined, 8.64e15), allow(5), 'null never expires');
});

t.test('surfaces: listed ones only; null = all', async (t) => {
  const rows: [surfaces: StoredKey['surfaces'], routeName: RouteName, expected: Decision][] = [
    [null, 'plain', allow(5)],
    [null, 'mcp', allow(5)],
    [null, 'a2a', allow(5)],
    [['rest_api'], 'plain', allow(5)],
    [['rest_api'], 'mcp', SURFACE],
    [['rest_api'], 'a2a', SURFACE],
    [['mcp'], 'plain', SURFACE],
    [['mcp'], 'mcp', allow(5)],
    [['rest_api', 'a2a'], 'a2a', allow(5)],
    [[], 'plain', SURFACE],
  ];
  for (const [surfaces, routeName, expected] of rows) {
    t.same(run(routeName, stored({ surfaces })), expected, `${JSON.stringify(surfaces)} on ${routeName}`);
  }
});

t.test('scopes: every scope the route lists is required', async (t) => {
  const rows: [scopes: StoredKey['scopes'], routeName: RouteName, expected: Decision][] = [
    [['workflows'], 'agents', scope('agents')],
    [['workflows'], 'workflows', allow(5)],
    [['agents'], 'agents', allow(5)],
    [['agents'], 'workflows', scope('workflows')],
    [['agents'], 'both', scope('agents, workflows')],
    [['workflows'], 'both', scope('agents, workflows')],
    [['agents', 'workflows'], 'both', allow(5)],
    [['agents'], 'plain', allow(5)],
    [[], 'plain', allow(5)],
    [[], 'agents', scope('agents')],
  ];
  for (const [scopes, routeName, expected] of rows) {
    t.same(run(routeName, stored({ scopes })), expected, `${JSON.stringify(scopes)} on ${routeName}`);
  }
});

t.test('role: a key passes a route whose role is at or below its own', async (t) => {
  const routeOf: Record<Role, RouteName> = { viewer: 'viewer', operator: 'operator', developer: 'developer', manager: 'manager', admin: 'admin' };
  ROLES.forEach((keyRole, k) => {
    ROLES.forEach((routeRole, r) => {
      const expected = k >= r ? allow(k + 1) : ROLE;
      t.same(run(routeOf[routeRole], stored({ role: keyRole })), expected, `${keyRole} key on ${routeRole} route`);
    });
    t.same(run('plain', stored({ role: keyRole })), allow(k + 1), `${keyRole} key on a route with no role`);
  });
});

t.test('workspace: an all-access key', async (t) => {
  const admin = stored();
  const viewer = stored({ role: 'viewer' });
  t.same(run('dags', admin), allow(5, null), 'omitted: all workspaces');
  t.same(run('dags', admin, 'all'), allow(5, null), '"all"');
  t.same(run('dags', admin, 'team-a'), allow(5, 'team-a'), 'named');
  t.same(run('settings', admin, 'team-z'), allow(5, 'team-z'), 'from the path');
  t.same(run('start', viewer, 'team-a'), ROLE, 'its top-level role applies in every workspace');
});

t.test('workspace: a key with grants', async (t) => {
  const key = stored({
    role: 'viewer',
    workspaceAccess: {
      all: false,
      grants: [
        { workspace: 'team-a', role: 'operator' },
        { workspace: 'team-b', role: 'viewer' },
      ],
    },
  });
  const rows: [routeName: RouteName, workspace: string | undefined, expected: Decision, why: string][] = [
    ['dags', 'team-a', allow(2, 'team-a'), 'granted: the grant role'],
    ['dags', 'team-b', allow(1, 'team-b'), 'granted viewer'],
    ['start', 'team-a', allow(2, 'team-a'), 'operator route, operator grant'],
    ['start', 'team-b', ROLE, 'operator route, viewer grant'],
    ['settings', 'team-a', ROLE, 'developer route, operator grant'],
    ['dags', 'team-c', NOT_FOUND, 'not granted: invisible'],
    ['start', 'team-c', NOT_FOUND, 'not granted beats role too low'],
    ['dags', 'TEAM-A', NOT_FOUND, 'workspace names are case-sensitive'],
    ['dags', undefined, wsRequired('team-a, team-b', '?workspace='), 'omitted'],
    ['dags', 'all', wsRequired('team-a, team-b', '?workspace='), '"all"'],
    ['settings', 'all', wsRequired('team-a, team-b', 'the path'), '"all" in the path'],
    ['viewer', undefined, allow(1, null), 'a route without a workspace: top-level role'],
    ['operator', 'team-a', { allow: false, status: 403, code: 'workspace_required', message: 'API key is limited to workspaces (team-a, team-b); this operation names no workspace, and outside them the key may only read' }, 'a route without a workspace ignores the grants: outside them the key only reads'],
  ];
  for (const [routeName, workspace, expected, why] of rows) {
    t.same(run(routeName, key, workspace), expected, `${routeName} ${String(workspace)}: ${why}`);
  }
});

t.test('workspace: a Dagen-bound key is one grant at its top-level role', async (t) => {
  const key = stored({ role: 'operator', workspace: 'team-a' });
  const rows: [routeName: RouteName, workspace: string | undefined, expected: Decision][] = [
    ['dags', 'team-a', allow(2, 'team-a')],
    ['start', 'team-a', allow(2, 'team-a')],
    ['settings', 'team-a', ROLE],
    ['dags', 'team-b', NOT_FOUND],
    ['dags', undefined, wsRequired('team-a', '?workspace=')],
    ['dags', 'all', wsRequired('team-a', '?workspace=')],
  ];
  for (const [routeName, workspace, expected] of rows) {
    t.same(run(routeName, key, workspace), expected, `${routeName} ${String(workspace)}`);
  }
});

t.test('workspace: key routes pass the key\'s own workspace', async (t) => {
  t.same(run('agentChat', stored({ role: 'operator', workspace: 'team-a' })), allow(2, 'team-a'));
  t.same(run('agentChat', stored({ role: 'operator', workspace: 'team-a' }), 'team-b'), allow(2, 'team-a'), 'the request cannot name another');
  t.same(run('agentChat', stored()), allow(5, null), 'an unbound key passes none');
});

t.test('checks run in order: active, expiry, surface, scope, workspace, role', async (t) => {
  const bad = { isActive: false, expiresAt: '2000-01-01T00:00:00.000Z', surfaces: ['mcp'], scopes: ['workflows'], role: 'viewer' } as const;
  const scoped = { workspaceAccess: { all: false, grants: [{ workspace: 'team-a', role: 'viewer' as const }] } };
  const rows: [over: Partial<StoredKey>, routeName: RouteName, workspace: string | undefined, expected: Decision][] = [
    [{ ...bad, surfaces: [...bad.surfaces], scopes: [...bad.scopes] }, 'agents', undefined, INACTIVE],
    [{ ...bad, isActive: true, surfaces: [...bad.surfaces], scopes: [...bad.scopes] }, 'agents', undefined, EXPIRED],
    [{ ...bad, isActive: true, expiresAt: null, surfaces: [...bad.surfaces], scopes: [...bad.scopes] }, 'agents', undefined, SURFACE],
    [{ scopes: ['workflows'], role: 'viewer', ...scoped }, 'agents', undefined, scope('agents')],
    [{ role: 'viewer', ...scoped }, 'start', 'team-b', NOT_FOUND],
    [{ role: 'viewer', ...scoped }, 'start', undefined, wsRequired('team-a', '?workspace=')],
    [{ role: 'viewer', ...scoped }, 'start', 'team-a', ROLE],
  ];
  for (const [over, routeName, workspace, expected] of rows) {
    t.same(run(routeName, stored(over), workspace), expected, `${expected.allow ? 'allow' : expected.code} on ${routeName}`);
  }
});

// ---------------------------------------------------------------- credentials

t.test('extractCredential', async (t) => {
  const rows: [headers: Record<string, string>, expected: ReturnType<typeof extractCredential>][] = [
    [{ 'x-api-key': 'dg_abc' }, { kind: 'key', secret: 'dg_abc' }],
    [{ 'x-api-key': '  dg_abc  ' }, { kind: 'key', secret: 'dg_abc' }],
    [{ authorization: 'Bearer dg_abc' }, { kind: 'key', secret: 'dg_abc' }],
    [{ authorization: 'bearer dg_abc' }, { kind: 'key', secret: 'dg_abc' }],
    [{ authorization: 'BEARER dg_abc' }, { kind: 'key', secret: 'dg_abc' }],
    [{ authorization: 'BeArEr dg_abc' }, { kind: 'key', secret: 'dg_abc' }],
    [{ authorization: 'Bearer dg_abc', 'x-api-key': 'dg_abc' }, { kind: 'key', secret: 'dg_abc' }],
    [
      { authorization: 'Bearer dg_abc', 'x-api-key': 'dg_xyz' },
      { kind: 'invalid', message: 'X-API-Key and Authorization: Bearer carry different credentials; send one' },
    ],
    [{ 'x-api-key': 'dg_a, dg_b' }, { kind: 'invalid', message: 'more than one X-API-Key header' }],
    [{ 'x-api-key': 'dg_a, dg_b', authorization: 'Bearer dg_a' }, { kind: 'invalid', message: 'more than one X-API-Key header' }],
    [{ 'x-api-key': 'dg_abc', authorization: 'Basic dXNlcjpwYXNz' }, { kind: 'key', secret: 'dg_abc' }],
    [{ 'x-api-key': '', authorization: 'Bearer dg_abc' }, { kind: 'key', secret: 'dg_abc' }],
    [{ authorization: 'Basic dXNlcjpwYXNz' }, { kind: 'none' }],
    [{ authorization: 'Bearer' }, { kind: 'none' }],
    [{ authorization: 'Bearer ' }, { kind: 'none' }],
    [{ authorization: 'Bearerdg_abc' }, { kind: 'none' }],
    [{ authorization: 'Token dg_abc' }, { kind: 'none' }],
    [{ 'x-api-key': '' }, { kind: 'none' }],
    [{ 'x-api-key': '   ' }, { kind: 'none' }],
    [{}, { kind: 'none' }],
  ];
  for (const [headers, expected] of rows) t.same(extractCredential(headers), expected, JSON.stringify(headers));
});
