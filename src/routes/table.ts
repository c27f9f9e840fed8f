// The compiled route table: host + method + normalised path → the first matching route.
// Compiled once per configuration; matching allocates only the params object of a match.

import { ROLE_RANK, SCOPE_BIT, SURFACE_BIT, type GatewayConfig, type RouteConfig, type UpstreamConfig } from '../config/types.js';
import { ConfigError, type ConfigIssue } from '../errors.js';
import { decodeSegmentValue, normaliseTarget } from './path.js';
import { compileResourceRules } from '../jsonrpc/resources.js';

const enum Kind {
  Literal,
  Param,
  /** `*`: any one non-empty segment */
  Any,
}

interface Segment {
  readonly kind: Kind;
  /** literal text, or the param name */
  readonly value: string;
}

export interface Route {
  readonly config: RouteConfig;
  readonly upstream: UpstreamConfig;
  /** api_base_url's path without a trailing slash ("" for none) */
  readonly basePath: string;
  /** api_base_url's origin, e.g. http://127.0.0.1:8090 */
  readonly origin: string;
  readonly segments: readonly Segment[];
  /** pattern ends in `**`: any further segments (including none) match */
  readonly rest: boolean;
  readonly hasParams: boolean;
  /** undefined = any method */
  readonly methods: ReadonlySet<string> | undefined;
  readonly host: string | undefined;
  /** what a key needs here, precomputed for the decision: 0 = no role required */
  readonly minRoleRank: number;
  readonly scopeMask: number;
  readonly surfaceBit: number;
  /**
   * The gateway answers here in JSON-RPC: this route, or another one on the same host and path
   * (MCP's GET event stream and DELETE beside its POST), has a `jsonrpc` policy.
   */
  readonly rpc: boolean;
}

export interface RouteMatch {
  readonly route: Route;
  /** decoded `{param}` values, undefined when the route has none */
  readonly params: Readonly<Record<string, string>> | undefined;
}

const PARAM = /^\{([A-Za-z_][A-Za-z0-9_]*)\}$/;
const LITERAL = /^(?:[A-Za-z0-9\-._~!$&'()+,;=:@]|%[0-9A-F]{2})+$/;

function positionOf(route: RouteConfig): { file: string; line: number; col: number } {
  // source is "file:line:col"; the file itself may contain colons
  const m = /^(.*):(\d+):(\d+)$/.exec(route.source);
  return m ? { file: m[1]!, line: Number(m[2]), col: Number(m[3]) } : { file: route.source, line: 1, col: 1 };
}

function compileRoute(cfg: RouteConfig, upstreams: ReadonlyMap<string, UpstreamConfig>, issues: ConfigIssue[]): Route | undefined {
  const fail = (field: string, message: string): undefined => {
    issues.push({ ...positionOf(cfg), field: `routes[${cfg.index}].${field}`, message });
    return undefined;
  };
  const upstream = upstreams.get(cfg.upstream);
  if (!upstream) return fail('upstream', `unknown upstream "${cfg.upstream}"`);
  if (!cfg.path.startsWith('/')) return fail('path', 'must start with "/"');

  const parts = cfg.path === '/' ? [] : cfg.path.slice(1).split('/');
  const segments: Segment[] = [];
  let rest = false;
  const names = new Set<string>();
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (part === '**') {
      if (i !== parts.length - 1) return fail('path', '"**" may only be the last segment');
      rest = true;
      continue;
    }
    if (part === '*') {
      segments.push({ kind: Kind.Any, value: '*' });
      continue;
    }
    const param = PARAM.exec(part);
    if (param) {
      if (names.has(param[1]!)) return fail('path', `parameter {${param[1]}} appears twice`);
      names.add(param[1]!);
      segments.push({ kind: Kind.Param, value: param[1]! });
      continue;
    }
    if (part === '' && i === parts.length - 1) {
      segments.push({ kind: Kind.Literal, value: '' }); // trailing slash is significant
      continue;
    }
    if (part === '.' || part === '..' || !LITERAL.test(part)) {
      return fail('path', `segment "${part}" is not a literal, {param}, * or a final **`);
    }
    // Requests are matched after normalisation, so a literal must already be in normal form:
    // "/%61dmin" would never match "/admin" and the route would silently protect nothing.
    const normal = normaliseTarget('/' + part);
    if (!normal.ok || normal.path !== '/' + part) {
      return fail('path', `segment "${part}" is not in normal form${normal.ok ? ` (write "${normal.path.slice(1)}")` : ` (${normal.message})`}`);
    }
    segments.push({ kind: Kind.Literal, value: part });
  }

  const ws = cfg.workspace;
  if (ws?.from === 'param' && !names.has(ws.name)) {
    return fail('workspace', `path has no {${ws.name}} segment`);
  }
  if (cfg.strip_prefix !== undefined) {
    // The prefix must be literal leading segments of the pattern, or the strip could not always apply.
    const strip = cfg.strip_prefix.slice(1).split('/');
    for (let i = 0; i < strip.length; i++) {
      const seg = segments[i];
      if (!seg || seg.kind !== Kind.Literal || seg.value !== strip[i]) {
        return fail('strip_prefix', `"${cfg.strip_prefix}" is not a literal prefix of path "${cfg.path}"`);
      }
    }
  }

  const resources = cfg.jsonrpc?.resource_workspaces;
  if (resources !== undefined) {
    try {
      compileResourceRules(resources); // compiled here, once; requests find it cached
    } catch (err) {
      return fail('jsonrpc', (err as Error).message);
    }
  }

  const base = new URL(upstream.api_base_url);
  let methods: Set<string> | undefined;
  if (cfg.methods) {
    methods = new Set(cfg.methods);
    if (methods.has('GET')) methods.add('HEAD');
  }
  return {
    config: cfg,
    upstream,
    origin: base.origin,
    basePath: base.pathname.replace(/\/+$/, ''),
    segments,
    rest,
    hasParams: names.size > 0,
    methods,
    host: cfg.host,
    minRoleRank: cfg.role ? ROLE_RANK[cfg.role] : 0,
    scopeMask: cfg.scopes.reduce((m, sc) => m | SCOPE_BIT[sc], 0),
    surfaceBit: SURFACE_BIT[cfg.surface],
    rpc: cfg.jsonrpc !== undefined,
  };
}

/** Lower-case host without port; handles "[::1]:8080". */
export function hostOf(header: string | undefined): string {
  if (!header) return '';
  let end = header.length;
  if (header.charCodeAt(0) === 91 /* [ */) {
    end = header.indexOf(']') + 1 || header.length;
  } else {
    const colon = header.lastIndexOf(':');
    if (colon !== -1) end = colon;
  }
  return header.slice(0, end).toLowerCase();
}

function hostMatches(pattern: string, host: string): boolean {
  if (pattern.startsWith('*.')) return host.endsWith(pattern.slice(1)) && host.length > pattern.length - 1;
  return pattern === host;
}

/** How many leading literal segments index a route (Dagu's paths are /api/v1/<resource>/…). */
const INDEX_DEPTH = 3;

/** A route's leading literal segments (at most INDEX_DEPTH), joined with "/". */
function literalPrefix(route: Route): string[] {
  const out: string[] = [];
  for (const seg of route.segments) {
    if (seg.kind !== Kind.Literal || out.length === INDEX_DEPTH) break;
    out.push(seg.value);
  }
  return out;
}

export class RouteTable {
  readonly routes: readonly Route[];
  /** whether any route looks at the host; if not, the Host header is never parsed */
  readonly usesHost: boolean;
  /**
   * Known literal prefix → the routes (in table order) whose own literal prefix is a prefix of it.
   * For a request, the longest known prefix of its path gives exactly the routes that can match:
   * first-match order is kept and most of a large table is never looked at.
   */
  private readonly candidates = new Map<string, readonly Route[]>();
  /** the routes with a `jsonrpc` policy (usually one or two): the JSON-RPC paths */
  private readonly rpcRoutes: readonly Route[];

  private constructor(routes: Route[]) {
    this.routes = routes;
    this.rpcRoutes = routes.filter((r) => r.config.jsonrpc !== undefined);
    const rpcPaths = new Set(this.rpcRoutes.map((r) => `${r.host ?? ''} ${r.config.path}`));
    for (const r of routes) if (!r.rpc && rpcPaths.has(`${r.host ?? ''} ${r.config.path}`)) (r as { rpc: boolean }).rpc = true;
    this.usesHost = routes.some((r) => r.host !== undefined);
    const prefixes = routes.map(literalPrefix);
    const keys = new Set<string>(['']);
    for (const p of prefixes) for (let k = 1; k <= p.length; k++) keys.add(p.slice(0, k).join('/'));
    for (const key of keys) {
      const parts = key === '' ? [] : key.split('/');
      this.candidates.set(
        key,
        routes.filter((_, i) => prefixes[i]!.length <= parts.length && prefixes[i]!.every((seg, j) => seg === parts[j])),
      );
    }
  }

  /** Compile the routes of a loaded config; throws ConfigError naming each bad route. */
  static compile(config: Pick<GatewayConfig, 'routes' | 'upstreams'>): RouteTable {
    const upstreams = new Map(config.upstreams.map((u) => [u.name, u]));
    const issues: ConfigIssue[] = [];
    const routes: Route[] = [];
    for (const cfg of config.routes) {
      const route = compileRoute(cfg, upstreams, issues);
      if (route) routes.push(route);
    }
    if (issues.length > 0) throw new ConfigError(issues);
    return new RouteTable(routes);
  }

  /**
   * First route matching method, host and the normalised path (see normaliseTarget), or undefined.
   * `host` is the raw Host header; it is only parsed when some route names a host.
   */
  match(method: string, hostHeader: string | undefined, path: string): RouteMatch | undefined {
    const host = this.usesHost ? hostOf(hostHeader) : '';
    const parts = path.split('/'); // parts[0] is "" (path starts with "/")
    const count = path === '/' ? 0 : parts.length - 1;
    for (const route of this.candidatesFor(parts, count)) {
      if (route.methods !== undefined && !route.methods.has(method)) continue;
      if (route.host !== undefined && !hostMatches(route.host, host)) continue;
      if (!segmentsMatch(route, parts, count)) continue;
      return { route, params: route.hasParams ? captureParams(route, parts) : undefined };
    }
    return undefined;
  }

  /**
   * The route with a `jsonrpc` policy whose host and path match, whatever the method: how a
   * request refused before (or without) a route match learns that its path is a JSON-RPC one.
   * Used only on refusals; a table without JSON-RPC routes answers at once.
   */
  rpcRoute(hostHeader: string | undefined, path: string): Route | undefined {
    if (this.rpcRoutes.length === 0) return undefined;
    const host = hostOf(hostHeader);
    const parts = path.split('/');
    const count = path === '/' ? 0 : parts.length - 1;
    for (const route of this.rpcRoutes) {
      if (route.host !== undefined && !hostMatches(route.host, host)) continue;
      if (segmentsMatch(route, parts, count)) return route;
    }
    return undefined;
  }

  private candidatesFor(parts: string[], count: number): readonly Route[] {
    let found = this.candidates.get('')!;
    let key = '';
    for (let k = 1; k <= INDEX_DEPTH && k <= count; k++) {
      key = k === 1 ? parts[1]! : `${key}/${parts[k]}`;
      const next = this.candidates.get(key);
      if (next === undefined) break;
      found = next;
    }
    return found;
  }

  /** The path to request from the route's upstream for a normalised request path. */
  static upstreamPath(route: Route, path: string): string {
    const strip = route.config.strip_prefix;
    const rest = strip !== undefined ? path.slice(strip.length) : path;
    const joined = route.basePath + rest;
    return joined === '' ? '/' : joined;
  }
}

function segmentsMatch(route: Route, parts: string[], count: number): boolean {
  const segs = route.segments;
  if (route.rest ? count < segs.length : count !== segs.length) return false;
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i]!;
    const part = parts[i + 1]!;
    if (seg.kind === Kind.Literal) {
      if (part !== seg.value) return false;
    } else if (part === '') {
      return false; // a param or * never matches an empty segment
    }
  }
  return true;
}

function captureParams(route: Route, parts: string[]): Record<string, string> {
  // no prototype: a lookup by name finds a captured segment or nothing
  const params = Object.create(null) as Record<string, string>;
  const segs = route.segments;
  for (let i = 0; i < segs.length; i++) {
    if (segs[i]!.kind === Kind.Param) params[segs[i]!.value] = decodeSegmentValue(parts[i + 1]!);
  }
  return params;
}
