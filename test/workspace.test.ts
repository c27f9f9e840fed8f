// Workspace isolation: one rule (src/auth/workspace.ts) for every route and every MCP tool call.
// One test per cell of README's table "key kind × where the request's workspace comes from", then
// the same rule reached through decide() on the shipped Dagu/Dagen maps and through MCP tool calls.

import t from 'tap';
import { join } from 'node:path';
import { storedKey } from './factories.js';
import { actAs, type Acting, type Where } from '../src/auth/workspace.js';
import { decide } from '../src/auth/decide.js';
import { loadConfig } from '../src/config/load.js';
import { accessOf } from '../src/keys/model.js';
import { authoriseCall, argumentFields, parseCall } from '../src/jsonrpc/policy.js';
import { RouteTable } from '../src/routes/table.js';

const VIEWER = 1, DEVELOPER = 3, ADMIN = 5;

const KEYS = {
  all: accessOf(storedKey({ role: 'developer' })),
  grants: accessOf(storedKey({ role: 'viewer', workspaceAccess: { all: false, grants: [{ workspace: 'team-a', role: 'developer' }] } })),
  bound: accessOf(storedKey({ role: 'developer', workspace: 'team-a' })),
};
type Kind = keyof typeof KEYS;

const named = (name: string | undefined): Where => ({ kind: 'named', name, how: '?workspace=' });
const NONE: Where = { kind: 'none' };
const KEY: Where = { kind: 'key' };
const UNATTRIBUTED: Where = { kind: 'unattributed', what: 'resource "x://y"' };
const ok = (roleRank: number, workspace: string | null): Acting => ({ allow: true, roleRank, workspace });

// [row of the README table, where, needed rank, key kind, expected]
const CELLS: [string, Where, number, Kind, Acting | string][] = [
  // none: the operation names an object, not a workspace
  ['none, a read', NONE, VIEWER, 'all', ok(DEVELOPER, null)],
  ['none, a read', NONE, VIEWER, 'grants', ok(VIEWER, null)],
  ['none, a read', NONE, VIEWER, 'bound', 'workspace_required'],
  ['none, a change', NONE, DEVELOPER, 'all', ok(DEVELOPER, null)],
  ['none, a change', NONE, DEVELOPER, 'grants', 'workspace_required'],
  ['none, a change', NONE, DEVELOPER, 'bound', 'workspace_required'],
  ['none, above the key', NONE, ADMIN, 'all', 'forbidden'],
  // named, held by the key
  ['named, held', named('team-a'), DEVELOPER, 'all', ok(DEVELOPER, 'team-a')],
  ['named, held', named('team-a'), DEVELOPER, 'grants', ok(DEVELOPER, 'team-a')],
  ['named, held', named('team-a'), DEVELOPER, 'bound', ok(DEVELOPER, 'team-a')],
  ['named, held, above the grant', named('team-a'), ADMIN, 'grants', 'forbidden'],
  ['named, held, above the key', named('team-a'), ADMIN, 'bound', 'forbidden'],
  // named, not held
  ['named, not held', named('team-b'), VIEWER, 'all', ok(DEVELOPER, 'team-b')],
  ['named, not held', named('team-b'), VIEWER, 'grants', 'not_found'],
  ['named, not held', named('team-b'), VIEWER, 'bound', 'not_found'],
  ['named, not held (case differs)', named('TEAM-A'), VIEWER, 'bound', 'not_found'],
  // nothing named, or all
  ['named nothing', named(undefined), VIEWER, 'all', ok(DEVELOPER, null)],
  ['named nothing', named(undefined), VIEWER, 'grants', 'workspace_required'],
  ['named nothing', named(undefined), VIEWER, 'bound', 'workspace_required'],
  ['named all', named('all'), VIEWER, 'all', ok(DEVELOPER, null)],
  ['named all', named('all'), VIEWER, 'grants', 'workspace_required'],
  ['named all', named('all'), VIEWER, 'bound', 'workspace_required'],
  // unattributed: an MCP call naming an object Keygate cannot place (an unknown URI, an unlisted prompt…)
  ['unattributed', UNATTRIBUTED, VIEWER, 'all', ok(DEVELOPER, null)],
  ['unattributed', UNATTRIBUTED, VIEWER, 'grants', 'workspace_required'],
  ['unattributed', UNATTRIBUTED, VIEWER, 'bound', 'workspace_required'],
  // workspace: key (the upstream enforces the key's workspace)
  ['key', KEY, 0, 'all', ok(DEVELOPER, null)],
  ['key', KEY, 0, 'grants', 'workspace_required'],
  ['key', KEY, 0, 'bound', ok(DEVELOPER, 'team-a')],
];

t.test('README table: every cell', async (t) => {
  for (const [row, where, needed, kind, expected] of CELLS) {
    const got = actAs(KEYS[kind], where, needed);
    if (typeof expected === 'string') t.match(got, { allow: false, code: expected }, `${row} × ${kind}: ${expected}`);
    else t.same(got, expected, `${row} × ${kind}: role ${expected.allow && expected.roleRank}, workspace ${expected.allow && expected.workspace}`);
  }
});

t.test('the shipped maps: a bound key never acts outside its workspace; a grants key never above viewer there', async (t) => {
  const ROOT = join(import.meta.dirname, '..');
  const config = loadConfig(join(ROOT, 'gateway.example.yaml'), { DAGU_URL: 'http://127.0.0.1:1', DAGEN_URL: 'http://127.0.0.1:2', DAGU_API_TOKEN: 'x', DAGEN_API_KEY: 'y', KEYGATE_ADMIN_TOKEN: 'z' });
  const table = RouteTable.compile(config);
  const boundAdmin = accessOf(storedKey({ role: 'admin', workspace: 'team-a' }));
  const grants = KEYS.grants;
  const check = (access: typeof boundAdmin, method: string, path: string, workspace?: string) => {
    const m = table.match(method, undefined, path);
    if (m === undefined) throw new Error(`no route for ${method} ${path}`);
    const source = m.route.config.workspace;
    const asked = source?.from === 'param' ? m.params?.[source.name] : workspace;
    return decide(m.route, access, { nowMs: Date.now(), workspace: asked });
  };
  const NOW_REFUSED: [string, string][] = [
    ['DELETE', '/api/v1/dags/other-teams-dag'],
    ['DELETE', '/api/v1/workspaces/team-b'],
    ['POST', '/api/v1/api-keys'],
    ['POST', '/api/v1/auth/change-password'],
    ['GET', '/api/v1/dags/other-teams-dag'],
  ];
  for (const [method, path] of NOW_REFUSED) {
    t.match(check(boundAdmin, method, path), { allow: false, status: 403, code: 'workspace_required' }, `bound admin key: ${method} ${path}`);
  }
  t.match(check(boundAdmin, 'GET', '/api/v1/dags', 'team-a'), { allow: true, roleRank: ADMIN, workspace: 'team-a' }, 'bound key in its own workspace: its role');
  t.match(check(boundAdmin, 'GET', '/api/v1/dags', 'team-b'), { allow: false, status: 404 });
  t.match(check(grants, 'GET', '/api/v1/dags/other-teams-dag'), { allow: true, roleRank: VIEWER }, 'grants key: reads an object by name as viewer');
  t.match(check(grants, 'DELETE', '/api/v1/dags/other-teams-dag'), { allow: false, code: 'workspace_required' }, 'grants key: changes nothing outside a named workspace');
  t.match(check(grants, 'POST', '/api/v1/workflow/wf-1/run'), { allow: false, code: 'workspace_required' }, 'Dagen workflow (workspace: key): a grants key has no single workspace');
  t.match(check(accessOf(storedKey({ role: 'viewer', scopes: ['workflows'], workspace: 'ws-42' })), 'POST', '/api/v1/workflow/wf-1/run'), { allow: true, workspace: 'ws-42' }, 'Dagen workflow: a bound key passes its workspace');
  t.match(check(accessOf(storedKey({ role: 'viewer', scopes: ['workflows'] })), 'POST', '/api/v1/workflow/wf-1/run'), { allow: true, workspace: null }, 'Dagen workflow: an all-workspaces key');
  t.match(check(grants, 'GET', '/api/v1/dags', undefined), { allow: false, code: 'workspace_required' }, 'the query routes refuse the same grants key without a workspace: one rule');

  // MCP: where the tool call acts, from Dagu's tool schemas
  const mcp = table.match('POST', undefined, '/mcp')!.route;
  const policy = mcp.config.jsonrpc!;
  const call = (tool: string, args: Record<string, unknown>) => {
    const p = parseCall(Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: tool, arguments: args } })), argumentFields(policy));
    if (!p.ok) throw new Error(p.message);
    return p.call;
  };
  const viaTeamA = (access: typeof grants) => decide(mcp, access, { nowMs: Date.now(), workspace: 'team-a' });
  const tool = (access: typeof grants, name: string, args: Record<string, unknown>) => {
    const d = viaTeamA(access);
    if (!d.allow) throw new Error(d.message);
    return authoriseCall(policy, mcp.minRoleRank, access, d, call(name, args));
  };
  const upsert = { mode: 'apply', type: 'upsert_dag', name: 'other-teams-dag', spec: 'steps: []' };
  t.match(tool(grants, 'dagu_change', upsert), { allow: false, code: 'workspace_required' }, '?workspace=team-a + dagu_change of a DAG (names no workspace): refused for a grants key');
  t.match(tool(grants, 'dagu_change', { ...upsert, workspace: 'team-a' }), { allow: false, code: 'workspace_required' }, 'a workspace argument does not count for upsert_dag (Dagu ignores it there)');
  t.match(tool(grants, 'dagu_execute', { action: 'start', name: 'other-teams-dag' }), { allow: false, code: 'workspace_required' }, 'dagu_execute names no workspace');
  t.match(tool(KEYS.bound, 'dagu_execute', { action: 'start', name: 'x' }), { allow: false, code: 'workspace_required' }, 'bound key: dagu_execute refused');
  t.match(tool(grants, 'dagu_read', { target: 'dag_spec', name: 'other-teams-dag' }), { allow: true, roleRank: VIEWER, workspace: null }, 'grants key: dagu_read of a DAG as viewer');
  t.match(tool(KEYS.bound, 'dagu_read', { target: 'dag_spec', name: 'other-teams-dag' }), { allow: false, code: 'workspace_required' }, 'bound key: even a read outside its workspace');
  const wiki = { mode: 'apply', type: 'upsert_wiki_page', path: 'runbooks/x', content: '#' };
  t.match(tool(grants, 'dagu_change', { ...wiki, workspace: 'team-a' }), { allow: true, roleRank: DEVELOPER, workspace: 'team-a' }, 'a wiki change in a granted workspace: the grant role');
  t.match(tool(grants, 'dagu_change', { ...wiki, workspace: 'team-b' }), { allow: false, status: 404 }, 'a wiki change in another workspace, whatever ?workspace= said');
  t.match(tool(grants, 'dagu_change', { ...wiki, workspace: 'all' }), { allow: false, code: 'workspace_required' });
  t.match(tool(grants, 'dagu_change', wiki), { allow: false, code: 'workspace_required' }, 'a wiki change naming no workspace');
  t.match(tool(grants, 'dagu_read', { target: 'wiki_page', workspace: 'team-b', path: 'x' }), { allow: false, status: 404 }, 'a wiki read in another workspace');
  t.match(tool(KEYS.bound, 'dagu_read', { target: 'wiki_page', workspace: 'team-a', path: 'x', uri: 'dagu://wiki/team-b/x' }), { allow: false, status: 404 }, 'a uri names the object: its workspace (team-b) counts, not the target fields beside it');
  t.match(tool(KEYS.all, 'dagu_change', upsert), { allow: true, roleRank: DEVELOPER }, 'an all-workspaces key: its role');
  t.match(tool(KEYS.all, 'dagu_change', { ...wiki, workspace: 'team-z' }), { allow: true, workspace: 'team-z' }, 'the tool\'s workspace goes upstream');

  // dagu_read as Dagu reads it: a uri names the object (URI mode); Dagu trims what it reads
  t.match(tool(grants, 'dagu_read', { uri: 'dagu://wiki/team-b/secret' }), { allow: false, status: 404 }, 'dagu_read uri of another workspace\'s Wiki page');
  t.match(tool(grants, 'dagu_read', { uri: 'dagu://wiki/team-a/runbook' }), { allow: true, roleRank: DEVELOPER, workspace: 'team-a' }, 'dagu_read uri in the granted workspace: the grant');
  t.match(tool(grants, 'dagu_read', { uri: 'dagu://wiki' }), { allow: false, code: 'workspace_required' }, 'dagu_read uri of the all-workspaces Wiki');
  t.match(tool(grants, 'dagu_read', { uri: 'dagu://dags' }), { allow: false, code: 'workspace_required' }, 'dagu_read uri of the DAG list (every workspace)');
  t.match(tool(grants, 'dagu_read', { uri: 'dagu://dags/other-teams-dag/spec' }), { allow: true, roleRank: VIEWER }, 'dagu_read uri of a DAG: as viewer, like GET /dags/{name}/spec');
  t.match(tool(KEYS.bound, 'dagu_read', { uri: 'dagu://runs/x/1/logs' }), { allow: false, code: 'workspace_required' }, 'bound key: a run names no workspace');
  t.match(tool(KEYS.bound, 'dagu_read', { uri: 'dagu://reference/authoring' }), { allow: true, workspace: 'team-a' }, 'Dagu\'s built-in reference: no workspace object, the route\'s own');
  t.match(tool(grants, 'dagu_read', { target: 'wiki_page', workspace: 'team-b', path: 'x', uri: ' ' }), { allow: false, status: 404 }, 'a blank uri is no uri (Dagu trims): target mode, team-b');
  t.match(tool(grants, 'dagu_read', { target: ' wiki_page', workspace: 'team-b', path: 'x' }), { allow: false, code: 'workspace_required' }, 'a target Dagu would trim to wiki_page: not attributed, refused');
  t.match(tool(grants, 'dagu_read', { target: 'wiki_page', workspace: 'team-b\u0085', path: 'x' }), { allow: false, code: 'workspace_required' }, 'a workspace Dagu would trim: not attributed');
  t.match(tool(grants, 'dagu_read', { target: 'dags' }), { allow: false, code: 'workspace_required' }, 'the DAG list spans every workspace (like GET /dags without ?workspace=)');
  t.match(tool(grants, 'dagu_read', { target: 'runs' }), { allow: false, code: 'workspace_required' }, 'the run list too');
  t.match(tool(grants, 'dagu_read', { target: 'nonsense' }), { allow: false, code: 'workspace_required' }, 'a target the map does not know: not attributed');
  t.match(tool(grants, 'dagu_read', { target: 'reference', name: 'authoring' }), { allow: true, workspace: 'team-a' }, 'a reference: the route\'s own');
  t.match(tool(KEYS.all, 'dagu_read', { uri: 'DAGU://wiki/team-b/x' }), { allow: true }, 'an all-workspaces key reads whatever it names');

  // the other MCP methods that name an object: resources/*, prompts/get, completion, tasks
  const rpc = (access: typeof grants, method: string, params: Record<string, unknown>) => {
    const p = parseCall(Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method, params })), argumentFields(policy));
    if (!p.ok) throw new Error(p.message);
    const d = viaTeamA(access);
    if (!d.allow) throw new Error(d.message);
    return authoriseCall(policy, mcp.minRoleRank, access, d, p.call, 'mcp');
  };
  for (const method of ['resources/read', 'resources/subscribe', 'resources/unsubscribe']) {
    t.match(rpc(grants, method, { uri: 'dagu://wiki/team-b/secret' }), { allow: false, status: 404 }, `${method} of another workspace's Wiki page, whatever ?workspace= said`);
    t.match(rpc(grants, method, { uri: 'dagu://wiki/team-a/runbook' }), { allow: true, roleRank: DEVELOPER, workspace: 'team-a' }, `${method} in the granted workspace`);
    t.match(rpc(KEYS.bound, method, { uri: 'dagu://docs/team-b' }), { allow: false, status: 404 }, `${method}: bound key, the deprecated docs alias of another workspace`);
    t.match(rpc(KEYS.bound, method, { uri: 'dagu://runs/other-teams-dag/20260101/logs' }), { allow: false, code: 'workspace_required' }, `${method}: bound key, a run (no workspace)`);
    t.match(rpc(grants, method, { uri: 'dagu://runs/other-teams-dag/20260101' }), { allow: true, roleRank: VIEWER, workspace: null }, `${method}: grants key reads a run as viewer`);
  }
  const unplaced: [string, string][] = [
    ['dagu://wiki/team-a/x/y', 'a path Dagu does not serve (three segments)'],
    ['dagu://user@wiki/team-b/x', 'user info (Go reads the host as wiki)'],
    ['dagu://wiki:80/team-b/x', 'a port'],
    ['DAGU://wiki/team-b/x', 'an upper-case scheme (Go lower-cases it)'],
    ['dagu://Wiki/team-b/x', 'an upper-case host'],
    ['dagu://wiki/team-b/x#frag', 'a fragment'],
    ['dagu://wiki/team%zz/x', 'a malformed escape'],
    ['dagu://wiki/team-a\\..\\team-b/x', 'a backslash'],
    [' dagu://wiki/team-a/x', 'a leading space'],
    ['file:///etc/passwd', 'another scheme'],
    ['dagu://secrets/x', 'a family the map does not list'],
  ];
  for (const [uri, why] of unplaced) t.match(rpc(grants, 'resources/read', { uri }), { allow: false, code: 'workspace_required' }, `resources/read ${JSON.stringify(uri)}: ${why} → not attributed`);
  t.match(rpc(grants, 'resources/read', { uri: 'dagu://wiki//team-a/runbook' }), { allow: true, workspace: 'team-a' }, 'leading slashes are trimmed as Dagu trims them');
  t.match(rpc(grants, 'resources/read', { uri: 'dagu://wiki/team%2Db/x' }), { allow: false, status: 404 }, 'a percent-encoded workspace is decoded as Dagu decodes it');
  t.match(rpc(grants, 'resources/read', {}), { allow: false, code: 'workspace_required' }, 'no uri');
  t.match(rpc(KEYS.all, 'resources/read', { uri: 'dagu://wiki/team-b/secret' }), { allow: true, workspace: 'team-b' }, 'an all-workspaces key: there');

  t.match(rpc(grants, 'prompts/get', { name: 'dagu_edit_wiki_page', arguments: { workspace: 'team-b', path: 'x', change: 'y' } }), { allow: false, status: 404 }, 'prompts/get naming another workspace');
  t.match(rpc(grants, 'prompts/get', { name: 'dagu_edit_wiki_page', arguments: { workspace: 'team-a', path: 'x', change: 'y' } }), { allow: true, workspace: 'team-a' }, 'prompts/get in the granted workspace');
  t.match(rpc(KEYS.bound, 'prompts/get', { name: 'dagu_edit_dag', arguments: { name: 'x', change: 'y' } }), { allow: false, code: 'workspace_required' }, 'prompts/get naming a DAG: not for a bound key');
  t.match(rpc(KEYS.bound, 'prompts/get', { name: 'dagu_create_dag', arguments: { goal: 'x' } }), { allow: true, workspace: 'team-a' }, 'prompts/get naming nothing: the route\'s own');
  t.match(rpc(grants, 'prompts/get', { name: 'unknown_prompt' }), { allow: false, code: 'workspace_required' }, 'an unlisted prompt: not attributed');
  for (const method of ['completion/complete', 'tasks/get', 'tasks/list', 'tasks/result', 'tasks/cancel']) {
    t.match(rpc(grants, method, { ref: { type: 'ref/prompt', name: 'dagu_edit_wiki_page' }, argument: { name: 'workspace', value: '' } }), { allow: false, code: 'workspace_required' }, `${method}: names nothing Keygate can place, refused to a scoped key`);
    t.match(rpc(KEYS.all, method, {}), { allow: true }, `${method}: an all-workspaces key`);
  }
  for (const method of ['initialize', 'tools/list', 'resources/list', 'resources/templates/list', 'prompts/list', 'ping']) {
    t.match(rpc(KEYS.bound, method, {}), { allow: true, workspace: 'team-a' }, `${method}: names no object, acts where the URL said`);
  }
  t.throws(() => rpc(grants, 'resources/read', JSON.parse('{"uri":"dagu://reference/tools","URI":"dagu://wiki/team-b/x"}')), /would be read as "uri"/, 'a case variant of uri is refused by the reader');

  // A2A (Dagen's /a2a, workspace: key): task ids name no workspace; a v1.0 tenant, when given, does
  const a2a = table.match('POST', undefined, '/a2a')!.route;
  const a2aPolicy = a2a.config.jsonrpc!;
  const agentsBound = accessOf(storedKey({ role: 'viewer', scopes: ['agents'], workspace: 'ws-42' }));
  const agentsAll = accessOf(storedKey({ role: 'viewer', scopes: ['agents'] }));
  const a2aCall = (access: typeof grants, method: string, params: Record<string, unknown>) => {
    const p = parseCall(Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method, params })), argumentFields(a2aPolicy));
    if (!p.ok) throw new Error(p.message);
    const d = decide(a2a, access, { nowMs: Date.now(), workspace: undefined });
    if (!d.allow) throw new Error(d.message);
    return authoriseCall(a2aPolicy, a2a.minRoleRank, access, d, p.call, 'a2a');
  };
  t.match(a2aCall(agentsBound, 'GetTask', { tenant: '', id: 'task-1' }), { allow: true, workspace: 'ws-42' }, 'A2A: no tenant, the key\'s workspace goes to Dagen');
  t.match(a2aCall(agentsBound, 'SendMessage', { tenant: 'ws-42', message: {} }), { allow: true, workspace: 'ws-42' }, 'A2A: its own tenant');
  t.match(a2aCall(agentsBound, 'ListTasks', { tenant: 'ws-7' }), { allow: false, status: 404 }, 'A2A: a bound key naming another tenant');
  t.match(a2aCall(agentsBound, 'GetTask', { tenant: ' ws-42', id: 'x' }), { allow: false, code: 'workspace_required' }, 'A2A: a tenant another reader would trim: not attributed');
  t.match(a2aCall(agentsAll, 'ListTasks', { tenant: 'ws-7' }), { allow: true, workspace: 'ws-7' }, 'A2A: an all-workspaces key acts in the tenant it names');
  t.match(a2aCall(agentsBound, 'tasks/get', { id: 'task-1' }), { allow: true, workspace: 'ws-42' }, 'A2A v0.3 (no tenant): the key\'s workspace; MCP\'s tasks/get rule does not apply here');
  t.throws(() => a2aCall(agentsBound, 'GetTask', JSON.parse('{"tenant":"ws-42","Tenant":"ws-7"}')), /would be read as "tenant"/, 'a case variant of tenant is refused by the reader');
});
