// The version check: a route map declares the Dagu versions it is for (`requires: {dagu: RANGE}`),
// and Keygate never forwards a request of such a route to an upstream (or remote node) that does
// not report a version in that range. Dagu 1.30 without auth serves a legacy API under /api/v1 where
// the 2.x map's `POST /api/v1/dags/validate` (viewer) would act on "the DAG named validate":
// enforcing roles by path is only sound against the API the map was written for.
//
// The version comes from GET <api_base_url>/health (public on Dagu 1.30 and 2.x: `{"version": …}`);
// when that path gives none (a base such as /mcp, or an API line the server does not serve at that
// path), from <prefix>/api/v1/health and <prefix>/api/v2/health of the same server, so that the
// message can name what is there. Probed at start, on reload, by `keygate check --probe`, then
// every minute; an upstream not reachable is probed again before a request is forwarded to it.

import type { GatewayConfig, RouteConfig, UpstreamConfig } from '../config/types.js';
import type { Upstream } from '../proxy/upstream.js';
import { formatVersion, parseRange, parseVersion, satisfies, type Version, type VersionRange } from './range.js';

export type TargetState =
  /** not probed yet, or not reachable at the last probe */
  | { kind: 'unknown'; reason: string }
  | { kind: 'found'; version: Version; url: string }
  /** reachable, but no Dagu version at any health path */
  | { kind: 'none'; reason: string };

/** What a probe found for one upstream or remote node, for logs, `check --probe` and start/reload. */
export interface Finding {
  /** "dagu", or "remote node prod" */
  target: string;
  name: string;
  kind: 'upstream' | 'remote_node';
  base_url: string;
  /** the ranges its routes require */
  requires: string[];
  /** the version it reported, if any */
  version?: string;
  status: 'ok' | 'mismatch' | 'unreachable';
  message: string;
}

/** A request that must not be forwarded. */
export interface VersionRefusal {
  status: 502;
  code: 'upstream_version_mismatch' | 'bad_gateway';
  message: string;
}

interface Target {
  readonly name: string;
  readonly kind: 'upstream' | 'remote_node';
  readonly config: UpstreamConfig;
  /** range text → range, from the routes that reach this target */
  readonly ranges: Map<string, VersionRange>;
  /** the first route file that requires each range, for messages */
  readonly sources: Map<string, string>;
  state: TargetState;
  /** range text → satisfied, for the current state (cleared when it changes) */
  verdicts: Map<string, boolean>;
  probing: Promise<void> | undefined;
}

/** How an upstream is asked: a GET on its own pool (its TLS settings), no credential. */
export type HealthGetter = (upstream: Upstream, path: string) => Promise<{ status: number; body: string }>;

const MAX_HEALTH_BYTES = 65_536;

export const getHealth: HealthGetter = async (upstream, path) => {
  const timeout = Math.min(upstream.config.timeout, 5) * 1000;
  const r = await upstream.pool.request({ path, method: 'GET', headers: { accept: 'application/json', host: upstream.host }, headersTimeout: timeout, bodyTimeout: timeout });
  let body = '';
  for await (const chunk of r.body) {
    body += chunk;
    if (body.length > MAX_HEALTH_BYTES) {
      r.body.destroy();
      break;
    }
  }
  return { status: r.statusCode, body };
};

function versionIn(body: string): Version | undefined {
  try {
    const v = (JSON.parse(body) as { version?: unknown } | null)?.version;
    return typeof v === 'string' ? parseVersion(v) : undefined;
  } catch {
    return undefined;
  }
}

/** The map to use for a version, for messages. */
function advice(v: Version, origin: string, prefix: string): string {
  if (v[0] >= 2) return `use config/routes/dagu.yaml with api_base_url ${origin}${prefix}/api/v1`;
  if (v[0] === 1 && v[1] >= 30) return `use config/routes/dagu-1.30.yaml with api_base_url ${origin}${prefix}/api/v2`;
  return 'Keygate ships no route map for it';
}

function splitBase(baseUrl: string): { origin: string; basePath: string; prefix: string } {
  const u = new URL(baseUrl);
  const basePath = u.pathname.replace(/\/+$/, '');
  const prefix = basePath.replace(/\/(api\/v[0-9]+|mcp)$/, '');
  return { origin: u.origin, basePath, prefix };
}

export class VersionGate {
  private readonly upstreams = new Map<string, Target>();
  private readonly remotes = new Map<string, Target>();
  private readonly ranges = new Map<string, VersionRange>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    config: GatewayConfig,
    private readonly pools: { upstream(name: string): Upstream; remoteNode(name: string): Upstream },
    private readonly get: HealthGetter = getHealth,
  ) {
    const byName = new Map(config.upstreams.map((u) => [u.name, u]));
    const target = (map: Map<string, Target>, c: UpstreamConfig, kind: Target['kind']): Target => {
      let t = map.get(c.name);
      if (t === undefined) {
        t = { name: c.name, kind, config: c, ranges: new Map(), sources: new Map(), state: { kind: 'unknown', reason: 'not probed yet' }, verdicts: new Map(), probing: undefined };
        map.set(c.name, t);
      }
      return t;
    };
    const add = (t: Target, range: VersionRange, route: RouteConfig) => {
      if (!t.ranges.has(range.text)) {
        t.ranges.set(range.text, range);
        t.sources.set(range.text, route.source.replace(/:\d+:\d+$/, ''));
      }
    };
    for (const route of config.routes) {
      if (route.requires === undefined) continue;
      const range = this.compiled(route.requires.dagu);
      const up = byName.get(route.upstream);
      if (up !== undefined) add(target(this.upstreams, up, 'upstream'), range, route);
      // a remote node receives the same paths: it must serve the same API
      if (route.remote_node) for (const node of config.remote_nodes) add(target(this.remotes, node, 'remote_node'), range, route);
    }
  }

  private compiled(text: string): VersionRange {
    let r = this.ranges.get(text);
    if (r === undefined) {
      const parsed = parseRange(text);
      if (typeof parsed === 'string') throw new Error(`requires.dagu "${text}" ${parsed}`); // the loader checked it
      r = parsed;
      this.ranges.set(text, r);
    }
    return r;
  }

  /** Anything to check at all (a config without `requires` never probes). */
  get empty(): boolean {
    return this.upstreams.size === 0 && this.remotes.size === 0;
  }

  /**
   * Before forwarding a request of `route` (to `remoteNode` when set): undefined = go ahead.
   * Synchronous once the target's version is known; a target not reachable so far is probed first.
   */
  check(route: RouteConfig, remoteNode: string | undefined): VersionRefusal | undefined | Promise<VersionRefusal | undefined> {
    if (route.requires === undefined) return undefined;
    const t = remoteNode === undefined ? this.upstreams.get(route.upstream) : this.remotes.get(remoteNode);
    if (t === undefined) return undefined; // not reachable: the route table and this gate come from one config
    if (t.state.kind === 'unknown') return this.probe(t).then(() => this.verdict(t, route.requires!.dagu));
    return this.verdict(t, route.requires.dagu);
  }

  private verdict(t: Target, rangeText: string): VersionRefusal | undefined {
    const s = t.state;
    if (s.kind === 'unknown') {
      return { status: 502, code: 'bad_gateway', message: `${label(t)} is unreachable, so its version could not be checked (${s.reason})` };
    }
    let ok = t.verdicts.get(rangeText);
    if (ok === undefined) {
      ok = s.kind === 'found' && satisfies(s.version, t.ranges.get(rangeText)!);
      t.verdicts.set(rangeText, ok);
    }
    if (ok) return undefined;
    return { status: 502, code: 'upstream_version_mismatch', message: this.mismatchMessage(t, rangeText) };
  }

  private mismatchMessage(t: Target, rangeText: string): string {
    const s = t.state;
    const { origin, prefix } = splitBase(t.config.api_base_url);
    const map = t.sources.get(rangeText);
    const needs = `its routes${map ? ` (${map})` : ''} require Dagu ${rangeText}`;
    if (s.kind === 'found') return `${label(t)} is Dagu ${formatVersion(s.version)}, but ${needs}: ${advice(s.version, origin, prefix)}`;
    return `${label(t)} reports no Dagu version (${s.kind === 'none' ? s.reason : 'not probed'}), but ${needs}; requests are not forwarded`;
  }

  /** Ask one target its version (one probe at a time per target). */
  private probe(t: Target): Promise<void> {
    t.probing ??= this.ask(t).then((state) => {
      t.state = state;
      t.verdicts = new Map();
      t.probing = undefined;
    });
    return t.probing;
  }

  private async ask(t: Target): Promise<TargetState> {
    const pool = t.kind === 'upstream' ? this.pools.upstream(t.name) : this.pools.remoteNode(t.name);
    const { basePath, prefix } = splitBase(t.config.api_base_url);
    const paths = [`${basePath}/health`, ...[`${prefix}/api/v1/health`, `${prefix}/api/v2/health`].filter((p) => p !== `${basePath}/health`)];
    const seen: string[] = [];
    for (const path of paths) {
      let answer;
      try {
        answer = await this.get(pool, path);
      } catch (err) {
        return { kind: 'unknown', reason: `GET ${path}: ${(err as Error & { code?: string }).code ?? (err as Error).message}` };
      }
      const version = versionIn(answer.body);
      if (version !== undefined) return { kind: 'found', version, url: pool.origin + path };
      seen.push(`GET ${path}: ${answer.status}`);
    }
    return { kind: 'none', reason: seen.join(', ') };
  }

  /** Probe every target now (start, reload, `check --probe`, the periodic re-check). */
  async probeAll(): Promise<Finding[]> {
    const all = [...this.upstreams.values(), ...this.remotes.values()];
    await Promise.all(all.map((t) => this.probe(t)));
    return all.map((t) => this.finding(t));
  }

  findings(): Finding[] {
    return [...this.upstreams.values(), ...this.remotes.values()].map((t) => this.finding(t));
  }

  private finding(t: Target): Finding {
    const requires = [...t.ranges.keys()];
    const base = { target: label(t), name: t.name, kind: t.kind, base_url: t.config.api_base_url, requires };
    const s = t.state;
    if (s.kind === 'unknown') return { ...base, status: 'unreachable', message: `${label(t)}: version not checked, unreachable (${s.reason}); checked again before the first request` };
    const version = s.kind === 'found' ? formatVersion(s.version) : undefined;
    const bad = requires.find((r) => this.verdict(t, r) !== undefined);
    if (bad !== undefined) return { ...base, ...(version ? { version } : {}), status: 'mismatch', message: this.mismatchMessage(t, bad) };
    return { ...base, version: version!, status: 'ok', message: `${label(t)} is Dagu ${version} (requires ${requires.join(', ')})` };
  }

  /** Re-probe every `ms` (a Dagu replaced under a running gateway); `onChange` hears of each new finding. */
  start(ms: number, onChange: (f: Finding) => void): void {
    if (this.empty) return;
    let last = new Map(this.findings().map((f) => [f.target, `${f.status} ${f.version ?? ''}`]));
    this.timer = setInterval(() => {
      void this.probeAll().then((found) => {
        const next = new Map<string, string>();
        for (const f of found) {
          const sig = `${f.status} ${f.version ?? ''}`;
          next.set(f.target, sig);
          if (last.get(f.target) !== sig) onChange(f);
        }
        last = next;
      });
    }, ms).unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

function label(t: Target): string {
  return t.kind === 'upstream' ? `upstream "${t.name}"` : `remote node "${t.name}"`;
}
