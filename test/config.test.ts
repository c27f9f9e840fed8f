import t from 'tap';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Ajv } from 'ajv';
import { ConfigError, type ConfigIssue } from '../src/errors.js';
import { loadConfig, resolveConfigPath } from '../src/config/load.js';
import { expandString } from '../src/config/expand.js';

const FIXTURES = path.resolve('test/fixtures/config');
const SCHEMA_FILE = path.resolve('config/gateway.schema.json');

/** How the loader names a file in issues and `source`: relative to the cwd when below it. */
const shown = (file: string) => path.relative(process.cwd(), file);

/** Loads a config that must be invalid and returns its issues. */
function issuesOf(file: string, env: NodeJS.ProcessEnv = {}): ConfigIssue[] {
  try {
    loadConfig(file, env);
  } catch (err) {
    if (err instanceof ConfigError) return err.issues;
    throw err;
  }
  throw new Error(`expected ${file} to be rejected`);
}

/** the package root: a relative include not found next to the config is looked up here */
const ROOT = path.resolve(import.meta.dirname, '..');

const UPSTREAM = `upstreams:
  - name: dagu
    api_base_url: http://127.0.0.1:8090/api/v1
`;

t.test('a full valid config: defaults, env expansion, includes, normalisation', async (t) => {
  const file = path.join(FIXTURES, 'full.yaml');
  const env = { PORT: '9090', DAGU_API_TOKEN: '0123456', DAGU_PORT: '', HOME: '/home/x' };
  const cfg = loadConfig(file, env);
  const src = (f: string, line: number, col: number) => `${shown(path.join(FIXTURES, f))}:${line}:${col}`;
  t.strictSame(cfg, {
    file,
    listen: { host: '127.0.0.1', port: 9090, trust_forwarded: true, drain_timeout: 10, shutdown_delay: 0, header_timeout: 30, request_timeout: 300, health_prefix: '/_keygate/', public_url: 'https://gw.example.com', underscore_headers: 'drop', max_failed_auth: 0 },
    admin: { host: '127.0.0.1', port: 8081, enabled: true, max_failed_auth: 10, allowed_hosts: [] },
    workers: 1,
    reload: { watch: false },
    store: { keys: `sqlite:${path.join(FIXTURES, 'data/keygate.db')}`, rate_limits: 'memory', rate_limits_fallback: 'memory', stale_ttl: 300, state_dir: path.join(FIXTURES, 'data') },
    keys: { prefix: 'dg_', rate_limit: { default: 30, max: 120, min: 1 }, max_keys: 500, usage_retention_days: 30 },
    upstreams: [
      {
        name: 'dagu',
        description: 'literal ${HOME} stays',
        api_base_url: 'http://127.0.0.1:8090/api/v1',
        auth_type: 'token',
        auth_token: '0123456',
        skip_tls_verify: false,
        timeout: 30,
        idle_timeout: 300,
        connections: 64,
        max_pending: 1024,
      },
      {
        name: 'dagen',
        api_base_url: 'http://127.0.0.1:3000',
        auth_type: 'header',
        auth_token: 'dev-key',
        auth_header: 'X-API-Key',
        skip_tls_verify: true,
        timeout: 10,
        idle_timeout: 0,
        connections: 8,
        max_pending: 1024,
      },
    ],
    remote_nodes: [
      {
        name: 'production',
        api_base_url: 'https://prod.example.com/api/v1',
        auth_type: 'basic',
        basic_auth_username: 'ops',
        basic_auth_password: '0042',
        skip_tls_verify: false,
        timeout: 30,
        idle_timeout: 300,
        connections: 64,
        max_pending: 1024,
      },
    ],
    routes: [
      {
        index: 0,
        source: src('full.yaml', 36, 5),
        name: '* /api/v1/health',
        path: '/api/v1/health',
        upstream: 'dagu',
        auth: 'none',
        surface: 'rest_api',
        scopes: [],
        remote_node: false,
        query_token: false,
        pass_authorization: false,
      },
      {
        index: 1,
        source: src('full.yaml', 37, 5),
        name: 'POST /api/v1/agent/chat',
        path: '/api/v1/agent/chat',
        methods: ['POST'],
        host: 'agents.example.com',
        upstream: 'dagen',
        auth: 'required',
        surface: 'a2a',
        scopes: ['agents'],
        remote_node: false,
        query_token: false,
        pass_authorization: false,
      },
      {
        index: 2,
        source: src('routes/dags.yaml', 8, 5),
        name: 'POST /api/v1/dags/{fileName}/start',
        path: '/api/v1/dags/{fileName}/start',
        methods: ['POST'],
        upstream: 'dagu',
        auth: 'required',
        surface: 'rest_api',
        scopes: [],
        remote_node: false,
        query_token: false,
        pass_authorization: false,
        role: 'operator',
        workspace: { from: 'query', name: 'workspace' },
      },
      {
        index: 3,
        source: src('routes/dags.yaml', 9, 5),
        name: '* /api/v1/dags',
        path: '/api/v1/dags',
        upstream: 'dagu',
        auth: 'required',
        surface: 'rest_api',
        scopes: [],
        remote_node: false,
        query_token: false,
        pass_authorization: false,
        role: 'viewer',
        workspace: { from: 'key' },
      },
      {
        // from more.yaml, included by dags.yaml: dags.yaml's defaults do not reach it
        index: 4,
        source: src('routes/more.yaml', 1, 3),
        name: '* /mcp',
        path: '/mcp',
        upstream: 'dagen',
        auth: 'required',
        surface: 'mcp',
        scopes: [],
        remote_node: false,
        query_token: false,
        pass_authorization: false,
      },
      {
        index: 5,
        source: src('full.yaml', 44, 5),
        name: 'workspace runs',
        path: '/api/v1/workspaces/{ws}/runs',
        methods: ['GET', 'HEAD'],
        upstream: 'dagu',
        auth: 'required',
        surface: 'rest_api',
        scopes: ['agents', 'workflows'],
        remote_node: false,
        query_token: false,
        pass_authorization: false,
        workspace: { from: 'param', name: 'ws' },
        strip_prefix: '/api',
      },
    ],
    log: { level: 'debug', destination: path.join(FIXTURES, 'logs/keygate.log'), format: 'json', access_log: false },
    metrics: { per_key: false, max_keys: 100 },
    warnings: [],
  });
  t.equal(typeof cfg.listen.port, 'number', 'port from ${PORT} is coerced to a number');
  t.equal(cfg.upstreams[0]?.auth_token, '0123456', 'an all-digit token stays a string, leading zero kept');
  t.ok(Object.isFrozen(cfg) && Object.isFrozen(cfg.routes) && Object.isFrozen(cfg.routes[2]?.workspace), 'deep-frozen');
  t.throws(() => {
    (cfg.listen as { port: number }).port = 1;
  }, TypeError);
});

t.test('defaults everywhere; loading twice shares no state', async (t) => {
  const dir = t.testdir({ 'gateway.yaml': UPSTREAM + 'routes:\n  - { path: /a, upstream: dagu }\n' });
  const a = loadConfig(path.join(dir, 'gateway.yaml'), {});
  const b = loadConfig(path.join(dir, 'gateway.yaml'), {});
  t.strictSame(a.listen, { host: '0.0.0.0', port: 8080, trust_forwarded: false, drain_timeout: 10, shutdown_delay: 0, header_timeout: 30, request_timeout: 300, health_prefix: '/_keygate/', underscore_headers: 'drop', max_failed_auth: 0 });
  t.strictSame(a.admin, { host: '127.0.0.1', port: 8081, enabled: true, max_failed_auth: 10, allowed_hosts: [] });
  t.strictSame(a.store, { keys: `sqlite:${path.join(dir, 'keygate.db')}`, rate_limits: 'memory', rate_limits_fallback: 'memory', stale_ttl: 300, state_dir: path.join(dir, 'data') });
  t.strictSame(a.keys, { prefix: 'dg_', rate_limit: { default: 60, min: 1, max: 600 }, usage_retention_days: 30 });
  t.strictSame(a.log, { level: 'info', destination: 'stdout', format: 'json', access_log: true });
  t.strictSame(a.metrics, { per_key: false, max_keys: 100 });
  t.strictSame(a.remote_nodes, []);
  t.strictSame(a.upstreams[0], {
    name: 'dagu',
    api_base_url: 'http://127.0.0.1:8090/api/v1',
    auth_type: 'none',
    skip_tls_verify: false,
    timeout: 30,
    idle_timeout: 300,
    connections: 64,
    max_pending: 1024,
  });
  t.strictSame(b, a);
  t.not(b.listen, a.listen, 'each load builds its own objects');
});

t.test('a key written without a value counts as absent; ~ and null too', async (t) => {
  const dir = t.testdir({
    'gateway.yaml': `listen:
admin: { token: ~ }
remote_nodes:
  # none yet
routes: null
`,
  });
  const cfg = loadConfig(path.join(dir, 'gateway.yaml'), {});
  t.equal(cfg.listen.port, 8080);
  t.equal(cfg.admin.token, undefined);
  t.strictSame(cfg.remote_nodes, []);
  t.strictSame(cfg.routes, []);
  t.strictSame(cfg.upstreams, []);
});

t.test('sqlite paths: absolute and :memory: are kept; redis passes through', async (t) => {
  const dir = t.testdir({ 'a.yaml': 'store: { keys: "sqlite:/var/lib/kg.db" }\n', 'b.yaml': 'store: { keys: "sqlite::memory:", rate_limits: "redis://r:6379/0" }\n' });
  t.equal(loadConfig(path.join(dir, 'a.yaml'), {}).store.keys, 'sqlite:/var/lib/kg.db');
  t.strictSame(loadConfig(path.join(dir, 'b.yaml'), {}).store, { keys: 'sqlite::memory:', rate_limits: 'redis://r:6379/0', rate_limits_fallback: 'memory', stale_ttl: 300, state_dir: path.join(dir, 'data') });
});

t.test('anchors and aliases are resolved', async (t) => {
  const dir = t.testdir({
    'gateway.yaml': `${UPSTREAM}routes:
  - &health { path: /health, upstream: dagu, auth: none }
  - *health
`,
  });
  const cfg = loadConfig(path.join(dir, 'gateway.yaml'), {});
  t.equal(cfg.routes.length, 2);
  t.equal(cfg.routes[1]?.path, '/health');
  t.equal(cfg.routes[1]?.source, `${shown(path.join(dir, 'gateway.yaml'))}:6:5`, 'the alias is located where it is used');
});

t.test('alias and key problems are reported and the rest still loads', async (t) => {
  const dir = t.testdir({
    'gateway.yaml': `listen:
  host: *nowhere
  port: &p 9000
admin:
  port: *p
? [a, b]
: c
keys: &k
  prefix: *k
`,
    'ok.yaml': `listen:
  host: 0.0.0.0
  port: &p 9000
admin:
  port: *p
`,
  });
  const file = shown(path.join(dir, 'gateway.yaml'));
  t.strictSame(issuesOf(path.join(dir, 'gateway.yaml')), [
    { file, line: 2, col: 9, field: 'listen.host', message: 'unknown alias *nowhere (the anchor &nowhere must come first)' },
    { file, line: 6, col: 3, field: '', message: 'mapping keys must be plain strings' },
    { file, line: 9, col: 11, field: 'keys.prefix', message: 'alias *k refers to a node that contains it' },
  ]);
  t.equal(loadConfig(path.join(dir, 'ok.yaml'), {}).admin.port, 9000);
});

t.test('an alias bomb is refused', async (t) => {
  const lines = ['a: &a [x, x, x, x, x, x, x, x, x, x]'];
  for (const [prev, name] of [['a', 'b'], ['b', 'c'], ['c', 'd'], ['d', 'e']]) {
    lines.push(`${name}: &${name} [${Array(10).fill(`*${prev}`).join(', ')}]`);
  }
  const dir = t.testdir({ 'gateway.yaml': lines.join('\n') + '\n' });
  t.strictSame(issuesOf(path.join(dir, 'gateway.yaml')), [
    { file: shown(path.join(dir, 'gateway.yaml')), line: 1, col: 1, field: '', message: 'the document has more than 100000 nodes once aliases are expanded' },
  ]);
});

t.test('a __proto__ key is an unknown field, not a prototype', async (t) => {
  const dir = t.testdir({ 'gateway.yaml': 'listen:\n  __proto__: { port: 1 }\n' });
  t.strictSame(issuesOf(path.join(dir, 'gateway.yaml')), [
    {
      file: shown(path.join(dir, 'gateway.yaml')),
      line: 2,
      col: 3,
      field: 'listen.__proto__',
      message: 'unknown field "__proto__"; allowed: host, port, trust_forwarded, drain_timeout, header_timeout, request_timeout, shutdown_delay, health_prefix, public_url, tls, underscore_headers, max_failed_auth',
    },
  ]);
});

t.test('core tags are accepted silently; other YAML warnings are passed on', async (t) => {
  const dir = t.testdir({ 'gateway.yaml': 'listen:\n  port: !!int 9000\n  host: !ip 0.0.0.0\n' });
  const cfg = loadConfig(path.join(dir, 'gateway.yaml'), {});
  t.equal(cfg.listen.port, 9000);
  t.strictSame(cfg.warnings, [{ file: shown(path.join(dir, 'gateway.yaml')), line: 3, col: 9, field: '', message: 'Unresolved tag: !ip' }]);
});

t.test('resolveConfigPath', async (t) => {
  const root = t.testdir({ with: { 'gateway.yaml': '' }, without: {} });
  const dir = path.join(root, 'with');
  const empty = path.join(root, 'without');
  t.equal(resolveConfigPath('conf/x.yaml', dir), path.join(dir, 'conf/x.yaml'));
  t.equal(resolveConfigPath('/etc/kg.yaml', dir), '/etc/kg.yaml');
  t.equal(resolveConfigPath(undefined, dir), path.join(dir, 'gateway.yaml'));
  t.equal(resolveConfigPath(undefined, empty), path.join(empty, 'gateway.example.yaml'));
});

t.test('expandString', async (t) => {
  const env = { A: 'x', EMPTY: '', REF: '${A}' };
  t.strictSame(expandString('pre-${A}-${A:-d}-post', env), { value: 'pre-x-x-post', problems: [] });
  t.strictSame(expandString('${EMPTY:-dflt}|${NOPE:-}|${EMPTY}', env), { value: 'dflt||', problems: [] });
  t.strictSame(expandString('$${A} $$ $A ${REF}', env), { value: '${A} $$ $A ${A}', problems: [] }, 'escape; no second pass');
  t.strictSame(expandString('a ${NOPE} b', env), {
    value: 'a  b',
    problems: ['environment variable NOPE is not set (use ${NOPE:-default} for a default)'],
  });
  t.strictSame(expandString('${1X}', env).problems, ['malformed reference "${1X}": expected ${NAME} or ${NAME:-default}, NAME matching [A-Za-z_][A-Za-z0-9_]*']);
  t.strictSame(expandString('${A-x}', env).problems, ['malformed reference "${A-x}": expected ${NAME} or ${NAME:-default}, NAME matching [A-Za-z_][A-Za-z0-9_]*']);
  t.strictSame(expandString('ok ${A', env).problems, ['unterminated reference "${A" (missing "}"; write $${ for a literal ${)']);
  t.strictSame(expandString('${A:-${B}}', env).problems, ['nested reference in the default of ${A:-...} is not supported']);
});

// ---------------------------------------------------------------------------
// Errors: exact file, line, column, field and message

t.test('YAML syntax errors carry the parser position', async (t) => {
  const dir = t.testdir({
    'gateway.yaml': `listen:
  host: 0.0.0.0
routes: [ { path: /a, upstream: dagu }
log: { level: info }
`,
    'flow.yaml': 'admin: { token: ${KEYGATE_ADMIN_TOKEN} }\n',
  });
  const file = shown(path.join(dir, 'gateway.yaml'));
  t.strictSame(issuesOf(path.join(dir, 'gateway.yaml')), [
    {
      file,
      line: 4,
      col: 1,
      field: '',
      message: 'Flow sequence in block collection must be sufficiently indented and end with a ]',
    },
  ]);
  const flow = issuesOf(path.join(dir, 'flow.yaml'));
  t.strictSame(flow[0], {
    file: shown(path.join(dir, 'flow.yaml')),
    line: 1,
    col: 18,
    field: '',
    message: 'Unexpected flow-map-start at node end (inside { } or [ ], quote a value that contains ${...}, e.g. "${VAR}")',
  });
});

t.test('an unreadable or empty main file', async (t) => {
  const missing = path.join(t.testdirName, 'nope', 'gateway.yaml');
  t.strictSame(issuesOf(missing), [
    {
      file: shown(missing),
      line: 1,
      col: 1,
      field: '',
      message: `cannot read configuration file ${shown(missing)}: ENOENT: no such file or directory, open '${missing}'`,
    },
  ]);
  const dir = t.testdir({ 'gateway.yaml': '# nothing here\n', 'list.yaml': '- a\n' });
  t.strictSame(issuesOf(path.join(dir, 'gateway.yaml')), [
    {
      file: shown(path.join(dir, 'gateway.yaml')),
      line: 1,
      col: 1,
      field: '',
      message: 'the file is empty: expected a mapping with listen, admin, store, keys, upstreams, remote_nodes, routes, log',
    },
  ]);
  t.equal(issuesOf(path.join(dir, 'list.yaml'))[0]?.message, 'the file is not a mapping: expected a mapping with listen, admin, store, keys, upstreams, remote_nodes, routes, log');
});

t.test('unknown field: reported at the key, with the allowed fields', async (t) => {
  const dir = t.testdir({
    'gateway.yaml': `listen:
  host: 0.0.0.0
  prot: 8080
${UPSTREAM}routes:
  - path: /a
    upstrem: dagu
colour: blue
`,
  });
  const file = shown(path.join(dir, 'gateway.yaml'));
  t.strictSame(issuesOf(path.join(dir, 'gateway.yaml')), [
    {
      file,
      line: 3,
      col: 3,
      field: 'listen.prot',
      message: 'unknown field "prot" (did you mean "port"?); allowed: host, port, trust_forwarded, drain_timeout, header_timeout, request_timeout, shutdown_delay, health_prefix, public_url, tls, underscore_headers, max_failed_auth',
    },
    {
      // missing required field: at the route's mapping
      file,
      line: 8,
      col: 5,
      field: 'routes[0].upstream',
      message: 'missing required field "upstream"',
    },
    {
      file,
      line: 9,
      col: 5,
      field: 'routes[0].upstrem',
      message:
        'unknown field "upstrem" (did you mean "upstream"?); allowed: name, path, methods, host, upstream, auth, surface, scope, role, workspace, strip_prefix, remote_node, pass_headers, pass_authorization, query_token, requires, answer, cors, expose_login, jsonrpc',
    },
    {
      file,
      line: 10,
      col: 1,
      field: 'colour',
      message: 'unknown field "colour"; allowed: listen, admin, workers, reload, store, keys, groups, upstreams, remote_nodes, routes, log, cors, forward_auth, metrics',
    },
  ]);
});

t.test('wrong types, enums, patterns and ranges: at the value', async (t) => {
  const dir = t.testdir({
    'gateway.yaml': `listen:
  port: eighty
  trust_forwarded: yes
upstreams:
  - name: Dagu!
    api_base_url: http://127.0.0.1:8090/api/v1
    auth_type: bearer
    timeout: 0
routes:
  - path: /a
    upstream: dagu
    methods: [GET, FETCH]
    workspace: keys
  - just a string
log: { level: loud }
`,
  });
  const file = shown(path.join(dir, 'gateway.yaml'));
  t.strictSame(issuesOf(path.join(dir, 'gateway.yaml')), [
    { file, line: 2, col: 9, field: 'listen.port', message: 'must be an integer (got "eighty")' },
    { file, line: 3, col: 20, field: 'listen.trust_forwarded', message: 'must be true or false (got "yes")' },
    { file, line: 5, col: 11, field: 'upstreams[0].name', message: '"Dagu!" does not match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$' },
    { file, line: 7, col: 16, field: 'upstreams[0].auth_type', message: 'must be one of none, basic, token, header (got "bearer")' },
    { file, line: 8, col: 14, field: 'upstreams[0].timeout', message: 'must be >= 1 (got 0)' },
    {
      file,
      line: 12,
      col: 20,
      field: 'routes[0].methods[1]',
      message: '"FETCH" does not match ^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS|get|head|post|put|patch|delete|options)$',
    },
    { file, line: 13, col: 16, field: 'routes[0].workspace', message: '"keys" does not match ^key$' },
    { file, line: 14, col: 5, field: 'routes[1]', message: 'must be a mapping (got "just a string")' },
    { file, line: 15, col: 15, field: 'log.level', message: 'must be one of fatal, error, warn, info, debug, trace, silent (got "loud")' },
  ]);
});

t.test('missing and malformed environment references: at the scalar', async (t) => {
  const dir = t.testdir({
    'gateway.yaml': `listen:
  port: \${PORT}
upstreams:
  - name: dagu
    description: "a \${1X} b"
    api_base_url: http://127.0.0.1:8090/api/v1
    auth_type: token
    auth_token: \${DAGU_API_TOKEN}
`,
  });
  const file = shown(path.join(dir, 'gateway.yaml'));
  // the '' left by a missing variable is not reported again (no "must be an integer",
  // no empty-token warning)
  t.strictSame(issuesOf(path.join(dir, 'gateway.yaml'), { HOME: '/x' }), [
    {
      file,
      line: 2,
      col: 9,
      field: 'listen.port',
      message: 'environment variable PORT is not set (use ${PORT:-default} for a default)',
    },
    {
      file,
      line: 5,
      col: 18,
      field: 'upstreams[0].description',
      message: 'malformed reference "${1X}": expected ${NAME} or ${NAME:-default}, NAME matching [A-Za-z_][A-Za-z0-9_]*',
    },
    {
      file,
      line: 8,
      col: 17,
      field: 'upstreams[0].auth_token',
      message: 'environment variable DAGU_API_TOKEN is not set (use ${DAGU_API_TOKEN:-default} for a default)',
    },
  ]);
});

t.test('duplicate names, reserved node name, unknown upstream', async (t) => {
  const dir = t.testdir({
    'gateway.yaml': `upstreams:
  - { name: dagu, api_base_url: "http://a:1" }
  - { name: dagen, api_base_url: "http://b:1" }
  - { name: dagu, api_base_url: "http://c:1" }
remote_nodes:
  - { name: local, api_base_url: "http://d:1" }
  - { name: prod, api_base_url: "http://e:1" }
  - { name: prod, api_base_url: "http://f:1" }
routes:
  - { path: /a, upstream: dagux }
`,
  });
  const file = shown(path.join(dir, 'gateway.yaml'));
  t.strictSame(issuesOf(path.join(dir, 'gateway.yaml')), [
    { file, line: 4, col: 13, field: 'upstreams[2].name', message: `duplicate upstream name "dagu" (first defined at ${file}:2:13)` },
    { file, line: 6, col: 13, field: 'remote_nodes[0].name', message: 'the name "local" is reserved (it means the Dagu server itself)' },
    { file, line: 8, col: 13, field: 'remote_nodes[2].name', message: `duplicate remote node name "prod" (first defined at ${file}:7:13)` },
    { file, line: 10, col: 27, field: 'routes[0].upstream', message: 'unknown upstream "dagux" (known: dagu, dagen, dagu)' },
  ]);
});

t.test('api_base_url must be http(s) without credentials, query or fragment', async (t) => {
  const dir = t.testdir({
    'gateway.yaml': `upstreams:
  - name: a
    api_base_url: ftp://host/api
  - name: b
    api_base_url: http://user:pw@host/api
  - name: c
    api_base_url: http://host/api?x=1
  - name: d
    api_base_url: https://host/api#top
  - name: e
    api_base_url: not a url
  - name: ok
    api_base_url: HTTPS://Host:8443/api/v1
`,
  });
  const file = shown(path.join(dir, 'gateway.yaml'));
  const rule = 'must be an http(s) URL without credentials, query or fragment: ';
  t.strictSame(issuesOf(path.join(dir, 'gateway.yaml')), [
    { file, line: 3, col: 19, field: 'upstreams[0].api_base_url', message: rule + 'the scheme is "ftp"' },
    { file, line: 5, col: 19, field: 'upstreams[1].api_base_url', message: rule + 'it contains credentials (use auth_type and its fields)' },
    { file, line: 7, col: 19, field: 'upstreams[2].api_base_url', message: rule + 'it contains a query' },
    { file, line: 9, col: 19, field: 'upstreams[3].api_base_url', message: rule + 'it contains a fragment' },
    { file, line: 11, col: 19, field: 'upstreams[4].api_base_url', message: rule + '"not a url" is not a URL' },
  ]);
});

t.test('route checks: path, strip_prefix, workspace param', async (t) => {
  const dir = t.testdir({
    'gateway.yaml': `${UPSTREAM}routes:
  - path: api/v1/dags
    upstream: dagu
    strip_prefix: api
  - path: /api/v1/dags/{name}
    upstream: dagu
    strip_prefix: /api/
    workspace: { param: ws }
`,
  });
  const file = shown(path.join(dir, 'gateway.yaml'));
  t.strictSame(issuesOf(path.join(dir, 'gateway.yaml')), [
    { file, line: 5, col: 11, field: 'routes[0].path', message: 'must start with "/" (got "api/v1/dags")' },
    { file, line: 7, col: 19, field: 'routes[0].strip_prefix', message: 'must start with "/" (got "api")' },
    { file, line: 10, col: 19, field: 'routes[1].strip_prefix', message: 'must not end with "/" (got "/api/")' },
    { file, line: 11, col: 25, field: 'routes[1].workspace.param', message: 'path "/api/v1/dags/{name}" has no {ws} segment' },
  ]);
});

t.test('keys.rate_limit must satisfy min <= default <= max', async (t) => {
  const dir = t.testdir({
    'minmax.yaml': `keys:
  rate_limit: { min: 10, max: 5 }
`,
    'implicit.yaml': 'keys:\n  rate_limit: { max: 30 }\n',
    'default.yaml': `keys:
  rate_limit:
    default: 700
`,
  });
  t.strictSame(issuesOf(path.join(dir, 'minmax.yaml')), [
    { file: shown(path.join(dir, 'minmax.yaml')), line: 2, col: 22, field: 'keys.rate_limit.min', message: 'min (10) is greater than max (5)' },
  ]);
  // default 60 comes from the schema, so the issue points at the rate_limit mapping
  t.strictSame(issuesOf(path.join(dir, 'implicit.yaml')), [
    {
      file: shown(path.join(dir, 'implicit.yaml')),
      line: 2,
      col: 15,
      field: 'keys.rate_limit.default',
      message: 'default (60) must be between min (1) and max (30)',
    },
  ]);
  t.strictSame(issuesOf(path.join(dir, 'default.yaml')), [
    {
      file: shown(path.join(dir, 'default.yaml')),
      line: 3,
      col: 14,
      field: 'keys.rate_limit.default',
      message: 'default (700) must be between min (1) and max (600)',
    },
  ]);
});

t.test('credentials: a missing field is an error, an empty one a warning', async (t) => {
  const dir = t.testdir({
    'bad.yaml': `upstreams:
  - name: a
    api_base_url: http://a:1
    auth_type: basic
    basic_auth_username: me
  - name: b
    api_base_url: http://b:1
    auth_type: header
    auth_token: t
`,
    'warn.yaml': `upstreams:
  - name: a
    api_base_url: http://a:1
    auth_type: token
    auth_token: \${DAGU_API_TOKEN:-}
  - name: b
    api_base_url: http://b:1
    auth_token: forgotten-auth-type
remote_nodes:
  - name: c
    api_base_url: http://c:1
    auth_type: basic
    basic_auth_username: ""
    basic_auth_password: \${PW}
`,
  });
  const bad = shown(path.join(dir, 'bad.yaml'));
  t.strictSame(issuesOf(path.join(dir, 'bad.yaml')), [
    { file: bad, line: 2, col: 5, field: 'upstreams[0].basic_auth_password', message: 'auth_type basic needs basic_auth_password' },
    { file: bad, line: 6, col: 5, field: 'upstreams[1].auth_header', message: 'auth_type header needs auth_header' },
  ]);
  const cfg = loadConfig(path.join(dir, 'warn.yaml'), { PW: '' });
  const warn = shown(path.join(dir, 'warn.yaml'));
  t.strictSame(cfg.warnings, [
    { file: warn, line: 5, col: 17, field: 'upstreams[0].auth_token', message: 'auth_token is empty: upstream "a" will get requests without a usable credential' },
    { file: warn, line: 8, col: 17, field: 'upstreams[1].auth_token', message: 'auth_token is not used with auth_type none' },
    {
      file: warn,
      line: 13,
      col: 26,
      field: 'remote_nodes[0].basic_auth_username',
      message: 'basic_auth_username is empty: remote node "c" will get requests without a usable credential',
    },
    {
      file: warn,
      line: 14,
      col: 26,
      field: 'remote_nodes[0].basic_auth_password',
      message: 'basic_auth_password is empty: remote node "c" will get requests without a usable credential',
    },
  ]);
  t.equal(cfg.upstreams[0]?.auth_token, '');
});

// ---------------------------------------------------------------------------
// Includes

t.test('include with defaults, nested includes, positions in the included file', async (t) => {
  const dir = t.testdir({
    'gateway.yaml': `${UPSTREAM}routes:
  - { path: /first, upstream: dagu }
  - include: routes/a.yaml
  - { path: /last, upstream: dagu }
`,
    routes: {
      'a.yaml': `defaults:
  upstream: dagu
  auth: none
routes:
  - path: /a1
  - { path: /a2, auth: required }
  - include: sub/b.yaml
`,
      sub: { 'b.yaml': '- { path: /b1, upstream: dagu }\n' },
    },
  });
  const cfg = loadConfig(path.join(dir, 'gateway.yaml'), {});
  t.strictSame(
    cfg.routes.map((r) => [r.index, r.path, r.auth, r.source]),
    [
      [0, '/first', 'required', `${shown(path.join(dir, 'gateway.yaml'))}:5:5`],
      [1, '/a1', 'none', `${shown(path.join(dir, 'routes/a.yaml'))}:5:5`],
      [2, '/a2', 'required', `${shown(path.join(dir, 'routes/a.yaml'))}:6:5`],
      [3, '/b1', 'required', `${shown(path.join(dir, 'routes/sub/b.yaml'))}:1:3`],
      [4, '/last', 'required', `${shown(path.join(dir, 'gateway.yaml'))}:7:5`],
    ],
  );
});

t.test('workers cannot share an in-memory key store', async (t) => {
  const dir = t.testdir({
    'shared.yaml': `workers: 2\nstore:\n  keys: "sqlite::memory:"\n${UPSTREAM}`,
    'auto.yaml': `workers: auto\nstore: { keys: "sqlite::memory:" }\n${UPSTREAM}`,
    'one.yaml': `workers: 1\nstore: { keys: "sqlite::memory:" }\n${UPSTREAM}`,
  });
  t.strictSame(issuesOf(path.join(dir, 'shared.yaml')).map((i) => `${i.line}:${i.col} ${i.field}: ${i.message}`), [
    '3:9 store.keys: an in-memory key store cannot be shared by workers (workers: 2): use sqlite:<file> or redis://',
  ]);
  t.match(issuesOf(path.join(dir, 'auto.yaml'))[0]?.message, /workers: auto/);
  t.equal(loadConfig(path.join(dir, 'one.yaml'), {}).store.keys, 'sqlite::memory:', 'one process may use it');
});

t.test('include with set: fields replaced on every included route, nested ones too; errors at the set', async (t) => {
  const dir = t.testdir({
    'gateway.yaml': `upstreams:
  - { name: dagu, api_base_url: "http://127.0.0.1:8090/api/v1" }
  - { name: dagu-b, api_base_url: "http://127.0.0.1:8091/api/v1" }
routes:
  - include: routes.yaml
  - include: routes.yaml
    set: { host: b.example.com, upstream: dagu-b }
`,
    'routes.yaml': `defaults:
  upstream: dagu
routes:
  - { path: /a, role: viewer }
  - { path: /b, upstream: dagu, host: own.example.com }
  - include: nested.yaml
`,
    'nested.yaml': '- { path: /n, upstream: dagu }\n',
  });
  const cfg = loadConfig(path.join(dir, 'gateway.yaml'), {});
  t.strictSame(
    cfg.routes.map((r) => [r.path, r.host ?? null, r.upstream, r.role ?? null]),
    [
      ['/a', null, 'dagu', 'viewer'],
      ['/b', 'own.example.com', 'dagu', null],
      ['/n', null, 'dagu', null],
      ['/a', 'b.example.com', 'dagu-b', 'viewer'],
      ['/b', 'b.example.com', 'dagu-b', null],
      ['/n', 'b.example.com', 'dagu-b', null],
    ],
    'the second include: every route (the nested file\'s too) on host b and upstream dagu-b',
  );
  t.strictSame(
    cfg.routes.map((r) => r.source),
    [
      `${shown(path.join(dir, 'routes.yaml'))}:4:5`,
      `${shown(path.join(dir, 'routes.yaml'))}:5:5`,
      `${shown(path.join(dir, 'nested.yaml'))}:1:3`,
      `${shown(path.join(dir, 'routes.yaml'))}:4:5`,
      `${shown(path.join(dir, 'routes.yaml'))}:5:5`,
      `${shown(path.join(dir, 'nested.yaml'))}:1:3`,
    ],
    'each route still names where it was written',
  );

  const bad = t.testdir({
    'gateway.yaml': `${UPSTREAM}routes:
  - include: routes.yaml
    set: { upstream: nowhere, colour: red }
  - include: routes.yaml
    set: [host]
  - include: routes.yaml
    set: { include: x.yaml }
`,
    'routes.yaml': '- { path: /a, upstream: dagu }\n',
  });
  const gw = shown(path.join(bad, 'gateway.yaml'));
  t.strictSame(
    issuesOf(path.join(bad, 'gateway.yaml')).map((i) => `${i.file}:${i.line}:${i.col} ${i.field}: ${i.message}`),
    [
      `${gw}:6:31 routes[0].colour: unknown field "colour"; allowed: name, path, methods, host, upstream, auth, surface, scope, role, workspace, strip_prefix, remote_node, pass_headers, pass_authorization, query_token, requires, answer, cors, expose_login, jsonrpc`,
      `${gw}:8:10 routes[1].set: must be a mapping of route fields (got a list)`,
      `${gw}:10:12 routes[2].set.include: set cannot contain include`,
    ],
    'a bad set is reported at the include site',
  );
});

t.test('errors inside an included file name that file and the final route index', async (t) => {
  const dir = t.testdir({
    'gateway.yaml': `${UPSTREAM}routes:
  - { path: /first, upstream: dagu }
  - include: routes.yaml
`,
    'routes.yaml': `defaults:
  upstream: nowhere
  colour: red
routes:
  - { path: /a }
  - { path: /b, methods: [FETCH], upstream: dagu }
`,
  });
  const inc = shown(path.join(dir, 'routes.yaml'));
  // the bad default is merged into two routes but reported once, where it was written
  t.strictSame(issuesOf(path.join(dir, 'gateway.yaml')), [
    {
      file: inc,
      line: 3,
      col: 3,
      field: 'routes[1].colour',
      message:
        'unknown field "colour"; allowed: name, path, methods, host, upstream, auth, surface, scope, role, workspace, strip_prefix, remote_node, pass_headers, pass_authorization, query_token, requires, answer, cors, expose_login, jsonrpc',
    },
    {
      file: inc,
      line: 6,
      col: 27,
      field: 'routes[2].methods[0]',
      message: '"FETCH" does not match ^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS|get|head|post|put|patch|delete|options)$',
    },
  ]);
  // once the schema holds, the semantic check also points into the included file
  const fixed = path.join(dir, 'fixed');
  writeFileSync(path.join(dir, 'fixed.yaml'), `${UPSTREAM}routes:\n  - include: fixed/routes.yaml\n`);
  mkdirSync(fixed);
  writeFileSync(path.join(fixed, 'routes.yaml'), `defaults:\n  upstream: nowhere\nroutes:\n  - { path: /a }\n`);
  t.strictSame(issuesOf(path.join(dir, 'fixed.yaml')), [
    { file: shown(path.join(fixed, 'routes.yaml')), line: 2, col: 13, field: 'routes[0].upstream', message: 'unknown upstream "nowhere" (known: dagu)' },
  ]);
});

t.test('include paths may use ${VAR}; include files are checked for shape', async (t) => {
  const dir = t.testdir({
    'gateway.yaml': `${UPSTREAM}routes:
  - include: \${ROUTES_DIR}/r.yaml
`,
    'bad.yaml': `${UPSTREAM}routes:
  - include: nodefaults.yaml
  - include: noroutes.yaml
  - include: incdefault.yaml
`,
    sub: { 'r.yaml': '- { path: /r, upstream: dagu }\n' },
    'nodefaults.yaml': 'defaults: [a]\nroutes:\n  - { path: /n, upstream: dagu }\n',
    'noroutes.yaml': 'defaults: { upstream: dagu }\n',
    'incdefault.yaml': 'defaults:\n  include: x.yaml\nroutes:\n  - { path: /i, upstream: dagu }\n',
  });
  const main = path.join(dir, 'gateway.yaml');
  t.strictSame(loadConfig(main, { ROUTES_DIR: 'sub' }).routes.map((r) => r.path), ['/r']);
  t.strictSame(issuesOf(main), [
    {
      file: shown(main),
      line: 5,
      col: 14,
      field: 'routes[0].include',
      message: 'environment variable ROUTES_DIR is not set (use ${ROUTES_DIR:-default} for a default)',
    },
  ]);
  const f = (n: string) => shown(path.join(dir, n));
  t.strictSame(issuesOf(path.join(dir, 'bad.yaml')), [
    { file: f('nodefaults.yaml'), line: 1, col: 11, field: 'defaults', message: 'must be a mapping of route fields (got a list)' },
    { file: f('noroutes.yaml'), line: 1, col: 1, field: 'routes', message: 'missing required field "routes"' },
    { file: f('incdefault.yaml'), line: 2, col: 3, field: 'defaults.include', message: 'defaults cannot contain include' },
  ]);
});

t.test('a missing included file: at the include entry', async (t) => {
  const dir = t.testdir({
    'gateway.yaml': `${UPSTREAM}routes:
  - { path: /first, upstream: dagu }
  - include: routes/missing.yaml
`,
  });
  const target = path.join(dir, 'routes/missing.yaml');
  t.strictSame(issuesOf(path.join(dir, 'gateway.yaml')), [
    {
      file: shown(path.join(dir, 'gateway.yaml')),
      line: 6,
      col: 5,
      field: 'routes[1].include',
      message: `cannot read included file ${shown(target)}: no such file (nor ${path.join(ROOT, 'routes/missing.yaml')} in the Keygate package)`,
    },
  ]);
});

t.test('a config copied out of the package still includes the shipped route maps; a file beside it wins', async (t) => {
  const dir = t.testdir({
    'gateway.yaml': `${UPSTREAM}  - name: dagu-mcp
    api_base_url: http://127.0.0.1:8090/mcp
  - name: dagen
    api_base_url: http://127.0.0.1:3000
routes:
  - include: config/routes/dagu.yaml
  - include: config/routes/dagen.yaml
`,
  });
  const cfg = loadConfig(path.join(dir, 'gateway.yaml'), {});
  t.ok(cfg.routes.some((r) => r.name === 'dagu.listAPIKeys'), "the package's config/routes/dagu.yaml");
  t.ok(cfg.routes.some((r) => r.name?.startsWith('dagen.')), "and config/routes/dagen.yaml");
  mkdirSync(path.join(dir, 'config/routes'), { recursive: true });
  writeFileSync(path.join(dir, 'config/routes/dagu.yaml'), '- { name: mine, path: /mine, upstream: dagu }\n');
  const local = loadConfig(path.join(dir, 'gateway.yaml'), {});
  t.same(local.routes.filter((r) => !r.name?.startsWith('dagen.')).map((r) => r.name), ['mine'], 'a file next to the config comes first');
});

t.test('include cycles and nesting deeper than 8 levels', async (t) => {
  const dir = t.testdir({
    'gateway.yaml': `${UPSTREAM}routes:\n  - include: a.yaml\n`,
    'a.yaml': '- { path: /a, upstream: dagu }\n- include: b.yaml\n',
    'b.yaml': '- include: a.yaml\n',
  });
  const a = shown(path.join(dir, 'a.yaml'));
  const b = shown(path.join(dir, 'b.yaml'));
  t.strictSame(issuesOf(path.join(dir, 'gateway.yaml')), [
    { file: b, line: 1, col: 3, field: 'routes[0].include', message: `include cycle: ${a} -> ${b} -> ${a}` },
  ]);

  // gateway.yaml -> l1 -> ... -> l8 is allowed; l8 -> l9 is one level too deep
  const files: Record<string, string> = { 'gateway.yaml': `${UPSTREAM}routes:\n  - include: l1.yaml\n` };
  for (let i = 1; i <= 9; i++) files[`l${i}.yaml`] = `- { path: /l${i}, upstream: dagu }\n- include: l${i + 1}.yaml\n`;
  const deep = path.join(dir, 'deep');
  mkdirSync(deep);
  for (const [name, text] of Object.entries(files)) writeFileSync(path.join(deep, name), text);
  t.strictSame(issuesOf(path.join(deep, 'gateway.yaml')), [
    { file: shown(path.join(deep, 'l8.yaml')), line: 2, col: 3, field: 'routes[1].include', message: 'includes are nested more than 8 levels deep' },
  ]);
});

t.test('malformed included files', async (t) => {
  const dir = t.testdir({
    'gateway.yaml': `${UPSTREAM}routes:
  - include: empty.yaml
  - include: scalar.yaml
  - include: extra.yaml
  - include: broken.yaml
  - { include: x.yaml, path: /a }
`,
    'empty.yaml': '',
    'scalar.yaml': 'just text\n',
    'extra.yaml': 'defaults: {}\nroutes: []\nmore: 1\n',
    'broken.yaml': '- { path: /a\n',
  });
  const f = (n: string) => shown(path.join(dir, n));
  t.strictSame(issuesOf(path.join(dir, 'gateway.yaml')), [
    {
      // an include item with other keys is not an include: the schema says why
      file: f('gateway.yaml'),
      line: 9,
      col: 24,
      field: 'routes[0].path',
      message: 'unknown field "path"; allowed: include, set',
    },
    {
      file: f('empty.yaml'),
      line: 1,
      col: 1,
      field: '',
      message: 'the file is empty: an included file must be a list of routes or a mapping with defaults and routes',
    },
    {
      file: f('scalar.yaml'),
      line: 1,
      col: 1,
      field: '',
      message: 'not a list or mapping: an included file must be a list of routes or a mapping with defaults and routes',
    },
    { file: f('extra.yaml'), line: 3, col: 1, field: 'more', message: 'unknown field "more" in an included file (allowed: defaults, routes)' },
    { file: f('broken.yaml'), line: 2, col: 1, field: '', message: 'Flow map in block collection must be sufficiently indented and end with a }' },
  ]);
});

// ---------------------------------------------------------------------------

t.test('several errors of different kinds are reported together, in file order', async (t) => {
  const dir = t.testdir({
    'gateway.yaml': `listen:
  port: 99999
admin:
  tokn: x
upstreams:
  - name: dagu
    api_base_url: http://h:1
    auth_token: \${MISSING}
routes:
  - { path: /a }
  - include: nope.yaml
`,
  });
  const file = shown(path.join(dir, 'gateway.yaml'));
  const issues = issuesOf(path.join(dir, 'gateway.yaml'));
  t.strictSame(
    issues.map((i) => `${i.line}:${i.col} ${i.field}`),
    ['2:9 listen.port', '4:3 admin.tokn', '8:17 upstreams[0].auth_token', '10:5 routes[0].upstream', '11:5 routes[1].include'],
  );
  t.equal(issues[0]?.message, 'must be <= 65535 (got 99999)');
  t.ok(issues.every((i) => i.file === file));
  const err = (() => {
    try {
      loadConfig(path.join(dir, 'gateway.yaml'), {});
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  t.ok(err instanceof ConfigError);
  t.equal((err as ConfigError).code, 'config_invalid');
  t.equal((err as ConfigError).message.split('\n')[0], `${file}:2:9: listen.port: must be <= 65535 (got 99999)`);
});

t.test('the schema file compiles, describes every property and closes every object', async (t) => {
  const schema = JSON.parse(readFileSync(SCHEMA_FILE, 'utf8')) as Record<string, unknown>;
  t.equal(schema['$schema'], 'http://json-schema.org/draft-07/schema#');
  t.type(schema['title'], 'string');
  t.strictSame(Object.keys(schema['properties'] as object), ['listen', 'admin', 'workers', 'reload', 'store', 'keys', 'groups', 'upstreams', 'remote_nodes', 'routes', 'log', 'cors', 'forward_auth', 'metrics']);
  // ajv's default strict mode: unknown keywords throw, questionable types are logged
  const logged: unknown[] = [];
  const logger = { log: () => {}, warn: (...m: unknown[]) => logged.push(m), error: (...m: unknown[]) => logged.push(m) };
  const ajv = new Ajv({ allowUnionTypes: true, logger });
  t.doesNotThrow(() => ajv.compile(schema));
  t.strictSame(logged, [], 'no strict-mode warnings');

  const undescribed: string[] = [];
  const open: string[] = [];
  let properties = 0;
  const visit = (node: unknown, where: string): void => {
    if (Array.isArray(node)) return node.forEach((n, i) => visit(n, `${where}[${i}]`));
    if (typeof node !== 'object' || node === null) return;
    const o = node as Record<string, unknown>;
    if (o['properties'] !== undefined && o['additionalProperties'] !== false) open.push(where);
    for (const [name, sub] of Object.entries((o['properties'] ?? {}) as Record<string, Record<string, unknown>>)) {
      properties++;
      if (typeof sub['description'] !== 'string' || sub['description'] === '') undescribed.push(`${where}.${name}`);
    }
    for (const [k, v] of Object.entries(o)) visit(v, `${where}.${k}`);
  };
  visit(schema, '#');
  t.strictSame(undescribed, [], 'every property has a description');
  t.strictSame(open, [], 'every object has additionalProperties: false');
  t.ok(properties > 50, `${properties} properties checked`);
});

t.test('YAML syntax: only the first error, where the mistake starts (an unclosed quote where it opened), one line', async (t) => {
  const many = 'listen:\n  host: 0.0.0.0\n' + Array.from({ length: 20 }, (_, i) => ` - bad${i}: [\n`).join('') + 'log: { level: info\n';
  const dir = t.testdir({
    'many.yaml': many,
    'quote.yaml': 'listen:\n  host: "127.0.0.1\n  port: 8080\nadmin:\n  port: 8081\nroutes: []\n',
    'single.yaml': "listen:\n  host: 'it''s\n  port: 8080\n",
  });
  const cascade = issuesOf(path.join(dir, 'many.yaml'));
  t.equal(cascade.length, 1, 'one error, not the cascade after it');
  t.ok(cascade.every((i) => !i.message.includes('\n') && i.message.length <= 200), 'each in one short line');
  t.strictSame(issuesOf(path.join(dir, 'quote.yaml')), [
    { file: shown(path.join(dir, 'quote.yaml')), line: 2, col: 9, field: '', message: 'this "-quoted string is never closed (Missing closing "quote)' },
  ]);
  t.match(issuesOf(path.join(dir, 'single.yaml')), [{ line: 2, col: 9, message: /this '-quoted string is never closed/ }], "'' inside single quotes is not where it opened");
});
