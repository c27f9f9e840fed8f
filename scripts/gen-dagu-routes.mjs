#!/usr/bin/env node
// Generates the two Dagu route maps from their tables:
//   config/routes/dagu.yaml       (Dagu 2.x, /api/v1)  from test/fixtures/dagu-route-roles.tsv
//   config/routes/dagu-1.30.yaml  (Dagu 1.30, /api/v2) from test/fixtures/dagu-1.30-route-roles.tsv
// (each operation with the least role, surface, ?remoteNode= support and workspace source the
// gateway must enforce).
//
//   node scripts/gen-dagu-routes.mjs            rewrite both maps
//   node scripts/gen-dagu-routes.mjs --check    exit 1 if a committed map differs from the output
//
// One route per table row, named after Dagu's operationId. Routes are sorted segment by segment
// with a literal segment before a {param} at the same place, so "/dags/search" is tried before
// "/dags/{fileName}" (the gateway takes the first route that matches). test/route-maps.test.ts
// checks every row of the table against the generated file.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const ROOT = new URL('..', import.meta.url);
const TSV = fileURLToPath(new URL('test/fixtures/dagu-route-roles.tsv', ROOT));
const OUT = fileURLToPath(new URL('config/routes/dagu.yaml', ROOT));
export const TSV_130 = fileURLToPath(new URL('test/fixtures/dagu-1.30-route-roles.tsv', ROOT));
const OUT_130 = fileURLToPath(new URL('config/routes/dagu-1.30.yaml', ROOT));

/** The Dagu versions each map is for (the gateway checks the upstream's GET <base>/health). */
export const REQUIRES_2X = '>=2.0.0';
export const REQUIRES_130 = '>=1.30.0 <2.0.0';

/**
 * Operations a map leaves out: Keygate's clients are machines with keys, so Dagu's password login
 * and first-run setup are not routed (a route with expose_login: true opts in).
 */
export const NOT_ROUTED = new Set(['login', 'setup']);

const METHOD_ORDER = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

/** Names for the rows that are not in Dagu's OpenAPI document (no operationId). */
const EXTRA_NAMES = {
  'GET /api/v1/events/stream': 'eventStream',
  'POST /api/v1/events/stream/topics': 'eventStreamTopics',
  'POST /mcp': 'mcp',
  'GET /mcp': 'mcpStream',
  'DELETE /mcp': 'mcpSessionEnd',
};

/** Dagu's MCP tools and the least role each needs; any other tool is refused. */
const MCP_TOOLS = { dagu_read: 'viewer', dagu_change: 'developer', dagu_execute: 'operator' };

/**
 * Where Dagu's MCP calls act (its MCP server, internal/service/mcp: read_tool.go, change_tool.go,
 * server.go). dagu_read and dagu_change take `workspace` for Wiki targets and changes; DAGs and
 * runs are named by DAG name, with no workspace (a key with grants reads them as viewer, a bound key
 * not at all); the built-in references are no workspace's; the `dags` and `runs` lists span every
 * workspace; a `uri` names the object directly (resource_workspaces). Dagu trims every value it
 * reads: an untrimmed one, like any target not listed here, is refused to a scoped key.
 */
const MCP_TOOL_WORKSPACES = {
  dagu_read: {
    uri: 'uri',
    argument: 'workspace',
    when: { target: ['wiki', 'wiki_page', 'wiki_search', 'docs', 'doc', 'doc_search'] },
    none: { target: ['dag', 'dag_spec', 'run', 'run_logs', 'step_log'] },
    route: { target: ['references', 'reference'] },
  },
  dagu_change: {
    argument: 'workspace',
    when: { type: ['upsert_wiki_page', 'rename_wiki_page', 'delete_wiki_page', 'upsert_doc', 'rename_doc', 'delete_doc'] },
    none: { type: ['upsert_dag', 'rename_dag', 'delete_dag'] },
  },
};

/** Dagu's resource URIs (its resources and templates) → the workspace the resource lives in. */
const MCP_RESOURCE_WORKSPACES = [
  ['dagu://wiki', 'all'],
  ['dagu://wiki/{workspace}', '{workspace}'],
  ['dagu://wiki/{workspace}/{path}', '{workspace}'],
  ['dagu://docs', 'all'],
  ['dagu://docs/{workspace}', '{workspace}'],
  ['dagu://docs/{workspace}/{path}', '{workspace}'],
  ['dagu://dags', 'all'],
  ['dagu://dags/{name}/spec', 'none'],
  ['dagu://runs', 'all'],
  ['dagu://runs/{name}/**', 'none'],
  ['dagu://reference/**', 'route'],
  ['ui://dagu/**', 'route'],
];

/** Dagu's prompts: the Wiki ones name a workspace, the DAG and run ones a DAG, dagu_create_dag nothing. */
const MCP_PROMPT_WORKSPACES = {
  dagu_create_dag: 'route',
  dagu_edit_dag: 'none',
  dagu_debug_failed_run: 'none',
  dagu_create_wiki_page: { argument: 'workspace' },
  dagu_edit_wiki_page: { argument: 'workspace' },
  dagu_create_doc: { argument: 'workspace' },
  dagu_edit_doc: { argument: 'workspace' },
};

/**
 * Client-to-server MCP methods (spec 2025-06-18 and 2025-11-25). Each is allowed to any key that
 * passes the route (viewer); tools/call is further limited per tool. Unlisted methods are refused.
 */
const MCP_METHODS = [
  'initialize',
  'ping',
  'tools/list',
  'tools/call',
  'resources/list',
  'resources/templates/list',
  'resources/read',
  'resources/subscribe',
  'resources/unsubscribe',
  'prompts/list',
  'prompts/get',
  'completion/complete',
  'logging/setLevel',
  'tasks/get',
  'tasks/result',
  'tasks/list',
  'tasks/cancel',
  'notifications/initialized',
  'notifications/cancelled',
  'notifications/progress',
  'notifications/roots/list_changed',
  'notifications/tasks/status',
];

export function readTable(file = TSV) {
  const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '');
  const header = lines.shift().split('\t');
  return lines.map((line) => Object.fromEntries(line.split('\t').map((v, i) => [header[i], v])));
}

function segmentKey(path) {
  return path.split('/').slice(1).map((s) => (/^\{.*\}$/.test(s) ? [1, ''] : [0, s]));
}

function compareRows(a, b) {
  const ka = segmentKey(a.path);
  const kb = segmentKey(b.path);
  for (let i = 0; i < Math.min(ka.length, kb.length); i++) {
    const [ta, sa] = ka[i];
    const [tb, sb] = kb[i];
    if (ta !== tb) return ta - tb; // literal before {param}
    if (sa !== sb) return sa < sb ? -1 : 1;
  }
  if (ka.length !== kb.length) return ka.length - kb.length;
  return METHOD_ORDER.indexOf(a.method) - METHOD_ORDER.indexOf(b.method);
}

function routeName(row) {
  const extra = EXTRA_NAMES[`${row.method} ${row.path}`];
  if (extra) return `dagu.${extra}`;
  if (!/^[A-Za-z][A-Za-z0-9]*$/.test(row.operation_id)) throw new Error(`no name for ${row.method} ${row.path}`);
  return `dagu.${row.operation_id}`;
}

/** The fields of one route as YAML `key: value` strings (values in flow style). */
function routeFields(row) {
  const f = [`name: ${routeName(row)}`, `methods: [${row.method}]`, `path: ${JSON.stringify(row.path)}`];
  const open = row.min_role === '-' || row.surface === 'none';
  if (open) f.push('auth: none');
  else f.push(`role: ${row.min_role}`);
  if (row.surface === 'mcp') f.push('surface: mcp', 'upstream: dagu-mcp', 'strip_prefix: /mcp');
  else if (!open && row.surface !== 'rest_api') throw new Error(`unknown surface ${row.surface}`);
  // Public rows (webhook trigger, first-run setup) do not honour ?remoteNode= although the table
  // says Dagu does: the gateway would relay an unauthenticated request to another server, and
  // forwarding replaces the caller's Authorization (a webhook's own token) with the node's credential.
  if (row.remote_node_param === 'yes' && !open) f.push('remote_node: true');
  const ws = row.workspace_param;
  if (ws === 'query') f.push('workspace: { query: workspace }');
  else if (ws.startsWith('path:')) f.push(`workspace: { param: ${ws.slice(5)} }`);
  else if (ws !== '') throw new Error(`unknown workspace source ${ws}`);
  if (row.path.startsWith('/api/v1/events/') || row.path === '/mcp') f.push('query_token: true');
  // The public webhook trigger authenticates with its own token (Bearer dagu_wh_…): let it through.
  if (open && row.path === '/api/v1/webhooks/{fileName}') f.push('pass_authorization: true');
  // Dagu would answer with the gateway's own identity: Keygate answers from the caller's key.
  if (row.operation_id === 'getCurrentUser') f.push('answer: current_user');
  return f;
}

/** A YAML flow mapping of plain strings and lists of them. */
function flow(v) {
  if (Array.isArray(v)) return `[${v.join(', ')}]`;
  if (typeof v === 'object') return `{ ${Object.entries(v).map(([k, x]) => `${k}: ${flow(x)}`).join(', ')} }`;
  return String(v);
}

function mcpPolicy() {
  const pad = (s) => `${s}:`.padEnd(36);
  return [
    '    jsonrpc:',
    '      default_method: deny                  # a method not listed below is refused',
    '      methods:',
    ...MCP_METHODS.map((m) => `        ${pad(JSON.stringify(m))}viewer`),
    '      default_tool: deny                    # a tool not listed below is refused',
    '      tools:',
    ...Object.entries(MCP_TOOLS).map(([t, r]) => `        ${pad(t)}${r}`),
    '      tool_workspaces:                      # where a tool call acts (dagu_execute: on a DAG, in no workspace)',
    ...Object.entries(MCP_TOOL_WORKSPACES).flatMap(([t, w]) => [`        ${t}:`, ...Object.entries(w).map(([k, v]) => `          ${`${k}:`.padEnd(10)}${flow(v)}`)]),
    '      resource_workspaces:                  # where a resource URI acts (resources/read, …/subscribe, dagu_read uri)',
    ...MCP_RESOURCE_WORKSPACES.map(([uri, ws]) => `        - { uri: ${`${JSON.stringify(uri)},`.padEnd(35)} workspace: ${JSON.stringify(ws)} }`),
    '      prompt_workspaces:                    # where a prompts/get acts; other prompts are refused to scoped keys',
    ...Object.entries(MCP_PROMPT_WORKSPACES).map(([p, w]) => `        ${pad(p)}${flow(w)}`),
  ];
}

export function generate(rows = readTable()) {
  const sorted = rows.filter((r) => !NOT_ROUTED.has(r.operation_id)).sort(compareRows);
  const out = [
    '# Keygate route map for Dagu (REST API v1, its event stream and MCP).',
    '# GENERATED by scripts/gen-dagu-routes.mjs from test/fixtures/dagu-route-roles.tsv: edit the table',
    '# (or the script) and run `node scripts/gen-dagu-routes.mjs`, not this file.',
    '#',
    '# Include it from the gateway config (`routes: [{include: config/routes/dagu.yaml}]`) with these upstreams:',
    '#   - name: dagu        api_base_url: http://DAGU:8080/api/v1   (the /api/v1 requests, /api/v1 stripped and re-added)',
    '#   - name: dagu-mcp    api_base_url: http://DAGU:8080/mcp      (Dagu serves MCP outside /api/v1)',
    '# so that the upstream path always equals the request path. Both carry a Dagu API key whose role',
    '# is at least the highest one used below (admin); Keygate enforces the per-route roles itself.',
    '#',
    '# One route per operation, named dagu.<operationId>; `role` is the least role a key needs (a',
    "# workspace grant's role where the route has a workspace source), `remote_node: true` honours",
    '# ?remoteNode=<name>. Order matters: the first matching route wins, and a literal segment sorts',
    '# before a {param} at the same place (/dags/search before /dags/{fileName}). Anything not listed',
    '# (another method, another path) gets 404 from the gateway and never reaches Dagu.',
    '#',
    '# Deliberate differences from the table: the public webhook trigger and first-run setup do not',
    '# honour ?remoteNode= (an unauthenticated request is never relayed to a remote node with its',
    '# credential); ?token= is accepted on /api/v1/events/* and /mcp only, as in Dagu. Login and',
    '# first-run setup (POST /api/v1/auth/login, /auth/setup) are not routed: Keygate answers 404',
    '# (add your own route with expose_login: true to opt in); GET /api/v1/auth/me is answered by',
    "# Keygate from the caller's key (answer: current_user), never with the gateway's Dagu identity.",
    '#',
    `# requires: the gateway asks each upstream GET <api_base_url>/health at start, on reload and before`,
    `# the first request, and refuses to forward to a Dagu outside ${REQUIRES_2X} (Dagu 1.30 has another`,
    '# API under /api/v1: use config/routes/dagu-1.30.yaml for it).',
    'defaults:',
    '  upstream: dagu',
    '  strip_prefix: /api/v1',
    `  requires: { dagu: "${REQUIRES_2X}" }`,
    'routes:',
  ];
  let group;
  for (const row of sorted) {
    const parts = row.path.split('/');
    const g = row.path.startsWith('/api/v1/') ? parts[3] : parts[1];
    if (g !== group) {
      group = g;
      out.push(`  # ${`${g} `.padEnd(98, '-')}`);
    }
    const fields = routeFields(row);
    if (row.surface === 'mcp' && row.method === 'POST') {
      // MCP requests carry a JSON-RPC method policy: a block mapping rather than one line
      out.push(...fields.map((f, i) => `${i === 0 ? '  - ' : '    '}${f}`), ...mcpPolicy());
    } else out.push(`  - { ${fields.join(', ')} }`);
  }
  return `${out.join('\n')}\n`;
}

/**
 * What Dagu 1.30 itself checks (the table's dagu_check column, read off its handlers at tag v1.30.2)
 * and the least Keygate role that covers it. Dagu 1.30's roles are admin, manager, operator,
 * viewer; its manager (create/edit/delete DAGs) is Keygate's developer.
 */
export const DAGU_130_CHECK_ROLE = { public: '-', authenticated: 'viewer', execute: 'operator', write: 'developer', admin: 'admin' };

function route130Fields(row) {
  const f = [`name: dagu-1.30.${row.operation_id}`, `methods: [${row.method}]`, `path: ${JSON.stringify(row.path)}`];
  const open = row.min_role === '-';
  if (open) f.push('auth: none');
  else f.push(`role: ${row.min_role}`);
  // as in the 2.x map: a public request is never relayed to a remote node with its credential
  if (row.remote_node_param === 'yes' && !open) f.push('remote_node: true');
  if (open && row.path === '/api/v2/webhooks/{fileName}') f.push('pass_authorization: true');
  if (row.operation_id === 'getCurrentUser') f.push('answer: current_user');
  return f;
}

export function generate130(rows = readTable(TSV_130)) {
  const sorted = rows.filter((r) => !NOT_ROUTED.has(r.operation_id)).sort(compareRows);
  const out = [
    '# Keygate route map for Dagu 1.30.x (its REST API under /api/v2; Dagu 2.0 renamed it /api/v1).',
    '# GENERATED by scripts/gen-dagu-routes.mjs from test/fixtures/dagu-1.30-route-roles.tsv: edit the',
    '# table (or the script) and run `node scripts/gen-dagu-routes.mjs`, not this file.',
    '#',
    '# Include it from the gateway config (`routes: [{include: config/routes/dagu-1.30.yaml}]`) with',
    '#   - name: dagu   api_base_url: http://DAGU:8080/api/v2   auth_type: token   auth_token: <Dagu admin API key>',
    '# so that the upstream path always equals the request path. Paths are never translated between',
    '# /api/v1 and /api/v2 (/api/v1/dags/labels would be "the DAG named labels" on 1.30).',
    '#',
    "# Roles. Dagu 1.30 has admin, manager, operator, viewer (no developer, no workspaces, no MCP, no",
    "# event stream). Each route's role is the least Keygate role covering what Dagu 1.30 itself checks",
    '# (the dagu_check column, read off its handlers at tag v1.30.2):',
    '#   any authenticated user -> viewer      run/stop/retry/approve/suspend/dequeue (operator+) -> operator',
    "#   create/edit/delete/rename DAGs (Dagu's manager+) -> developer",
    '#   users, API keys, all webhook management (admin) -> admin',
    '# Stricter than Dagu on purpose: running a DAG from an inline spec (POST /dag-runs,',
    '# /dag-runs/enqueue) is developer (Dagu lets an operator: it runs arbitrary new code, as in the',
    "# 2.x map), and change-password is admin (it would change the gateway's own Dagu identity).",
    '#',
    '# Not routed: POST /api/v2/auth/login (Keygate answers 404; add your own route with',
    "# expose_login: true to opt in). GET /api/v2/auth/me is answered by Keygate from the caller's key.",
    '# The public webhook trigger passes its own Authorization (the DAG webhook token) and, like',
    '# every public route, is never relayed to a remote node.',
    '#',
    `# requires: the gateway asks the upstream GET <api_base_url>/health at start, on reload and`,
    `# before the first request, and refuses to forward to a Dagu outside ${REQUIRES_130}.`,
    'defaults:',
    '  upstream: dagu',
    '  strip_prefix: /api/v2',
    `  requires: { dagu: "${REQUIRES_130}" }`,
    'routes:',
  ];
  let group;
  for (const row of sorted) {
    const g = row.path.split('/')[3];
    if (g !== group) {
      group = g;
      out.push(`  # ${`${g} `.padEnd(98, '-')}`);
    }
    out.push(`  - { ${route130Fields(row).join(', ')} }`);
  }
  return `${out.join('\n')}\n`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const maps = [
    [OUT, generate(), readTable().length],
    [OUT_130, generate130(), readTable(TSV_130).length],
  ];
  let stale = false;
  for (const [file, text, rows] of maps) {
    if (process.argv.includes('--check')) {
      const current = readFileSync(file, 'utf8');
      if (current !== text) {
        console.error(`${file} is out of date: run node scripts/gen-dagu-routes.mjs`);
        stale = true;
      } else console.log(`${file} is up to date`);
    } else {
      writeFileSync(file, text);
      console.log(`wrote ${file} (from ${rows} table rows)`);
    }
  }
  if (stale) process.exit(1);
}
