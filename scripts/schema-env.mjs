#!/usr/bin/env node
// Lets config/gateway.schema.json accept a ${VAR} reference wherever the loader does: the loader expands
// ${VAR} / ${VAR:-default} in every string scalar before it validates, so `port: ${KEYGATE_PORT:-8080}`
// is a valid config, but an editor validating the raw YAML against the schema sees a string where an
// integer is expected. Every value whose check a reference cannot pass (a number, a boolean, an enum,
// a pattern) becomes
//   { title, description, default, anyOf: [ {the checks as they were}, { "$ref": "#/definitions/env_reference" } ] }
// The loader removes these alternatives again before it compiles the schema (src/config/load.ts,
// strictSchema), so what it checks after expansion is exactly the checks as they were.
//
// Idempotent; edits only the values it changes (the file keeps its hand-made layout elsewhere).
// test/schema.test.ts fails when a field lacks the alternative: run `node scripts/schema-env.mjs`.
import { readFileSync, writeFileSync } from 'node:fs';

const FILE = new URL('../config/gateway.schema.json', import.meta.url);
export const ENV_REF = '#/definitions/env_reference';
const ENV_DEF = {
  title: 'Environment variable reference',
  description: 'A string with ${VAR} or ${VAR:-default}: the loader replaces it by the variable before it checks the value.',
  type: 'string',
  pattern: '(^|[^$])\\$\\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\\}',
};
const ANNOTATIONS = new Set(['title', 'description', 'default', 'examples', '$comment', 'markdownDescription', 'deprecated']);

/** Does a reference string fail these checks (so the node needs the alternative)? */
export function needsEnvAlternative(node) {
  if (!node || typeof node !== 'object' || Array.isArray(node) || node.anyOf || node.$ref) return false;
  const types = node.type === undefined ? [] : [node.type].flat();
  if (types.length === 0) return false;
  if (!types.includes('string')) return types.some((t) => t === 'integer' || t === 'number' || t === 'boolean');
  return node.enum !== undefined || node.pattern !== undefined || node.const !== undefined || node.format !== undefined || (node.maxLength !== undefined && node.maxLength < 4);
}

export function hasEnvAlternative(node) {
  return Array.isArray(node?.anyOf) && node.anyOf.some((b) => b?.$ref === ENV_REF);
}

/** The pointers of every node that needs the alternative, deepest (and last) first. */
function targets(schema) {
  const out = [];
  (function walk(n, p, wrapped = false) {
    if (Array.isArray(n)) return n.forEach((x, i) => walk(x, `${p}/${i}`));
    if (!n || typeof n !== 'object') return;
    if (!wrapped && p !== '/definitions/env_reference' && needsEnvAlternative(n)) out.push(p);
    const alt = hasEnvAlternative(n);
    for (const [k, v] of Object.entries(n)) {
      if (alt && k === 'anyOf') v.forEach((x, i) => walk(x, `${p}/anyOf/${i}`, true)); // the checks as they were
      else if (typeof v === 'object') walk(v, `${p}/${k}`);
    }
  })(schema, '');
  return out;
}

/** A minimal JSON parser that records where every object or array starts and ends. */
function parseWithRanges(text) {
  const ranges = new Map();
  let i = 0;
  const ws = () => {
    while (/\s/.test(text[i])) i++;
  };
  function value(p) {
    ws();
    const start = i;
    let v;
    if (text[i] === '{') {
      v = {};
      i++;
      ws();
      if (text[i] === '}') i++;
      else
        for (;;) {
          ws();
          const k = JSON.parse(str());
          ws();
          i++; // :
          v[k] = value(`${p}/${k}`);
          ws();
          if (text[i++] === '}') break;
        }
      ranges.set(p, [start, i]);
    } else if (text[i] === '[') {
      v = [];
      i++;
      ws();
      if (text[i] === ']') i++;
      else
        for (let n = 0; ; n++) {
          v.push(value(`${p}/${n}`));
          ws();
          if (text[i++] === ']') break;
        }
      ranges.set(p, [start, i]);
    } else if (text[i] === '"') v = JSON.parse(str());
    else {
      const m = /^(true|false|null|-?\d+(\.\d+)?([eE][+-]?\d+)?)/.exec(text.slice(i));
      i += m[0].length;
      v = JSON.parse(m[0]);
    }
    return v;
  }
  function str() {
    const s = i++;
    while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
    return text.slice(s, i);
  }
  return { value: value(''), ranges };
}

/** Compact one-line JSON with the file's spacing: { "a": 1, "b": ["x", "y"] } */
function inline(v) {
  if (Array.isArray(v)) return `[${v.map(inline).join(', ')}]`;
  if (v && typeof v === 'object') {
    const e = Object.entries(v);
    return e.length === 0 ? '{}' : `{ ${e.map(([k, x]) => `${JSON.stringify(k)}: ${inline(x)}`).join(', ')} }`;
  }
  return JSON.stringify(v);
}

function transform(node) {
  const out = {};
  const checks = {};
  for (const [k, v] of Object.entries(node)) (ANNOTATIONS.has(k) ? out : checks)[k] = v;
  out.anyOf = [checks, { $ref: ENV_REF }];
  return out;
}

function render(node, indent, multiline) {
  if (!multiline) return inline(node);
  const pad = ' '.repeat(indent + 2);
  return `{\n${Object.entries(node).map(([k, v]) => `${pad}${JSON.stringify(k)}: ${inline(v)}`).join(',\n')}\n${' '.repeat(indent)}}`;
}

export function addEnvAlternatives(text) {
  for (;;) {
    const { value, ranges } = parseWithRanges(text);
    const [p] = targets(value).sort((a, b) => ranges.get(b)[0] - ranges.get(a)[0]);
    if (p === undefined) break;
    const node = p.split('/').slice(1).reduce((n, k) => n[k], value);
    const [s, e] = ranges.get(p);
    const lineStart = text.lastIndexOf('\n', s) + 1;
    const indent = /^ */.exec(text.slice(lineStart))[0].length;
    text = text.slice(0, s) + render(transform(node), indent, text.slice(s, e).includes('\n')) + text.slice(e);
  }
  const { value, ranges } = parseWithRanges(text);
  if (!value.definitions.env_reference) {
    const [, e] = ranges.get('/definitions');
    const close = text.lastIndexOf('}', e - 1);
    const before = text.slice(0, close).replace(/\s*$/, '');
    text = `${before},\n    "env_reference": ${inline(ENV_DEF)}\n  ${text.slice(close)}`;
  }
  return text;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const before = readFileSync(FILE, 'utf8');
  const after = addEnvAlternatives(before);
  JSON.parse(after);
  if (after !== before) writeFileSync(FILE, after);
  console.log(after === before ? 'config/gateway.schema.json: nothing to change' : 'config/gateway.schema.json: updated');
}
