// Where an MCP resource URI acts: `jsonrpc.resource_workspaces` maps URI patterns to the workspace
// the resource lives in, e.g. Dagu's `dagu://wiki/{workspace}/{path}` → `{workspace}`. Pure.
//
// The reading must be the upstream's: Dagu parses a resource URI with Go's net/url, takes the host
// as the resource family and splits the escaped path on "/" after trimming every leading and
// trailing "/", then percent-decodes each segment. A URI is only attributed when it is in a strict
// form whose reading is not in doubt (lower-case scheme and host, no user info, port, fragment,
// space, backslash or non-ASCII, valid percent-escapes that decode to UTF-8); anything else is not
// attributed at all, and a key limited to workspaces is refused for it.

import type { ResourceWorkspace } from '../config/types.js';

/** where a matched URI acts */
export type ResourceAct = { readonly kind: 'named'; readonly variable: string } | { readonly kind: 'all' } | { readonly kind: 'none' } | { readonly kind: 'route' };

interface Pattern {
  readonly scheme: string;
  readonly host: string;
  /** a literal segment, or null for a `{variable}` (named in `variables` at the same index) */
  readonly segments: readonly (string | null)[];
  readonly variables: readonly (string | undefined)[];
  /** ends in `**`: any further segments, none included */
  readonly rest: boolean;
  readonly act: ResourceAct;
}

/** the strict URI form: scheme "://" host path? ("?" query)? — no user info, port or fragment */
const URI = /^([a-z][a-z0-9+.-]*):\/\/([a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)((?:\/[A-Za-z0-9\-._~!$&'()*+,;=:@%]*)*)(?:\?[\x21\x22\x24-\x7e]*)?$/;
const EDGE_SLASHES = /^\/+|\/+$/g;
const PATTERN = /^([a-z][a-z0-9+.-]*):\/\/([a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)((?:\/[^/]+)*)$/;
const VARIABLE = /^\{([A-Za-z_][A-Za-z0-9_]*)\}$/;
const LITERAL = /^[A-Za-z0-9\-._~!$&'()*+,;=:@]+$/;

const COMPILED = new WeakMap<readonly ResourceWorkspace[], readonly Pattern[]>();

/** Compile a policy's rules (cached per rules list); throws an Error naming the first bad rule. */
export function compileResourceRules(rules: readonly ResourceWorkspace[]): readonly Pattern[] {
  let patterns = COMPILED.get(rules);
  if (patterns === undefined) {
    patterns = rules.map((rule, i) => {
      try {
        return compilePattern(rule);
      } catch (err) {
        throw new Error(`resource_workspaces[${i}]: ${(err as Error).message}`);
      }
    });
    COMPILED.set(rules, patterns);
  }
  return patterns;
}

function compilePattern(rule: ResourceWorkspace): Pattern {
  const m = PATTERN.exec(rule.uri);
  if (m === null) throw new Error(`uri "${rule.uri}" is not scheme://host followed by /segments (lower-case scheme and host, no query)`);
  const parts = m[3] === '' ? [] : m[3]!.slice(1).split('/');
  const segments: (string | null)[] = [];
  const variables: (string | undefined)[] = [];
  let rest = false;
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i]!;
    if (part === '**') {
      if (i !== parts.length - 1) throw new Error('"**" may only be the last segment');
      rest = true;
      continue;
    }
    const v = VARIABLE.exec(part);
    if (v !== null) {
      if (variables.includes(v[1])) throw new Error(`{${v[1]}} appears twice`);
      segments.push(null);
      variables.push(v[1]);
    } else if (LITERAL.test(part)) {
      segments.push(part);
      variables.push(undefined);
    } else throw new Error(`segment "${part}" is not a literal, {variable} or a final **`);
  }
  let act: ResourceAct;
  const w = rule.workspace;
  const named = VARIABLE.exec(w);
  if (named !== null) {
    if (!variables.includes(named[1])) throw new Error(`workspace "${w}": the uri has no {${named[1]}} segment`);
    act = { kind: 'named', variable: named[1]! };
  } else if (w === 'all' || w === 'none' || w === 'route') act = { kind: w };
  else throw new Error(`workspace "${w}" is not a {variable} of the uri, all, none or route`);
  return { scheme: m[1]!, host: m[2]!, segments, variables, rest, act };
}

/** A URI's parts as the upstream reads them, or undefined when its form is not the strict one. */
function parseUri(uri: string): { scheme: string; host: string; segments: string[] } | undefined {
  const m = URI.exec(uri);
  if (m === null) return undefined;
  // Go's strings.Trim(EscapedPath, "/"): every leading and trailing slash goes
  const path = m[3]!.replace(EDGE_SLASHES, '');
  const segments: string[] = [];
  if (path !== '') {
    for (const raw of path.split('/')) {
      try {
        segments.push(decodeURIComponent(raw));
      } catch {
        return undefined; // a malformed escape, or bytes that are not UTF-8
      }
    }
  }
  return { scheme: m[1]!, host: m[2]!, segments };
}

/**
 * Where `uri` acts under `rules` (first matching rule): a workspace it names, all workspaces,
 * none (an object outside any workspace), the route's own; undefined when no rule attributes it.
 */
export function resourceWhere(rules: readonly ResourceWorkspace[], uri: string): { act: ResourceAct; workspace?: string } | undefined {
  const parsed = parseUri(uri);
  if (parsed === undefined) return undefined;
  for (const p of compileResourceRules(rules)) {
    if (p.scheme !== parsed.scheme || p.host !== parsed.host) continue;
    const segs = parsed.segments;
    if (p.rest ? segs.length < p.segments.length : segs.length !== p.segments.length) continue;
    let ok = true;
    for (let i = 0; i < p.segments.length && ok; i++) {
      const lit = p.segments[i];
      if (lit !== null && lit !== segs[i]) ok = false;
    }
    if (!ok) continue;
    if (p.act.kind !== 'named') return { act: p.act };
    return { act: p.act, workspace: segs[p.variables.indexOf(p.act.variable)]! };
  }
  return undefined;
}

/**
 * Whether `s` reads the same with and without trimming: Dagu trims the values it reads
 * (strings.TrimSpace: Unicode White_Space and U+0085), JavaScript's trim differs (U+FEFF; no
 * U+0085), so a value with either at an end is not attributed rather than guessed at.
 */
export function isTrimmed(s: string): boolean {
  return !UNTRIMMED.test(s);
}
const UNTRIMMED = /^[\s\u0085]|[\s\u0085]$/;

/** Whether Dagu reads `s` as empty (only white space). */
export function isBlank(s: string): boolean {
  return BLANK.test(s);
}
const BLANK = /^[\s\u0085]*$/;
