import type { ConfigIssue } from '../errors.js';
import type { RedisSettings } from '../redis.js';

// The validated configuration, as the loader hands it to the rest of the gateway.
// Field names follow the YAML (snake_case) so that an error message, the schema and
// the code all speak of the same thing. Every object is frozen after loading.

export type Role = 'viewer' | 'operator' | 'developer' | 'manager' | 'admin';
export type Scope = 'agents' | 'workflows';
export type Surface = 'rest_api' | 'mcp' | 'a2a';
export type AuthType = 'none' | 'basic' | 'token' | 'header';

export const ROLES: readonly Role[] = ['viewer', 'operator', 'developer', 'manager', 'admin'];
export const SCOPES: readonly Scope[] = ['agents', 'workflows'];
export const SURFACES: readonly Surface[] = ['rest_api', 'mcp', 'a2a'];

// Bit masks and ranks used by the authorisation decision; computed once per key and per route.
export const ROLE_RANK: Readonly<Record<Role, number>> = Object.freeze({
  viewer: 1,
  operator: 2,
  developer: 3,
  manager: 4,
  admin: 5,
});

export const SCOPE_BIT: Readonly<Record<Scope, number>> = Object.freeze({ agents: 1, workflows: 2 });
export const SURFACE_BIT: Readonly<Record<Surface, number>> = Object.freeze({ rest_api: 1, mcp: 2, a2a: 4 });
export const ALL_SURFACES = SURFACES.reduce((m, s) => m | SURFACE_BIT[s], 0);


/** Dagu's remote_nodes shape, used for upstreams and remote nodes alike. */
export interface UpstreamConfig {
  name: string;
  description?: string;
  api_base_url: string;
  auth_type: AuthType;
  auth_token?: string;
  basic_auth_username?: string;
  basic_auth_password?: string;
  /** header name for auth_type: header (e.g. X-API-Key) */
  auth_header?: string;
  skip_tls_verify: boolean;
  /** seconds to connect and to receive response headers (Dagu's default: 30) */
  timeout: number;
  /** seconds a streamed response body may stay silent before the gateway gives up */
  idle_timeout: number;
  /** parallel connections kept to this upstream */
  connections: number;
  /** requests that may wait for a connection; beyond, 503 upstream_overloaded at once (default 1024) */
  max_pending?: number;
}

/** Headers that make an upstream reinterpret the method or path; removed unless a route's pass_headers lists them. */
export const OVERRIDE_HEADER_NAMES: readonly string[] = [
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'x-original-method',
  'x-original-url',
  'x-original-uri',
  'x-rewrite-url',
  'x-forwarded-uri',
  'x-forwarded-path',
  'x-forwarded-prefix',
];

/** A CORS policy, defaults filled in. */
export interface CorsConfig {
  /** origins, or "*" */
  allowed_origins: string[];
  allowed_methods: string[];
  allowed_headers: string[];
  expose_headers: string[];
  allow_credentials: boolean;
  /** seconds */
  max_age: number;
}

/** Where a route's workspace comes from. */
export type WorkspaceSource =
  | { from: 'query'; name: string }
  | { from: 'param'; name: string }
  | { from: 'key' };

export interface RouteConfig {
  /** position in the final (includes expanded) list, for messages */
  index: number;
  /** "file:line:col" of the route's definition, for explain and errors */
  source: string;
  /** label for logs and metrics; defaults to "METHODS path" */
  name: string;
  path: string;
  /** upper-case methods; undefined = any */
  methods?: string[];
  /** lower-case host or "*.suffix"; undefined = any */
  host?: string;
  upstream: string;
  auth: 'required' | 'none';
  surface: Surface;
  /** every listed scope is required */
  scopes: Scope[];
  /** minimum role; undefined = any role */
  role?: Role;
  workspace?: WorkspaceSource;
  /** removed from the front of the request path before it is joined to api_base_url's path */
  strip_prefix?: string;
  /** ?remoteNode=<name> is honoured (else a request naming a remote node is refused) */
  remote_node: boolean;
  /** the key may come as ?token= (EventSource cannot send headers) */
  query_token: boolean;
  /** method/path override headers forwarded on this route (lower case); others are removed */
  pass_headers?: string[];
  /** auth: none only: forward the client's own Authorization (a Dagu webhook token) */
  pass_authorization: boolean;
  /** JSON-RPC method policy for A2A / MCP routes */
  jsonrpc?: JsonRpcPolicy;
  /** the upstream versions this route is for (checked against GET <api_base_url>/health) */
  requires?: { dagu: string };
  /** Keygate answers the request itself instead of forwarding it */
  answer?: 'current_user';
  /** the CORS policy that applies (the route's own, else the top-level one); absent = none */
  cors?: CorsConfig;
  /** the route may serve a login or first-run setup path (…/auth/login, …/auth/setup); absent = false */
  expose_login?: true;
}

/** Minimum role, or "deny". */
export type RoleOrDeny = Role | 'deny';

export interface JsonRpcPolicy {
  methods: Readonly<Record<string, RoleOrDeny>>;
  tools: Readonly<Record<string, RoleOrDeny>>;
  /** undefined = the route's role */
  default_method?: RoleOrDeny;
  default_tool: RoleOrDeny;
  max_body_bytes: number;
  /** tool name → where its tools/call arguments name the workspace the call acts in */
  tool_workspaces?: Readonly<Record<string, ToolWorkspace>>;
  /**
   * MCP resource URI patterns → the workspace the resource lives in, first match wins; read for
   * resources/read, resources/subscribe, resources/unsubscribe and a tool's `uri` argument. A URI
   * no rule matches is attributed to no workspace (refused to a key limited to workspaces).
   */
  resource_workspaces?: readonly ResourceWorkspace[];
  /** prompt name → where a prompts/get acts; an unlisted prompt is attributed to no workspace */
  prompt_workspaces?: Readonly<Record<string, PromptWorkspace>>;
  /**
   * A params member that names the workspace a call acts in (A2A v1.0 `tenant`), for calls that
   * name no object otherwise: given and not empty, the call acts there, not in the route's.
   */
  param_workspace?: string;
}

/**
 * How a tool names its workspace: `arguments[argument]` when every `when` argument has one of the
 * listed values; an object outside any workspace when the `none` arguments match; no object (the
 * route's own workspace) when the `route` arguments match; through a resource URI when the `uri`
 * argument is given. A call that matches none of them is attributed to no workspace. (`unless`:
 * arguments whose presence means no workspace, kept for older configurations.)
 */
export interface ToolWorkspace {
  argument: string;
  when?: Readonly<Record<string, readonly string[]>>;
  none?: Readonly<Record<string, readonly string[]>>;
  route?: Readonly<Record<string, readonly string[]>>;
  uri?: string;
  unless?: readonly string[];
}

/** `uri`: scheme://host/segments with `{variable}` segments and a final `**`; `workspace`: `{variable}`, all, none or route. */
export interface ResourceWorkspace {
  uri: string;
  workspace: string;
}

/** A prompt's workspace argument; `none`: it names an object outside any workspace; `route`: no object. */
export type PromptWorkspace = { argument: string } | 'none' | 'route';

export interface ListenConfig {
  host: string;
  port: number;
  /** trust X-Forwarded-For/-Proto/-Host sent by the client (only behind a trusted proxy) */
  trust_forwarded: boolean;
  /** seconds a graceful shutdown waits for in-flight requests and streams */
  drain_timeout: number;
  /** seconds a client may take to send the request headers; then 408 and the socket is destroyed */
  header_timeout: number;
  /** seconds a client may take to send the whole request (headers and body); 0 = no limit */
  request_timeout: number;
  /** seconds of accepting while /readyz says draining, before the drain starts (load balancers catch up) */
  shutdown_delay: number;
  /** reserved prefix for healthz/readyz on the public listener, e.g. "/_keygate/" */
  health_prefix: string;
  /** public base URL, shown in examples and explain output */
  public_url?: string;
  /** serve HTTPS: PEM files (absolute paths once loaded) */
  tls?: { cert_file: string; key_file: string };
  /** header names with "_": not forwarded (drop), refused with 400 (reject) or forwarded (allow) */
  underscore_headers: 'drop' | 'reject' | 'allow';
  /** unknown keys per client address and minute before 429; 0 = off */
  max_failed_auth: number;
}

/**
 * A key declared in the YAML (keys.declared): synced into the store at start, managed by the
 * config only. Exactly one of secret / secret_digest.
 */
export interface DeclaredKeyConfig {
  name: string;
  description?: string;
  scopes?: Scope[];
  role?: Role;
  /** Dagen's model: bound to one workspace */
  workspace?: string;
  /** Dagu's model: per-workspace grants (top-level role viewer) */
  grants?: { workspace: string; role: Role }[];
  surfaces?: Surface[];
  rate_limit?: number;
  /** usage credits: {limit, period, refill, start} or {remaining}; checked by the key service */
  quota?: { limit?: number; period?: string; refill?: string; start?: string; remaining?: number };
  /** the name of a group (groups.declared, or made through the API or CLI) whose limits the key shares */
  group?: string;
  /** YYYY-MM-DD or ISO 8601 with an offset; a past date means the key is expired */
  expires_at?: string;
  attribution?: 'service_account' | 'user_owned';
  service_account_name?: string;
  owner_user_id?: string;
  /** the secret itself, usually ${ENV} */
  secret?: string;
  /** or only its digest: 64 hex of sha256("keygate-api-key:v1\0" + secret) */
  secret_digest?: string;
}

/** A key group declared in the YAML (groups.declared): synced into the store, managed by the config only. */
export interface DeclaredGroupConfig {
  name: string;
  description?: string;
  /** requests per minute shared by the group's keys */
  rate_limit?: number;
  /** usage credits shared by the group's keys: {limit, period, refill, start} or {remaining} */
  quota?: { limit?: number; period?: string; refill?: string; start?: string; remaining?: number };
}

export interface GroupsConfig {
  declared?: DeclaredGroupConfig[];
}

export interface KeysConfig {
  prefix: string;
  rate_limit: { default: number; min: number; max: number };
  max_keys?: number;
  /** days audit records are kept; absent = forever */
  audit_retention_days?: number;
  /** days the hourly usage history is kept (the schema's default: 30) */
  usage_retention_days?: number;
  /** keys declared in the YAML; absent when none are */
  declared?: DeclaredKeyConfig[];
}

export interface LogConfig {
  level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** "stdout" | "stderr" | a file path */
  destination: string;
  /** json lines, or pretty (pino-pretty) for a terminal */
  format: 'json' | 'pretty';
  /** true: with the other lines, to `destination`; false: none; else its own destination ("stdout" | "stderr" | a file path) */
  access_log: boolean | string;
}

/**
 * forward_auth: the endpoint a proxy in front of the upstream asks (nginx auth_request, Traefik
 * ForwardAuth, Envoy ext_authz). Present = on; at least one of secret / allow_from.
 */
export interface ForwardAuthConfig {
  /** e.g. "/_keygate/auth"; Envoy's form appends the original path to it */
  path: string;
  /** the proxy in front: only its form of describing the original request is read; auto = any one form */
  proxy: 'auto' | 'nginx' | 'traefik' | 'caddy' | 'envoy';
  /** the shared secret the proxy sends in secret_header */
  secret?: string;
  /** lower case */
  secret_header: string;
  /** addresses or CIDR ranges the endpoint answers; absent = any */
  allow_from?: string[];
}

export interface GatewayConfig {
  /** absolute path of the file that was loaded */
  file: string;
  listen: ListenConfig;
  /** max_failed_auth: failed authentications per client address and minute before 429; 0 = off */
  admin: { host: string; port: number; token?: string; enabled: boolean; max_failed_auth: number; tls?: { cert_file: string; key_file: string }; /** Host names answered besides localhost and IP literals */ allowed_hosts: string[] };
  /** processes sharing the listeners: a number, or "auto" (one per CPU core) */
  workers: number | 'auto';
  /** watch: reload when the file changes (SIGHUP always reloads) */
  reload: { watch: boolean };
  /**
   * stale_ttl: seconds of a key-store outage during which cached keys are still served;
   * state_dir: absolute directory of the key-cache snapshot and the usage spool
   */
  store: { keys: string; rate_limits: string; rate_limits_fallback: 'memory' | 'allow' | 'deny'; stale_ttl: number; state_dir: string; redis?: RedisSettings };
  keys: KeysConfig;
  /** key groups declared in the YAML (groups.declared); absent when none are */
  groups?: GroupsConfig;
  upstreams: UpstreamConfig[];
  remote_nodes: UpstreamConfig[];
  routes: RouteConfig[];
  log: LogConfig;
  /** the top-level CORS policy (each route's resolved policy is on the route) */
  cors?: CorsConfig;
  /** the forward-auth endpoint; absent = off */
  forward_auth?: ForwardAuthConfig;
  /** per_key: requests per key in /metrics, for at most max_keys keys (the rest as "other") */
  metrics: { per_key: boolean; max_keys: number };
  /** non-fatal findings (e.g. an upstream token that expanded to empty) */
  warnings: ConfigIssue[];
}
