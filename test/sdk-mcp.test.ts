// End to end with the official MCP TypeScript SDK, which no one here wrote: its Streamable HTTP
// server (stateful: one McpServer and transport per session, Mcp-Session-Id, a GET event stream,
// DELETE to end) on a plain node:http server behind the gateway at /mcp, and its Client with
// StreamableHTTPClientTransport through the gateway, the key sent as X-API-Key.
//
// The stack's `dagen` upstream (api_base_url: ${DAGEN_URL}, a bare origin, credential
// `X-API-Key: upstream-dagen-key`) is pointed at the MCP server through startStack's env.

import { randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpServer, ResourceTemplate } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest, LoggingMessageNotificationSchema, type CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { lastRefusal, recordingFetch, type Exchange } from './exchanges.js';
import { startStack, type Stack } from './helpers.js';

const TOOLS = ['dagu_read', 'dagu_change', 'dagu_execute'] as const;
const UPSTREAM_CREDENTIAL = 'upstream-dagen-key';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ------------------------------------------------------------------ the MCP server (upstream)

interface Seen {
  method: string;
  headers: IncomingHttpHeaders;
  /** the request body exactly as it arrived */
  raw: string;
  rpc: { method?: string; id?: unknown; params?: { name?: string } } | undefined;
}

interface McpUpstream {
  url: string;
  seen: Seen[];
  sessions: Map<string, { transport: StreamableHTTPServerTransport; server: McpServer }>;
  closedSessions: string[];
  close(): Promise<void>;
}

/** A tool echoes its name; with a progress token it first sends three progress notifications 250 ms apart. */
function buildServer(): McpServer {
  const server = new McpServer({ name: 'dagu-under-test', version: '1.0.0' }, { capabilities: { logging: {} } });
  for (const name of TOOLS) {
    server.registerTool(name, { description: `echoes "${name}"` }, async (extra): Promise<CallToolResult> => {
      const progressToken = extra._meta?.progressToken;
      if (progressToken !== undefined) {
        for (let i = 1; i <= 3; i++) {
          await extra.sendNotification({ method: 'notifications/progress', params: { progressToken, progress: i, total: 3 } });
          await sleep(250);
        }
      }
      return { content: [{ type: 'text', text: name }] };
    });
  }
  // Dagu's Wiki pages, one resource per workspace and path, with completion of the workspace name
  server.registerResource(
    'wiki_page',
    new ResourceTemplate('dagu://wiki/{workspace}/{path}', { list: undefined, complete: { workspace: () => ['team-a', 'team-b'] } }),
    { mimeType: 'text/markdown' },
    async (uri, vars) => ({ contents: [{ uri: uri.href, text: `page ${String(vars.workspace)}/${String(vars.path)}` }] }),
  );
  server.registerResource('authoring', 'dagu://reference/authoring', { mimeType: 'text/markdown' }, async (uri) => ({ contents: [{ uri: uri.href, text: 'how to write a DAG' }] }));
  server.registerPrompt('dagu_edit_wiki_page', { description: 'edit a Wiki page' }, async () => ({ messages: [{ role: 'user', content: { type: 'text', text: 'edit it' } }] }));
  return server;
}

async function startMcpUpstream(): Promise<McpUpstream> {
  const seen: Seen[] = [];
  const sessions: McpUpstream['sessions'] = new Map();
  const closedSessions: string[] = [];
  const http = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    let rpc: Seen['rpc'];
    try {
      rpc = raw === '' ? undefined : JSON.parse(raw);
    } catch {
      rpc = undefined;
    }
    seen.push({ method: req.method!, headers: req.headers, raw, rpc });
    const sid = req.headers['mcp-session-id'];
    let transport = typeof sid === 'string' ? sessions.get(sid)?.transport : undefined;
    if (transport === undefined) {
      if (req.method !== 'POST' || !isInitializeRequest(rpc)) {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32000, message: 'no valid session' } }));
        return;
      }
      const server = buildServer();
      const created: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (id) => void sessions.set(id, { transport: created, server }),
        onsessionclosed: (id) => {
          sessions.delete(id);
          closedSessions.push(id);
        },
      });
      transport = created;
      await server.connect(created);
    }
    await transport.handleRequest(req, res, rpc);
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(http.address() as AddressInfo).port}`,
    seen,
    sessions,
    closedSessions,
    async close() {
      for (const { server } of sessions.values()) await server.close().catch(() => {});
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}

// ------------------------------------------------------------------ the stack

let s: Stack;
let mcp: McpUpstream;
t.before(async () => {
  mcp = await startMcpUpstream();
  s = await startStack(t.testdir(), {
    env: { DAGEN_URL: mcp.url },
    routes: `
routes:
  - name: mcp
    path: /mcp
    upstream: dagen
    surface: mcp
    role: viewer
    jsonrpc:
      tools:
        dagu_read: viewer
        dagu_change: developer
        dagu_execute: operator
      default_tool: deny
      resource_workspaces:
        - { uri: "dagu://wiki/{workspace}/{path}", workspace: "{workspace}" }
        - { uri: "dagu://reference/**", workspace: route }
      prompt_workspaces:
        dagu_edit_wiki_page: { argument: workspace }
`,
  });
});
t.teardown(async () => {
  await s?.close();
  await mcp?.close();
});

// ------------------------------------------------------------------ the client

/** The SDK client through the gateway; every HTTP exchange it makes is recorded. */
async function connect(key: string | undefined) {
  const exchanges: Exchange[] = [];
  const transport = new StreamableHTTPClientTransport(new URL('/mcp', s.url), {
    requestInit: key === undefined ? {} : { headers: { 'X-API-Key': key } },
    fetch: recordingFetch(exchanges),
  });
  const client = new Client({ name: 'keygate-sdk-test', version: '1.0.0' });
  await client.connect(transport);
  return { client, transport, exchanges };
}

/** Connect and expect the SDK to fail with a StreamableHTTPError. */
async function refusedConnect(key: string | undefined) {
  const exchanges: Exchange[] = [];
  let error: unknown;
  const transport = new StreamableHTTPClientTransport(new URL('/mcp', s.url), {
    requestInit: key === undefined ? {} : { headers: { 'X-API-Key': key } },
    fetch: recordingFetch(exchanges),
  });
  const client = new Client({ name: 'keygate-sdk-test', version: '1.0.0' });
  try {
    await client.connect(transport);
  } catch (err) {
    error = err;
  }
  await client.close().catch(() => {});
  return { error, exchanges };
}

function textOf(result: unknown): string | undefined {
  const content = (result as CallToolResult).content;
  const first = content?.[0];
  return first?.type === 'text' ? first.text : undefined;
}

function upstreamCallsOf(tool: string, sessionId: string | undefined): Seen[] {
  return mcp.seen.filter((r) => r.rpc?.method === 'tools/call' && r.rpc.params?.name === tool && r.headers['mcp-session-id'] === sessionId);
}

/** The refusal's JSON-RPC id is the id the call was sent with (and there was one). */
function sameId(refusal: { body: { id?: unknown }; sentId: unknown } | undefined): boolean {
  return refusal !== undefined && refusal.sentId !== undefined && refusal.body.id === refusal.sentId;
}

// ------------------------------------------------------------------ tests

t.test('a viewer key: initialize, list tools, call an allowed tool, be refused a tool above its role', async (t) => {
  const viewer = await s.key({ name: 'mcp-viewer', role: 'viewer' });
  const { client, transport, exchanges } = await connect(viewer.secret);
  t.teardown(() => client.close());

  t.equal(client.getServerVersion()?.name, 'dagu-under-test', 'initialize answered by the MCP server behind the gateway');
  const sessionId = transport.sessionId;
  t.type(sessionId, 'string', 'Mcp-Session-Id came back through the gateway');
  t.ok(mcp.sessions.has(sessionId!), 'the session exists on the MCP server');

  const init = mcp.seen.find((r) => r.rpc?.method === 'initialize' && r.raw === exchanges[0]?.requestBody);
  t.ok(init, 'the initialize request reached the upstream byte for byte');
  t.equal(init?.headers['x-api-key'], UPSTREAM_CREDENTIAL, "the upstream got its own credential, not the client's key");
  t.equal(init?.headers['x-keygate-role'], 'viewer', 'the upstream is told the role');
  t.equal(init?.headers['x-keygate-key-name'], 'mcp-viewer', 'and the key name');

  const { tools } = await client.listTools();
  t.same(tools.map((tool) => tool.name).sort(), [...TOOLS].sort(), 'tools/list through the gateway');

  const read = await client.callTool({ name: 'dagu_read', arguments: {} });
  t.equal(textOf(read), 'dagu_read', 'dagu_read (viewer) answered');
  t.notOk(read.isError, 'not a tool error');

  const before = upstreamCallsOf('dagu_change', sessionId).length;
  const err = await client.callTool({ name: 'dagu_change', arguments: {} }).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof StreamableHTTPError, 'the SDK surfaces the refusal as a StreamableHTTPError');
  t.equal((err as StreamableHTTPError).code, 403, 'with the HTTP status as its code');
  t.match((err as Error).message, /tool \\?"dagu_change\\?" needs role developer/, 'and the gateway message, readable');
  t.equal(upstreamCallsOf('dagu_change', sessionId).length, before, 'the refused call never reached the MCP server');

  const refusal = lastRefusal(exchanges);
  t.equal(refusal?.status, 403, 'the gateway answered 403');
  t.equal(refusal?.wwwAuthenticate, 'Bearer realm="keygate", error="insufficient_scope"', '403 carries WWW-Authenticate insufficient_scope');
  t.equal(refusal?.body.jsonrpc, '2.0', 'the refusal body is JSON-RPC');
  t.ok(sameId(refusal), "with the refused call's id");
  t.type(refusal?.body.error?.code, 'number');

  const exec = await client.callTool({ name: 'dagu_execute', arguments: {} }).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.equal((exec as StreamableHTTPError | undefined)?.code, 403, 'dagu_execute (operator) is refused to a viewer too');
  t.match((exec as Error | undefined)?.message, /needs role operator/, 'with the role it needs');

  // the session survives refusals
  const again = await client.callTool({ name: 'dagu_read', arguments: {} });
  t.equal(textOf(again), 'dagu_read', 'the session still works after a refusal');
});

t.test('a developer key calls dagu_change and dagu_execute; a tool the policy does not list is refused to anyone', async (t) => {
  const dev = await s.key({ name: 'mcp-developer', role: 'developer' });
  const { client, transport, exchanges } = await connect(dev.secret);
  t.teardown(() => client.close());

  const change = await client.callTool({ name: 'dagu_change', arguments: {} });
  t.equal(textOf(change), 'dagu_change', 'dagu_change (developer) answered');
  t.equal(upstreamCallsOf('dagu_change', transport.sessionId).length, 1, 'and reached the MCP server once');
  t.equal(upstreamCallsOf('dagu_change', transport.sessionId)[0]?.headers['x-keygate-role'], 'developer', 'as a developer');
  const exec = await client.callTool({ name: 'dagu_execute', arguments: {} });
  t.equal(textOf(exec), 'dagu_execute', 'dagu_execute (operator) answered to a developer');

  const unknown = await client.callTool({ name: 'dagu_delete_everything', arguments: {} }).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.equal((unknown as StreamableHTTPError | undefined)?.code, 403, 'default_tool: deny refuses an unlisted tool');
  t.match((unknown as Error | undefined)?.message, /tool \\?"dagu_delete_everything\\?" is not allowed through this gateway/, 'readable message');
  t.equal(upstreamCallsOf('dagu_delete_everything', transport.sessionId).length, 0, 'without reaching the MCP server');
  t.ok(sameId(lastRefusal(exchanges)), "the refusal carries the call's id");
});

t.test('a key whose surfaces exclude mcp is refused at initialize', async (t) => {
  const restOnly = await s.key({ name: 'mcp-rest-only', role: 'admin', surfaces: ['rest_api', 'a2a'] });
  const initsBefore = mcp.seen.filter((r) => r.rpc?.method === 'initialize').length;
  const { error, exchanges } = await refusedConnect(restOnly.secret);
  t.ok(error instanceof StreamableHTTPError, 'the SDK surfaces a StreamableHTTPError');
  t.equal((error as StreamableHTTPError).code, 403, 'code 403');
  t.match((error as Error).message, /not allowed for this surface/, 'with a readable message');
  t.equal(mcp.seen.filter((r) => r.rpc?.method === 'initialize').length, initsBefore, 'nothing reached the MCP server');
  const refusal = lastRefusal(exchanges);
  t.equal(refusal?.body.jsonrpc, '2.0', 'JSON-RPC refusal body');
  t.ok(sameId(refusal), 'with the id of the initialize request');
  t.equal(refusal?.wwwAuthenticate, 'Bearer realm="keygate", error="insufficient_scope"', '403 carries WWW-Authenticate insufficient_scope');
});

t.test('no key: 401 with WWW-Authenticate, surfaced by the SDK', async (t) => {
  const { error, exchanges } = await refusedConnect(undefined);
  t.ok(error instanceof StreamableHTTPError, 'StreamableHTTPError');
  t.equal((error as StreamableHTTPError).code, 401, 'code 401');
  t.match((error as Error).message, /API key required/, 'readable message');
  const refusal = lastRefusal(exchanges);
  t.equal(refusal?.status, 401, 'the gateway answered 401');
  t.equal(refusal?.wwwAuthenticate, 'Bearer realm="keygate"', 'with WWW-Authenticate');
  t.ok(sameId(refusal), 'JSON-RPC error with the id of the initialize request');

  const unknownKey = 'dg_' + 'x'.repeat(43);
  s.secrets.push(unknownKey); // a presented key must stay out of the log even when it is not valid
  const bogus = await refusedConnect(unknownKey);
  t.equal((bogus.error as StreamableHTTPError).code, 401, 'an unknown key: 401 as well');
  t.equal(lastRefusal(bogus.exchanges)?.wwwAuthenticate, 'Bearer realm="keygate", error="invalid_token"', 'with error="invalid_token"');
});

t.test('streams are not buffered: progress notifications on a POST stream, messages on the GET stream', async (t) => {
  const viewer = await s.key({ name: 'mcp-stream', role: 'viewer' });
  const { client, transport } = await connect(viewer.secret);
  t.teardown(() => client.close());
  const sessionId = transport.sessionId!;

  // 1. a tool call answered as an SSE stream: three progress notifications 250 ms apart, then the result
  const started = performance.now();
  const progressAt: number[] = [];
  const result = await client.callTool({ name: 'dagu_read', arguments: {} }, undefined, {
    onprogress: () => progressAt.push(performance.now() - started),
  });
  const resultAt = performance.now() - started;
  t.equal(textOf(result), 'dagu_read', 'the result arrived after the progress');
  t.equal(progressAt.length, 3, 'three progress notifications arrived');
  t.ok(resultAt - progressAt[0]! >= 400, `the first progress arrived ${Math.round(resultAt - progressAt[0]!)} ms before the result (not held back until the end)`);
  t.ok(progressAt[2]! - progressAt[0]! >= 350, `progress notifications arrived spread out: ${progressAt.map(Math.round).join(', ')} ms`);
  const post = mcp.seen.filter((r) => r.method === 'POST' && r.rpc?.method === 'tools/call' && r.headers['mcp-session-id'] === sessionId).at(-1);
  t.match(String(post?.headers.accept), /text\/event-stream/, 'the client asked for an event stream and the gateway passed Accept on');

  // 2. the standalone GET stream: it never ends while the client is connected, so anything that
  // arrives on it proves the gateway forwards it as it comes
  const logs: { data: unknown; at: number }[] = [];
  client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
    logs.push({ data: n.params.data, at: performance.now() });
  });
  const session = mcp.sessions.get(sessionId);
  t.ok(session, 'the session is known upstream');
  const deadline = Date.now() + 5000;
  while (logs.length === 0 && Date.now() < deadline) {
    // until the GET stream is open upstream, messages not tied to a request are dropped: retry
    await session!.server.sendLoggingMessage({ level: 'info', data: 'first' });
    await sleep(100);
  }
  t.ok(logs.length > 0, 'a server message arrived on the GET stream');
  t.ok(
    mcp.seen.some((r) => r.method === 'GET' && r.headers['mcp-session-id'] === sessionId && String(r.headers.accept).includes('text/event-stream')),
    'the client opened its GET stream through the gateway',
  );
  const count = logs.length;
  const sentAt = performance.now();
  await session!.server.sendLoggingMessage({ level: 'info', data: 'second' });
  const until = Date.now() + 2000;
  while (logs.length === count && Date.now() < until) await sleep(10);
  t.equal(logs.at(-1)?.data, 'second', 'a second message arrived on the still-open stream');
  t.ok((logs.at(-1)?.at ?? Infinity) - sentAt < 1000, 'within a second of being sent');
});

t.test('DELETE ends the session through the gateway', async (t) => {
  const viewer = await s.key({ name: 'mcp-delete', role: 'viewer' });
  const { client, transport } = await connect(viewer.secret);
  const sessionId = transport.sessionId!;
  t.ok(mcp.sessions.has(sessionId), 'a session to end');
  await transport.terminateSession();
  t.ok(mcp.seen.some((r) => r.method === 'DELETE' && r.headers['mcp-session-id'] === sessionId), 'the DELETE reached the MCP server');
  t.ok(mcp.closedSessions.includes(sessionId), 'which closed the session');
  t.notOk(mcp.sessions.has(sessionId), 'and forgot it');
  await client.close();
});

t.test('resources, prompts and completion act where their params say, for a key limited to workspaces', async (t) => {
  const grants = await s.key({ name: 'mcp-grants', role: 'viewer', workspaceAccess: { all: false, grants: [{ workspace: 'team-a', role: 'developer' }] } });
  const { client, transport } = await connect(grants.secret);
  t.teardown(() => client.close());
  const sessionId = transport.sessionId;
  const reached = (method: string) => mcp.seen.filter((r) => r.rpc?.method === method && r.headers['mcp-session-id'] === sessionId);

  const own = await client.readResource({ uri: 'dagu://wiki/team-a/runbook' });
  t.equal((own.contents[0] as { text?: string }).text, 'page team-a/runbook', 'a Wiki page of its own workspace is read');
  t.equal(reached('resources/read').at(-1)?.headers['x-keygate-workspace'], 'team-a', 'the upstream is told the workspace the read acts in');
  t.equal(reached('resources/read').at(-1)?.headers['x-keygate-role'], 'developer', 'at the grant\'s role');

  const refused = async (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e);
  const readsBefore = reached('resources/read').length;
  const other = await refused(client.readResource({ uri: 'dagu://wiki/team-b/secret' }));
  t.ok(other instanceof StreamableHTTPError && other.code === 404, 'another workspace\'s Wiki page: 404 through the SDK');
  const odd = await refused(client.readResource({ uri: 'dagu://user@wiki/team-b/secret' }));
  t.ok(odd instanceof StreamableHTTPError && odd.code === 403, 'a URI Keygate cannot place: 403');
  t.equal(reached('resources/read').length, readsBefore, 'neither reached the MCP server');
  t.equal((await client.readResource({ uri: 'dagu://reference/authoring' })).contents.length, 1, 'built-in reference text: no workspace object, read');

  const prompt = await client.getPrompt({ name: 'dagu_edit_wiki_page', arguments: { workspace: 'team-a', path: 'runbook' } });
  t.equal(prompt.messages.length, 1, 'a prompt naming its own workspace');
  const otherPrompt = await refused(client.getPrompt({ name: 'dagu_edit_wiki_page', arguments: { workspace: 'team-b', path: 'runbook' } }));
  t.ok(otherPrompt instanceof StreamableHTTPError && otherPrompt.code === 404, 'a prompt naming another workspace: 404');

  const completion = await refused(client.complete({ ref: { type: 'ref/resource', uri: 'dagu://wiki/{workspace}/{path}' }, argument: { name: 'workspace', value: 'team' } }));
  t.ok(completion instanceof StreamableHTTPError && completion.code === 403, 'completion would list every workspace\'s names: 403 for a scoped key');
  t.equal(reached('completion/complete').length, 0, 'never reached the MCP server');

  const wide = await s.key({ name: 'mcp-all', role: 'viewer' });
  const all = await connect(wide.secret);
  t.teardown(() => all.client.close());
  const suggested = await all.client.complete({ ref: { type: 'ref/resource', uri: 'dagu://wiki/{workspace}/{path}' }, argument: { name: 'workspace', value: 'team' } });
  t.same(suggested.completion.values, ['team-a', 'team-b'], 'an all-workspaces key gets the suggestions');
  t.equal((await all.client.readResource({ uri: 'dagu://wiki/team-b/secret' })).contents.length, 1, 'and reads any workspace');
});

t.test('no secret reaches the upstream or the logs', async (t) => {
  t.ok(s.secrets.length >= 5, 'secrets were handed out');
  const upstreamHeaders = JSON.stringify(mcp.seen.map((r) => r.headers));
  const logs = s.logs.join('\n');
  t.ok(s.logs.some((line) => line.includes('"route":"mcp"')), 'the gateway logged the MCP requests');
  for (const secret of s.secrets) {
    t.notOk(upstreamHeaders.includes(secret), 'a client key never reaches the MCP server');
    t.notOk(logs.includes(secret), 'a client key never appears in the gateway log');
  }
  t.notOk(logs.includes(UPSTREAM_CREDENTIAL), 'the upstream credential never appears in the gateway log');
});
