// Test stack: real echo upstreams on loopback, a real gateway from a real YAML file, and a
// captured log so tests can grep it for secrets.

import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { request } from 'undici';
import { loadConfig } from '../src/config/load.js';
import { startEchoUpstream, type EchoUpstream } from '../src/demo/echo-upstream.js';
import type { KeyInput } from '../src/keys/service.js';
import { Gateway } from '../src/server.js';

export interface Stack {
  gateway: Gateway;
  url: string;
  dagu: EchoUpstream;
  dagen: EchoUpstream;
  /** every log line the gateway wrote */
  logs: string[];
  /** every secret handed out, for the log grep */
  secrets: string[];
  key(input: KeyInput): Promise<{ id: string; secret: string }>;
  close(): Promise<void>;
}

export const ROUTES = `
routes:
  - { path: /api/v1/health, upstream: dagu, auth: none, strip_prefix: /api/v1 }
  - { path: /api/v1/public/**, upstream: dagu, auth: none, strip_prefix: /api/v1 }
  - { path: /api/v1/admin, upstream: dagu, role: admin, strip_prefix: /api/v1 }
  - { path: /api/v1/dags, methods: [GET], upstream: dagu, role: viewer, workspace: { query: workspace }, strip_prefix: /api/v1 }
  - { path: "/api/v1/dags/{fileName}/start", methods: [POST], upstream: dagu, role: operator, strip_prefix: /api/v1 }
  - { path: "/api/v1/workspaces/{ws}/settings", upstream: dagu, role: developer, workspace: { param: ws }, strip_prefix: /api/v1 }
  - { path: "/api/v1/t/**", upstream: dagu, strip_prefix: /api/v1/t }
  - { path: /mcp, upstream: dagu, surface: mcp }
  - { path: /api/v1/agent/chat, methods: [POST], upstream: dagen, scope: agents, workspace: key }
  - { path: /api/v1/workflows, methods: [GET], upstream: dagen, scope: workflows, workspace: key }
  - { path: "/basic/**", upstream: basic }
  - { path: "/down/**", upstream: down }
`;

export interface StackOptions {
  routes?: string;
  upstreamTimeout?: number;
  /** store.rate_limits, e.g. a test Redis URL */
  rateLimits?: string;
  rateLimitsFallback?: 'memory' | 'allow' | 'deny';
  /** store.keys, default the stack's own SQLite file */
  keys?: string;
  /** store.redis: topology of the redis:// stores */
  redis?: Record<string, unknown>;
  /** more store fields as YAML flow entries, e.g. "stale_ttl: 1, state_dir: ./state" */
  store?: string;
  /** admin.token (the admin listener runs on a free port either way) */
  adminToken?: string;
  /** listen.trust_forwarded */
  trustForwarded?: boolean;
  /** admin.max_failed_auth (default: the gateway's default) */
  maxFailedAuth?: number;
  /** more listen fields, flow style without braces, e.g. "underscore_headers: reject" */
  listen?: string;
  /** more admin fields, e.g. "allowed_hosts: [keygate.internal]" */
  admin?: string;
  /** more top-level YAML, e.g. a keys: section */
  yaml?: string;
  /** more environment for ${VAR} in the YAML */
  env?: Record<string, string>;
  /** the Dagu version the dagu echo upstream reports on …/health (default: none) */
  daguVersion?: string;
}

export async function startStack(dir: string, opts: StackOptions = {}): Promise<Stack> {
  const dagu = await startEchoUpstream({ name: 'dagu', ...(opts.daguVersion ? { daguVersion: opts.daguVersion } : {}) });
  const dagen = await startEchoUpstream({ name: 'dagen' });
  const file = join(dir, 'gateway.yaml');
  writeFileSync(
    file,
    `listen: { host: 127.0.0.1, port: 8080${opts.trustForwarded ? ', trust_forwarded: true' : ''}${opts.listen ? `, ${opts.listen}` : ''} }
admin: { host: 127.0.0.1${opts.adminToken === undefined ? '' : `, token: "${opts.adminToken}"`}${opts.maxFailedAuth === undefined ? '' : `, max_failed_auth: ${opts.maxFailedAuth}`}${opts.admin ? `, ${opts.admin}` : ''} }
${opts.yaml ?? ''}
store: { keys: "${opts.keys ?? 'sqlite:./keys.db'}", rate_limits: "${opts.rateLimits ?? 'memory'}", rate_limits_fallback: ${opts.rateLimitsFallback ?? 'memory'}${opts.redis ? `, redis: ${JSON.stringify(opts.redis)}` : ''}${opts.store ? `, ${opts.store}` : ''} }
upstreams:
  - name: dagu
    api_base_url: \${DAGU_URL}/api/v1
    auth_type: token
    auth_token: \${DAGU_TOKEN}
    timeout: ${opts.upstreamTimeout ?? 2}
  - name: dagen
    api_base_url: \${DAGEN_URL}
    auth_type: header
    auth_header: X-API-Key
    auth_token: upstream-dagen-key
  - name: basic
    api_base_url: \${DAGU_URL}
    auth_type: basic
    basic_auth_username: ops
    basic_auth_password: s3cret
  - name: down
    api_base_url: http://127.0.0.1:1
    timeout: 1
${opts.routes ?? ROUTES}`,
  );
  const config = loadConfig(file, { DAGU_URL: dagu.url, DAGEN_URL: dagen.url, DAGU_TOKEN: 'upstream-dagu-token', ...opts.env });
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(line);
      cb();
    },
  });
  const logger = pino({ level: 'info' }, sink);
  let gateway: Gateway;
  try {
    gateway = await Gateway.start({ config, port: 0, adminPort: 0, logger });
  } catch (err) {
    await dagu.close();
    await dagen.close();
    throw err;
  }
  const secrets: string[] = [];
  return {
    gateway,
    url: gateway.url,
    dagu,
    dagen,
    logs,
    secrets,
    async key(input) {
      const { key, secret } = await gateway.keys.create(input, 'test');
      secrets.push(secret);
      return { id: key.id, secret };
    },
    async close() {
      await gateway.close(1000);
      await dagu.close();
      await dagen.close();
    },
  };
}

/** Send bytes exactly as given (undici and browsers would normalise the target first). */
export function rawRequest(url: string, request: string): Promise<{ status: number; body: string }> {
  const { port, hostname } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.write(request));
    let data = '';
    socket.setEncoding('latin1');
    socket.on('data', (d) => (data += d));
    socket.on('error', reject);
    socket.on('end', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0);
      resolve({ status, body: data.slice(data.indexOf('\r\n\r\n') + 4) });
    });
  });
}

/** The admin API of a stack as a test calls it: bearer token, JSON in and out (no body on 204). */
export function adminClient(s: Stack, token: string) {
  return async (method: string, path: string, body?: unknown) => {
    const r = await request(`${s.gateway.adminUrl}${path}`, {
      method: method as 'GET',
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: r.statusCode, json: (r.statusCode === 204 ? undefined : await r.body.json()) as Record<string, any> }; // eslint-disable-line @typescript-eslint/no-explicit-any
  };
}
