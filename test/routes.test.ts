// RouteTable: compile (errors included), match (literals, params, *, **, methods, host, order,
// trailing slash) and upstreamPath. Configs are built here, not loaded from YAML.

import t from 'tap';
import { routeConfig, type RouteInput } from './factories.js';
import type { Test } from 'tap';
import type { RouteConfig, UpstreamConfig } from '../src/config/types.js';
import { ConfigError } from '../src/errors.js';
import { normaliseTarget } from '../src/routes/path.js';
import { hostOf, RouteTable } from '../src/routes/table.js';

function upstream(name: string, api_base_url: string): UpstreamConfig {
  return { name, api_base_url, auth_type: 'none', skip_tls_verify: false, timeout: 30, idle_timeout: 300, connections: 4 };
}

const UPSTREAMS = [
  upstream('dagu', 'http://127.0.0.1:8090/api/v1'),
  upstream('slash', 'http://127.0.0.1:8091/api/v1/'),
  upstream('dagen', 'http://127.0.0.1:3000'),
  upstream('root', 'http://127.0.0.1:3001/'),
];

const route = routeConfig;

function table(...routes: RouteInput[]): RouteTable {
  return RouteTable.compile({ upstreams: UPSTREAMS, routes: routes.map((r, i) => route(r, r.index ?? i)) });
}

/** name of the matching route (or null) and its params, for compact expectations */
function hit(tb: RouteTable, path: string, method = 'GET', host?: string): { name: string; params?: Record<string, string> } | null {
  const m = tb.match(method, host, path);
  if (!m) return null;
  return m.params === undefined ? { name: m.route.config.name } : { name: m.route.config.name, params: { ...m.params } };
}

function matrix(t: Test, tb: RouteTable, rows: [path: string, expected: ReturnType<typeof hit>][]): void {
  for (const [path, expected] of rows) t.same(hit(tb, path), expected, path);
}

t.test('literal segments match exactly', async (t) => {
  const tb = table({ path: '/api/v1/health', name: 'health' });
  matrix(t, tb, [
    ['/api/v1/health', { name: 'health' }],
    ['/api/v1/health/', null],
    ['/api/v1', null],
    ['/api/v1/health/x', null],
    ['/api/v1/healthz', null],
    ['/api/v1/Health', null],
    ['/', null],
  ]);
  t.equal(tb.match('GET', undefined, '/api/v1/health')!.params, undefined);
});

t.test('{param} captures one non-empty segment, decoded', async (t) => {
  const tb = table({ path: '/api/v1/dags/{fileName}', name: 'dag' }, { path: '/a/{x}/b/{y}', name: 'two' });
  matrix(t, tb, [
    ['/api/v1/dags/etl', { name: 'dag', params: { fileName: 'etl' } }],
    ['/api/v1/dags/my%20dag', { name: 'dag', params: { fileName: 'my dag' } }],
    ['/api/v1/dags/caf%C3%A9', { name: 'dag', params: { fileName: 'café' } }],
    ['/api/v1/dags/%E9', { name: 'dag', params: { fileName: '%E9' } }], // not UTF-8: kept
    ['/api/v1/dags/a%3Ab', { name: 'dag', params: { fileName: 'a:b' } }],
    ['/api/v1/dags/', null],
    ['/api/v1/dags', null],
    ['/api/v1/dags/a/b', null],
    ['/a/1/b/2', { name: 'two', params: { x: '1', y: '2' } }],
    ['/a//b/2', null],
    ['/a/1/b/', null],
  ]);
});

t.test('* matches any one non-empty segment and captures nothing', async (t) => {
  const tb = table({ path: '/api/v1/*/status', name: 'any' });
  matrix(t, tb, [
    ['/api/v1/x/status', { name: 'any' }],
    ['/api/v1/%20/status', { name: 'any' }],
    ['/api/v1//status', null],
    ['/api/v1/status', null],
    ['/api/v1/x/y/status', null],
  ]);
  t.equal(tb.routes[0]!.hasParams, false);
});

t.test('a final ** matches the prefix itself and anything below it, never siblings', async (t) => {
  const tb = table({ path: '/api/**', name: 'api' });
  matrix(t, tb, [
    ['/api', { name: 'api' }],
    ['/api/', { name: 'api' }],
    ['/api/x', { name: 'api' }],
    ['/api/x/y/z', { name: 'api' }],
    ['/apix', null],
    ['/apix/y', null],
    ['/ap', null],
    ['/', null],
    ['/other/api', null],
  ]);
  t.equal(tb.routes[0]!.rest, true);

  const all = table({ path: '/**', name: 'all' });
  matrix(t, all, [
    ['/', { name: 'all' }],
    ['/x', { name: 'all' }],
    ['/x/y/', { name: 'all' }],
  ]);

  const withParam = table({ path: '/api/{id}/**', name: 'p' });
  matrix(t, withParam, [
    ['/api/7', { name: 'p', params: { id: '7' } }],
    ['/api/7/', { name: 'p', params: { id: '7' } }],
    ['/api/7/x/y', { name: 'p', params: { id: '7' } }],
    ['/api/', null],
    ['/api', null],
  ]);
});

t.test('the root route matches only /', async (t) => {
  const tb = table({ path: '/', name: 'root' });
  matrix(t, tb, [
    ['/', { name: 'root' }],
    ['/x', null],
  ]);
  t.same(tb.routes[0]!.segments, []);
});

t.test('the first matching route wins, in configuration order', async (t) => {
  const paramFirst = table({ path: '/api/v1/dags/{fileName}', name: 'param' }, { path: '/api/v1/dags/special', name: 'literal' });
  t.same(hit(paramFirst, '/api/v1/dags/special'), { name: 'param', params: { fileName: 'special' } });
  const literalFirst = table({ path: '/api/v1/dags/special', name: 'literal' }, { path: '/api/v1/dags/{fileName}', name: 'param' });
  t.same(hit(literalFirst, '/api/v1/dags/special'), { name: 'literal' });
  t.same(hit(literalFirst, '/api/v1/dags/other'), { name: 'param', params: { fileName: 'other' } });
  const catchAllFirst = table({ path: '/**', name: 'all' }, { path: '/api/v1/health', name: 'health' });
  t.same(hit(catchAllFirst, '/api/v1/health'), { name: 'all' });
});

t.test('methods: GET also allows HEAD, nothing else is implied', async (t) => {
  const tb = table(
    { path: '/r', methods: ['GET'], name: 'get' },
    { path: '/r', methods: ['POST'], name: 'post' },
    { path: '/h', methods: ['HEAD'], name: 'head-only' },
    { path: '/any', name: 'any' },
  );
  const rows: [method: string, path: string, expected: string | null][] = [
    ['GET', '/r', 'get'],
    ['HEAD', '/r', 'get'],
    ['POST', '/r', 'post'],
    ['PUT', '/r', null],
    ['DELETE', '/r', null],
    ['get', '/r', null], // Node hands methods over upper-case; the table does not fold case
    ['HEAD', '/h', 'head-only'],
    ['GET', '/h', null],
    ['DELETE', '/any', 'any'],
    ['PATCH', '/any', 'any'],
    ['OPTIONS', '/any', 'any'],
  ];
  for (const [method, path, expected] of rows) {
    t.equal(tb.match(method, undefined, path)?.route.config.name ?? null, expected, `${method} ${path}`);
  }
  t.same([...tb.routes[0]!.methods!].sort(), ['GET', 'HEAD']);
  t.same([...tb.routes[1]!.methods!], ['POST']);
  t.equal(tb.routes[3]!.methods, undefined);
});

t.test('hostOf: lower-case, port stripped, IPv6 literals kept whole', async (t) => {
  const rows: [header: string | undefined, expected: string][] = [
    ['example.com', 'example.com'],
    ['Example.COM:8080', 'example.com'],
    ['[::1]:8080', '[::1]'],
    ['[::1]', '[::1]'],
    ['[FE80::1]:443', '[fe80::1]'],
    ['127.0.0.1:80', '127.0.0.1'],
    ['localhost', 'localhost'],
    ['', ''],
    [undefined, ''],
  ];
  for (const [header, expected] of rows) t.equal(hostOf(header), expected, String(header));
});

t.test('host: exact and *.suffix, case-insensitive, port ignored', async (t) => {
  const tb = table(
    { path: '/x', host: 'api.example.com', name: 'exact' },
    { path: '/x', host: '*.example.com', name: 'wild' },
    { path: '/x', host: '[::1]', name: 'v6' },
    { path: '/x', name: 'fallback' },
  );
  t.equal(tb.usesHost, true);
  const rows: [host: string | undefined, expected: string][] = [
    ['api.example.com', 'exact'],
    ['API.Example.COM:8443', 'exact'],
    ['a.example.com', 'wild'],
    ['A.B.Example.com:80', 'wild'],
    ['example.com', 'fallback'],
    ['.example.com', 'fallback'],
    ['evil-example.com', 'fallback'],
    ['example.com.evil.net', 'fallback'],
    ['api.example.com.evil.net', 'fallback'],
    ['[::1]:8080', 'v6'],
    ['[::1]', 'v6'],
    [undefined, 'fallback'],
    ['', 'fallback'],
  ];
  for (const [host, expected] of rows) t.equal(tb.match('GET', host, '/x')?.route.config.name, expected, String(host));

  const hostOnly = table({ path: '/x', host: 'api.example.com', name: 'exact' });
  t.equal(hostOnly.match('GET', 'other.example.com', '/x'), undefined);
  t.equal(hostOnly.match('GET', undefined, '/x'), undefined);

  const noHost = table({ path: '/x', name: 'x' });
  t.equal(noHost.usesHost, false);
  t.equal(noHost.match('GET', 'anything.at.all:1', '/x')?.route.config.name, 'x');
});

t.test('a trailing slash is significant', async (t) => {
  const tb = table({ path: '/api/v1/dags/', name: 'slash' }, { path: '/api/v1/runs', name: 'bare' });
  matrix(t, tb, [
    ['/api/v1/dags/', { name: 'slash' }],
    ['/api/v1/dags', null],
    ['/api/v1/runs', { name: 'bare' }],
    ['/api/v1/runs/', null],
  ]);
});

t.test('upstreamPath joins the base path, with and without strip_prefix', async (t) => {
  const rows: [r: RouteInput, request: string, expected: string, basePath: string, origin: string][] = [
    [{ path: '/api/v1/health' }, '/api/v1/health', '/api/v1/api/v1/health', '/api/v1', 'http://127.0.0.1:8090'],
    [{ path: '/api/v1/health', strip_prefix: '/api/v1' }, '/api/v1/health', '/api/v1/health', '/api/v1', 'http://127.0.0.1:8090'],
    [{ path: '/api/v1/**', strip_prefix: '/api/v1' }, '/api/v1', '/api/v1', '/api/v1', 'http://127.0.0.1:8090'],
    [{ path: '/api/v1/**', strip_prefix: '/api/v1' }, '/api/v1/', '/api/v1/', '/api/v1', 'http://127.0.0.1:8090'],
    [{ path: '/api/v1/t/**', strip_prefix: '/api/v1/t' }, '/api/v1/t/x/y', '/api/v1/x/y', '/api/v1', 'http://127.0.0.1:8090'],
    [{ path: '/api/v1/health', upstream: 'slash', strip_prefix: '/api/v1' }, '/api/v1/health', '/api/v1/health', '/api/v1', 'http://127.0.0.1:8091'],
    [{ path: '/api/v1/health', upstream: 'slash' }, '/api/v1/health', '/api/v1/api/v1/health', '/api/v1', 'http://127.0.0.1:8091'],
    [{ path: '/api/v1/agent/chat', upstream: 'dagen' }, '/api/v1/agent/chat', '/api/v1/agent/chat', '', 'http://127.0.0.1:3000'],
    [{ path: '/api/v1/agent/chat', upstream: 'dagen', strip_prefix: '/api/v1' }, '/api/v1/agent/chat', '/agent/chat', '', 'http://127.0.0.1:3000'],
    [{ path: '/api/v1/**', upstream: 'dagen', strip_prefix: '/api/v1' }, '/api/v1', '/', '', 'http://127.0.0.1:3000'],
    [{ path: '/**', upstream: 'root' }, '/', '/', '', 'http://127.0.0.1:3001'],
    [{ path: '/**', upstream: 'root' }, '/x/%20y', '/x/%20y', '', 'http://127.0.0.1:3001'],
  ];
  for (const [r, request, expected, basePath, origin] of rows) {
    const tb = table(r);
    const m = tb.match('GET', undefined, request);
    t.ok(m, `${r.path} matches ${request}`);
    t.equal(RouteTable.upstreamPath(m!.route, request), expected, `${r.upstream ?? 'dagu'} ${r.path} strip=${r.strip_prefix}: ${request}`);
    t.equal(m!.route.basePath, basePath);
    t.equal(m!.route.origin, origin);
  }
});

// ---------------------------------------------------------------- compile errors

const SEGMENT = (s: string) => `segment "${s}" is not a literal, {param}, * or a final **`;

const ERRORS: [what: string, r: RouteInput, field: string, message: string][] = [
  ['unknown upstream', { path: '/x', upstream: 'nope' }, 'upstream', 'unknown upstream "nope"'],
  ['path without a leading slash', { path: 'api/v1' }, 'path', 'must start with "/"'],
  ['** not last', { path: '/a/**/b' }, 'path', '"**" may only be the last segment'],
  ['** twice', { path: '/**/**' }, 'path', '"**" may only be the last segment'],
  ['space in a literal', { path: '/a/b c' }, 'path', SEGMENT('b c')],
  ['dot segment', { path: '/a/./b' }, 'path', SEGMENT('.')],
  ['dot-dot segment', { path: '/a/../b' }, 'path', SEGMENT('..')],
  ['empty middle segment', { path: '/a//b' }, 'path', SEGMENT('')],
  ['unclosed param', { path: '/a/{x' }, 'path', SEGMENT('{x')],
  ['param with a bad name', { path: '/a/{1x}' }, 'path', SEGMENT('{1x}')],
  ['param inside a literal', { path: '/a/x{y}' }, 'path', SEGMENT('x{y}')],
  ['lower-case escape', { path: '/a/%3a' }, 'path', SEGMENT('%3a')],
  ['malformed escape', { path: '/a/%G1' }, 'path', SEGMENT('%G1')],
  ['star inside a literal', { path: '/a/x*' }, 'path', SEGMENT('x*')],
  ['non-ASCII literal', { path: '/caf\u00e9' }, 'path', SEGMENT('caf\u00e9')],
  ['duplicate param', { path: '/a/{x}/b/{x}' }, 'path', 'parameter {x} appears twice'],
  [
    'workspace param missing from the path',
    { path: '/api/v1/workspaces/{ws}', workspace: { from: 'param', name: 'workspaceName' } },
    'workspace',
    'path has no {workspaceName} segment',
  ],
  [
    'strip_prefix of another path',
    { path: '/api/v1/**', strip_prefix: '/api/v2' },
    'strip_prefix',
    '"/api/v2" is not a literal prefix of path "/api/v1/**"',
  ],
  [
    'strip_prefix over a param',
    { path: '/api/{v}/x', strip_prefix: '/api/{v}' },
    'strip_prefix',
    '"/api/{v}" is not a literal prefix of path "/api/{v}/x"',
  ],
  [
    'strip_prefix over a partial segment',
    { path: '/api/v1/x', strip_prefix: '/api/v' },
    'strip_prefix',
    '"/api/v" is not a literal prefix of path "/api/v1/x"',
  ],
  [
    'strip_prefix longer than the path',
    { path: '/api/**', strip_prefix: '/api/v1' },
    'strip_prefix',
    '"/api/v1" is not a literal prefix of path "/api/**"',
  ],
];

/** The ConfigError compile throws for these routes (a failed assertion when it throws none). */
function compileError(t: Test, routes: RouteConfig[], what: string): ConfigError {
  try {
    RouteTable.compile({ upstreams: UPSTREAMS, routes });
  } catch (err) {
    t.ok(err instanceof ConfigError, `${what}: throws ConfigError`);
    return err as ConfigError;
  }
  t.fail(`${what}: compiled without error`);
  return new ConfigError([]);
}

t.test('compile errors are ConfigErrors naming routes[N].field with the route position', async (t) => {
  for (const [what, r, field, message] of ERRORS) {
    const err = compileError(t, [route({ ...r, source: 'gw/routes.yaml:12:5' }, 7)], what);
    t.equal(err.code, 'config_invalid', what);
    t.equal(err.status, 500, what);
    t.same(err.issues, [{ file: 'gw/routes.yaml', line: 12, col: 5, field: `routes[7].${field}`, message }], what);
    t.equal(err.message, `gw/routes.yaml:12:5: routes[7].${field}: ${message}`, what);
  }
});

t.test('every bad route is reported, not just the first; a file name may hold colons', async (t) => {
  const routes = [
    route({ path: '/ok' }, 0),
    route({ path: '/x', upstream: 'nope', source: 'C:/gw/gateway.yaml:3:4' }, 1),
    route({ path: '/a/{x}/{x}', source: 'no-position' }, 2),
  ];
  t.same(compileError(t, routes, 'two bad routes').issues, [
    { file: 'C:/gw/gateway.yaml', line: 3, col: 4, field: 'routes[1].upstream', message: 'unknown upstream "nope"' },
    { file: 'no-position', line: 1, col: 1, field: 'routes[2].path', message: 'parameter {x} appears twice' },
  ]);
});

t.test('valid edge cases compile', async (t) => {
  const tb = table(
    { path: '/api/v1/**', strip_prefix: '/api/v1' },
    { path: '/api/v1/workspaces/{ws}/settings', workspace: { from: 'param', name: 'ws' } },
    { path: '/api/v1/dags', workspace: { from: 'query', name: 'workspace' } },
    { path: '/api/v1/agent', workspace: { from: 'key' } },
    { path: "/a/-._~!$&'()+,;=:@%3A/x" },
  );
  t.equal(tb.routes.length, 5);
  t.same(hit(tb, "/a/-._~!$&'()+,;=:@%3A/x"), { name: "* /a/-._~!$&'()+,;=:@%3A/x" });
});

t.test('precomputed role rank, scope mask and surface bit', async (t) => {
  const rows: [r: RouteInput, minRoleRank: number, scopeMask: number, surfaceBit: number][] = [
    [{ path: '/a' }, 0, 0, 1],
    [{ path: '/a', role: 'viewer' }, 1, 0, 1],
    [{ path: '/a', role: 'operator' }, 2, 0, 1],
    [{ path: '/a', role: 'developer' }, 3, 0, 1],
    [{ path: '/a', role: 'manager' }, 4, 0, 1],
    [{ path: '/a', role: 'admin', scopes: ['agents'] }, 5, 1, 1],
    [{ path: '/a', scopes: ['workflows'], surface: 'mcp' }, 0, 2, 2],
    [{ path: '/a', scopes: ['agents', 'workflows'], surface: 'a2a' }, 0, 3, 4],
  ];
  for (const [r, minRoleRank, scopeMask, surfaceBit] of rows) {
    const compiled = table(r).routes[0]!;
    t.same(
      { minRoleRank: compiled.minRoleRank, scopeMask: compiled.scopeMask, surfaceBit: compiled.surfaceBit },
      { minRoleRank, scopeMask, surfaceBit },
      JSON.stringify(r),
    );
  }
});

t.test('a literal segment that normalisation never produces is refused at compile time', async (t) => {
  // An admin writes an escaped literal; the request for the same path is normalised to "admin".
  t.same(normaliseTarget('/api/v1/%61dmin'), { ok: true, path: '/api/v1/admin', query: '' });
  const tb = table({ path: '/api/v1/admin', role: 'admin', name: 'admin' }, { path: '/api/v1/**', auth: 'none', name: 'public' });
  const escaped = normaliseTarget('/api/v1/%61dmin');
  t.equal(escaped.ok && hit(tb, escaped.path)?.name, 'admin', 'an escaped request, normalised, reaches the route written in normal form');
  for (const path of ['/api/v1/%61dmin', '/api/v1/a%2Fb', '/api/v1/a%00']) {
    let issues: string[] = [];
    try {
      table({ path });
    } catch (err) {
      issues = (err as ConfigError).issues.map((i) => i.field);
    }
    t.same(issues, ['routes[0].path'], `${path} is refused at compile time`);
  }
});
