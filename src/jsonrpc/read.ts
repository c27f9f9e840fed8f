// A strict JSON reader for the bodies the gateway decides on, so that it reads a call exactly as
// the upstream will. JSON.parse is not enough: it keeps the last of two equal member names
// silently, and builds objects whose prototype answers for names the body never had. Here:
// - RFC 8259 grammar only (no BOM, no trailing data, whitespace = space, tab, CR, LF);
// - the bytes must be UTF-8 (a Go decoder would turn bad bytes into U+FFFD, JSON.parse too, but
//   silently: refused instead);
// - \u escapes with a lone surrogate become U+FFFD, as Go decodes them;
// - objects have a null prototype, so only members the body sent are found;
// - the first duplicate member name is reported (the value is still built, for the request's id).

export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;
export interface JsonObject {
  [name: string]: JsonValue;
}

export type ReadResult =
  | { readonly ok: true; readonly value: JsonValue; /** set when some object names a member twice */ readonly duplicate: string | undefined }
  | { readonly ok: false; readonly message: string };

/** deeper nesting is refused rather than risking the stack (Go's own limit is 10000) */
const MAX_DEPTH = 512;

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

class SyntaxFault extends Error {}

/** a run of string characters that need no attention (compiled once; sticky, so it scans in place) */
const PLAIN_RUN = /[^"\\\u0000-\u001f]*/y;

/**
 * Read one JSON document from bytes. Most calls take the fast path: a single scan proves that
 * JSON.parse reads the text exactly as the strict reader would (see `provablyPlain`), then
 * JSON.parse builds the value and its objects lose their prototype. Every other text — and any
 * text JSON.parse refuses — goes to the strict reader, which says why.
 */
export function readJson(bytes: Uint8Array): ReadResult {
  const text = decode(bytes);
  if (text === undefined) return NOT_UTF8;
  if (provablyPlain(text)) {
    let value: JsonValue;
    try {
      value = JSON.parse(text) as JsonValue;
    } catch {
      return readText(text);
    }
    return { ok: true, value: withoutPrototypes(value), duplicate: undefined };
  }
  return readText(text);
}

/** The strict reader alone, for every text (tests and the benchmark compare the two paths). */
export function readJsonStrict(bytes: Uint8Array): ReadResult {
  const text = decode(bytes);
  return text === undefined ? NOT_UTF8 : readText(text);
}

const NOT_UTF8: ReadResult = Object.freeze({ ok: false, message: 'the body is not valid UTF-8' });

/** The bytes as text, or undefined when they are not UTF-8 (a BOM is kept: the grammar refuses it). */
function decode(bytes: Uint8Array): string | undefined {
  try {
    return UTF8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** \uD800–\uDFFF: a surrogate escape */
const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;

/**
 * Whether JSON.parse reads `s` as the strict reader does, when it accepts it at all. JSON.parse
 * accepts exactly RFC 8259 on a string (no BOM, the same white space, numbers, escapes and
 * control characters) and builds the same values, except where the strict reader is stricter or
 * different, which this scan rules out:
 * - a member name given twice in one object (JSON.parse keeps the last in silence);
 * - an escaped member name (two spellings of one name: compared only after decoding);
 * - a \u escape of a surrogate (Go, and the strict reader, read a lone one as U+FFFD);
 * - nesting deeper than MAX_DEPTH.
 * A text that is not JSON at all may pass the scan; JSON.parse then refuses it and the strict
 * reader reports why. Member names are recognised by position (after "{" or "," in an object),
 * which is exact for any text JSON.parse accepts.
 */
export function provablyPlain(s: string): boolean {
  const n = s.length;
  /** open containers: the member names seen so far for an object, null for an array */
  const frames: (string[] | Set<string> | null)[] = [];
  let atName = false;
  // a \uD800–\uDFFF escape anywhere (or text that looks like one): the strict reader decides
  if (s.indexOf('\\u') !== -1 && SURROGATE_ESCAPE.test(s)) return false;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22) {
      // the closing quote: the next one not escaped (preceded by an odd run of backslashes)
      let end = s.indexOf('"', i + 1);
      while (end !== -1 && s.charCodeAt(end - 1) === 0x5c && oddBackslashesBefore(s, end)) end = s.indexOf('"', end + 1);
      if (end === -1) return false;
      if (atName) {
        const name = s.slice(i + 1, end);
        if (name.includes('\\')) return false; // an escaped name: two spellings compare only decoded
        const top = frames[frames.length - 1];
        if (Array.isArray(top)) {
          if (top.includes(name)) return false;
          if (top.length < 16) top.push(name);
          else frames[frames.length - 1] = new Set([...top, name]);
        } else if (top) {
          if (top.has(name)) return false;
          top.add(name);
        }
        atName = false;
      }
      i = end;
      continue;
    }
    switch (c) {
      case 0x7b: // {
        if (frames.length >= MAX_DEPTH) return false;
        frames.push([]);
        atName = true;
        break;
      case 0x5b: // [
        if (frames.length >= MAX_DEPTH) return false;
        frames.push(null);
        atName = false;
        break;
      case 0x7d: // }
      case 0x5d: // ]
        frames.pop();
        atName = false;
        break;
      case 0x2c: // ,
        atName = frames.length > 0 && frames[frames.length - 1] !== null;
        break;
      case 0x3a: // :
        atName = false;
        break;
    }
  }
  return true;
}

/** Whether the run of backslashes just before `q` is odd (so the character at `q` is escaped). */
function oddBackslashesBefore(s: string, q: number): boolean {
  let k = q - 1;
  while (s.charCodeAt(k) === 0x5c) k--;
  return ((q - 1 - k) & 1) === 1;
}

/** JSON.parse's objects made like the strict reader's: no prototype, so only sent members are found. */
function withoutPrototypes(v: JsonValue): JsonValue {
  if (typeof v !== 'object' || v === null) return v;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) withoutPrototypes(v[i]!);
    return v;
  }
  Object.setPrototypeOf(v, null);
  for (const name in v) withoutPrototypes(v[name]!);
  return v;
}

function readText(text: string): ReadResult {
  const r = new Reader(text);
  try {
    r.ws();
    const value = r.value(0);
    r.ws();
    if (r.i !== text.length) r.fail('unexpected data after the JSON value');
    return { ok: true, value, duplicate: r.duplicate };
  } catch (err) {
    if (err instanceof SyntaxFault) return { ok: false, message: err.message };
    throw err;
  }
}

/** Names shown in messages are cut short and escaped. */
export function quoteName(name: string): string {
  return JSON.stringify(name.length > 64 ? `${name.slice(0, 64)}…` : name);
}

class Reader {
  i = 0;
  duplicate: string | undefined;
  constructor(private readonly s: string) {}

  fail(what: string): never {
    throw new SyntaxFault(`${what} at offset ${this.i}`);
  }

  ws(): void {
    const s = this.s;
    let i = this.i;
    for (let c = s.charCodeAt(i); c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d; c = s.charCodeAt(++i));
    this.i = i;
  }

  value(depth: number): JsonValue {
    const c = this.s.charCodeAt(this.i);
    switch (c) {
      case 0x7b: // {
        return this.object(depth + 1);
      case 0x5b: // [
        return this.array(depth + 1);
      case 0x22: // "
        return this.string();
      case 0x74: // t
        return this.literal('true', true);
      case 0x66: // f
        return this.literal('false', false);
      case 0x6e: // n
        return this.literal('null', null);
      default:
        if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return this.number();
        return this.fail(Number.isNaN(c) ? 'unexpected end of the body' : 'unexpected character');
    }
  }

  private literal<T>(word: string, v: T): T {
    if (!this.s.startsWith(word, this.i)) this.fail('unexpected character');
    this.i += word.length;
    return v;
  }

  private object(depth: number): JsonObject {
    if (depth > MAX_DEPTH) this.fail('nesting too deep');
    const o = Object.create(null) as JsonObject;
    this.i++;
    this.ws();
    if (this.s.charCodeAt(this.i) === 0x7d) {
      this.i++;
      return o;
    }
    for (;;) {
      if (this.s.charCodeAt(this.i) !== 0x22) this.fail('expected a member name');
      const name = this.string();
      this.ws();
      if (this.s.charCodeAt(this.i) !== 0x3a) this.fail('expected ":"');
      this.i++;
      this.ws();
      const v = this.value(depth);
      if (name in o) this.duplicate ??= `member name ${quoteName(name)} appears twice in one object`;
      o[name] = v;
      this.ws();
      const c = this.s.charCodeAt(this.i++);
      if (c === 0x7d) return o;
      if (c !== 0x2c) {
        this.i--;
        this.fail('expected "," or "}"');
      }
      this.ws();
    }
  }

  private array(depth: number): JsonValue[] {
    if (depth > MAX_DEPTH) this.fail('nesting too deep');
    const a: JsonValue[] = [];
    this.i++;
    this.ws();
    if (this.s.charCodeAt(this.i) === 0x5d) {
      this.i++;
      return a;
    }
    for (;;) {
      a.push(this.value(depth));
      this.ws();
      const c = this.s.charCodeAt(this.i++);
      if (c === 0x5d) return a;
      if (c !== 0x2c) {
        this.i--;
        this.fail('expected "," or "]"');
      }
      this.ws();
    }
  }

  private string(): string {
    const s = this.s;
    let i = ++this.i;
    let out = '';
    let from = i;
    for (;;) {
      PLAIN_RUN.lastIndex = i;
      PLAIN_RUN.test(s);
      i = PLAIN_RUN.lastIndex;
      const c = s.charCodeAt(i);
      if (c === 0x22) {
        out += s.slice(from, i);
        this.i = i + 1;
        return out;
      }
      if (c === 0x5c) {
        out += s.slice(from, i);
        this.i = i;
        out += this.escape();
        i = from = this.i;
        continue;
      }
      if (c < 0x20 || Number.isNaN(c)) {
        this.i = i;
        this.fail(Number.isNaN(c) ? 'unterminated string' : 'control character in a string');
      }
      i++;
    }
  }

  /** At a backslash: the character it stands for; leaves i after the escape. */
  private escape(): string {
    const s = this.s;
    const c = s.charCodeAt(this.i + 1);
    this.i += 2;
    switch (c) {
      case 0x22:
        return '"';
      case 0x5c:
        return '\\';
      case 0x2f:
        return '/';
      case 0x62:
        return '\b';
      case 0x66:
        return '\f';
      case 0x6e:
        return '\n';
      case 0x72:
        return '\r';
      case 0x74:
        return '\t';
      case 0x75: {
        const u = this.hex4();
        if (u >= 0xd800 && u <= 0xdbff) {
          // a high surrogate pairs only with an escaped low one; else U+FFFD, as Go decodes it
          if (s.charCodeAt(this.i) === 0x5c && s.charCodeAt(this.i + 1) === 0x75) {
            const save = this.i;
            this.i += 2;
            const lo = this.hex4();
            if (lo >= 0xdc00 && lo <= 0xdfff) return String.fromCharCode(u, lo);
            this.i = save;
          }
          return '\ufffd';
        }
        if (u >= 0xdc00 && u <= 0xdfff) return '\ufffd';
        return String.fromCharCode(u);
      }
      default:
        this.i -= 2;
        return this.fail('invalid escape in a string');
    }
  }

  private hex4(): number {
    let v = 0;
    for (let k = 0; k < 4; k++) {
      const c = this.s.charCodeAt(this.i + k);
      const d = c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : c >= 0x41 && c <= 0x46 ? c - 0x37 : -1;
      if (d < 0) this.fail('invalid \\u escape');
      v = v * 16 + d;
    }
    this.i += 4;
    return v;
  }

  private number(): number {
    const s = this.s;
    const start = this.i;
    let i = start;
    if (s.charCodeAt(i) === 0x2d) i++;
    const digits = (): void => {
      const from = i;
      for (let c = s.charCodeAt(i); c >= 0x30 && c <= 0x39; c = s.charCodeAt(++i));
      if (i === from) {
        this.i = i;
        this.fail('invalid number');
      }
    };
    if (s.charCodeAt(i) === 0x30) i++;
    else digits();
    if (s.charCodeAt(i) === 0x2e) {
      i++;
      digits();
    }
    let c = s.charCodeAt(i);
    if (c === 0x65 || c === 0x45) {
      c = s.charCodeAt(++i);
      if (c === 0x2b || c === 0x2d) i++;
      digits();
    }
    this.i = i;
    return Number(s.slice(start, i));
  }
}
