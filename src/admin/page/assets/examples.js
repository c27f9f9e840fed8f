// Copyable examples built from the routes GET /api/info reports and the gateway's public base URL:
// curl for REST calls, JSON-RPC bodies for A2A (message/send, tasks/get, tasks/cancel) and MCP.
// The key is never put into an example: they read it from $KEYGATE_API_KEY.

export const KEY_VAR = '$KEYGATE_API_KEY';
/** Used when the admin listener does not know the public URL. */
export const URL_VAR = '$KEYGATE_URL';

/** Dagen's External API v1, for when the routes are not known. */
const DAGEN_DEFAULTS = {
  list: { title: 'List agents', method: 'GET', path: '/api/v1/agents' },
  chat: { title: 'Agent chat', method: 'POST', path: '/api/v1/agent/chat', body: { message: 'Hello' } },
  run: { title: 'Run a workflow', method: 'POST', path: '/api/v1/workflow/:id/run', body: {} },
};

/** "/api/v1/dags/{fileName}/start" → "/api/v1/dags/:fileName/start"; "**" and "*" → "..." (curl would glob braces). */
export function examplePath(path) {
  return path.replace(/\{([^}]+)\}/g, ':$1').replace(/\*\*?/g, '...');
}

const shellQuote = (s) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * A curl command with the X-API-Key header in place.
 * @param {string} base public base URL (or $KEYGATE_URL)
 * @param {{method: string, path: string, body?: unknown, headers?: string[], query?: string}} req
 */
export function curl(base, req) {
  const url = `${base}${examplePath(req.path)}${req.query ? `?${req.query}` : ''}`;
  const lines = [req.method === 'GET' ? `curl "${url}"` : `curl -X ${req.method} "${url}"`, `-H "X-API-Key: ${KEY_VAR}"`];
  for (const header of req.headers ?? []) lines.push(`-H ${shellQuote(header)}`);
  if (req.body !== undefined) {
    lines.push(`-H "Content-Type: application/json"`);
    const compact = JSON.stringify(req.body);
    lines.push(`-d ${shellQuote(compact.length <= 60 ? compact : JSON.stringify(req.body, null, 2))}`);
  }
  return lines.join(' \\\n  ');
}

const keyed = (routes) => (routes ?? []).filter((r) => r.auth === 'required');
const allows = (r, method) => r.methods === null || r.methods.includes(method);
const find = (routes, surface, method, re) => keyed(routes).find((r) => r.surface === surface && allows(r, method) && re.test(r.path));

/** The three Quick Start calls: list agents (or DAGs), agent chat, run a workflow (or start a DAG). */
export function quickStart(base, routes) {
  const pick = (choices, fallback) => {
    for (const [title, method, re, body] of choices) {
      const r = find(routes, 'rest_api', method, re);
      if (r) return { title, method, path: r.path, body, query: undefined };
    }
    return fallback;
  };
  const calls = [
    pick(
      [
        ['List agents', 'GET', /\/agents$/],
        ['List DAGs', 'GET', /\/dags$/],
      ],
      DAGEN_DEFAULTS.list,
    ),
    pick([['Agent chat', 'POST', /\/agent\/chat$/, DAGEN_DEFAULTS.chat.body]], DAGEN_DEFAULTS.chat),
    pick(
      [
        ['Run a workflow', 'POST', /\/workflows?\/[^/]+\/run$/, {}],
        ['Start a DAG', 'POST', /\/dags\/[^/]+\/start$/, {}],
      ],
      DAGEN_DEFAULTS.run,
    ),
  ];
  return calls.map((c) => ({ title: c.title, code: curl(base, c) }));
}

const bodyFor = (r, method) => (method === 'GET' || method === 'HEAD' || method === 'DELETE' ? undefined : /\/agent\/chat$/.test(r.path) ? { message: 'Hello' } : {});

/** One curl per REST route that needs a key. */
export function restExamples(base, routes) {
  return keyed(routes)
    .filter((r) => r.surface === 'rest_api')
    .map((r) => {
      const method = r.methods === null ? 'GET' : r.methods[0];
      const query = r.workspace_query ? `${r.workspace_query}=WORKSPACE` : undefined;
      return { title: `${r.methods === null ? 'any method' : r.methods.join(', ')} ${examplePath(r.path)}`, route: r, tag: restTag(r.path), code: curl(base, { method, path: r.path, body: bodyFor(r, method), query }) };
    });
}

/** The A2A JSON-RPC calls Dagen serves. */
export function a2aBodies() {
  return [
    {
      title: 'message/send',
      body: {
        jsonrpc: '2.0',
        id: 1,
        method: 'message/send',
        params: { message: { role: 'user', messageId: 'msg-1', parts: [{ kind: 'text', text: 'Hello' }] } },
      },
    },
    { title: 'tasks/get', body: { jsonrpc: '2.0', id: 2, method: 'tasks/get', params: { id: 'TASK_ID' } } },
    { title: 'tasks/cancel', body: { jsonrpc: '2.0', id: 3, method: 'tasks/cancel', params: { id: 'TASK_ID' } } },
  ];
}

/** The A2A route(s) from the config; Dagen's POST /a2a when none is configured (flagged). */
export function a2aExamples(base, routes) {
  const configured = keyed(routes).filter((r) => r.surface === 'a2a');
  const paths = configured.length > 0 ? configured.map((r) => r.path) : ['/a2a'];
  return {
    configured: configured.length > 0,
    examples: paths.flatMap((path) => a2aBodies().map((b) => ({ title: `${b.title} · POST ${examplePath(path)}`, code: curl(base, { method: 'POST', path, body: b.body }) }))),
  };
}

/**
 * MCP (Streamable HTTP) on the first route whose surface is mcp: each method once, with the verb
 * the transport uses — POST for every JSON-RPC message (initialize, tools/list, tools/call), GET to
 * open the server's event stream, DELETE to end a session. [] when no mcp route exists.
 */
export function mcpExamples(base, routes) {
  const mcp = keyed(routes).filter((r) => r.surface === 'mcp' && (r.methods === null || r.methods.includes('POST')));
  if (mcp.length === 0) return [];
  const path = mcp[0].path;
  const accept = 'Accept: application/json, text/event-stream';
  const session = 'Mcp-Session-Id: SESSION_ID';
  const post = (title, body, headers) => ({ title: `POST ${title}`, code: curl(base, { method: 'POST', path, body, headers }) });
  const out = [
    post('initialize', { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'curl', version: '1' } } }, [accept]),
    post('tools/list', { jsonrpc: '2.0', id: 2, method: 'tools/list' }, [accept, session]),
    post('tools/call', { jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'TOOL_NAME', arguments: {} } }, [accept, session]),
  ];
  const allows = (m) => mcp[0].methods === null || mcp[0].methods.includes(m);
  if (allows('GET')) out.push({ title: 'GET event stream', code: curl(base, { method: 'GET', path, headers: ['Accept: text/event-stream', session] }) });
  if (allows('DELETE')) out.push({ title: 'DELETE session', code: curl(base, { method: 'DELETE', path, headers: [session] }) });
  return out;
}

/** The group a REST route's example belongs to: its first path segment after /api/v1 (Dagu's resource, like its OpenAPI tags). */
export function restTag(path) {
  const rest = path.replace(/^\/api\/v\d+\//, '/').split('/').filter(Boolean);
  const first = rest[0] ?? '';
  return first.startsWith('{') || first === '' ? 'other' : first.replace(/\*+/g, 'other');
}
