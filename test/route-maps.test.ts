// The shipped route maps: config/routes/dagu.yaml against Dagu's operation table
// (test/fixtures/dagu-route-roles.tsv, one row per operation), config/routes/dagen.yaml against
// Dagen's External API, and gateway.example.yaml fronting both. Resolution uses the loader and
// RouteTable directly (the same code `keygate routes explain` runs); a few rows go through the CLI
// too, and a real gateway with echo upstreams checks the workspace rule and the Dagen header.

import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import t from 'tap';
import { request } from 'undici';
import { loadConfig } from '../src/config/load.js';
import type { GatewayConfig, RouteConfig } from '../src/config/types.js';
import { startEchoUpstream } from '../src/demo/echo-upstream.js';
import { normaliseTarget } from '../src/routes/path.js';
import { RouteTable, type RouteMatch } from '../src/routes/table.js';
import { Gateway } from '../src/server.js';
import { BIN, CHILD_ENV } from './binary.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DAGU_MAP = join(ROOT, 'config/routes/dagu.yaml');
const DAGU_130_MAP = join(ROOT, 'config/routes/dagu-1.30.yaml');
const DAGEN_MAP = join(ROOT, 'config/routes/dagen.yaml');
const DAGU = 'http://127.0.0.1:8090';
const DAGEN = 'http://127.0.0.1:3000';
const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];

// ---------------------------------------------------------------------------
// The tables

interface DaguRow {
  method: string;
  path: string;
  min_role: string;
  surface: string;
  remote_node_param: string;
  workspace_param: string;
  operation_id: string;
}

function readTsv(file: string): DaguRow[] {
  const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '');
  const header = lines.shift()!.split('\t');
  return lines.map((l) => Object.fromEntries(l.split('\t').map((v, i) => [header[i], v])) as unknown as DaguRow);
}

const DAGU_ROWS = readTsv(join(ROOT, 'test/fixtures/dagu-route-roles.tsv'));

/**
 * Public operations the table marks as taking ?remoteNode= that the map deliberately does not let
 * forward to a remote node (an unauthenticated request is never relayed with a node's credential).
 */
const PUBLIC_WITHOUT_REMOTE = new Set(['POST /api/v1/auth/setup', 'POST /api/v1/webhooks/{fileName}']);

/**
 * Operations of the tables the maps leave out: Dagu's password login and first-run setup
 * (Keygate's clients are machines with keys; a route with expose_login: true opts in).
 */
const NOT_ROUTED = new Set(['login', 'setup']);
const DAGU_ROUTED = DAGU_ROWS.filter((r) => !NOT_ROUTED.has(r.operation_id));

interface DagenRow {
  method: string;
  path: string;
  auth: 'required' | 'none';
  surface: 'rest_api' | 'a2a';
  scopes: string[];
}

// Dagen's External API v1 (../shared/reference/dagen.md) plus the A2A agent card.
const DAGEN_ROWS: DagenRow[] = [
  { method: 'POST', path: '/api/v1/agent/chat', auth: 'required', surface: 'rest_api', scopes: ['agents'] },
  { method: 'GET', path: '/api/v1/agents', auth: 'required', surface: 'rest_api', scopes: ['agents'] },
  { method: 'POST', path: '/api/v1/workflow/{id}/run', auth: 'required', surface: 'rest_api', scopes: ['workflows'] },
  { method: 'GET', path: '/api/v1/workflow/{id}/runs/{run_id}', auth: 'required', surface: 'rest_api', scopes: ['workflows'] },
  { method: 'GET', path: '/api/v1/workflows', auth: 'required', surface: 'rest_api', scopes: ['workflows'] },
  { method: 'POST', path: '/a2a', auth: 'required', surface: 'a2a', scopes: ['agents'] },
  // public; surface a2a so that Keygate declares its key header in the card
  { method: 'GET', path: '/.well-known/agent-card.json', auth: 'none', surface: 'a2a', scopes: [] },
  { method: 'GET', path: '/.well-known/agent.json', auth: 'none', surface: 'a2a', scopes: [] },
];

const A2A_METHODS = [
  'message/send',
  'message/stream',
  'tasks/get',
  'tasks/cancel',
  'tasks/resubscribe',
  'tasks/pushNotificationConfig/set',
  'tasks/pushNotificationConfig/get',
  'tasks/pushNotificationConfig/list',
  'tasks/pushNotificationConfig/delete',
  'agent/getAuthenticatedExtendedCard',
  'SendMessage',
  'SendStreamingMessage',
  'GetTask',
  'ListTasks',
  'CancelTask',
  'SubscribeToTask',
  'CreateTaskPushNotificationConfig',
  'GetTaskPushNotificationConfig',
  'ListTaskPushNotificationConfigs',
  'DeleteTaskPushNotificationConfig',
  'GetExtendedAgentCard',
];

const MCP_METHODS = [
  'initialize',
  'notifications/initialized',
  'ping',
  'tools/list',
  'tools/call',
  'resources/list',
  'resources/templates/list',
  'resources/read',
  'prompts/list',
  'prompts/get',
  'completion/complete',
  'logging/setLevel',
  'notifications/cancelled',
  'notifications/progress',
  'notifications/roots/list_changed',
];

// ---------------------------------------------------------------------------
// Helpers

/** `{fileName}` → `s-fileName`: never equal to a literal segment of either map. */
function sample(pattern: string): string {
  return pattern.replace(/\{([A-Za-z_]+)\}/g, 's-$1');
}

/** Does a concrete path fit a table pattern? */
function fits(pattern: string, path: string): boolean {
  const p = pattern.split('/');
  const c = path.split('/');
  return p.length === c.length && p.every((seg, i) => /^\{.*\}$/.test(seg) ? c[i] !== '' : seg === c[i]);
}

/** One row of a route table resolved against a compiled map: the hit, or why there is none (a failure is reported). */
function resolveRow(t: { fail(message: string): unknown }, table: RouteTable, row: { method: string; path: string; operation_id: string }) {
  const op = `${row.method} ${row.path}`;
  const path = sample(row.path);
  const hit = resolve(table, row.method, path);
  if (NOT_ROUTED.has(row.operation_id)) {
    if (hit) t.fail(`${op}: not routed, got ${hit.match.route.config.name}`);
    return hit ? 'failed' : 'not_routed';
  }
  if (!hit) {
    t.fail(`${op}: no route`);
    return 'failed';
  }
  return { op, path, hit };
}

let tmpCount = 0;
/** Writes a config that includes the given route files by absolute path, with the upstreams they name. */
/** Each include: a file, or `{include, set}` as written in a config. */
type Include = string | { include: string; set: Record<string, string> };

function mapConfigFile(dir: string, includes: Include[], daguBase = '/api/v1'): string {
  const file = join(dir, `maps-${tmpCount++}.yaml`);
  writeFileSync(
    file,
    `upstreams:
  - { name: dagu, api_base_url: "${DAGU}${daguBase}" }
  - { name: dagu130, api_base_url: "${DAGU}/api/v2" }
  - { name: dagu-mcp, api_base_url: "${DAGU}/mcp" }
  - { name: dagen, api_base_url: "${DAGEN}" }
routes:
${includes.map((f) => `  - ${JSON.stringify(typeof f === 'string' ? { include: f } : f)}\n`).join('')}`,
  );
  return file;
}

function mapConfig(dir: string, includes: Include[], daguBase?: string): GatewayConfig {
  return loadConfig(mapConfigFile(dir, includes, daguBase), {});
}

function resolve(table: RouteTable, method: string, target: string, host?: string): { match: RouteMatch; url: string } | undefined {
  const n = normaliseTarget(target);
  if (!n.ok) throw new Error(`${target}: ${n.message}`);
  const match = table.match(method, host, n.path);
  if (!match) return undefined;
  return { match, url: match.route.origin + RouteTable.upstreamPath(match.route, n.path) + (n.query ? `?${n.query}` : '') };
}

function routeOf(cfg: RouteConfig): string {
  return `${(cfg.methods ?? ['*']).join(',')} ${cfg.path}`;
}

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    // a hang guard only: on a loaded 2-core machine one CLI start has taken over 30 s
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, env: CHILD_ENV, timeout: 180_000 }, (err, stdout, stderr) => {
      const killed = (err as { killed?: boolean } | null)?.killed === true;
      done({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr: killed ? `${stderr}(killed by the 180 s hang guard)` : stderr });
    });
  });
}

// ---------------------------------------------------------------------------
// Dagu

t.test('the Dagu table fixture: 224 operations, each once', async (t) => {
  t.equal(DAGU_ROWS.length, 224, '219 REST operations + 2 event-stream + 3 MCP');
  const keys = DAGU_ROWS.map((r) => `${r.method} ${r.path}`);
  t.equal(new Set(keys).size, keys.length, 'no operation twice');
  for (const r of DAGU_ROWS) {
    t.ok(['-', 'viewer', 'operator', 'developer', 'manager', 'admin'].includes(r.min_role), `${r.method} ${r.path}: role ${r.min_role}`);
    t.ok(['none', 'rest_api', 'mcp'].includes(r.surface), `${r.method} ${r.path}: surface ${r.surface}`);
  }
});

t.test('dagu.yaml: every operation resolves to its own route with exactly its requirements', async (t) => {
  const config = mapConfig(t.testdir(), [DAGU_MAP]);
  const table = RouteTable.compile(config);
  const routed = DAGU_ROWS.filter((r) => !NOT_ROUTED.has(r.operation_id));
  t.equal(routed.length, DAGU_ROWS.length - 2, 'login and setup are in the table');
  t.equal(table.routes.length, routed.length, 'one route per operation but login and setup, nothing more');
  t.same(
    new Set(table.routes.map((r) => routeOf(r.config))),
    new Set(routed.map((r) => `${r.method} ${r.path}`)),
    'the routes are exactly the operations of the table',
  );

  let checked = 0;
  for (const row of DAGU_ROWS) {
    const resolved = resolveRow(t, table, row);
    if (resolved === 'not_routed') checked++;
    if (typeof resolved !== 'object') continue;
    const { op, path, hit } = resolved;
    const r = hit.match.route.config;
    const open = row.min_role === '-';
    const mcp = row.surface === 'mcp';
    const ws = row.workspace_param;
    const got = {
      route: routeOf(r),
      auth: r.auth,
      role: r.role ?? null,
      surface: open ? 'n/a' : r.surface,
      remote_node: r.remote_node,
      workspace: r.workspace ?? null,
      query_token: r.query_token,
      jsonrpc: r.jsonrpc !== undefined,
      upstream: r.upstream,
      url: hit.url,
      requires: r.requires ?? null,
      answer: r.answer ?? null,
    };
    const want = {
      route: op,
      auth: open || row.surface === 'none' ? 'none' : 'required',
      role: open ? null : row.min_role,
      surface: open ? 'n/a' : row.surface,
      remote_node: row.remote_node_param === 'yes' && !PUBLIC_WITHOUT_REMOTE.has(op),
      workspace: ws === '' ? null : ws === 'query' ? { from: 'query', name: 'workspace' } : { from: 'param', name: ws.replace(/^path:/, '') },
      query_token: row.path.startsWith('/api/v1/events/') || row.path === '/mcp',
      jsonrpc: op === 'POST /mcp',
      upstream: mcp ? 'dagu-mcp' : 'dagu',
      url: DAGU + path, // the upstream path is the request path
      requires: { dagu: '>=2.0.0' }, // never forwarded to a Dagu 1.30 (another API under /api/v1)
      answer: row.operation_id === 'getCurrentUser' ? 'current_user' : null,
    };
    if (t.same(got, want, op)) checked++;
  }
  t.equal(checked, DAGU_ROWS.length, `all ${DAGU_ROWS.length} operations as in the table`);

  for (const op of PUBLIC_WITHOUT_REMOTE) {
    const row = DAGU_ROWS.find((r) => `${r.method} ${r.path}` === op)!;
    t.equal(row.remote_node_param, 'yes', `${op}: Dagu takes ?remoteNode= here, the gateway deliberately does not`);
    t.equal(row.min_role, '-', `${op} is public`);
  }
  for (const id of NOT_ROUTED) t.equal(DAGU_ROWS.find((r) => r.operation_id === id)?.min_role, '-', `${id} is public in Dagu and not routed`);

  // the {param} values come back decoded, and an encoded value goes upstream as it came
  const enc = resolve(table, 'GET', '/api/v1/dags/my%20dag/dag-runs/r%2B1?remoteNode=prod');
  t.equal(enc?.match.route.config.name, 'dagu.getDAGDAGRunDetails');
  t.same(enc?.match.params, { fileName: 'my dag', dagRunId: 'r+1' });
  t.equal(enc?.url, `${DAGU}/api/v1/dags/my%20dag/dag-runs/r%2B1?remoteNode=prod`);
});

t.test('dagu.yaml: literal routes win over their {param} siblings', async (t) => {
  const table = RouteTable.compile(mapConfig(t.testdir(), [DAGU_MAP]));
  const cases: [string, string, string, Record<string, string> | undefined][] = [
    ['GET', '/api/v1/dags/search', 'dagu.searchDAGs', undefined],
    ['GET', '/api/v1/dags/labels', 'dagu.getAllDAGLabels', undefined],
    ['GET', '/api/v1/dags/tags', 'dagu.getAllDAGTags', undefined],
    ['GET', '/api/v1/dags/deploy', 'dagu.getDAGDetails', { fileName: 'deploy' }],
    ['DELETE', '/api/v1/dags/search', 'dagu.deleteDAG', { fileName: 'search' }], // no DELETE on the literal: the DAG named "search"
    ['POST', '/api/v1/dag-runs/enqueue', 'dagu.enqueueDAGRunFromSpec', undefined],
    ['GET', '/api/v1/dag-runs/enqueue', 'dagu.listDAGRunsByName', { name: 'enqueue' }],
    ['GET', '/api/v1/profiles/_global', 'dagu.getGlobalRuntimeProfileDefaults', undefined],
    ['GET', '/api/v1/profiles/nightly', 'dagu.getRuntimeProfile', { profileName: 'nightly' }],
    ['PUT', '/api/v1/profiles/_global/variables/K', 'dagu.setGlobalRuntimeProfileDefaultVariable', { key: 'K' }],
    ['PUT', '/api/v1/profiles/nightly/variables/K', 'dagu.setRuntimeProfileVariable', { profileName: 'nightly', key: 'K' }],
    ['GET', '/api/v1/profiles/_workspaces/team-a', 'dagu.getWorkspaceRuntimeProfileDefaults', { workspaceName: 'team-a' }],
    ['GET', '/api/v1/notification-routes/global', 'dagu.getGlobalNotificationRoutes', undefined],
    ['POST', '/api/v1/dag-runs/d/r/human-tasks/resume', 'dagu.resumeHumanTaskDAGRun', undefined],
  ];
  for (const [method, path, name, params] of cases) {
    const hit = resolve(table, method, path);
    t.equal(hit?.match.route.config.name, name, `${method} ${path}`);
    if (params) t.same(hit?.match.params, params, `${method} ${path}: params`);
  }
  // For every routed path, every method the table does not list for it: 404, unless another
  // operation of the table also fits that concrete path (then the map must pick one of those).
  let refused = 0;
  for (const row of DAGU_ROWS) {
    const path = sample(row.path);
    for (const method of METHODS) {
      const fitting = DAGU_ROUTED.filter((r) => r.method === method && fits(r.path, path)).map((r) => `${r.method} ${r.path}`);
      const hit = resolve(table, method, path);
      if (fitting.length === 0) {
        if (hit) t.fail(`${method} ${path}: expected no route, got ${hit.match.route.config.name}`);
        else refused++;
      } else if (!hit || !fitting.includes(routeOf(hit.match.route.config))) {
        t.fail(`${method} ${path}: expected one of ${fitting.join(' | ')}`);
      }
    }
  }
  t.ok(refused > 500, `${refused} method/path pairs not in the table get no route`);
});

t.test('dagu.yaml: operations not in the table get no route (404)', async (t) => {
  const table = RouteTable.compile(mapConfig(t.testdir(), [DAGU_MAP]));
  const absent: [string, string][] = [
    ['DELETE', '/api/v1/health'],
    ['POST', '/api/v1/health'],
    ['GET', '/api/v1/nonexistent'],
    ['PUT', '/api/v1/dags'],
    ['DELETE', '/api/v1/dags'],
    ['POST', '/api/v1/dags/deploy/stop'], // stop is on dag-runs; the DAG has stop-all
    ['GET', '/api/v1'],
    ['GET', '/api/v1/'],
    ['GET', '/api/v1/dags/'],
    ['GET', '/api/v1/dags/deploy/spec/extra'],
    ['GET', '/api/v1/terminal/ws'], // login JWT only: API keys are not valid there
    ['GET', '/mcp/'],
    ['GET', '/mcp/extra'],
    ['PUT', '/mcp'],
    ['GET', '/'],
    ['GET', '/api/v2/dags'],
    ['GET', '/API/V1/DAGS'],
    ['OPTIONS', '/api/v1/dags'],
    ['HEAD', '/api/v1/auth/login'],
  ];
  for (const [method, path] of absent) t.equal(resolve(table, method, path)?.match.route.config.name, undefined, `${method} ${path}: 404`);
  t.equal(resolve(table, 'HEAD', '/api/v1/health')?.match.route.config.name, 'dagu.getHealthStatus', 'HEAD follows GET');
});

t.test('dagu.yaml: the MCP route carries the tool and method policy', async (t) => {
  const table = RouteTable.compile(mapConfig(t.testdir(), [DAGU_MAP]));
  const mcp = resolve(table, 'POST', '/mcp?workspace=ops&token=x')!;
  t.equal(mcp.url, `${DAGU}/mcp?workspace=ops&token=x`, 'query forwarded as is here; the proxy strips token');
  const p = mcp.match.route.config.jsonrpc!;
  t.same({ ...p.tools }, { dagu_read: 'viewer', dagu_change: 'developer', dagu_execute: 'operator' }, 'Dagu’s three tools');
  t.equal(p.default_tool, 'deny', 'any other tool is refused');
  t.equal(p.default_method, 'deny', 'a method not listed is refused');
  for (const m of MCP_METHODS) t.equal(p.methods[m], 'viewer', `${m}: viewer`);
  t.notOk('sampling/createMessage' in p.methods, 'server-to-client requests are not client methods');
  for (const method of ['GET', 'DELETE']) {
    const r = resolve(table, method, '/mcp')!.match.route.config;
    t.equal(r.jsonrpc, undefined, `${method} /mcp has no body to check`);
    t.match(r, { surface: 'mcp', role: 'viewer', query_token: true, remote_node: false });
  }
});

t.test('dagu.yaml is what scripts/gen-dagu-routes.mjs makes of the table', async (t) => {
  const r = await new Promise<{ code: number; out: string }>((done) => {
    execFile(process.execPath, [join(ROOT, 'scripts/gen-dagu-routes.mjs'), '--check'], { cwd: ROOT, env: { ...process.env, NODE_OPTIONS: '' } }, (err, stdout, stderr) =>
      done({ code: err ? 1 : 0, out: stdout + stderr }),
    );
  });
  t.equal(r.code, 0, r.out);
});

t.test('routes explain (the CLI) agrees for a sample of rows', async (t) => {
  t.ok(existsSync(join(ROOT, 'dist/cli.js')), 'dist/ is built (npm run build)');
  const cfg = mapConfigFile(t.testdir(), [DAGU_MAP]);
  const cases: [string, string, Record<string, unknown>][] = [
    ['GET', '/api/v1/dags?workspace=ops', { route: 'dagu.listDAGs', auth: 'required', surface: 'rest_api', role: 'viewer', workspace: { from: 'query', name: 'workspace' }, upstream: 'dagu', upstream_url: `${DAGU}/api/v1/dags?workspace=ops` }],
    ['POST', '/api/v1/dags/deploy/start', { route: 'dagu.executeDAG', role: 'operator', params: { fileName: 'deploy' }, upstream_url: `${DAGU}/api/v1/dags/deploy/start` }],
    ['GET', '/api/v1/dags/search', { route: 'dagu.searchDAGs', role: 'viewer', params: {} }],
    ['PUT', '/api/v1/settings/workspaces/team-a/base-config', { role: 'developer', workspace: { from: 'param', name: 'workspaceName' }, params: { workspaceName: 'team-a' } }],
    ['GET', '/api/v1/events/stream?topic=x', { route: 'dagu.eventStream', role: 'viewer', upstream_url: `${DAGU}/api/v1/events/stream?topic=x` }],
    ['POST', '/mcp', { route: 'dagu.mcp', surface: 'mcp', role: 'viewer', upstream: 'dagu-mcp', upstream_url: `${DAGU}/mcp` }],
    ['GET', '/api/v1/health', { route: 'dagu.getHealthStatus', auth: 'none', role: null }],
    ['POST', '/api/v1/sync/config', {}], // a 404: not in the table (GET and PUT are)
  ];
  // one at a time: eight node processes at once on a loaded 2-core machine starve each other
  const results: Awaited<ReturnType<typeof run>>[] = [];
  for (const [m, p] of cases) results.push(await run(['routes', 'explain', '-c', cfg, m, p, '--json']));
  cases.forEach(([m, p, want], i) => {
    const r = results[i]!;
    const got = JSON.parse(r.stdout || '{}');
    if (Object.keys(want).length === 0) {
      t.equal(r.code, 1, `${m} ${p}: exit 1`);
      t.match(got, { matched: false, status: 404 }, `${m} ${p}: no route`);
    } else {
      t.equal(r.code, 0, `${m} ${p}: exit 0 ${r.stderr}`);
      t.match(got, { matched: true, ...want }, `${m} ${p}`);
    }
  });
});

// ---------------------------------------------------------------------------
// Dagu 1.30 (REST API under /api/v2)

interface Dagu130Row {
  method: string;
  path: string;
  min_role: string;
  /** what Dagu 1.30.2's handler itself checks: public, authenticated, execute, write, admin */
  dagu_check: string;
  remote_node_param: string;
  operation_id: string;
}

const DAGU_130_ROWS = readTsv(join(ROOT, 'test/fixtures/dagu-1.30-route-roles.tsv')) as unknown as Dagu130Row[];
const DAGU_130_ROUTED = DAGU_130_ROWS.filter((r) => !NOT_ROUTED.has(r.operation_id));
const ROLE_RANK: Record<string, number> = { '-': 0, viewer: 1, operator: 2, developer: 3, manager: 4, admin: 5 };
/** The least Keygate role covering each of Dagu 1.30's own checks (its manager is Keygate's developer). */
const DAGU_130_CHECK_ROLE: Record<string, string> = { public: '-', authenticated: 'viewer', execute: 'operator', write: 'developer', admin: 'admin' };
/** Where the map is deliberately stricter than Dagu 1.30, and why. */
const STRICTER_THAN_DAGU_130: Record<string, string> = {
  executeDAGRunFromSpec: 'developer', // runs a spec sent in the request: new code, as in the 2.x map
  enqueueDAGRunFromSpec: 'developer',
  changePassword: 'admin', // would change the gateway's own Dagu identity
};

t.test('the Dagu 1.30 table fixture: the 67 operations of Dagu 1.30.2, each once, never weaker than Dagu', async (t) => {
  t.equal(DAGU_130_ROWS.length, 67, "Dagu 1.30.2's api/v2 spec has 67 operations");
  const keys = DAGU_130_ROWS.map((r) => `${r.method} ${r.path}`);
  t.equal(new Set(keys).size, keys.length, 'no operation twice');
  t.equal(new Set(DAGU_130_ROWS.map((r) => r.operation_id)).size, 67, 'operation ids unique');
  let exact = 0;
  for (const r of DAGU_130_ROWS) {
    const op = `${r.method} ${r.path}`;
    t.ok(r.path.startsWith('/api/v2/'), `${op}: under /api/v2`);
    t.ok(r.dagu_check in DAGU_130_CHECK_ROLE, `${op}: Dagu's check ${r.dagu_check}`);
    const least = DAGU_130_CHECK_ROLE[r.dagu_check]!;
    const stricter = STRICTER_THAN_DAGU_130[r.operation_id];
    if (stricter !== undefined) {
      t.equal(r.min_role, stricter, `${op}: deliberately ${stricter}`);
      t.ok(ROLE_RANK[stricter]! > ROLE_RANK[least]!, `${op}: stricter than Dagu's ${least}`);
    } else if (r.min_role === least) exact++;
    else t.fail(`${op}: role ${r.min_role}, Dagu's check ${r.dagu_check} means ${least}`);
  }
  t.equal(exact, 67 - Object.keys(STRICTER_THAN_DAGU_130).length, 'every other operation: exactly the role Dagu itself checks');
  const byCheck = (c: string) => DAGU_130_ROWS.filter((r) => r.dagu_check === c).length;
  t.same({ public: byCheck('public'), authenticated: byCheck('authenticated'), execute: byCheck('execute'), write: byCheck('write'), admin: byCheck('admin') }, { public: 3, authenticated: 27, execute: 16, write: 4, admin: 17 });
  t.same(DAGU_130_ROWS.filter((r) => r.dagu_check === 'public').map((r) => r.operation_id).sort(), ['getHealthStatus', 'login', 'triggerWebhook']);
  t.notOk(DAGU_130_ROWS.some((r) => r.min_role === 'manager'), "no route needs Keygate's manager: Dagu 1.30's manager is Keygate's developer");
});

t.test('dagu-1.30.yaml: every operation resolves to its own route with exactly its requirements', async (t) => {
  const table = RouteTable.compile(mapConfig(t.testdir(), [DAGU_130_MAP], '/api/v2'));
  t.equal(table.routes.length, DAGU_130_ROUTED.length, 'one route per operation but login, nothing more');
  t.same(new Set(table.routes.map((r) => routeOf(r.config))), new Set(DAGU_130_ROUTED.map((r) => `${r.method} ${r.path}`)));
  let checked = 0;
  for (const row of DAGU_130_ROWS) {
    const resolved = resolveRow(t, table, row);
    if (resolved === 'not_routed') checked++;
    if (typeof resolved !== 'object') continue;
    const { op, path, hit } = resolved;
    const r = hit.match.route.config;
    const open = row.min_role === '-';
    const got = {
      name: r.name,
      route: routeOf(r),
      auth: r.auth,
      role: r.role ?? null,
      surface: r.surface,
      remote_node: r.remote_node,
      pass_authorization: r.pass_authorization,
      workspace: r.workspace ?? null,
      query_token: r.query_token,
      upstream: r.upstream,
      url: hit.url,
      requires: r.requires ?? null,
      answer: r.answer ?? null,
    };
    const want = {
      name: `dagu-1.30.${row.operation_id}`,
      route: op,
      auth: open ? 'none' : 'required',
      role: open ? null : row.min_role,
      surface: 'rest_api',
      remote_node: row.remote_node_param === 'yes' && !open,
      pass_authorization: row.operation_id === 'triggerWebhook',
      workspace: null, // Dagu 1.30 has no workspaces
      query_token: false, // nor an event stream
      upstream: 'dagu',
      url: DAGU + path, // the upstream path is the request path (/api/v2 stays /api/v2)
      requires: { dagu: '>=1.30.0 <2.0.0' },
      answer: row.operation_id === 'getCurrentUser' ? 'current_user' : null,
    };
    if (t.same(got, want, op)) checked++;
  }
  t.equal(checked, DAGU_130_ROWS.length, `all ${DAGU_130_ROWS.length} operations as in the table`);
});

t.test('dagu-1.30.yaml: literal routes win, other methods and /api/v1 paths get no route', async (t) => {
  const table = RouteTable.compile(mapConfig(t.testdir(), [DAGU_130_MAP], '/api/v2'));
  const cases: [string, string, string | undefined][] = [
    ['GET', '/api/v2/dags/search', 'dagu-1.30.searchDAGs'],
    ['GET', '/api/v2/dags/tags', 'dagu-1.30.getAllDAGTags'],
    ['POST', '/api/v2/dags/validate', 'dagu-1.30.validateDAGSpec'],
    ['GET', '/api/v2/dags/validate', 'dagu-1.30.getDAGDetails'], // Dagu 1.30 too: the DAG named "validate"
    ['GET', '/api/v2/dags/labels', 'dagu-1.30.getDAGDetails'], // 1.30 has no labels: a DAG of that name
    ['POST', '/api/v2/dag-runs/enqueue', 'dagu-1.30.enqueueDAGRunFromSpec'],
    ['GET', '/api/v2/dag-runs/enqueue', 'dagu-1.30.listDAGRunsByName'],
    ['POST', '/api/v2/auth/login', undefined],
    ['POST', '/api/v2/auth/setup', undefined],
    ['GET', '/api/v2/events/stream', undefined],
    ['POST', '/mcp', undefined],
    ['GET', '/api/v2/dags/', undefined],
    ['OPTIONS', '/api/v2/dags', undefined],
  ];
  for (const [method, path, name] of cases) t.equal(resolve(table, method, path)?.match.route.config.name, name, `${method} ${path}`);
  // never translated: no request under /api/v1 (the 2.x API, or 1.30's legacy one) has a route here
  let none = 0;
  for (const row of DAGU_ROWS) if (resolve(table, row.method, sample(row.path)) === undefined) none++;
  t.equal(none, DAGU_ROWS.length, 'none of the 224 Dagu 2.x operations (/api/v1, /mcp) matches the 1.30 map');
  // every other method on a routed path: 404 unless another row fits
  let refused = 0;
  for (const row of DAGU_130_ROWS) {
    const path = sample(row.path);
    for (const method of METHODS) {
      const fitting = DAGU_130_ROUTED.filter((r) => r.method === method && fits(r.path, path)).map((r) => `${r.method} ${r.path}`);
      const hit = resolve(table, method, path);
      if (fitting.length === 0) {
        if (hit) t.fail(`${method} ${path}: expected no route, got ${hit.match.route.config.name}`);
        else refused++;
      } else if (!hit || !fitting.includes(routeOf(hit.match.route.config))) t.fail(`${method} ${path}: expected one of ${fitting.join(' | ')}`);
    }
  }
  t.ok(refused > 200, `${refused} method/path pairs not in the table get no route`);
});

t.test('dagu.yaml and dagu-1.30.yaml side by side: no request matches both', async (t) => {
  const table = RouteTable.compile(mapConfig(t.testdir(), [DAGU_MAP, { include: DAGU_130_MAP, set: { upstream: 'dagu130' } }]));
  t.equal(table.routes.length, DAGU_ROUTED.length + DAGU_130_ROUTED.length);
  for (const row of DAGU_130_ROUTED) {
    const hit = resolve(table, row.method, sample(row.path));
    if (hit?.match.route.config.upstream !== 'dagu130') t.fail(`${row.method} ${row.path}: ${hit?.match.route.config.name}`);
  }
  for (const row of DAGU_ROUTED) {
    const hit = resolve(table, row.method, sample(row.path));
    if (hit?.match.route.config.upstream === 'dagu130') t.fail(`${row.method} ${row.path}: ${hit.match.route.config.name}`);
  }
  t.pass('each request has exactly one owner');
});

// ---------------------------------------------------------------------------
// Dagen

t.test('dagen.yaml: every operation resolves with its scope, surface and the key’s workspace', async (t) => {
  const table = RouteTable.compile(mapConfig(t.testdir(), [DAGEN_MAP]));
  t.equal(table.routes.length, DAGEN_ROWS.length, 'one route per operation');
  for (const row of DAGEN_ROWS) {
    const op = `${row.method} ${row.path}`;
    const path = sample(row.path);
    const hit = resolve(table, row.method, path);
    if (!hit) {
      t.fail(`${op}: no route`);
      continue;
    }
    const r = hit.match.route.config;
    t.same(
      { route: routeOf(r), auth: r.auth, surface: r.surface, scopes: r.scopes, role: r.role ?? null, workspace: r.workspace ?? null, upstream: r.upstream, url: hit.url, remote_node: r.remote_node, query_token: r.query_token },
      {
        route: op,
        auth: row.auth,
        surface: row.surface,
        scopes: row.scopes,
        role: null, // Dagen has no roles
        workspace: row.auth === 'none' ? null : { from: 'key' },
        upstream: 'dagen',
        url: DAGEN + path,
        remote_node: false,
        query_token: false,
      },
      op,
    );
  }
  const a2a = resolve(table, 'POST', '/a2a')!.match.route.config.jsonrpc!;
  t.equal(a2a.default_method, 'deny', 'an unknown A2A method is refused');
  for (const m of A2A_METHODS) t.equal(a2a.methods[m], 'viewer', `${m}: any key with the agents scope`);

  for (const [method, path] of [
    ['GET', '/a2a'],
    ['GET', '/api/v1/agent/chat'],
    ['POST', '/api/v1/agents'],
    ['DELETE', '/api/v1/workflow/7/run'],
    ['GET', '/api/v1/workflow/7'],
    ['POST', '/.well-known/agent-card.json'],
    ['GET', '/.well-known/other.json'],
  ] as const) {
    t.equal(resolve(table, method, path), undefined, `${method} ${path}: 404`);
  }
});

// ---------------------------------------------------------------------------
// One gateway for both

t.test('the two maps do not overlap: each request has exactly one owner', async (t) => {
  const dir = t.testdir();
  const daguOnly = RouteTable.compile(mapConfig(dir, [DAGU_MAP]));
  const dagenOnly = RouteTable.compile(mapConfig(dir, [DAGEN_MAP]));
  for (const row of DAGEN_ROWS) {
    for (const method of METHODS) t.equal(resolve(daguOnly, method, sample(row.path)), undefined, `Dagu's map leaves ${method} ${row.path} alone`);
  }
  for (const row of DAGU_ROWS) {
    for (const method of METHODS) {
      if (resolve(dagenOnly, method, sample(row.path))) t.fail(`Dagen's map takes ${method} ${row.path}`);
    }
  }
  t.pass('no Dagu path is matched by the Dagen map');
});

t.test('gateway.example.yaml: Dagu requests go to Dagu, Dagen requests to Dagen', async (t) => {
  const config = loadConfig(join(ROOT, 'gateway.example.yaml'), {});
  const table = RouteTable.compile(config);
  t.equal(table.routes.length, DAGU_ROUTED.length + DAGEN_ROWS.length, 'both maps included, nothing else');
  t.same(
    [...new Set(config.upstreams.map((u) => `${u.name} ${u.api_base_url}`))],
    [`dagu ${DAGU}/api/v1`, `dagu-mcp ${DAGU}/mcp`, `dagen ${DAGEN}`],
    'upstreams with their defaults',
  );
  let dagu = 0;
  for (const row of DAGU_ROUTED) {
    const hit = resolve(table, row.method, sample(row.path));
    if (hit?.match.route.config.name.startsWith('dagu.') && hit.url === DAGU + sample(row.path)) dagu++;
    else t.fail(`${row.method} ${row.path}: ${hit?.match.route.config.name} ${hit?.url}`);
  }
  t.equal(dagu, DAGU_ROUTED.length, 'every routed Dagu operation reaches Dagu at the same path');
  for (const row of DAGEN_ROWS) {
    const hit = resolve(table, row.method, sample(row.path));
    t.match({ name: hit?.match.route.config.name, upstream: hit?.match.route.config.upstream, url: hit?.url }, { name: /^dagen\./, upstream: 'dagen', url: DAGEN + sample(row.path) }, `${row.method} ${row.path}`);
  }
});

t.test('the documented alternative: Dagen on its own host name', async (t) => {
  const dir = t.testdir();
  const table = RouteTable.compile(mapConfig(dir, [DAGU_MAP, { include: DAGEN_MAP, set: { host: 'dagen.example.com' } }]));
  t.equal(resolve(table, 'POST', '/api/v1/agent/chat', 'dagen.example.com:443')?.match.route.config.upstream, 'dagen');
  t.equal(resolve(table, 'POST', '/api/v1/agent/chat', 'dagu.example.com'), undefined, 'not on another host');
  t.equal(resolve(table, 'GET', '/api/v1/dags', 'dagu.example.com')?.match.route.config.upstream, 'dagu');
});

t.test('through a running gateway with the example config: workspace rule, Dagen header, 404', async (t) => {
  // the recorded fakes report a Dagu 2.x version on …/health: the map's requires is checked at start
  const dagu = await startEchoUpstream({ name: 'dagu', daguVersion: '2.1.0' });
  const dagen = await startEchoUpstream({ name: 'dagen' });
  const prod = await startEchoUpstream({ name: 'prod', daguVersion: '2.1.0' });
  t.teardown(() => Promise.all([dagu.close(), dagen.close(), prod.close()]));
  const dir = t.testdir();
  const file = join(dir, 'gateway.yaml');
  const example = readFileSync(join(ROOT, 'gateway.example.yaml'), 'utf8');
  t.ok(example.includes('include: config/routes/dagu.yaml') && example.includes('include: config/routes/dagen.yaml'));
  const remote = `\nremote_nodes:\n  - { name: prod, api_base_url: "${prod.url}/api/v1", auth_type: token, auth_token: prod-token }\n`;
  writeFileSync(file, example.replaceAll('include: config/routes/', `include: ${join(ROOT, 'config/routes')}/`).replace('host: 0.0.0.0', 'host: 127.0.0.1') + remote);
  const config = loadConfig(file, { DAGU_URL: dagu.url, DAGEN_URL: dagen.url, DAGU_API_TOKEN: 'up-dagu', DAGEN_API_KEY: 'up-dagen' });
  const logger = pino({ level: 'silent' }, new Writable({ write: (_c, _e, cb) => cb() }));
  const gw = await Gateway.start({ config, port: 0, adminPort: 0, logger });
  t.teardown(() => gw.close(1000));

  const send = async (method: string, path: string, key?: string, body?: unknown) => {
    const headers: Record<string, string> = key ? { 'x-api-key': key } : {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    const r = await request(gw.url + path, { method: method as 'GET', headers, body: body === undefined ? null : JSON.stringify(body) });
    const text = await r.body.text();
    let json: Record<string, unknown> = {};
    try {
      json = text ? JSON.parse(text) : {};
    } catch {
      json = { text };
    }
    return { status: r.statusCode, json };
  };
  const scoped = (await gw.keys.create({ name: 'team-a-dev', role: 'viewer', workspaceAccess: { all: false, grants: [{ workspace: 'team-a', role: 'developer' }] } }, 'test')).secret;
  const wide = (await gw.keys.create({ name: 'everywhere', role: 'operator' }, 'test')).secret;
  const bound = (await gw.keys.create({ name: 'dagen-bot', scopes: ['agents'], workspace: 'ws-42' }, 'test')).secret;

  // the workspace rule on the Dagu map
  t.match(await send('GET', '/api/v1/dags', scoped), { status: 403, json: { code: 'workspace_required' } }, 'scoped key naming no workspace');
  t.match(await send('GET', '/api/v1/dags?workspace=all', scoped), { status: 403, json: { code: 'workspace_required' } }, 'scoped key asking for all');
  t.match(await send('GET', '/api/v1/dags?workspace=team-b', scoped), { status: 404, json: { code: 'not_found' } }, 'invisible workspace');
  t.match(await send('GET', '/api/v1/dags?workspace=team-a', scoped), { status: 200, json: { upstream: 'dagu', path: '/api/v1/dags' } });
  t.equal(dagu.received.at(-1)!.headers['x-keygate-workspace'], 'team-a');
  t.match(await send('PUT', '/api/v1/settings/workspaces/team-a/base-config', scoped), { status: 200 }, 'grant role developer in its workspace');
  t.equal(dagu.received.at(-1)!.headers['x-keygate-role'], 'developer');
  t.match(await send('PUT', '/api/v1/settings/workspaces/team-b/base-config', scoped), { status: 404 });
  t.match(await send('PUT', '/api/v1/dags/deploy/spec', scoped), { status: 403, json: { code: 'workspace_required' } }, 'no workspace on the route and more than viewer needed: a grants key is refused (README workspace table)');
  t.match(await send('GET', '/api/v1/dags', wide), { status: 200 }, 'a key for every workspace lists them all');
  t.match(await send('POST', '/api/v1/dags/deploy/start', wide), { status: 200, json: { path: '/api/v1/dags/deploy/start' } });
  t.match(await send('POST', '/api/v1/secrets', wide), { status: 403, json: { code: 'forbidden' } }, 'manager route, operator key');
  t.match(await send('GET', '/api/v1/health'), { status: 200, json: { upstream: 'dagu', path: '/api/v1/health' } }, 'public');
  t.match(await send('DELETE', '/api/v1/health', wide), { status: 404, json: { code: 'not_found' } }, 'not in the table');

  // Dagen: the key's workspace travels in X-Keygate-Workspace
  t.match(await send('POST', '/api/v1/agent/chat', bound), { status: 200, json: { upstream: 'dagen', path: '/api/v1/agent/chat' } });
  const got = dagen.received.at(-1)!.headers;
  t.equal(got['x-keygate-workspace'], 'ws-42');
  t.equal(got['x-request-source'], 'external_api');
  t.equal(got['x-api-key'], 'up-dagen', "Dagen gets the gateway's own credential");
  t.match(await send('GET', '/api/v1/workflows', bound), { status: 403, json: { code: 'insufficient_scope' } }, 'agents-only key');
  t.match(await send('GET', '/.well-known/agent-card.json'), { status: 200, json: { upstream: 'dagen', securitySchemes: { keygate: { type: 'apiKey', in: 'header', name: 'X-API-Key' } } } }, 'agent card is public and names the key header');

  // the map's remote-node, ?token= and JSON-RPC settings, as the gateway applies them
  t.match(await send('GET', '/api/v1/dags?remoteNode=prod', wide), { status: 200, json: { upstream: 'prod', path: '/api/v1/dags', query: '' } }, 'remote node, parameter removed');
  t.equal(prod.received.at(-1)!.headers.authorization, 'Bearer prod-token');
  t.match(await send('GET', '/api/v1/auth/me?remoteNode=prod', wide), { status: 400 }, 'getCurrentUser takes no remote node');
  const before = dagu.received.length;
  t.match(await send('GET', '/api/v1/auth/me', wide), { status: 200, json: { user: { username: 'everywhere', role: 'operator', workspaceAccess: { all: true, grants: [] } } } }, 'auth/me: the caller, from its key');
  t.match(await send('GET', '/api/v1/auth/me', scoped), { status: 200, json: { user: { username: 'team-a-dev', role: 'viewer', workspaceAccess: { all: false, grants: [{ workspace: 'team-a', role: 'developer' }] } } } });
  t.match(await send('GET', '/api/v1/auth/me'), { status: 401 }, 'auth/me needs a key');
  t.match(await send('POST', '/api/v1/auth/login', undefined, { username: 'admin', password: 'x' }), { status: 404, json: { code: 'not_found' } }, 'login is not routed');
  t.match(await send('POST', '/api/v1/auth/setup', undefined, {}), { status: 404, json: { code: 'not_found' } }, 'setup is not routed');
  t.equal(dagu.received.length, before, 'none of these reached Dagu');
  t.match(await send('POST', '/api/v1/webhooks/deploy?remoteNode=prod'), { status: 400 }, 'the public webhook is never relayed to a remote node');
  t.match(await send('POST', '/api/v1/webhooks/deploy'), { status: 200, json: { upstream: 'dagu' } }, 'the public webhook itself');
  t.match(await send('GET', `/api/v1/events/stream/topics?token=${wide}`, undefined), { status: 404 }, 'only POST on topics');
  t.match(await send('POST', `/api/v1/events/stream/topics?token=${wide}`), { status: 200, json: { query: '' } }, '?token= accepted on events, and removed');
  t.match(await send('GET', `/api/v1/dags?token=${wide}`), { status: 400, json: { code: 'bad_request' } }, '?token= is not a credential elsewhere: refused before it reaches upstream logs');
  const call = (name: string) => ({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name, arguments: {} } });
  t.match(await send('POST', '/mcp', wide, { jsonrpc: '2.0', id: 1, method: 'initialize', params: {} }), { status: 200, json: { upstream: 'dagu', path: '/mcp' } }, 'MCP reaches Dagu at /mcp (upstream dagu-mcp)');
  t.match(await send('POST', '/mcp', wide, call('dagu_execute')), { status: 200 }, 'operator may execute');
  t.match(await send('POST', '/mcp', wide, call('dagu_change')), { status: 403, json: { id: 7, error: { code: -31403 } } }, 'changing needs developer');
  t.match(await send('POST', '/mcp', wide, call('shell')), { status: 403, json: { error: { code: -31403 } } }, 'unknown tool');
  t.match(await send('POST', '/mcp', wide, { jsonrpc: '2.0', id: 2, method: 'x/unknown' }), { status: 403 }, 'unknown method');
  const agent = (await gw.keys.create({ name: 'a2a-bot', scopes: ['agents'], surfaces: ['a2a'], workspace: 'ws-42' }, 'test')).secret;
  for (const method of ['message/send', 'SendMessage', 'tasks/get', 'GetTask']) {
    t.match(await send('POST', '/a2a', agent, { jsonrpc: '2.0', id: 3, method, params: {} }), { status: 200, json: { upstream: 'dagen', path: '/a2a' } }, `A2A ${method}`);
  }
  t.match(await send('POST', '/a2a', agent, { jsonrpc: '2.0', id: 4, method: 'tasks/delete' }), { status: 403, json: { id: 4 } }, 'a method A2A does not have');
  t.match(await send('POST', '/a2a', bound, { jsonrpc: '2.0', id: 5, method: 'SendMessage' }), { status: 200 }, 'a key allowed on every surface');
  t.match(await send('POST', '/api/v1/agent/chat', agent), { status: 403, json: { code: 'forbidden' } }, 'an a2a-only key cannot use the REST API');
});
