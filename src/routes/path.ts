// Request-target normalisation. The gateway authorises the normalised path and forwards exactly
// that string, so no encoding trick can make the upstream see a path other than the one checked.
//
// Rules: unreserved characters that arrive percent-encoded are decoded (%41 → A, %2E → .);
// every other percent-encoding is kept with upper-case hex; dot segments are removed
// (RFC 3986 §5.2.4, clamped at the root); runs of slashes are collapsed; characters outside
// RFC 3986 `pchar` are percent-encoded. An encoded slash (%2F), a backslash (raw or %5C), a NUL
// (raw or %00) or a malformed escape is refused, because upstreams disagree on what they mean.

export interface Target {
  readonly ok: true;
  /** normalised path, always starting with "/" */
  readonly path: string;
  /** raw query string without "?", "" when absent */
  readonly query: string;
}

export interface BadTarget {
  readonly ok: false;
  readonly message: string;
}

// 1 = may appear raw in a normalised path segment (RFC 3986 pchar minus "%").
const PCHAR = new Uint8Array(128);
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&\'()*+,;=:@') {
  PCHAR[c.charCodeAt(0)] = 1;
}
// 1 = unreserved: decoded when it arrives percent-encoded.
const UNRESERVED = new Uint8Array(128);
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~') {
  UNRESERVED[c.charCodeAt(0)] = 1;
}
const HEX = '0123456789ABCDEF';

const SLASH = 47;
const DOT = 46;
const PERCENT = 37;
const BACKSLASH = 92;

function bad(message: string): BadTarget {
  return { ok: false, message };
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/** Split a request target into its normalised path and raw query. */
export function normaliseTarget(target: string): Target | BadTarget {
  if (target.charCodeAt(0) !== SLASH) return bad('request target must be an absolute path');
  const q = target.indexOf('?');
  const raw = q === -1 ? target : target.slice(0, q);
  const query = q === -1 ? '' : target.slice(q + 1);
  if (query.indexOf('#') !== -1 || raw.indexOf('#') !== -1) return bad('fragment in request target');

  // Fast path: most paths are already normal. One scan decides.
  let clean = true;
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c === SLASH) {
      const n = raw.charCodeAt(i + 1);
      if (n === SLASH || (n === DOT && isDotSegment(raw, i + 1))) {
        clean = false;
        break;
      }
    } else if (c >= 128 || PCHAR[c] !== 1) {
      clean = false;
      break;
    }
  }
  if (clean) return { ok: true, path: raw, query };
  return slowNormalise(raw, query);
}

/** Does a "." or ".." segment start at `i`? */
function isDotSegment(s: string, i: number): boolean {
  let j = i;
  if (s.charCodeAt(j) === DOT) j++;
  if (s.charCodeAt(j) === DOT) j++;
  return j === s.length || s.charCodeAt(j) === SLASH;
}

function slowNormalise(raw: string, query: string): Target | BadTarget {
  const out: string[] = [];
  const parts = raw.split('/');
  const last = parts.length - 1;
  for (let p = 1; p <= last; p++) {
    const seg = decodeSegment(parts[p]!);
    if (typeof seg !== 'string') return seg;
    if (seg === '') {
      // an empty segment is kept only as the trailing slash
      if (p === last) out.push('');
      continue;
    }
    if (seg === '.') {
      if (p === last) out.push('');
      continue;
    }
    if (seg === '..') {
      out.pop();
      if (p === last) out.push('');
      continue;
    }
    out.push(seg);
  }
  return { ok: true, path: '/' + out.join('/'), query };
}

/** Decode unreserved escapes, keep the rest canonical; a string or the reason to refuse. */
function decodeSegment(seg: string): string | BadTarget {
  let s = '';
  for (let i = 0; i < seg.length; i++) {
    const c = seg.charCodeAt(i);
    if (c === PERCENT) {
      const h = hexValue(seg.charCodeAt(i + 1));
      const l = hexValue(seg.charCodeAt(i + 2));
      if (h < 0 || l < 0) return bad('malformed percent-encoding in path');
      const b = h * 16 + l;
      if (b === SLASH) return bad('encoded slash (%2F) in path');
      if (b === BACKSLASH) return bad('encoded backslash (%5C) in path');
      if (b === 0) return bad('encoded NUL (%00) in path');
      s += b < 128 && UNRESERVED[b] === 1 ? String.fromCharCode(b) : '%' + HEX[h] + HEX[l];
      i += 2;
    } else if (c === BACKSLASH) {
      return bad('backslash in path');
    } else if (c === 0) {
      return bad('NUL in path');
    } else if (c < 128 && PCHAR[c] === 1) {
      s += seg[i];
    } else if (c < 256) {
      // Node hands the request target over byte for byte (latin1): encode the byte.
      s += '%' + HEX[c >> 4] + HEX[c & 15];
    } else {
      // Only reachable from `routes explain` input typed by a person: encode as UTF-8.
      const ch = String.fromCodePoint(seg.codePointAt(i)!);
      for (const byte of Buffer.from(ch, 'utf8')) s += '%' + HEX[byte >> 4] + HEX[byte & 15];
      i += ch.length - 1;
    }
  }
  return s;
}

/** Decode a normalised path segment for comparison with names (workspace, node). */
export function decodeSegmentValue(seg: string): string {
  if (seg.indexOf('%') === -1) return seg;
  try {
    return decodeURIComponent(seg);
  } catch {
    return seg;
  }
}
