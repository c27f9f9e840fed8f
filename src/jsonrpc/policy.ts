// JSON-RPC method policies for A2A and MCP routes, pure: parse one request, check its method (and
// for MCP tools/call its tool) against the route's rules and the key's role. The gateway forwards
// the same bytes it checked. Batches are refused as a whole (-32600), as the official A2A SDK does
// and MCP (since 2025-06-18) no longer allows them: checking each element would let one refused
// call ride along with allowed ones in a response the client cannot tell apart.

import { ROLE_RANK, type JsonRpcPolicy, type RoleOrDeny } from '../config/types.js';
import { actAs, type Where } from '../auth/workspace.js';
import type { KeyAccess } from '../keys/model.js';
import { foldName } from './fold.js';
import { quoteName, readJson, type JsonObject, type JsonValue } from './read.js';

export type RpcId = string | number | null;

export interface RpcCall {
  readonly id: RpcId;
  /** null for a JSON-RPC response (an MCP client answering sampling/createMessage, roots/list…) */
  readonly method: string | null;
  /** params.name of an MCP tools/call */
  readonly tool: string | undefined;
  /** params.arguments of an MCP tools/call, when an object */
  readonly arguments?: JsonObject | undefined;
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

// The members the policy reads, at each level: a member that a case-insensitive decoder (Go's
// encoding/json) would take for one of them, without being exactly it, is refused.
const ENVELOPE = fieldsByFold(['jsonrpc', 'id', 'method', 'params', 'result', 'error']);
const PARAMS = fieldsByFold(['name', 'arguments']);
const NO_FIELDS: ReadonlyMap<string, string> = new Map();

/** folded name → the exact name, for a list of field names */
export function fieldsByFold(names: readonly string[]): ReadonlyMap<string, string> {
  return new Map(names.map((n) => [foldName(n), n]));
}

const ARGUMENT_FIELDS = new WeakMap<JsonRpcPolicy, ReadonlyMap<string, string>>();

/** The tools/call argument names a policy reads (its workspace rules), folded; cached per policy. */
export function argumentFields(policy: JsonRpcPolicy): ReadonlyMap<string, string> {
  let fields = ARGUMENT_FIELDS.get(policy);
  if (fields === undefined) {
    const names = new Set<string>();
    for (const rule of Object.values(policy.tool_workspaces ?? {})) {
      names.add(rule.argument);
      for (const k of Object.keys(rule.when ?? {})) names.add(k);
      for (const k of rule.unless ?? []) names.add(k);
    }
    fields = fieldsByFold([...names]);
    ARGUMENT_FIELDS.set(policy, fields);
  }
  return fields;
}

function isObject(v: JsonValue | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function own(o: JsonObject, name: string): JsonValue | undefined {
  return Object.hasOwn(o, name) ? o[name] : undefined;
}

/**
 * Why `o` can be read two ways, or undefined: two member names equal under Unicode simple case
 * folding (Go keeps the last for a struct field, JavaScript the exact one), or a name that folds
 * to a field the policy reads without being exactly it ("Method", "METHOD", "ſtring"…).
 */
export function ambiguousNames(o: JsonObject, fields: ReadonlyMap<string, string>): string | undefined {
  const names = Object.keys(o);
  const seen = names.length > 1 ? new Map<string, string>() : undefined;
  for (const name of names) {
    const folded = foldName(name);
    const field = fields.get(folded);
    if (field !== undefined && field !== name) {
      return `member ${quoteName(name)} would be read as ${quoteName(field)} by a case-insensitive JSON decoder; send it exactly as ${quoteName(field)}`;
    }
    const other = seen?.get(folded);
    if (other !== undefined) return `members ${quoteName(other)} and ${quoteName(name)} are one name to a case-insensitive JSON decoder`;
    seen?.set(folded, name);
  }
  return undefined;
}

const ID_FOLDED = foldName('id');

/** The id to answer with: an exact "id" of the right type that no other member could be read as. */
function idOf(o: JsonObject): RpcId {
  const v = own(o, 'id');
  if (typeof v !== 'string' && typeof v !== 'number') return null;
  for (const name in o) if (name !== 'id' && name.length === 2 && foldName(name) === ID_FOLDED) return null;
  return v;
}

/**
 * Read one JSON-RPC message the way a strict reader and a case-insensitive one agree on, or say
 * why not. `argumentFields`: the tools/call argument names the policy reads (workspace rules).
 */
export function parseCall(body: Uint8Array, argumentFields: ReadonlyMap<string, string> = NO_FIELDS): Parsed {
  const read = readJson(body);
  if (!read.ok) return { ok: false, id: null, code: PARSE_ERROR, message: `Parse error: ${read.message}` };
  const msg = read.value;
  if (Array.isArray(msg)) return { ok: false, id: null, code: INVALID_REQUEST, message: 'Invalid Request: batches are not accepted; send one call per request' };
  if (!isObject(msg)) return { ok: false, id: null, code: INVALID_REQUEST, message: 'Invalid Request: expected a JSON-RPC object' };
  const envelope = ambiguousNames(msg, ENVELOPE);
  const id = idOf(msg);
  if (envelope !== undefined) return { ok: false, id, code: INVALID_REQUEST, message: `Invalid Request: ${envelope}` };
  if (read.duplicate !== undefined) return { ok: false, id, code: INVALID_REQUEST, message: `Invalid Request: ${read.duplicate}` };
  const method = own(msg, 'method');
  const params = own(msg, 'params');
  if (isObject(params)) {
    const why = ambiguousNames(params, PARAMS);
    if (why !== undefined) return { ok: false, id, code: INVALID_REQUEST, message: `Invalid Request: in params, ${why}` };
  }
  if (own(msg, 'jsonrpc') === '2.0' && method === undefined && id !== null && (Object.hasOwn(msg, 'result') || Object.hasOwn(msg, 'error'))) {
    // A response to a request the server sent the client (MCP sampling, roots, elicitation).
    return { ok: true, call: { id, method: null, tool: undefined } };
  }
  if (own(msg, 'jsonrpc') !== '2.0' || typeof method !== 'string' || method === '') {
    return { ok: false, id, code: INVALID_REQUEST, message: 'Invalid Request: needs "jsonrpc": "2.0" and a method' };
  }
  if (method !== 'tools/call') return { ok: true, call: { id, method, tool: undefined } };
  const tool = isObject(params) ? own(params, 'name') : undefined;
  if (typeof tool !== 'string') return { ok: false, id, code: INVALID_REQUEST, message: 'Invalid Request: tools/call needs params.name' };
  const args = isObject(params) ? own(params, 'arguments') : undefined;
  if (isObject(args)) {
    const why = ambiguousNames(args, argumentFields);
    if (why !== undefined) return { ok: false, id, code: INVALID_REQUEST, message: `Invalid Request: in params.arguments, ${why}` };
  }
  return { ok: true, call: { id, method, tool, arguments: isObject(args) ? args : undefined } };
}

/** A rule the policy lists itself: never one of Object.prototype's members ("constructor"…). */
function ownRule(table: Readonly<Record<string, RoleOrDeny>>, name: string): RoleOrDeny | undefined {
  return Object.hasOwn(table, name) ? table[name] : undefined;
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
  const methodRule = ownRule(policy.methods, call.method) ?? policy.default_method;
  const needed = methodRule === undefined ? routeRoleRank : rank(methodRule);
  if (roleRank < needed) {
    return { allow: false, message: needed === Infinity ? `method "${call.method}" is not allowed through this gateway` : `method "${call.method}" needs role ${roleName(needed)}` };
  }
  if (call.tool !== undefined) {
    const toolNeeded = rank(ownRule(policy.tools, call.tool) ?? policy.default_tool);
    if (roleRank < toolNeeded) {
      return { allow: false, message: toolNeeded === Infinity ? `tool "${call.tool}" is not allowed through this gateway` : `tool "${call.tool}" needs role ${roleName(toolNeeded)}` };
    }
  }
  return { allow: true };
}

/**
 * Where a tools/call acts: the workspace its arguments name, when the policy says how this tool
 * names one (tool_workspaces) and the call is of a kind that honours it; else nowhere (`none`).
 */
export function toolWhere(policy: JsonRpcPolicy, call: RpcCall): Where {
  const rules = policy.tool_workspaces;
  const rule = rules !== undefined && call.tool !== undefined && Object.hasOwn(rules, call.tool) ? rules[call.tool]! : undefined;
  const args = call.arguments;
  if (rule === undefined || args === undefined) return NO_WORKSPACE;
  for (const name of rule.unless ?? []) if (Object.hasOwn(args, name)) return NO_WORKSPACE;
  for (const [name, values] of Object.entries(rule.when ?? {})) {
    const v = own(args, name);
    if (typeof v !== 'string' || !values.includes(v)) return NO_WORKSPACE;
  }
  const named = own(args, rule.argument);
  return { kind: 'named', name: typeof named === 'string' && named !== '' ? named : undefined, how: `params.arguments.${rule.argument}` };
}

const NO_WORKSPACE: Where = Object.freeze({ kind: 'none' });

export type CallVerdict =
  | { readonly allow: true; readonly roleRank: number; readonly workspace: string | null }
  | { readonly allow: false; readonly status: 403 | 404; readonly code: string; readonly message: string };

/**
 * The whole check of one call by a key the route admitted (`acting`: its role and workspace
 * there): the method at that role; a tools/call where its arguments act (src/auth/workspace.ts),
 * not where the URL said, so ?workspace=team-a cannot carry a change to another workspace.
 */
export function authoriseCall(policy: JsonRpcPolicy, routeRoleRank: number, access: KeyAccess, acting: { roleRank: number; workspace: string | null }, call: RpcCall): CallVerdict {
  const method = allowCall(policy, routeRoleRank, acting.roleRank, call.tool === undefined ? call : { id: call.id, method: call.method, tool: undefined });
  if (!method.allow) return { allow: false, status: 403, code: 'forbidden', message: method.message };
  if (call.tool === undefined) return { allow: true, roleRank: acting.roleRank, workspace: acting.workspace };
  const rule = ownRule(policy.tools, call.tool) ?? policy.default_tool;
  if (rule === 'deny') return { allow: false, status: 403, code: 'forbidden', message: `tool "${call.tool}" is not allowed through this gateway` };
  const there = actAs(access, toolWhere(policy, call), ROLE_RANK[rule]);
  if (there.allow) return there;
  if (there.code === 'forbidden') return { ...there, message: `tool "${call.tool}" needs role ${rule}` };
  return { ...there, message: `tool "${call.tool}": ${there.message}` };
}

function roleName(r: number): string {
  return (Object.keys(ROLE_RANK) as (keyof typeof ROLE_RANK)[]).find((k) => ROLE_RANK[k] === r) ?? String(r);
}

/** A JSON-RPC error response body. */
export function rpcError(id: RpcId, code: number, message: string): string {
  return JSON.stringify({ jsonrpc: '2.0', id, error: { code, message } });
}
