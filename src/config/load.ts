// Configuration loader: YAML file → validated, typed, deep-frozen GatewayConfig.
//
// Steps, each keeping file:line:col for every value so that any problem can be
// reported where it was written:
//   1. parse (positions.ts)             4. JSON schema (ajv: types, defaults, unknown fields)
//   2. expand route includes            5. semantic checks (names, URLs, credentials, routes)
//   3. expand ${VAR} (expand.ts)        6. normalise into types.ts and freeze
// Every problem found is collected; loadConfig throws one ConfigError listing them all.
// All of this runs once per (re)load, never per request.
import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import type { DefinedError, ValidateFunction } from 'ajv';
import { ConfigError, ValidationError, type ConfigIssue } from '../errors.js';
import { expandString, expandTree } from './expand.js';
import {
  childPointer,
  escapePointerSegment,
  fieldPath,
  formatPos,
  isRecord,
  parseYaml,
  positionOf,
  setOwn,
  type ParsedYaml,
  type Pos,
  type PosMap,
} from './positions.js';
import type {
  AuthType,
  CorsConfig,
  DeclaredGroupConfig,
  DeclaredKeyConfig,
  ForwardAuthConfig,
  GatewayConfig,
  JsonRpcPolicy,
  KeysConfig,
  Role,
  RoleOrDeny,
  RouteConfig,
  Scope,
  Surface,
  UpstreamConfig,
  WorkspaceSource,
} from './types.js';
import { OVERRIDE_HEADER_NAMES } from './types.js';
import { TlsFileError, loadTls, type TlsFiles } from '../tls.js';
import { parseRange } from '../upstream-version/range.js';
import { parseQuota } from '../keys/service.js';

/** src/config/load.ts and dist/config/load.js are both two levels below the package root. */
const SCHEMA_URL = new URL('../../config/gateway.schema.json', import.meta.url);
const MAX_INCLUDE_DEPTH = 8;
const PACKAGE_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * An include's file: relative to the including file; a relative path that is not there is looked up
 * in the Keygate package itself, so a config copied elsewhere (/etc/keygate/gateway.yaml) still finds
 * the shipped route maps (`include: config/routes/dagu.yaml`). Undefined when it is in neither place.
 */
function resolveInclude(from: string, target: string): string | undefined {
  const local = path.resolve(path.dirname(from), target);
  if (path.isAbsolute(target) || existsSync(local)) return local;
  const packaged = path.resolve(PACKAGE_ROOT, target);
  return existsSync(packaged) ? packaged : undefined;
}

/** `arg` if given, else ./gateway.yaml if it exists, else ./gateway.example.yaml (absolute paths). */
export function resolveConfigPath(arg: string | undefined, cwd = process.cwd()): string {
  if (arg !== undefined && arg !== '') return path.resolve(cwd, arg);
  const local = path.join(cwd, 'gateway.yaml');
  return existsSync(local) ? local : path.join(cwd, 'gateway.example.yaml');
}

/** Loads and validates `file`; throws a ConfigError listing every issue found. */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  const abs = path.resolve(file);
  const ctx = new LoadContext(abs, env);
  const parsed = readAndParse(abs, ctx);
  if (!parsed) throw ctx.error();
  const root = parsed.value;
  if (!isRecord(root)) {
    const what = root === null ? 'the file is empty' : 'the file is not a mapping';
    ctx.issues.push(issueAt(parsed.positions.get('') ?? ctx.rootPos, '', `${what}: expected a mapping with listen, admin, store, keys, upstreams, remote_nodes, routes, log`));
    throw ctx.error();
  }
  const positions = expandIncludes(root, parsed.positions, ctx);
  const rep = new Reporter(ctx, positions, root);
  expandTree(root, env, (pointer, message) => {
    rep.error(pointer, message);
    rep.suppress(pointer); // the '' left behind must not be reported a second time
  });
  if (validateSchema(root, rep)) {
    checkSemantics(root, rep, path.dirname(abs));
    if (ctx.issues.length === 0) return deepFreeze(normalise(root, positions, abs, ctx));
  }
  throw ctx.error();
}

// ---------------------------------------------------------------------------
// Collecting issues

function issueAt(pos: Pos, field: string, message: string): ConfigIssue {
  return { file: pos.file, line: pos.line, col: pos.col, field, message };
}

/** Relative to the working directory when the file is below it: short and clickable. */
function displayPath(abs: string): string {
  const rel = path.relative(process.cwd(), abs);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : abs;
}

class LoadContext {
  readonly issues: ConfigIssue[] = [];
  readonly warnings: ConfigIssue[] = [];
  /** files in the order they were opened, to sort issues: main file first */
  private readonly order = new Map<string, number>();
  readonly rootPos: Pos;

  constructor(
    readonly mainFile: string,
    readonly env: NodeJS.ProcessEnv,
  ) {
    this.rootPos = { file: this.display(mainFile), line: 1, col: 1 };
  }

  display(abs: string): string {
    const d = displayPath(abs);
    if (!this.order.has(d)) this.order.set(d, this.order.size);
    return d;
  }

  error(): ConfigError {
    return new ConfigError(this.tidy(this.issues));
  }

  tidyWarnings(): ConfigIssue[] {
    return this.tidy(this.warnings);
  }

  /**
   * Sorted by file, line, column; one issue per place and message (a route default
   * merged into twenty routes is one mistake, not twenty).
   */
  private tidy(list: ConfigIssue[]): ConfigIssue[] {
    const seen = new Set<string>();
    const unique = list.filter((i) => {
      const k = `${i.file}\0${i.line}\0${i.col}\0${i.message}`;
      return seen.has(k) ? false : (seen.add(k), true);
    });
    const rank = (f: string) => this.order.get(f) ?? Number.MAX_SAFE_INTEGER;
    return unique.sort((a, b) => rank(a.file) - rank(b.file) || a.line - b.line || a.col - b.col);
  }
}

interface Where {
  /** pointer whose position is used (default: the reported pointer itself) */
  at?: string;
  /** use the position of the mapping key (unknown fields) */
  atKey?: boolean;
}

/** Turns a JSON pointer into an issue with position and dotted field path. */
class Reporter {
  private readonly suppressed = new Set<string>();

  constructor(
    private readonly ctx: LoadContext,
    private readonly positions: PosMap,
    private readonly root: unknown,
  ) {}

  suppress(pointer: string): void {
    this.suppressed.add(pointer);
  }

  error(pointer: string, message: string, where: Where = {}): void {
    if (!this.suppressed.has(pointer)) this.ctx.issues.push(this.make(pointer, message, where));
  }

  warn(pointer: string, message: string, where: Where = {}): void {
    if (!this.suppressed.has(pointer)) this.ctx.warnings.push(this.make(pointer, message, where));
  }

  where(pointer: string): string {
    return formatPos(positionOf(this.positions, pointer, false, this.ctx.rootPos));
  }

  private make(pointer: string, message: string, where: Where): ConfigIssue {
    const pos = positionOf(this.positions, where.at ?? pointer, where.atKey ?? false, this.ctx.rootPos);
    return issueAt(pos, fieldPath(pointer, this.root), message);
  }
}

// ---------------------------------------------------------------------------
// Reading files and expanding includes

interface IncludeSite {
  pos: Pos;
  field: string;
}

/** undefined when the file cannot be read or is not valid YAML (issues recorded). */
function readAndParse(abs: string, ctx: LoadContext, site?: IncludeSite): ParsedYaml | undefined {
  const file = ctx.display(abs);
  let src: string;
  try {
    src = readFileSync(abs, 'utf8');
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    ctx.issues.push(
      site
        ? issueAt(site.pos, site.field, `cannot read included file ${file}: ${reason}`)
        : issueAt({ file, line: 1, col: 1 }, '', `cannot read configuration file ${file}: ${reason}`),
    );
    return undefined;
  }
  const parsed = parseYaml(src, file);
  ctx.issues.push(...parsed.issues);
  ctx.warnings.push(...parsed.warnings);
  return parsed.unusable ? undefined : parsed;
}

/** A route list item with positions relative to it ('' = the item itself). */
interface RouteEntry {
  value: unknown;
  positions: PosMap;
}

interface IncludeLevel {
  file: string;
  /** absolute paths from the main file down to `file`, to detect cycles */
  chain: string[];
  depth: number;
}

/** Replaces include items of root.routes in place; returns the positions re-keyed to the final indexes. */
function expandIncludes(root: Record<string, unknown>, positions: PosMap, ctx: LoadContext): PosMap {
  const routes = root['routes'];
  if (!Array.isArray(routes)) return positions;
  const entries = expandEntries(splitItems(routes, positions, '/routes'), { file: ctx.mainFile, chain: [ctx.mainFile], depth: 0 }, ctx);
  root['routes'] = entries.map((e) => e.value);
  const out: PosMap = new Map([...positions].filter(([p]) => !p.startsWith('/routes/')));
  entries.forEach((e, i) => {
    for (const [rel, pos] of e.positions) out.set(`/routes/${i}${rel}`, pos);
  });
  return out;
}

/** One pass over the positions, grouping those below `arrayPointer/i` by i. */
function splitItems(items: unknown[], positions: PosMap, arrayPointer: string): RouteEntry[] {
  const groups: PosMap[] = items.map(() => new Map());
  const prefix = `${arrayPointer}/`;
  for (const [p, pos] of positions) {
    if (!p.startsWith(prefix)) continue;
    const rest = p.slice(prefix.length);
    const slash = rest.indexOf('/');
    const index = Number(slash < 0 ? rest : rest.slice(0, slash));
    groups[index]?.set(slash < 0 ? '' : rest.slice(slash), pos);
  }
  return items.map((value, i) => ({ value, positions: groups[i] ?? new Map() }));
}

/** Positions below `pointer`, re-keyed relative to it. */
function subtree(positions: PosMap, pointer: string): PosMap {
  const out: PosMap = new Map();
  for (const [p, pos] of positions) {
    if (p === pointer || p.startsWith(`${pointer}/`)) out.set(p.slice(pointer.length), pos);
  }
  return out;
}

/**
 * `{include: "path"}`, optionally with `set` (route fields for every included route); anything else
 * is left for the schema to judge.
 */
function includeTarget(value: unknown): string | undefined {
  if (!isRecord(value)) return undefined;
  const target = value['include'];
  const onlyKnown = Object.keys(value).every((k) => k === 'include' || k === 'set');
  return onlyKnown && typeof target === 'string' && target !== '' ? target : undefined;
}

function expandEntries(entries: RouteEntry[], level: IncludeLevel, ctx: LoadContext): RouteEntry[] {
  const out: RouteEntry[] = [];
  entries.forEach((entry, i) => {
    const target = includeTarget(entry.value);
    if (target === undefined) out.push(entry);
    else out.push(...loadInclude(target, entry, i, level, ctx));
  });
  return out;
}

function loadInclude(target: string, entry: RouteEntry, index: number, level: IncludeLevel, ctx: LoadContext): RouteEntry[] {
  const fallback = { file: ctx.display(level.file), line: 1, col: 1 };
  const site: IncludeSite = { pos: entry.positions.get('') ?? fallback, field: `routes[${index}].include` };
  const expanded = expandString(target, ctx.env);
  if (expanded.problems.length > 0) {
    const at = entry.positions.get('/include') ?? site.pos;
    for (const p of expanded.problems) ctx.issues.push(issueAt(at, site.field, p));
    return [];
  }
  const abs = resolveInclude(level.file, expanded.value);
  if (abs === undefined) {
    const local = ctx.display(path.resolve(path.dirname(level.file), expanded.value));
    const packaged = path.join(PACKAGE_ROOT, expanded.value);
    ctx.issues.push(issueAt(site.pos, site.field, `cannot read included file ${local}: no such file (nor ${packaged} in the Keygate package)`));
    return [];
  }
  if (level.chain.includes(abs)) {
    const cycle = [...level.chain.slice(level.chain.indexOf(abs)), abs].map((f) => ctx.display(f)).join(' -> ');
    ctx.issues.push(issueAt(site.pos, site.field, `include cycle: ${cycle}`));
    return [];
  }
  if (level.depth + 1 > MAX_INCLUDE_DEPTH) {
    ctx.issues.push(issueAt(site.pos, site.field, `includes are nested more than ${MAX_INCLUDE_DEPTH} levels deep`));
    return [];
  }
  const parsed = readAndParse(abs, ctx, site);
  if (!parsed) return [];
  const entries = expandEntries(routesOfFile(parsed, ctx), { file: abs, chain: [...level.chain, abs], depth: level.depth + 1 }, ctx);
  const set = (entry.value as Record<string, unknown>)['set'];
  if (set === undefined) return entries;
  const setPos = subtree(entry.positions, '/set');
  if (!isRecord(set)) {
    ctx.issues.push(issueAt(setPos.get('') ?? site.pos, `routes[${index}].set`, `must be a mapping of route fields (got ${describe(set)})`));
    return entries;
  }
  if (Object.hasOwn(set, 'include')) {
    const p = setPos.get('/include');
    ctx.issues.push(issueAt(p?.key ?? p ?? site.pos, `routes[${index}].set.include`, 'set cannot contain include'));
    return entries;
  }
  overrideFields(entries, set, setPos);
  return entries;
}

/**
 * `set` of an include: each field replaces the route's own (and its file's defaults) on every
 * included route, nested includes too, with set's positions so errors point at the include site.
 */
function overrideFields(entries: RouteEntry[], set: Record<string, unknown>, setPos: PosMap): void {
  for (const entry of entries) {
    const route = entry.value;
    if (!isRecord(route)) continue;
    for (const [key, v] of Object.entries(set)) {
      setOwn(route, key, structuredClone(v));
      const prefix = `/${escapePointerSegment(key)}`;
      for (const p of [...entry.positions.keys()]) if (p === prefix || p.startsWith(`${prefix}/`)) entry.positions.delete(p);
      for (const [rel, pos] of subtree(setPos, prefix)) entry.positions.set(prefix + rel, pos);
    }
  }
}

/** An included file: a list of routes, or {defaults, routes} with defaults merged under each route. */
function routesOfFile(parsed: ParsedYaml, ctx: LoadContext): RouteEntry[] {
  const { value, positions } = parsed;
  const rootPos = positions.get('') ?? ctx.rootPos;
  if (Array.isArray(value)) return splitItems(value, positions, '');
  if (!isRecord(value)) {
    const what = value === null ? 'the file is empty' : 'not a list or mapping';
    ctx.issues.push(issueAt(rootPos, '', `${what}: an included file must be a list of routes or a mapping with defaults and routes`));
    return [];
  }
  for (const key of Object.keys(value)) {
    if (key === 'defaults' || key === 'routes') continue;
    const p = positions.get(childPointer('', key));
    ctx.issues.push(issueAt(p?.key ?? rootPos, key, `unknown field "${key}" in an included file (allowed: defaults, routes)`));
  }
  const { defaults, routes } = value;
  if (defaults !== undefined && !isRecord(defaults)) {
    ctx.issues.push(issueAt(positions.get('/defaults') ?? rootPos, 'defaults', `must be a mapping of route fields (got ${describe(defaults)})`));
  }
  if (!Array.isArray(routes)) {
    const problem = routes === undefined ? 'missing required field "routes"' : `must be a list of routes (got ${describe(routes)})`;
    ctx.issues.push(issueAt(positions.get('/routes') ?? rootPos, 'routes', problem));
    return [];
  }
  const entries = splitItems(routes, positions, '/routes');
  if (isRecord(defaults)) applyDefaults(entries, defaults, subtree(positions, '/defaults'), ctx);
  return entries;
}

/** Fields of `defaults` that a route does not set are copied into it, positions included. */
function applyDefaults(entries: RouteEntry[], defaults: Record<string, unknown>, defaultsPos: PosMap, ctx: LoadContext): void {
  if (Object.hasOwn(defaults, 'include')) {
    const p = defaultsPos.get('/include');
    ctx.issues.push(issueAt(p?.key ?? p ?? ctx.rootPos, 'defaults.include', 'defaults cannot contain include'));
    return;
  }
  for (const entry of entries) {
    const route = entry.value;
    // defaults apply to this file's routes, not to the files it includes
    if (!isRecord(route) || includeTarget(route) !== undefined) continue;
    for (const [key, v] of Object.entries(defaults)) {
      if (Object.hasOwn(route, key)) continue;
      setOwn(route, key, structuredClone(v));
      const prefix = `/${escapePointerSegment(key)}`;
      for (const [rel, pos] of subtree(defaultsPos, prefix)) entry.positions.set(prefix + rel, pos);
    }
  }
}

// ---------------------------------------------------------------------------
// JSON schema

/** The shape the schema guarantees once ajv has applied defaults and coercion. */
interface RawRoute {
  name?: string;
  path: string;
  methods?: string | string[];
  host?: string;
  upstream: string;
  auth?: 'required' | 'none';
  surface?: Surface;
  scope?: Scope | Scope[];
  role?: Role;
  workspace?: 'key' | { query?: string; param?: string };
  strip_prefix?: string;
  remote_node: boolean;
  query_token: boolean;
  pass_authorization: boolean;
  pass_headers?: string[];
  jsonrpc?: Partial<JsonRpcPolicy> & { max_body_bytes: number; default_tool: RoleOrDeny };
  requires?: { dagu: string };
  answer?: 'current_user';
  expose_login: boolean;
  cors?: RawCors | false;
}

type RawCors = Partial<CorsConfig> & { allowed_origins: string[] };

/** The validated document before normalisation: the final shape except for the routes. */
type RawConfig = Omit<GatewayConfig, 'file' | 'routes' | 'warnings' | 'cors'> & { routes: RawRoute[]; cors?: RawCors };

let validator: ValidateFunction | undefined;

/** Compiled on first use, once per process. */
function schemaValidator(): ValidateFunction {
  if (!validator) {
    const schema = strictSchema(JSON.parse(readFileSync(SCHEMA_URL, 'utf8')) as Record<string, unknown>);
    const ajv = new Ajv({
      allErrors: true,
      useDefaults: true,
      coerceTypes: true, // every YAML scalar is a string (failsafe schema); the schema decides its type
      verbose: true, // errors carry `data` and `parentSchema` for better messages
      allowUnionTypes: true, // methods, scope, workspace: a single value or a list/mapping
    });
    validator = ajv.compile(schema);
  }
  return validator;
}

const ENV_REFERENCE = '#/definitions/env_reference';

/**
 * The schema as the loader checks it. The file lets a value also be a `${VAR}` reference
 * (`anyOf: [{checks}, {$ref: env_reference}]`, see scripts/schema-env.mjs) because editors validate
 * the raw YAML; the loader validates after expansion, so it drops that alternative and checks the
 * value itself (which also keeps its error messages to the one check that failed).
 */
export function strictSchema<T>(node: T): T {
  if (Array.isArray(node)) return node.map((n: unknown) => strictSchema(n)) as T;
  if (!isRecord(node)) return node;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === 'anyOf' && Array.isArray(v) && v.some((b) => isRecord(b) && b['$ref'] === ENV_REFERENCE)) {
      const rest = v.filter((b) => !(isRecord(b) && b['$ref'] === ENV_REFERENCE));
      if (rest.length === 1 && isRecord(rest[0])) Object.assign(out, strictSchema(rest[0]));
      else out[k] = strictSchema(rest);
    } else if (k === 'definitions' && isRecord(v)) {
      out[k] = strictSchema(Object.fromEntries(Object.entries(v).filter(([name]) => `#/definitions/${name}` !== ENV_REFERENCE)));
    } else out[k] = strictSchema(v);
  }
  return out as T;
}

/** Validates in place (defaults, coercion); reports every error. */
function validateSchema(data: Record<string, unknown>, rep: Reporter): data is Record<string, unknown> & RawConfig {
  const validate = schemaValidator();
  if (validate(data)) return true;
  // ajv documents this cast: its errors are the union DefinedError for built-in keywords
  for (const e of (validate.errors ?? []) as DefinedError[]) reportSchemaError(e, rep);
  return false;
}

function reportSchemaError(e: DefinedError, rep: Reporter): void {
  switch (e.keyword) {
    case 'if':
      return; // the failing then/else branch reports the actual problem
    case 'additionalProperties': {
      const name = e.params.additionalProperty;
      const props: unknown = e.parentSchema?.['properties'];
      rep.error(childPointer(e.instancePath, name), unknownField(name, isRecord(props) ? Object.keys(props) : []), { atKey: true });
      return;
    }
    case 'required':
      rep.error(childPointer(e.instancePath, e.params.missingProperty), `missing required field "${e.params.missingProperty}"`, { at: e.instancePath });
      return;
    case 'type':
      rep.error(e.instancePath, `must be ${typeNames(e.params.type)} (got ${describe(e.data)})`);
      return;
    case 'enum':
      rep.error(e.instancePath, `must be one of ${e.params.allowedValues.join(', ')} (got ${describe(e.data)})`);
      return;
    case 'pattern':
      rep.error(e.instancePath, `${describe(e.data)} does not match ${e.params.pattern}`);
      return;
    default: {
      const got = typeof e.data === 'object' ? '' : ` (got ${describe(e.data)})`;
      rep.error(e.instancePath, `${e.message ?? e.keyword}${got}`);
    }
  }
}

/** JSON schema type names as a YAML author would say them. */
const YAML_TYPE_NAMES: Record<string, string> = {
  object: 'a mapping',
  array: 'a list',
  boolean: 'true or false',
  integer: 'an integer',
  number: 'a number',
  string: 'a string',
};

function typeNames(types: string | string[]): string {
  const list = Array.isArray(types) ? types : types.split(',');
  return list.map((t) => YAML_TYPE_NAMES[t] ?? t).join(' or ');
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return 'a list';
  if (isRecord(v)) return 'a mapping';
  return JSON.stringify(v) ?? String(v);
}

function unknownField(name: string, allowed: string[]): string {
  const near = closest(name, allowed);
  const hint = near ? ` (did you mean "${near}"?)` : '';
  return `unknown field "${name}"${hint}; allowed: ${allowed.join(', ')}`;
}

/** The allowed name within two edits of `name`, for typo hints. */
function closest(name: string, allowed: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const a of allowed) {
    const d = editDistance(name.toLowerCase(), a);
    if (d < bestDistance) [best, bestDistance] = [a, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

// ---------------------------------------------------------------------------
// Semantic checks (only once the schema holds, so the types above are true)

function checkSemantics(cfg: RawConfig, rep: Reporter, dir: string): void {
  if (cfg.listen.tls) checkTls(resolveTls(cfg.listen.tls, dir), '/listen/tls', rep);
  if (cfg.admin.tls) checkTls(resolveTls(cfg.admin.tls, dir), '/admin/tls', rep);
  checkServers(cfg.upstreams, '/upstreams', 'upstream', rep);
  checkServers(cfg.remote_nodes, '/remote_nodes', 'remote node', rep);
  cfg.remote_nodes.forEach((n, i) => {
    if (n.name === 'local') rep.error(`/remote_nodes/${i}/name`, 'the name "local" is reserved (it means the Dagu server itself)');
  });
  checkRateLimit(cfg.keys.rate_limit, rep);
  if (cfg.listen.request_timeout > 0 && cfg.listen.header_timeout > cfg.listen.request_timeout) {
    rep.error('/listen/header_timeout', `must not exceed request_timeout (${cfg.listen.request_timeout} s): the headers are part of the request`);
  }
  checkRedis(cfg.store, rep);
  // each worker would open its own empty in-memory database: keys made through one would not exist in the others
  if (cfg.store.keys === 'sqlite::memory:' && String(cfg.workers) !== '1') {
    rep.error('/store/keys', `an in-memory key store cannot be shared by workers (workers: ${cfg.workers}): use sqlite:<file> or redis://`);
  }
  checkDeclaredKeys(cfg.keys.declared ?? [], rep);
  checkDeclaredGroups(cfg.groups?.declared ?? [], rep);
  if (cfg.cors) checkCors(cfg.cors, '/cors', rep);
  if (cfg.forward_auth) checkForwardAuth(cfg.forward_auth, cfg.listen.health_prefix, rep);
  const known = cfg.upstreams.map((u) => u.name);
  cfg.routes.forEach((r, i) => checkRoute(r, `/routes/${i}`, known, rep));
}

function checkServers(servers: UpstreamConfig[], base: string, kind: string, rep: Reporter): void {
  const first = new Map<string, string>();
  servers.forEach((s, i) => {
    const p = `${base}/${i}`;
    const earlier = first.get(s.name);
    if (earlier !== undefined) rep.error(`${p}/name`, `duplicate ${kind} name "${s.name}" (first defined at ${rep.where(earlier)})`);
    else first.set(s.name, `${p}/name`);
    const problem = baseUrlProblem(s.api_base_url);
    if (problem) rep.error(`${p}/api_base_url`, `must be an http(s) URL without credentials, query or fragment: ${problem}`);
    checkCredentials(s, p, kind, rep);
  });
}

/** Dagu's rule for remote nodes: http(s), no user:password@, no ?query, no #fragment. */
function baseUrlProblem(s: string): string | undefined {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    return `"${s}" is not a URL`;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return `the scheme is "${u.protocol.slice(0, -1)}"`;
  if (u.username !== '' || u.password !== '') return 'it contains credentials (use auth_type and its fields)';
  if (s.includes('?')) return 'it contains a query';
  if (s.includes('#')) return 'it contains a fragment';
  return undefined;
}

type CredentialField = 'auth_token' | 'basic_auth_username' | 'basic_auth_password' | 'auth_header';

const NEEDED_CREDENTIALS: Record<AuthType, readonly CredentialField[]> = {
  none: [],
  basic: ['basic_auth_username', 'basic_auth_password'],
  token: ['auth_token'],
  header: ['auth_header', 'auth_token'],
};
const ALL_CREDENTIALS: readonly CredentialField[] = ['auth_token', 'basic_auth_username', 'basic_auth_password', 'auth_header'];

/**
 * A missing credential field is an error. One that expanded to '' is only a warning:
 * the example config uses ${DAGU_API_TOKEN:-} so that a fresh machine can start.
 * A credential the auth_type does not use is a warning too: it is not sent, which
 * is rarely what its author meant.
 */
function checkCredentials(s: UpstreamConfig, p: string, kind: string, rep: Reporter): void {
  const needed = NEEDED_CREDENTIALS[s.auth_type];
  for (const f of needed) {
    const v = s[f];
    if (v === undefined) rep.error(childPointer(p, f), `auth_type ${s.auth_type} needs ${f}`, { at: p });
    else if (v === '') rep.warn(childPointer(p, f), `${f} is empty: ${kind} "${s.name}" will get requests without a usable credential`);
  }
  for (const f of ALL_CREDENTIALS) {
    if (!needed.includes(f) && s[f]) rep.warn(childPointer(p, f), `${f} is not used with auth_type ${s.auth_type}`);
  }
}

/** Sentinel mode needs its sentinels; a cluster has only database 0. */
/** The certificate and key must be readable and belong together; one about to expire is worth a warning. */
function checkTls(files: TlsFiles, at: string, rep: Reporter): void {
  let x509;
  try {
    x509 = loadTls(files).x509;
  } catch (err) {
    if (err instanceof TlsFileError) rep.error(`${at}/${err.field}`, err.message);
    else throw err;
    return;
  }
  const daysLeft = (Date.parse(x509.validTo) - Date.now()) / 86_400_000;
  if (daysLeft < 0) rep.warn(`${at}/cert_file`, `the certificate expired on ${x509.validTo}: clients will refuse it`);
  else if (daysLeft < 14) rep.warn(`${at}/cert_file`, `the certificate expires on ${x509.validTo} (in ${Math.floor(daysLeft)} days); replace the files and send SIGHUP`);
}

function checkRedis(store: RawConfig['store'], rep: Reporter): void {
  const r = store.redis;
  if (r === undefined) return;
  if (r.mode === 'sentinel' && !(r.sentinels && r.sentinels.length > 0)) rep.error('/store/redis', 'sentinel mode needs at least one entry in sentinels');
  if (r.mode === 'cluster') {
    for (const field of ['keys', 'rate_limits'] as const) {
      const db = /^rediss?:\/\/[^/]*\/(\d+)/.exec(store[field])?.[1];
      if (db !== undefined && db !== '0') rep.error(`/store/${field}`, `a Redis Cluster has only database 0 (got /${db})`);
    }
  }
}

function checkRateLimit(rl: KeysConfig['rate_limit'], rep: Reporter): void {
  const p = '/keys/rate_limit';
  if (rl.min > rl.max) rep.error(`${p}/min`, `min (${rl.min}) is greater than max (${rl.max})`);
  else if (rl.default < rl.min || rl.default > rl.max) rep.error(`${p}/default`, `default (${rl.default}) must be between min (${rl.min}) and max (${rl.max})`);
}

/** Shortest secret a declared key may have: shorter ones can be guessed. */
const MIN_DECLARED_SECRET = 20;

/** A declared name seen before (`first`: name → where) is an error pointing at the first. */
function uniqueName(first: Map<string, string>, name: string, p: string, kind: string, rep: Reporter): void {
  const earlier = first.get(name);
  if (earlier !== undefined) rep.error(`${p}/name`, `duplicate declared ${kind} name "${name}" (first declared at ${rep.where(earlier)})`);
  else first.set(name, `${p}/name`);
}

/** Unique names; exactly one of secret and secret_digest. Never echoes a secret. */
function checkDeclaredKeys(keys: DeclaredKeyConfig[], rep: Reporter): void {
  const first = new Map<string, string>();
  keys.forEach((k, i) => {
    const p = `/keys/declared/${i}`;
    uniqueName(first, k.name, p, 'key', rep);
    if (k.secret === undefined && k.secret_digest === undefined) {
      rep.error(`${p}/secret`, 'needs secret (e.g. ${MY_KEY}) or secret_digest', { at: p });
    } else if (k.secret !== undefined && k.secret_digest !== undefined) {
      rep.error(`${p}/secret_digest`, 'give secret or secret_digest, not both');
    } else if (k.secret !== undefined && k.secret.length < MIN_DECLARED_SECRET) {
      rep.error(`${p}/secret`, `must be at least ${MIN_DECLARED_SECRET} characters (it is ${k.secret.length === 0 ? 'empty' : 'shorter'})`);
    }
  });
}

/** Unique names; a quota the key service accepts (its own rules, at the field's line and column). */
function checkDeclaredGroups(groups: DeclaredGroupConfig[], rep: Reporter): void {
  const first = new Map<string, string>();
  groups.forEach((g, i) => {
    const p = `/groups/declared/${i}`;
    uniqueName(first, g.name, p, 'group', rep);
    try {
      parseQuota(g.quota);
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      for (const e of err.errors) {
        const member = e.field.startsWith('quota.') ? e.field.slice('quota.'.length) : '';
        rep.error(member ? `${p}/quota/${member}` : `${p}/quota`, e.reason, { at: member && g.quota && member in g.quota ? `${p}/quota/${member}` : `${p}/quota` });
      }
    }
  });
}

/** Shortest forward-auth secret: shorter ones can be guessed. */
const MIN_FORWARD_AUTH_SECRET = 20;

/** Who may call the endpoint must be said; addresses must parse; the health endpoints stay reachable. Never echoes the secret. */
function checkForwardAuth(fa: ForwardAuthConfig, healthPrefix: string, rep: Reporter): void {
  const p = '/forward_auth';
  if (fa.secret === undefined && fa.allow_from === undefined) {
    rep.error(`${p}/secret`, 'needs secret (e.g. ${KEYGATE_FORWARD_AUTH_SECRET}) or allow_from (the proxy\'s addresses), or both: otherwise anyone could describe a request in X-Original-*/X-Forwarded-* headers', { at: p });
  }
  if (fa.secret !== undefined && fa.secret.length < MIN_FORWARD_AUTH_SECRET) {
    rep.error(`${p}/secret`, `must be at least ${MIN_FORWARD_AUTH_SECRET} characters (it is ${fa.secret.length === 0 ? 'empty' : 'shorter'})`);
  }
  fa.allow_from?.forEach((a, i) => {
    const problem = addressRangeProblem(a);
    if (problem !== undefined) rep.error(`${p}/allow_from/${i}`, problem);
  });
  for (const own of ['healthz', 'readyz']) {
    const health = healthPrefix + own;
    if (fa.path === health || health.startsWith(`${fa.path}/`)) rep.error(`${p}/path`, `"${fa.path}" would hide ${health} (listen.health_prefix): choose another path`);
  }
}

/** An IP address or a CIDR range (address/prefix), else why not. */
function addressRangeProblem(a: string): string | undefined {
  const [addr = '', prefix, extra] = a.split('/');
  const family = isIP(addr);
  if (family === 0 || extra !== undefined) return `"${a}" is not an IP address or CIDR range (e.g. 10.0.0.0/8, ::1)`;
  if (prefix === undefined) return undefined;
  const max = family === 4 ? 32 : 128;
  if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > max) return `"${a}": the prefix length must be 0 to ${max}`;
  return undefined;
}

function checkCors(c: RawCors, p: string, rep: Reporter): void {
  if (c.allow_credentials && c.allowed_origins.includes('*')) {
    rep.error(`${p}/allow_credentials`, 'browsers refuse credentials with any origin ("*"): list the origins');
  }
}

const CORS_DEFAULTS = {
  allowed_methods: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'],
  allowed_headers: ['Content-Type', 'X-API-Key', 'Authorization', 'X-Request-Id'],
  expose_headers: ['X-Request-Id', 'RateLimit', 'RateLimit-Policy', 'X-RateLimit-Limit', 'X-RateLimit-Remaining', 'X-RateLimit-Reset', 'Retry-After', 'X-Quota-Limit', 'X-Quota-Period', 'X-Quota-Remaining', 'X-Quota-Reset'],
};

function normaliseCors(c: RawCors): CorsConfig {
  return {
    allowed_origins: [...c.allowed_origins],
    allowed_methods: (c.allowed_methods ?? CORS_DEFAULTS.allowed_methods).map((m) => m.toUpperCase()),
    allowed_headers: [...(c.allowed_headers ?? CORS_DEFAULTS.allowed_headers)],
    expose_headers: [...(c.expose_headers ?? CORS_DEFAULTS.expose_headers)],
    allow_credentials: c.allow_credentials ?? false,
    max_age: c.max_age ?? 600,
  };
}

function checkRoute(r: RawRoute, p: string, known: string[], rep: Reporter): void {
  if (!r.path.startsWith('/')) rep.error(`${p}/path`, `must start with "/" (got "${r.path}")`);
  if (r.pass_authorization && r.auth !== 'none') {
    rep.error(`${p}/pass_authorization`, 'only on auth: none routes (a keyed route would forward the Keygate key)');
  }
  if (r.strip_prefix !== undefined) {
    if (!r.strip_prefix.startsWith('/')) rep.error(`${p}/strip_prefix`, `must start with "/" (got "${r.strip_prefix}")`);
    else if (r.strip_prefix.endsWith('/')) rep.error(`${p}/strip_prefix`, `must not end with "/" (got "${r.strip_prefix}")`);
  }
  if (!known.includes(r.upstream)) {
    const list = known.length > 0 ? `known: ${known.join(', ')}` : 'no upstreams are defined';
    rep.error(`${p}/upstream`, `unknown upstream "${r.upstream}" (${list})`);
  }
  if (r.requires !== undefined) {
    const range = parseRange(r.requires.dagu);
    if (typeof range === 'string') rep.error(`${p}/requires/dagu`, range);
  }
  if (r.cors) checkCors(r.cors, `${p}/cors`, rep);
  if (r.answer !== undefined && r.auth === 'none') rep.error(`${p}/answer`, `${r.answer} needs a key: not on an auth: none route`);
  for (const [i, h] of (r.pass_headers ?? []).entries()) {
    if (!OVERRIDE_HEADER_NAMES.includes(h.toLowerCase())) rep.error(`${p}/pass_headers/${i}`, `"${h}" is not an override header; one of ${OVERRIDE_HEADER_NAMES.join(', ')} (others pass anyway)`);
  }
  const ws = r.workspace;
  if (typeof ws === 'object' && ws.param !== undefined && !r.path.split('/').includes(`{${ws.param}}`)) {
    rep.error(`${p}/workspace/param`, `path "${r.path}" has no {${ws.param}} segment`);
  }
}

// ---------------------------------------------------------------------------
// Normalisation into types.ts

function normalise(raw: RawConfig, positions: PosMap, file: string, ctx: LoadContext): GatewayConfig {
  const dir = path.dirname(file);
  const { listen, admin, keys, log } = raw;
  const cors = raw.cors && normaliseCors(raw.cors);
  return compact({
    file,
    listen: compact({
      host: listen.host,
      port: listen.port,
      trust_forwarded: listen.trust_forwarded,
      drain_timeout: listen.drain_timeout,
      shutdown_delay: listen.shutdown_delay,
      header_timeout: listen.header_timeout,
      request_timeout: listen.request_timeout,
      health_prefix: listen.health_prefix,
      public_url: listen.public_url,
      tls: listen.tls && resolveTls(listen.tls, dir),
      underscore_headers: listen.underscore_headers,
      max_failed_auth: listen.max_failed_auth,
    }),
    admin: compact({ host: admin.host, port: admin.port, token: admin.token || undefined, enabled: admin.enabled, max_failed_auth: admin.max_failed_auth, tls: admin.tls && resolveTls(admin.tls, dir), allowed_hosts: admin.allowed_hosts.map((h) => h.toLowerCase()) }),
    workers: raw.workers === 'auto' ? 'auto' : Number(raw.workers),
    reload: { watch: raw.reload.watch },
    store: {
      keys: resolveSqlite(raw.store.keys, dir),
      rate_limits: raw.store.rate_limits,
      rate_limits_fallback: raw.store.rate_limits_fallback,
      stale_ttl: raw.store.stale_ttl,
      state_dir: path.resolve(dir, raw.store.state_dir),
      ...(raw.store.redis ? { redis: raw.store.redis } : {}),
    },
    keys: compact({ prefix: keys.prefix, rate_limit: { ...keys.rate_limit }, max_keys: keys.max_keys, audit_retention_days: keys.audit_retention_days, usage_retention_days: keys.usage_retention_days, declared: keys.declared?.map((k) => compact({ ...k })) }),
    groups: raw.groups?.declared && { declared: raw.groups.declared.map((g) => compact({ ...g })) },
    upstreams: raw.upstreams.map(normaliseServer),
    remote_nodes: raw.remote_nodes.map(normaliseServer),
    routes: raw.routes.map((r, i) => normaliseRoute(r, i, formatPos(positionOf(positions, `/routes/${i}`, false, ctx.rootPos)), cors)),
    cors,
    forward_auth: raw.forward_auth && compact({ path: raw.forward_auth.path, proxy: raw.forward_auth.proxy, secret: raw.forward_auth.secret, secret_header: raw.forward_auth.secret_header.toLowerCase(), allow_from: raw.forward_auth.allow_from && [...raw.forward_auth.allow_from] }),
    log: { level: log.level, destination: resolveLogDestination(log.destination, dir), format: log.format, access_log: typeof log.access_log === 'string' ? resolveLogDestination(log.access_log, dir) : log.access_log },
    metrics: { per_key: raw.metrics.per_key, max_keys: raw.metrics.max_keys },
    warnings: ctx.tidyWarnings(),
  });
}

/** TLS files are relative to the config file. */
function resolveTls(tls: TlsFiles, dir: string): TlsFiles {
  return { cert_file: path.resolve(dir, tls.cert_file), key_file: path.resolve(dir, tls.key_file) };
}

/** Relative sqlite paths are relative to the config file, like includes, not to the cwd. */
function resolveSqlite(url: string, dir: string): string {
  if (!url.startsWith('sqlite:')) return url;
  const file = url.slice('sqlite:'.length);
  return file === ':memory:' || path.isAbsolute(file) ? url : `sqlite:${path.resolve(dir, file)}`;
}

function resolveLogDestination(dest: string, dir: string): string {
  return dest === 'stdout' || dest === 'stderr' ? dest : path.resolve(dir, dest);
}

function normaliseServer(s: UpstreamConfig): UpstreamConfig {
  return compact({
    name: s.name,
    description: s.description,
    api_base_url: s.api_base_url,
    auth_type: s.auth_type,
    auth_token: s.auth_token,
    basic_auth_username: s.basic_auth_username,
    basic_auth_password: s.basic_auth_password,
    auth_header: s.auth_header,
    skip_tls_verify: s.skip_tls_verify,
    timeout: s.timeout,
    idle_timeout: s.idle_timeout,
    connections: s.connections,
    max_pending: s.max_pending,
  });
}

function normaliseRoute(r: RawRoute, index: number, source: string, cors: CorsConfig | undefined): RouteConfig {
  const methods = r.methods === undefined ? undefined : [...new Set(toList(r.methods).map((m) => m.toUpperCase()))];
  return compact({
    index,
    source,
    name: r.name ?? `${methods ? methods.join(',') : '*'} ${r.path}`,
    path: r.path,
    methods,
    host: r.host?.toLowerCase(),
    upstream: r.upstream,
    auth: r.auth ?? 'required',
    surface: r.surface ?? 'rest_api',
    scopes: r.scope === undefined ? [] : toList(r.scope),
    role: r.role,
    workspace: workspaceSource(r.workspace),
    strip_prefix: r.strip_prefix,
    remote_node: r.remote_node,
    query_token: r.query_token,
    pass_authorization: r.pass_authorization,
    pass_headers: r.pass_headers?.map((h) => h.toLowerCase()),
    jsonrpc: r.jsonrpc && { methods: {}, tools: {}, ...r.jsonrpc },
    requires: r.requires && { dagu: r.requires.dagu },
    answer: r.answer,
    expose_login: r.expose_login ? true : undefined,
    // one object per policy, shared by the routes that use it
    cors: r.cors === false ? undefined : r.cors !== undefined ? normaliseCors(r.cors) : cors,
  });
}

function workspaceSource(ws: RawRoute['workspace']): WorkspaceSource | undefined {
  if (ws === undefined) return undefined;
  if (ws === 'key') return { from: 'key' };
  // the schema allows exactly one of query / param
  return ws.query !== undefined ? { from: 'query', name: ws.query } : { from: 'param', name: ws.param ?? '' };
}

function toList<T>(v: T | T[]): T[] {
  return Array.isArray(v) ? [...v] : [v];
}

/** Drops keys whose value is undefined, so optional fields are absent rather than present-and-undefined. */
function compact<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}
