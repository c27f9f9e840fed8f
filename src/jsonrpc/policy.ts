// JSON-RPC method policies for A2A and MCP routes, pure: parse one request, check its method (and
// for MCP tools/call its tool) against the route's rules and the key's role. The gateway forwards
// the same bytes it checked. Batches are refused as a whole (-32600), as the official A2A SDK does
// and MCP (since 2025-06-18) no longer allows them: checking each element would let one refused
// call ride along with allowed ones in a response the client cannot tell apart.

import { ROLE_RANK, type JsonRpcPolicy, type RoleOrDeny } from '../config/types.js';

export type RpcId = string | number | null;

export interface RpcCall {
  readonly id: RpcId;
  /** null for a JSON-RPC response (an MCP client answering sampling/createMessage, roots/list…) */
  readonly method: string | null;
  /** params.name of an MCP tools/call */
  readonly tool: string | undefined;
}

export const PARSE_ERROR = -32700;
export const INVALID_REQUEST = -32600;
/**
 * The gateway's own refusals use codes outside -32768…-32000: that band is JSON-RPC's, and inside
 * it A2A reserves -32001…-32099 (-32001 TaskNotFound) and MCP uses -32001 (RequestTimeout), so an
 * SDK would mistake a gateway refusal for one of those. Mirrors of the HTTP status: 401, 403, 429.
 */
export const UNAUTHORIZED = -31401;
export const FORBIDDEN = -31403;
export const RATE_LIMITED = -31429;

export type Parsed = { ok: true; call: RpcCall } | { ok: false; id: RpcId; code: number; message: string };

function idOf(v: unknown): RpcId {
  return typeof v === 'string' || typeof v === 'number' ? v : null;
}

export function parseCall(body: Buffer): Parsed {
  let msg: unknown;
  try {
    msg = JSON.parse(body.toString('utf8'));
  } catch {
    return { ok: false, id: null, code: PARSE_ERROR, message: 'Parse error: the body is not valid JSON' };
  }
  if (Array.isArray(msg)) return { ok: false, id: null, code: INVALID_REQUEST, message: 'Invalid Request: batches are not accepted; send one call per request' };
  if (typeof msg !== 'object' || msg === null) return { ok: false, id: null, code: INVALID_REQUEST, message: 'Invalid Request: expected a JSON-RPC object' };
  const o = msg as { jsonrpc?: unknown; method?: unknown; id?: unknown; params?: unknown; result?: unknown; error?: unknown };
  const id = idOf(o.id);
  if (o.jsonrpc === '2.0' && o.method === undefined && id !== null && ('result' in o || 'error' in o)) {
    // A response to a request the server sent the client (MCP sampling, roots, elicitation).
    return { ok: true, call: { id, method: null, tool: undefined } };
  }
  if (o.jsonrpc !== '2.0' || typeof o.method !== 'string' || o.method === '') {
    return { ok: false, id, code: INVALID_REQUEST, message: 'Invalid Request: needs "jsonrpc": "2.0" and a method' };
  }
  const params = o.params as { name?: unknown } | undefined;
  const tool = o.method === 'tools/call' && typeof params?.name === 'string' ? params.name : undefined;
  if (o.method === 'tools/call' && tool === undefined) {
    return { ok: false, id, code: INVALID_REQUEST, message: 'Invalid Request: tools/call needs params.name' };
  }
  return { ok: true, call: { id, method: o.method, tool } };
}

function rank(rule: RoleOrDeny): number {
  return rule === 'deny' ? Infinity : ROLE_RANK[rule];
}

/**
 * Whether a key acting at `roleRank` may make this call. `routeRoleRank` is the route's own
 * minimum (0 = none): the default for methods the policy does not list.
 */
export function allowCall(policy: JsonRpcPolicy, routeRoleRank: number, roleRank: number, call: RpcCall): { allow: true } | { allow: false; message: string } {
  if (call.method === null) {
    // answers to the server's own requests need only what the route needs
    return roleRank >= routeRoleRank ? { allow: true } : { allow: false, message: `this route needs role ${roleName(routeRoleRank)}` };
  }
  const methodRule = policy.methods[call.method] ?? policy.default_method;
  const needed = methodRule === undefined ? routeRoleRank : rank(methodRule);
  if (roleRank < needed) {
    return { allow: false, message: needed === Infinity ? `method "${call.method}" is not allowed through this gateway` : `method "${call.method}" needs role ${roleName(needed)}` };
  }
  if (call.tool !== undefined) {
    const toolNeeded = rank(policy.tools[call.tool] ?? policy.default_tool);
    if (roleRank < toolNeeded) {
      return { allow: false, message: toolNeeded === Infinity ? `tool "${call.tool}" is not allowed through this gateway` : `tool "${call.tool}" needs role ${roleName(toolNeeded)}` };
    }
  }
  return { allow: true };
}

function roleName(r: number): string {
  return (Object.keys(ROLE_RANK) as (keyof typeof ROLE_RANK)[]).find((k) => ROLE_RANK[k] === r) ?? String(r);
}

/** A JSON-RPC error response body. */
export function rpcError(id: RpcId, code: number, message: string): string {
  return JSON.stringify({ jsonrpc: '2.0', id, error: { code, message } });
}
