// JSON-RPC method policies (A2A, MCP): the pure check, and its HTTP behaviour through the gateway.

import t from 'tap';
import { request } from 'undici';
import type { JsonRpcPolicy } from '../src/config/types.js';
import { allowCall, parseCall } from '../src/jsonrpc/policy.js';
import { withKeySchemeDeclared } from '../src/proxy/agent-card.js';
import { startStack, type Stack } from './helpers.js';

const POLICY: JsonRpcPolicy = {
  methods: { initialize: 'viewer', 'tools/list': 'viewer', 'admin/reset': 'deny' },
  tools: { dagu_read: 'viewer', dagu_change: 'developer', dagu_execute: 'operator' },
  default_tool: 'deny',
  max_body_bytes: 2048,
};

t.test('parseCall: one call with id, method and tool; batches and malformed input refused', async (t) => {
  const call = (v: unknown) => parseCall(Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)));
  t.same(call({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'dagu_read' } }), { ok: true, call: { id: 7, method: 'tools/call', tool: 'dagu_read' } });
  t.same(call({ jsonrpc: '2.0', id: 'a', method: 'tools/list' }), { ok: true, call: { id: 'a', method: 'tools/list', tool: undefined } });
  t.same(call({ jsonrpc: '2.0', method: 'notifications/initialized' }), { ok: true, call: { id: null, method: 'notifications/initialized', tool: undefined } });
  t.match(call('{nope'), { ok: false, code: -32700, id: null });
  t.match(call([{ jsonrpc: '2.0', id: 1, method: 'tools/list' }]), { ok: false, code: -32600, message: /batches/ });
  t.match(call({ jsonrpc: '1.0', id: 3, method: 'x' }), { ok: false, code: -32600, id: 3 }, 'the id is kept for the error');
  t.match(call({ jsonrpc: '2.0', id: 4, method: 'tools/call', params: {} }), { ok: false, code: -32600, id: 4 });
  t.match(call('"just a string"'), { ok: false, code: -32600 });
  t.same(call({ jsonrpc: '2.0', id: 9, result: { roots: [] } }), { ok: true, call: { id: 9, method: null, tool: undefined } }, "a client's answer to a server request");
  t.match(call({ jsonrpc: '2.0', result: {} }), { ok: false, code: -32600 }, 'an answer without an id is not one');
});

t.test('allowCall: methods, tools, defaults and deny', async (t) => {
  const c = (method: string, tool?: string) => ({ id: 1, method, tool });
  const VIEWER = 1, OPERATOR = 2, DEVELOPER = 3, ADMIN = 5;
  t.match(allowCall(POLICY, 0, VIEWER, c('tools/list')), { allow: true });
  t.match(allowCall(POLICY, 0, VIEWER, c('tools/call', 'dagu_read')), { allow: true });
  t.match(allowCall(POLICY, 0, VIEWER, c('tools/call', 'dagu_change')), { allow: false, message: 'tool "dagu_change" needs role developer' });
  t.match(allowCall(POLICY, 0, DEVELOPER, c('tools/call', 'dagu_change')), { allow: true });
  t.match(allowCall(POLICY, 0, OPERATOR, c('tools/call', 'dagu_execute')), { allow: true });
  t.match(allowCall(POLICY, 0, ADMIN, c('tools/call', 'rm_rf')), { allow: false, message: /not allowed/ }, 'unknown tools: default_tool deny, whatever the role');
  t.match(allowCall(POLICY, 0, ADMIN, c('admin/reset')), { allow: false }, 'a denied method');
  t.match(allowCall(POLICY, OPERATOR, VIEWER, c('resources/list')), { allow: false, message: /needs role operator/ }, "unlisted methods need the route's role");
  t.match(allowCall({ ...POLICY, default_method: 'deny' }, 0, ADMIN, c('resources/list')), { allow: false }, 'or default_method');
  const answer = { id: 9, method: null, tool: undefined };
  t.match(allowCall({ ...POLICY, default_method: 'deny' }, VIEWER, VIEWER, answer), { allow: true }, "answers to the server's requests need the route's role only");
  t.match(allowCall(POLICY, OPERATOR, VIEWER, answer), { allow: false });
});

t.test('the agent card declares the key scheme in its own protocol version, once', async (t) => {
  const v03 = withKeySchemeDeclared({ name: 'a', protocolVersion: '0.3.0', securitySchemes: { b: { type: 'http', scheme: 'bearer' } }, security: [{ b: [] }] }) as Record<string, any>;
  t.same(v03.securitySchemes.keygate, { type: 'apiKey', in: 'header', name: 'X-API-Key', description: v03.securitySchemes.keygate.description });
  t.same(v03.security, [{ b: [] }, { keygate: [] }], 'an alternative, not an extra requirement');
  const v1 = withKeySchemeDeclared({ name: 'a', supportedInterfaces: [] }) as Record<string, any>;
  t.same(v1.securitySchemes.keygate.apiKeySecurityScheme.name, 'X-API-Key');
  t.same(v1.securityRequirements, [{ schemes: { keygate: { list: [] } } }]);
  const already = { name: 'a', securitySchemes: { k: { type: 'apiKey', in: 'header', name: 'x-api-key' } } };
  t.equal(withKeySchemeDeclared(already), already, 'a card that already declares X-API-Key is left alone');
});

const ROUTES = `
routes:
  - path: /mcp
    upstream: dagu
    surface: mcp
    role: viewer
    jsonrpc:
      methods: { initialize: viewer, tools/list: viewer }
      tools: { dagu_read: viewer, dagu_change: developer, dagu_execute: operator }
      tool_workspaces: { dagu_change: { argument: workspace, when: { type: [upsert_wiki_page] } } }
      max_body_bytes: 2048
  - path: /a2a
    upstream: dagen
    surface: a2a
    scope: agents
    jsonrpc:
      methods: { message/send: viewer, SendMessage: viewer, tasks/get: viewer }
      default_method: deny
`;

let s: Stack;
t.before(async () => {
  s = await startStack(t.testdir(), { routes: ROUTES });
});
t.teardown(() => s.close());

async function rpc(path: string, body: unknown, headers: Record<string, string> = {}) {
  const raw = typeof body === 'string' ? body : JSON.stringify(body);
  const r = await request(`${s.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: raw });
  return { status: r.statusCode, headers: r.headers, json: JSON.parse(await r.body.text()) as Record<string, any>, raw };
}

t.test('over HTTP: allowed calls forwarded byte for byte; refusals are JSON-RPC errors with the id', async (t) => {
  const viewer = await s.key({ name: 'rpc-viewer', role: 'viewer' });
  const developer = await s.key({ name: 'rpc-developer', role: 'developer' });
  const restOnly = await s.key({ name: 'rpc-rest', role: 'admin', surfaces: 'rest_api' });
  const workflows = await s.key({ name: 'rpc-workflows', role: 'admin', scopes: 'workflows' });
  const h = (k: { secret: string }) => ({ 'x-api-key': k.secret });

  const body = '{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"dagu_read","arguments":{"x":[1, 2]}}}';
  const ok = await rpc('/mcp', body, h(viewer));
  t.equal(ok.status, 200);
  t.equal(ok.json.body, body, 'the upstream got the very bytes that were checked');

  const before = s.dagu.received.length + s.dagen.received.length;
  const cases: [string, unknown, Record<string, string>, number, number, unknown][] = [
    ['tool above the role', { jsonrpc: '2.0', id: 42, method: 'tools/call', params: { name: 'dagu_change' } }, h(viewer), 403, -31403, 42],
    ['unknown tool', { jsonrpc: '2.0', id: 'x', method: 'tools/call', params: { name: 'shell' } }, h(developer), 403, -31403, 'x'],
    ['no key', { jsonrpc: '2.0', id: 43, method: 'tools/list' }, {}, 401, -31401, 43],
    ['unknown key', { jsonrpc: '2.0', id: 44, method: 'tools/list' }, { 'x-api-key': 'dg_nope' }, 401, -31401, 44],
    ['surface not allowed', { jsonrpc: '2.0', id: 45, method: 'tools/list' }, h(restOnly), 403, -31403, 45],
    ['batch', [{ jsonrpc: '2.0', id: 1, method: 'tools/list' }], h(viewer), 400, -32600, null],
    ['malformed', '{"jsonrpc":', h(viewer), 400, -32700, null],
  ];
  for (const [name, payload, headers, status, code, id] of cases) {
    const r = await rpc('/mcp', payload, headers);
    t.equal(r.status, status, `${name}: HTTP ${status}`);
    t.same({ jsonrpc: r.json.jsonrpc, id: r.json.id, code: r.json.error?.code }, { jsonrpc: '2.0', id, code }, `${name}: JSON-RPC error with the request id`);
    if (status === 401) t.match(String(r.headers['www-authenticate']), /^Bearer realm="keygate"/, `${name}: WWW-Authenticate`);
    if (name === 'tool above the role') t.equal(r.headers['www-authenticate'], 'Bearer realm="keygate", error="insufficient_scope"');
  }
  const a2aScope = await rpc('/a2a', { jsonrpc: '2.0', id: 46, method: 'message/send', params: {} }, h(workflows));
  t.match(a2aScope, { status: 403, json: { id: 46, error: { code: -31403 } } }, 'A2A without the agents scope');
  const big = await rpc('/mcp', { jsonrpc: '2.0', id: 47, method: 'tools/list', pad: 'x'.repeat(4096) }, h(viewer));
  t.match(big, { status: 413, json: { error: { code: -32600 } } }, 'a call over max_body_bytes');
  t.equal(s.dagu.received.length + s.dagen.received.length, before, 'no refused call reached an upstream');

  const agents = await s.key({ name: 'rpc-agents', role: 'viewer', scopes: 'agents' });
  t.equal((await rpc('/a2a', { jsonrpc: '2.0', id: 48, method: 'SendMessage', params: {} }, h(agents))).status, 200, 'v1.0 method name');
  t.equal((await rpc('/a2a', { jsonrpc: '2.0', id: 49, method: 'message/send', params: {} }, h(agents))).status, 200, 'v0.3 method name');
  t.match(await rpc('/a2a', { jsonrpc: '2.0', id: 50, method: 'tasks/cancel', params: {} }, h(agents)), { status: 403, json: { id: 50 } }, 'default_method deny');
});

t.test('over HTTP: a call that reads two ways, a prototype name, a body on GET/DELETE: refused, never forwarded', async (t) => {
  const viewer = await s.key({ name: 'rpc-viewer-2', role: 'viewer' });
  const h = { 'x-api-key': viewer.secret };
  const before = s.dagu.received.length;
  const issue = '{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call","params":{"name":"dagu_change","arguments":{}}}';
  t.match(await rpc('/mcp', issue, h), { status: 400, json: { jsonrpc: '2.0', id: 1, error: { code: -32600 } } }, 'the issue: Method beside method');
  t.match(await rpc('/mcp', '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"dagu_read","Name":"dagu_change"}}', h), { status: 400, json: { id: 2, error: { code: -32600 } } }, 'params.Name');
  t.match(await rpc('/mcp', '{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"dagu_read","name":"dagu_change"}}', h), { status: 400, json: { id: 3, error: { code: -32600 } } }, 'a duplicate name');
  t.match(await rpc('/mcp', '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"dagu_read"},"paramſ":{"name":"dagu_change"}}', h), { status: 400, json: { id: 4 } }, 'paramſ (U+017F)');
  t.match(await rpc('/mcp', '\ufeff{"jsonrpc":"2.0","id":5,"method":"tools/list"}', h), { status: 400, json: { id: null, error: { code: -32700 } } }, 'a BOM');
  const agents = await s.key({ name: 'rpc-agents-2', role: 'viewer', scopes: 'agents' });
  for (const method of ['constructor', 'toString', 'hasOwnProperty', 'valueOf', '__proto__']) {
    t.match(await rpc('/a2a', { jsonrpc: '2.0', id: 6, method }, { 'x-api-key': agents.secret }), { status: 403, json: { id: 6, error: { code: -31403 } } }, `method ${method}: default_method deny, not Object.prototype`);
  }
  t.match(await rpc('/mcp', { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: '__proto__' } }, h), { status: 403, json: { id: 7 } }, 'tool __proto__ meets default_tool');
  for (const method of ['GET', 'DELETE']) {
    const r = await request(`${s.url}/mcp`, { method, headers: { ...h, 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"dagu_change"}}' });
    const json = (await r.body.json()) as Record<string, any>;
    t.match({ status: r.statusCode, json }, { status: 400, json: { error: { code: -32600 } } }, `a body on ${method}`);
  }
  t.equal(s.dagu.received.length, before, 'none of these reached the upstream');
  t.equal((await request(`${s.url}/mcp`, { method: 'GET', headers: h })).statusCode, 200, 'a GET without a body still goes through');
});

t.test('over HTTP: MCP 2026 mirror headers (Mcp-Method, Mcp-Name) must say what the body says', async (t) => {
  const viewer = await s.key({ name: 'rpc-mirror', role: 'viewer' });
  const h = { 'x-api-key': viewer.secret };
  const body = { jsonrpc: '2.0', id: 31, method: 'tools/call', params: { name: 'dagu_read', arguments: {} } };
  const before = s.dagu.received.length;
  t.match(await rpc('/mcp', body, { ...h, 'mcp-method': 'tools/call', 'mcp-name': 'dagu_change' }), { status: 400, json: { id: 31, error: { code: -32600, message: /Mcp-Name/ } } }, 'Mcp-Name naming another tool than the body');
  t.match(await rpc('/mcp', body, { ...h, 'mcp-method': 'tools/list' }), { status: 400, json: { id: 31, error: { code: -32600, message: /Mcp-Method/ } } }, 'Mcp-Method naming another method');
  t.match(await rpc('/mcp', { jsonrpc: '2.0', id: 32, method: 'tools/list' }, { ...h, 'mcp-name': 'dagu_change' }), { status: 400, json: { id: 32 } }, 'Mcp-Name on a call that names nothing');
  t.equal(s.dagu.received.length, before, 'none reached the upstream');
  t.equal((await rpc('/mcp', body, { ...h, 'mcp-method': 'tools/call', 'mcp-name': 'dagu_read' })).status, 200, 'headers that mirror the body: forwarded');
  t.equal((await rpc('/mcp', body, h)).status, 200, 'no mirror headers (MCP before 2026-07-28): forwarded');
});

t.test('over HTTP: a tools/call acts where its arguments say, for keys limited to workspaces', async (t) => {
  const grants = await s.key({ name: 'rpc-grants', role: 'viewer', workspaceAccess: { all: false, grants: [{ workspace: 'team-a', role: 'developer' }] } });
  const bound = await s.key({ name: 'rpc-bound', role: 'developer', workspace: 'team-a' });
  const call = (id: number, args: Record<string, unknown>, tool = 'dagu_change') => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: tool, arguments: args } });
  const before = s.dagu.received.length;
  const dag = { mode: 'apply', type: 'upsert_dag', name: 'other-teams-dag', spec: 'steps: []' };
  t.match(await rpc('/mcp', call(1, dag), { 'x-api-key': grants.secret }), { status: 403, json: { id: 1, error: { code: -31403, message: /names no workspace/ } } }, 'grants key: a DAG change names no workspace');
  t.match(await rpc('/mcp', call(2, { action: 'start', name: 'x' }, 'dagu_execute'), { 'x-api-key': bound.secret }), { status: 403, json: { id: 2 } }, 'bound key: dagu_execute');
  t.match(await rpc('/mcp', call(3, { type: 'upsert_wiki_page', workspace: 'team-b', path: 'p' }), { 'x-api-key': grants.secret }), { status: 404, json: { id: 3, error: { code: -31403 } } }, 'a wiki change in a workspace the key has no grant for');
  t.equal(s.dagu.received.length, before, 'none reached the upstream');
  const ok = await rpc('/mcp', call(4, { type: 'upsert_wiki_page', workspace: 'team-a', path: 'p' }), { 'x-api-key': grants.secret });
  t.equal(ok.status, 200, 'a wiki change in the granted workspace');
  t.match(ok.json.headers, { 'x-keygate-workspace': 'team-a', 'x-keygate-role': 'developer' }, 'upstream told the workspace and role the call acts with');
});
