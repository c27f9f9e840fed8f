// JSON-RPC method policies for A2A and MCP routes, pure: parse one request, check its method (and
// for MCP tools/call its tool) against the route's rules and the key's role. The gateway forwards
// the same bytes it checked. Batches are refused as a whole (-32600), as the official A2A SDK does
// and MCP (since 2025-06-18) no longer allows them: checking each element would let one refused
// call ride along with allowed ones in a response the client cannot tell apart.

import { ROLE_RANK, type JsonRpcPolicy, type RoleOrDeny, type Surface } from '../config/types.js';
import { actAs, type Where } from '../auth/workspace.js';
import type { KeyAccess } from '../keys/model.js';
import { foldName } from './fold.js';
import { quoteName, readJson, type JsonObject, type JsonValue, type ReadResult } from './read.js';
import { isBlank, isTrimmed, resourceWhere } from './resources.js';

export type RpcId = string | number | null;

export interface RpcCall {
  readonly id: RpcId;
  /** null for a JSON-RPC response (an MCP client answering sampling/createMessage, roots/list…) */
  readonly method: string | null;
  /** params.name of an MCP tools/call */
  readonly tool: string | undefined;
  /** params.arguments of an MCP tools/call, when an object */
  readonly arguments?: JsonObject | undefined;
  /** params of any other call, when an object (an MCP resource URI, a prompt's name…) */
  readonly params?: JsonObject | undefined;
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
const PARAMS = fieldsByFold(['name', 'arguments', 'uri', 'tenant']);
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
      if (rule.uri !== undefined) names.add(rule.uri);
      for (const k of Object.keys(rule.when ?? {})) names.add(k);
      for (const k of Object.keys(rule.none ?? {})) names.add(k);
      for (const k of Object.keys(rule.route ?? {})) names.add(k);
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
export function parseCall(body: Uint8Array, argumentFields: ReadonlyMap<string, string> = NO_FIELDS, reader: (body: Uint8Array) => ReadResult = readJson): Parsed {
  const read = reader(body);
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
  if (method !== 'tools/call') return { ok: true, call: isObject(params) ? { id, method, tool: undefined, params } : { id, method, tool: undefined } };
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

/** The least role a method needs: its own rule, else default_method, else the route's role. */
function methodNeeds(policy: JsonRpcPolicy, routeRoleRank: number, method: string): number {
  const methodRule = ownRule(policy.methods, method) ?? policy.default_method;
  return methodRule === undefined ? routeRoleRank : rank(methodRule);
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
  const needed = methodNeeds(policy, routeRoleRank, call.method);
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

const NO_WORKSPACE: Where = Object.freeze({ kind: 'none' });

function unattributed(what: string): Where {
  return { kind: 'unattributed', what };
}

/** Whether the argument `name` holds one of `values`, exactly as Dagu reads it (trimmed). */
function selects(args: JsonObject, selector: Readonly<Record<string, readonly string[]>> | undefined): boolean {
  if (selector === undefined) return false;
  for (const name in selector) {
    const v = own(args, name);
    if (typeof v !== 'string' || !selector[name]!.includes(v)) return false;
  }
  return true;
}

/** The workspace a named argument gives: its value, when Dagu reads it exactly so. */
function namedBy(value: JsonValue | undefined, how: string, what: string): Where {
  if (value === undefined || value === null || value === '') return { kind: 'named', name: undefined, how };
  if (typeof value !== 'string' || !isTrimmed(value)) return unattributed(what);
  return { kind: 'named', name: value, how };
}

/**
 * Where an MCP resource URI acts (resource_workspaces); `undefined`: nowhere in particular, the
 * route's own workspace (built-in reference text).
 */
export function uriWhere(policy: JsonRpcPolicy, uri: JsonValue | undefined): Where | undefined {
  const what = typeof uri === 'string' ? `resource ${quoteName(uri)}` : 'a resource without a string URI';
  if (typeof uri !== 'string' || !isTrimmed(uri)) return unattributed(what);
  const found = resourceWhere(policy.resource_workspaces ?? [], uri);
  if (found === undefined) return unattributed(what);
  switch (found.act.kind) {
    case 'named':
      return { kind: 'named', name: found.workspace === '' ? undefined : found.workspace, how: `a resource URI of one workspace (${what} names "${found.workspace}")` };
    case 'all':
      return { kind: 'named', name: undefined, how: `a resource URI of one workspace (${what} spans all of them)` };
    case 'none':
      return NO_WORKSPACE;
    case 'route':
      return undefined;
  }
}

/**
 * Where a tools/call acts: through its `uri` argument, the workspace its arguments name (`when`),
 * an object outside any workspace (`none`), no object (`route`: undefined); a tool without a rule
 * acts on an object outside any workspace (dagu_execute); a call its rule does not place is
 * attributed to no workspace.
 */
export function toolWhere(policy: JsonRpcPolicy, call: RpcCall): Where | undefined {
  const rules = policy.tool_workspaces;
  const rule = rules !== undefined && call.tool !== undefined && Object.hasOwn(rules, call.tool) ? rules[call.tool]! : undefined;
  if (rule === undefined) return NO_WORKSPACE;
  const what = `tool "${call.tool}"`;
  const args = call.arguments;
  if (args === undefined) return unattributed(`${what} without arguments`);
  if (rule.uri !== undefined) {
    const uri = own(args, rule.uri);
    // Dagu reads a blank uri as none given
    if (uri !== undefined && !(typeof uri === 'string' && isBlank(uri))) return uriWhere(policy, uri);
  }
  for (const name of rule.unless ?? []) if (Object.hasOwn(args, name)) return NO_WORKSPACE;
  if (selects(args, rule.when)) return namedBy(own(args, rule.argument), `params.arguments.${rule.argument}`, what);
  if (selects(args, rule.none)) return NO_WORKSPACE;
  if (selects(args, rule.route)) return undefined;
  if (rule.when === undefined && rule.none === undefined && rule.route === undefined) return namedBy(own(args, rule.argument), `params.arguments.${rule.argument}`, what);
  return unattributed(what);
}

/** Where a prompts/get acts (prompt_workspaces); an unlisted prompt is attributed to no workspace. */
function promptWhere(policy: JsonRpcPolicy, params: JsonObject | undefined): Where | undefined {
  const name = params === undefined ? undefined : own(params, 'name');
  const what = typeof name === 'string' ? `prompt ${quoteName(name)}` : 'a prompt without a name';
  const rules = policy.prompt_workspaces;
  if (typeof name !== 'string' || rules === undefined || !Object.hasOwn(rules, name)) return unattributed(what);
  const rule = rules[name]!;
  if (rule === 'none') return NO_WORKSPACE;
  if (rule === 'route') return undefined;
  const args = own(params!, 'arguments');
  return namedBy(isObject(args) ? own(args, rule.argument) : undefined, `params.arguments.${rule.argument}`, what);
}

/**
 * Where an MCP call acts, from what its params name; undefined: it names no object (initialize,
 * tools/list, notifications…), so it acts where the route's URL said. The MCP methods that name an
 * object: tools/call (its arguments), resources/read|subscribe|unsubscribe (params.uri),
 * prompts/get (params.name and its arguments); completion/complete and tasks/… name nothing
 * Keygate can place (suggestions and tasks across workspaces).
 */
export function mcpCallWhere(policy: JsonRpcPolicy, call: RpcCall): Where | undefined {
  switch (call.method) {
    case 'tools/call':
      return toolWhere(policy, call);
    case 'resources/read':
    case 'resources/subscribe':
    case 'resources/unsubscribe':
      return uriWhere(policy, call.params === undefined ? undefined : own(call.params, 'uri'));
    case 'prompts/get':
      return promptWhere(policy, call.params);
    case 'completion/complete':
    case 'tasks/get':
    case 'tasks/result':
    case 'tasks/list':
    case 'tasks/cancel':
      return unattributed(call.method);
    default:
      return undefined;
  }
}

/**
 * MCP 2026-07-28 mirrors the call in headers (`Mcp-Method`; `Mcp-Name`: the tool, resource URI or
 * prompt) so that intermediaries can route without the body. A header that says something else
 * than the body the policy read is a second reading: why, or undefined when they agree or are absent.
 */
export function mirrorMismatch(call: RpcCall, mcpMethod: string | string[] | undefined, mcpName: string | string[] | undefined): string | undefined {
  if (mcpMethod !== undefined && mcpMethod !== call.method) return `the Mcp-Method header (${quoteName(String(mcpMethod))}) is not the call's method`;
  if (mcpName === undefined) return undefined;
  let name: JsonValue | undefined;
  if (call.tool !== undefined) name = call.tool;
  else if (call.method === 'resources/read' || call.method === 'resources/subscribe' || call.method === 'resources/unsubscribe') name = call.params && own(call.params, 'uri');
  else if (call.method === 'prompts/get') name = call.params && own(call.params, 'name');
  if (mcpName !== name) return `the Mcp-Name header (${quoteName(String(mcpName))}) is not what the call names`;
  return undefined;
}

export type CallVerdict =
  | { readonly allow: true; readonly roleRank: number; readonly workspace: string | null }
  | { readonly allow: false; readonly status: 403 | 404; readonly code: string; readonly message: string };

/**
 * The whole check of one call by a key the route admitted (`acting`: its role and workspace
 * there): the method at that role; then, on MCP, the call where its params say it acts
 * (src/auth/workspace.ts), not where the URL said, so ?workspace=team-a cannot carry a read or a
 * change of another workspace's object. Elsewhere (A2A) only a tools/call is placed.
 */
export function authoriseCall(policy: JsonRpcPolicy, routeRoleRank: number, access: KeyAccess, acting: { roleRank: number; workspace: string | null }, call: RpcCall, surface: Surface = 'mcp'): CallVerdict {
  const method = allowCall(policy, routeRoleRank, acting.roleRank, call.tool === undefined ? call : { id: call.id, method: call.method, tool: undefined });
  if (!method.allow) return { allow: false, status: 403, code: 'forbidden', message: method.message };
  if (call.method === null) return { allow: true, roleRank: acting.roleRank, workspace: acting.workspace };
  let needed: number;
  if (call.tool !== undefined) {
    const rule = ownRule(policy.tools, call.tool) ?? policy.default_tool;
    if (rule === 'deny') return { allow: false, status: 403, code: 'forbidden', message: `tool "${call.tool}" is not allowed through this gateway` };
    needed = ROLE_RANK[rule];
  } else needed = methodNeeds(policy, routeRoleRank, call.method);
  let where = surface === 'mcp' ? mcpCallWhere(policy, call) : call.tool !== undefined ? toolWhere(policy, call) : undefined;
  if (where === undefined && policy.param_workspace !== undefined && call.params !== undefined) {
    // a call naming no object may still name its workspace (A2A v1.0 params.tenant)
    const named = own(call.params, policy.param_workspace);
    if (named !== undefined && named !== null && named !== '') where = namedBy(named, `params.${policy.param_workspace}`, `params.${policy.param_workspace}`);
  }
  if (where === undefined) return { allow: true, roleRank: acting.roleRank, workspace: acting.workspace };
  const there = actAs(access, where, needed);
  if (there.allow) return there;
  const subject = call.tool !== undefined ? `tool "${call.tool}"` : `method "${call.method}"`;
  if (there.code === 'forbidden') return { ...there, message: `${subject} needs role ${roleName(needed)} where it acts` };
  return { ...there, message: `${subject}: ${there.message}` };
}

function roleName(r: number): string {
  return (Object.keys(ROLE_RANK) as (keyof typeof ROLE_RANK)[]).find((k) => ROLE_RANK[k] === r) ?? String(r);
}

/** A JSON-RPC error response body. */
export function rpcError(id: RpcId, code: number, message: string): string {
  return JSON.stringify({ jsonrpc: '2.0', id, error: { code, message } });
}
