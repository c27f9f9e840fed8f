// YAML text → plain JS value plus the source position of every node.
//
// Positions are keyed by JSON pointer (RFC 6901), the same notation ajv uses for
// `instancePath`, so a schema error can be mapped back to file:line:col without
// searching. The document is parsed with the `failsafe` schema: every scalar stays
// the string that was written (a token `0123` keeps its leading zero) and ajv's
// type coercion, driven by the JSON schema, decides what becomes a number or a
// boolean — exactly as for a value that came from `${VAR}`.
import { LineCounter, isAlias, isMap, isScalar, isSeq, parseDocument } from 'yaml';
import type { Document, Node as YamlNode, Scalar } from 'yaml';
import type { ConfigIssue } from '../errors.js';

export interface Pos {
  file: string;
  line: number;
  col: number;
}

/** Position of a value; `key` is the position of the mapping key that holds it. */
export interface NodePos extends Pos {
  key?: Pos;
}

/** JSON pointer → position. '' is the document root. */
export type PosMap = Map<string, NodePos>;

export interface ParsedYaml {
  value: unknown;
  positions: PosMap;
  /** syntax errors, or problems found while walking (unknown alias, complex key) */
  issues: ConfigIssue[];
  warnings: ConfigIssue[];
  /** true when the YAML is broken (or an alias bomb): there is no value to check further */
  unusable: boolean;
}

/** More nodes than this means an alias bomb ("billion laughs"), not a configuration. */
const MAX_NODES = 100_000;

/**
 * The failsafe schema does not know !!int, !!float, !!bool or !!null and warns about
 * them; the JSON schema's coercion gives such values their type anyway, so the
 * warning would only confuse.
 */
const CORE_TAG = /^Unresolved tag: tag:yaml\.org,2002:(int|float|bool|null)$/;

/** Plain scalars that YAML's core schema reads as null; a key with such a value counts as absent. */
const NULL_WORDS = new Set(['', '~', 'null', 'Null', 'NULL']);

export function formatPos(p: Pos): string {
  return `${p.file}:${p.line}:${p.col}`;
}

export function escapePointerSegment(segment: string): string {
  return segment.replace(/~/g, '~0').replace(/\//g, '~1');
}

export function childPointer(parent: string, segment: string | number): string {
  return `${parent}/${escapePointerSegment(String(segment))}`;
}

export function parentPointer(pointer: string): string {
  return pointer.slice(0, pointer.lastIndexOf('/'));
}

function splitPointer(pointer: string): string[] {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

/**
 * Dotted field path for messages, e.g. /routes/3/upstream → routes[3].upstream.
 * The data decides whether a segment is an array index, so a mapping key "0" stays `.0`.
 */
export function fieldPath(pointer: string, root: unknown): string {
  let out = '';
  let cur: unknown = root;
  for (const seg of splitPointer(pointer)) {
    if (Array.isArray(cur) && /^\d+$/.test(seg)) {
      out += `[${seg}]`;
      cur = cur[Number(seg)];
    } else {
      out += out === '' ? seg : `.${seg}`;
      cur = isRecord(cur) ? cur[seg] : undefined;
    }
  }
  return out;
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Position for a pointer; when the node has none (a value ajv filled in from a
 * default) the nearest ancestor's position is used. With `atKey`, the position of
 * the mapping key is preferred (unknown fields are reported where their name is).
 */
export function positionOf(positions: PosMap, pointer: string, atKey: boolean, fallback: Pos): Pos {
  const own = positions.get(pointer);
  if (own) return strip(atKey && own.key ? own.key : own);
  for (let p = pointer; p !== ''; ) {
    p = parentPointer(p);
    const found = positions.get(p);
    if (found) return strip(found);
  }
  return fallback;
}

function strip(p: Pos): Pos {
  return { file: p.file, line: p.line, col: p.col };
}

/** Defines an own property even for a key like `__proto__`, which plain assignment would not. */
export function setOwn(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

export function parseYaml(src: string, file: string): ParsedYaml {
  const lineCounter = new LineCounter();
  const doc = parseDocument(src, { lineCounter, prettyErrors: false, schema: 'failsafe' });
  const at = (offset: number): Pos => ({ file, ...lineCounter.linePos(offset) });
  const warnings = doc.warnings.filter((w) => !CORE_TAG.test(w.message)).map((w) => issue(at(w.pos[0]), '', w.message));
  if (doc.errors.length > 0) {
    // Only the first: the ones after it are mostly the parser losing its footing over the same
    // mistake. At the place the mistake starts (an unclosed quote: where it opened, not the end of
    // the file), in one line.
    const e = doc.errors[0]!;
    const offset = unclosedQuoteAt(src, e.message, e.pos[0]) ?? e.pos[0];
    const message = offset === e.pos[0] ? oneLine(e.message) : `this ${src[offset]}-quoted string is never closed (${oneLine(e.message)})`;
    const issues = [issue(at(offset), '', message + flowHint(src, offset))];
    return { value: undefined, positions: new Map(), issues, warnings, unusable: true };
  }
  const walker = new Walker(doc, at);
  try {
    const value = walker.walk(doc.contents, { pointer: '', field: '' });
    if (doc.contents === null) walker.positions.set('', at(0));
    return { value, positions: walker.positions, issues: walker.issues, warnings, unusable: false };
  } catch (err) {
    if (!(err instanceof TooLarge)) throw err;
    const issues = [issue(at(0), '', `the document has more than ${MAX_NODES} nodes once aliases are expanded`)];
    return { value: undefined, positions: new Map(), issues, warnings, unusable: true };
  }
}

/** Longest YAML error message shown: the first line, cut to this many characters. */
const MAX_MESSAGE = 200;

function oneLine(message: string): string {
  const first = message.split('\n', 1)[0]!.trim();
  return first.length > MAX_MESSAGE ? `${first.slice(0, MAX_MESSAGE - 1)}…` : first;
}

/**
 * For "Missing closing "quote" (reported where the file ends), the offset of the quote that opened
 * the scalar: the last one of that kind before the error that is not escaped (\" in double
 * quotes, '' in single quotes) — the scalar ran on to the error, so it holds no other.
 */
function unclosedQuoteAt(src: string, message: string, end: number): number | undefined {
  const m = /^Missing closing (["'])quote/.exec(message);
  if (!m) return undefined;
  const q = m[1]!;
  for (let i = Math.min(end, src.length) - 1; i >= 0; i--) {
    if (src[i] !== q) continue;
    if (q === '"') {
      let backslashes = 0;
      for (let j = i - 1; j >= 0 && src[j] === '\\'; j--) backslashes++;
      if (backslashes % 2 === 0) return i;
    } else if (src[i - 1] === "'") {
      i--; // '' is an escaped quote inside the scalar
    } else return i;
  }
  return undefined;
}

function issue(p: Pos, field: string, message: string): ConfigIssue {
  return { file: p.file, line: p.line, col: p.col, field, message };
}

// `port: ${PORT}` is fine, but inside { } or [ ] the braces of an unquoted ${VAR}
// are flow indicators and YAML reports something cryptic; say what to do instead.
function flowHint(src: string, offset: number): string {
  return src[offset] === '{' && src[offset - 1] === '$'
    ? ' (inside { } or [ ], quote a value that contains ${...}, e.g. "${VAR}")'
    : '';
}

class TooLarge extends Error {}

/** Where a node sits: its pointer, its dotted field path and, in a mapping, its key's position. */
interface Site {
  pointer: string;
  field: string;
  key?: Pos;
}

class Walker {
  readonly positions: PosMap = new Map();
  readonly issues: ConfigIssue[] = [];
  private count = 0;
  /** nodes being walked, to refuse an alias that points at its own ancestor */
  private readonly stack = new Set<YamlNode>();

  constructor(
    private readonly doc: Document,
    private readonly at: (offset: number) => Pos,
  ) {}

  walk(node: unknown, site: Site): unknown {
    if (++this.count > MAX_NODES) throw new TooLarge();
    if (node === null || node === undefined) return null;
    if (isAlias(node)) return this.alias(node.resolve(this.doc), node.source, node.range?.[0] ?? 0, site);
    if (!isScalar(node) && !isMap(node) && !isSeq(node)) return null;
    this.record(site, node.range?.[0] ?? 0);
    if (isScalar(node)) return scalarValue(node);
    this.stack.add(node);
    try {
      return isMap(node) ? this.map(node.items, site) : node.items.map((item, i) => this.walk(item, { pointer: childPointer(site.pointer, i), field: `${site.field}[${i}]` }));
    } finally {
      this.stack.delete(node);
    }
  }

  private alias(target: YamlNode | undefined, name: string, offset: number, site: Site): unknown {
    if (!target || this.stack.has(target)) {
      const why = target ? `alias *${name} refers to a node that contains it` : `unknown alias *${name} (the anchor &${name} must come first)`;
      this.issues.push(issue(this.at(offset), site.field, why));
      return null;
    }
    const value = this.walk(target, site);
    // report the value where it is used, not where the anchor was defined
    this.record(site, offset);
    return value;
  }

  private map(pairs: ReadonlyArray<{ key: unknown; value: unknown }>, site: Site): Record<string, unknown> {
    const obj: Record<string, unknown> = {};
    for (const pair of pairs) {
      if (!isScalar(pair.key)) {
        this.issues.push(issue(this.at(offsetOf(pair.key) ?? offsetOf(pair.value) ?? 0), site.field, 'mapping keys must be plain strings'));
        continue;
      }
      const name = String(pair.key.value);
      const child: Site = {
        pointer: childPointer(site.pointer, name),
        field: site.field === '' ? name : `${site.field}.${name}`,
        key: this.at(pair.key.range?.[0] ?? 0),
      };
      const value = this.walk(pair.value, child);
      // `key:` or `key: ~` means "not set", so that defaults apply (and a section whose
      // entries are all commented out is simply empty); its position is kept, so that a
      // problem in what the default fills in points at the key the user wrote
      if (value !== null) setOwn(obj, name, value);
    }
    return obj;
  }

  private record(site: Site, offset: number): void {
    const p: NodePos = this.at(offset);
    if (site.key) p.key = site.key;
    this.positions.set(site.pointer, p);
  }
}

function offsetOf(node: unknown): number | undefined {
  return isScalar(node) || isMap(node) || isSeq(node) || isAlias(node) ? node.range?.[0] : undefined;
}

function scalarValue(node: Scalar): string | null {
  const text = String(node.value);
  return node.type === 'PLAIN' && NULL_WORDS.has(text) ? null : text;
}
