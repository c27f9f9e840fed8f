// Refusals made before (or without) a route match — the failed-key throttle's 429, the 400 of
// `underscore_headers: reject`, a malformed target, a method the path has no route for, a header
// block too large, an upstream that is down — answer on a JSON-RPC path (every path a route with a
// `jsonrpc` policy serves, whatever the method) with a JSON-RPC error, as the refusals after the
// match always did; everywhere else with Keygate's `{code,message}`. With undici over real
// sockets, the official MCP SDK client and the official A2A SDK client.

import t from 'tap';
import { connect as connectSocket } from 'node:net';
import { Agent, fetch as undiciFetch, request } from 'undici';
import { Client as McpClient } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { A2A_PROTOCOL_VERSION, Role, type AgentCard } from '@a2a-js/sdk';
import { ClientFactory, ClientFactoryOptions, JsonRpcTransportFactory } from '@a2a-js/sdk/client';
import { lastRefusal, recordingFetch, type Exchange } from './exchanges.js';
import { startStack, type Stack } from './helpers.js';

const ROUTES = `
routes:
  - name: mcp
    path: /mcp
    methods: [POST]
    upstream: dagen
    surface: mcp
    jsonrpc: { tools: { dagu_read: viewer }, max_body_bytes: 4096 }
  - { name: mcp.stream, path: /mcp, methods: [GET, DELETE], upstream: dagen, surface: mcp }
  - name: a2a
    path: /a2a
    upstream: dagen
    surface: a2a
    scope: agents
    jsonrpc: { methods: { SendMessage: viewer, message/send: viewer }, default_method: deny }
  - name: mcp.down
    path: /mcp-down
    upstream: down
    surface: mcp
    jsonrpc: { tools: { dagu_read: viewer } }
  - { path: "/api/v1/t/**", upstream: dagu, strip_prefix: /api/v1/t }
`;

/** One raw HTTP/1.1 exchange from a chosen local address (127.0.0.x). */
function raw(url: string, text: string, from: string): Promise<{ status: number; head: string; body: string }> {
  const { port, hostname } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connectSocket({ port: Number(port), host: hostname, localAddress: from }, () => socket.write(text));
    let data = '';
    socket.setEncoding('latin1');
    socket.on('data', (d) => (data += d));
    socket.on('error', reject);
    socket.on('close', () => {
      const end = data.indexOf('\r\n\r\n');
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0), head: data.slice(0, end), body: data.slice(end + 4) });
    });
  });
}

function parse(body: string): Record<string, any> {
  try {
    return JSON.parse(body) as Record<string, any>;
  } catch {
    return { notJson: body };
  }
}

/** undici requests from one local address, so a throttled address does not block the other tests. */
function from(address: string) {
  const dispatcher = new Agent({ localAddress: address });
  const send = async (path: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}) => {
    const r = await request(`${s.url}${path}`, { method: (init.method ?? 'POST') as 'POST', headers: { 'content-type': 'application/json', ...init.headers }, body: init.body, dispatcher });
    const text = await r.body.text();
    return { status: r.statusCode, headers: r.headers, json: parse(text) };
  };
  const fetchFrom: typeof fetch = (input, init) => undiciFetch(input as string, { ...(init as object), dispatcher }) as unknown as Promise<Response>;
  return { send, fetch: fetchFrom, close: () => dispatcher.close() };
}

const call = (id: number | string, method = 'tools/list', params: unknown = {}) => JSON.stringify({ jsonrpc: '2.0', id, method, params });

let s: Stack;
t.before(async () => {
  s = await startStack(t.testdir(), { routes: ROUTES, listen: 'max_failed_auth: 2' });
});
t.teardown(() => s.close());

t.test('the failed-key throttle: a JSON-RPC error with the call id on /mcp and /a2a, the plain error on REST', async (t) => {
  const agents = await s.key({ name: 'thr-agents', role: 'viewer', scopes: 'agents' });
  const c = from('127.0.0.21');
  t.teardown(() => c.close());
  for (let i = 0; i < 2; i++) t.equal((await c.send('/api/v1/t/x', { method: 'GET', headers: { 'x-api-key': `dg_wrong${i}` } })).status, 401, `unknown key ${i + 1}`);
  const h = { 'x-api-key': agents.secret };

  const mcp = await c.send('/mcp', { headers: h, body: call(77) });
  t.equal(mcp.status, 429, 'POST /mcp: 429');
  t.match(mcp.headers['retry-after'], /^\d+$/, 'with Retry-After');
  t.same({ jsonrpc: mcp.json.jsonrpc, id: mcp.json.id, code: mcp.json.error?.code }, { jsonrpc: '2.0', id: 77, code: -31429 }, 'a JSON-RPC error with the call id');
  t.match(mcp.json.error?.message, /too many unknown keys/);

  const a2a = await c.send('/a2a', { headers: h, body: call('a-1', 'SendMessage') });
  t.match(a2a, { status: 429, json: { jsonrpc: '2.0', id: 'a-1', error: { code: -31429 } } }, 'POST /a2a: the same');
  const stream = await c.send('/mcp', { method: 'GET', headers: h });
  t.match(stream, { status: 429, json: { jsonrpc: '2.0', id: null, error: { code: -31429 } } }, 'GET /mcp (the event stream, a route without a policy on a JSON-RPC path): id null');
  const end = await c.send('/mcp', { method: 'DELETE', headers: h });
  t.match(end, { status: 429, json: { jsonrpc: '2.0', id: null } }, 'DELETE /mcp: the same');
  const rest = await c.send('/api/v1/t/x', { method: 'GET', headers: h });
  t.same({ status: rest.status, code: rest.json.code, jsonrpc: rest.json.jsonrpc }, { status: 429, code: 'rate_limited', jsonrpc: undefined }, 'REST: Keygate\'s own error');

  // the official MCP SDK: initialize is refused; the body it reports is a JSON-RPC error with the initialize id
  const exchanges: Exchange[] = [];
  const transport = new StreamableHTTPClientTransport(new URL('/mcp', s.url), { requestInit: { headers: h }, fetch: recordingFetch(exchanges, c.fetch) });
  const client = new McpClient({ name: 'keygate-throttle-test', version: '1.0.0' });
  const err = await client.connect(transport).then(
    () => undefined,
    (e: unknown) => e,
  );
  await client.close().catch(() => {});
  t.ok(err instanceof StreamableHTTPError, 'the MCP SDK reports the refusal');
  t.equal((err as StreamableHTTPError).code, 429, 'as HTTP 429');
  const refusal = lastRefusal(exchanges);
  t.same({ jsonrpc: refusal?.body.jsonrpc, code: refusal?.body.error?.code }, { jsonrpc: '2.0', code: -31429 }, 'its body a JSON-RPC error');
  t.ok(refusal !== undefined && refusal.sentId !== undefined && refusal.body.id === refusal.sentId, 'with the id of the initialize request');

  // the official A2A SDK: a JSON-RPC error, not an "HTTP error" with an unreadable body
  const card: AgentCard = {
    name: 'throttled',
    description: 'never reached',
    supportedInterfaces: [{ url: `${s.url}/a2a`, protocolBinding: 'JSONRPC', tenant: '', protocolVersion: A2A_PROTOCOL_VERSION }],
    provider: undefined,
    version: '1.0.0',
    capabilities: { streaming: false, pushNotifications: false, extensions: [], extendedAgentCard: false },
    securitySchemes: {},
    securityRequirements: [],
    defaultInputModes: ['text'],
    defaultOutputModes: ['text'],
    skills: [],
    signatures: [],
  };
  const a2aExchanges: Exchange[] = [];
  const withKey: typeof fetch = (input, init) => recordingFetch(a2aExchanges, c.fetch)(input, { ...init, headers: { ...(init?.headers as Record<string, string>), 'X-API-Key': agents.secret } });
  const factory = new ClientFactory(ClientFactoryOptions.createFrom(ClientFactoryOptions.default, { transports: [new JsonRpcTransportFactory({ fetchImpl: withKey })] }));
  const a2aClient = await factory.createFromAgentCard(card);
  const message = { messageId: 'm-1', contextId: '', taskId: '', role: Role.ROLE_USER, parts: [{ content: { $case: 'text' as const, value: 'hi' }, metadata: undefined, filename: '', mediaType: 'text/plain' }], metadata: undefined, extensions: [], referenceTaskIds: [] };
  const a2aErr = await a2aClient.sendMessage({ tenant: '', message: message as never, configuration: undefined, metadata: undefined }).then(
    () => new Error('expected a refusal'),
    (e: Error) => e,
  );
  t.notMatch(a2aErr.message, /^HTTP error/, `the A2A SDK read a JSON-RPC error (${a2aErr.name}: ${a2aErr.message.slice(0, 120)})`);
  t.match(a2aErr.message, /too many unknown keys/, 'and shows its message');
  t.match(lastRefusal(a2aExchanges), { status: 429, body: { jsonrpc: '2.0', error: { code: -31429 } } });
});

t.test('underscore_headers: reject, a malformed target, a method with no route: JSON-RPC on JSON-RPC paths', async (t) => {
  const rejecting = await startStack(t.testdir(), { routes: ROUTES, listen: 'underscore_headers: reject' });
  t.teardown(() => rejecting.close());
  const k = await rejecting.key({ name: 'us', role: 'viewer', scopes: 'agents' });
  const post = (url: string, path: string, extra: string, body: string, method = 'POST') =>
    raw(url, `${method} ${path} HTTP/1.1\r\nHost: gw\r\nX-API-Key: ${k.secret}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}Connection: close\r\n\r\n${body}`, '127.0.0.22');

  const us = await post(rejecting.url, '/mcp', 'X_Keygate_Role: admin\r\n', call(5));
  t.equal(us.status, 400, 'a header name with "_" on POST /mcp: 400');
  t.match(parse(us.body), { jsonrpc: '2.0', id: 5, error: { code: -32600, message: /"x_keygate_role"/ } }, 'a JSON-RPC error with the call id');
  t.match(parse((await post(rejecting.url, '/a2a', 'X_Custom: 1\r\n', call(6, 'SendMessage'))).body), { jsonrpc: '2.0', id: 6, error: { code: -32600 } }, '/a2a too');
  t.match(parse((await post(rejecting.url, '/api/v1/t/x', 'X_Custom: 1\r\n', '{}')).body), { code: 'bad_request' }, 'REST: the plain error');
  t.equal(rejecting.dagen.received.length + rejecting.dagu.received.length, 0, 'nothing reached an upstream');

  const put = await post(s.url, '/mcp', '', call(7), 'PUT');
  t.equal(put.status, 404, 'PUT /mcp: no route');
  t.match(parse(put.body), { jsonrpc: '2.0', id: null, error: { code: -31403 } }, 'answered as JSON-RPC (no call read on a method without a route)');
  const badTarget = await post(s.url, '/mcp?a=%zz#frag', '', call(8));
  t.equal(badTarget.status, 400, 'a fragment in the target: 400');
  t.match(parse(badTarget.body), { jsonrpc: '2.0', id: 8, error: { code: -32600 } }, 'answered as JSON-RPC with the call id');
  t.match(parse((await post(s.url, '/api/v1/t/x?a#frag', '', '{}')).body), { code: 'bad_request' }, 'REST: the plain error');
});

t.test('a header block too large: 431, a JSON-RPC error on /mcp', async (t) => {
  const big = `X-Big: ${'b'.repeat(20_000)}\r\n`;
  const body = call(9);
  const mcp = await raw(s.url, `POST /mcp HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n${big}\r\n${body}`, '127.0.0.23');
  t.equal(mcp.status, 431, '431');
  t.match(parse(mcp.body), { jsonrpc: '2.0', id: null, error: { code: -32600 } }, 'a JSON-RPC error (the body was never read: id null)');
  const rest = await raw(s.url, `GET /api/v1/t/x HTTP/1.1\r\nHost: gw\r\n${big}\r\n`, '127.0.0.23');
  t.equal(rest.status, 431);
  t.match(parse(rest.body), { code: 'header_too_large' }, 'REST: the plain error');
});

t.test('an upstream that is down: 502 as a JSON-RPC error with the call id on a JSON-RPC route', async (t) => {
  const k = await s.key({ name: 'down', role: 'viewer' });
  const c = from('127.0.0.24');
  t.teardown(() => c.close());
  const r = await c.send('/mcp-down', { headers: { 'x-api-key': k.secret }, body: call(10) });
  t.equal(r.status, 502);
  t.match(r.json, { jsonrpc: '2.0', id: 10, error: { code: -32603 } });
});
