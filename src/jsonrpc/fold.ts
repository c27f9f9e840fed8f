// Unicode simple case folding, as Go's encoding/json matches a JSON member name to a struct field:
// two names are the same field when every rune folds alike (bytes.EqualFold / unicode.SimpleFold),
// so "ſ" (U+017F) is "s" and "K" (U+212A, Kelvin) is "k". foldName maps a name to the smallest rune
// of each rune's fold orbit, as Go's foldName does, so foldName(a) === foldName(b) exactly when Go
// would take a and b for the same field.
//
// The orbits come from this engine's own simple case folding (what a /u + /i regular expression
// compares by, ECMA-262 Canonicalize: CaseFolding.txt C + S), computed once, when the first
// non-ASCII name is folded (about 0.1 s; ASCII names, the usual case, never need the table). Node's Unicode
// is at least Go's (15.0): a pair Go does not know yet only makes the gateway refuse more, never less.

/** code point → smallest code point of its fold orbit; absent = its own orbit */
const CANONICAL = new Map<number, number>();

/** a back-reference under /iu compares by simple case folding (ECMA-262 BackreferenceMatcher) */
const SAME_FOLD = /^(.)\1$/iu;

function buildOrbits(): void {
  const parent = new Map<number, number>();
  const find = (c: number): number => {
    let r = c;
    for (let p = parent.get(r); p !== undefined && p !== r; p = parent.get(r)) r = p;
    return r;
  };
  const union = (a: number, b: number): void => {
    const ra = find(a);
    const rb = find(b);
    if (ra === rb) return;
    // the smaller code point stays the root: it is the orbit's canonical rune
    parent.set(Math.max(ra, rb), Math.min(ra, rb));
  };
  // A candidate from toLowerCase/toUpperCase joins the orbit only if simple case folding agrees
  // (ı → I does not: that is a Turkic-only mapping; ß → SS is a full, not a simple, mapping).
  const candidate = (c: number, s: string, other: string): void => {
    if (other === s) return;
    const o = other.codePointAt(0)!;
    if (other.length !== (o > 0xffff ? 2 : 1)) return;
    if (SAME_FOLD.test(s + other)) union(c, o);
  };
  // case pairs exist only in the first two planes
  for (let c = 0x41; c < 0x20000; c++) {
    if (c >= 0xd800 && c <= 0xdfff) continue;
    const s = String.fromCodePoint(c);
    candidate(c, s, s.toLowerCase());
    candidate(c, s, s.toUpperCase());
  }
  for (const c of parent.keys()) CANONICAL.set(c, find(c));
}

/** The smallest rune of `c`'s simple-fold orbit (Go's foldRune). */
export function foldRune(c: number): number {
  if (CANONICAL.size === 0) buildOrbits();
  return CANONICAL.get(c) ?? c;
}

/** A name with every rune replaced by its orbit's smallest (Go's foldName); equal ⇔ EqualFold. */
export function foldName(name: string): string {
  let ascii = true;
  for (let i = 0; i < name.length; i++) {
    if (name.charCodeAt(i) > 0x7f) {
      ascii = false;
      break;
    }
  }
  // in ASCII the smallest of {A, a} is A: upper-casing is the fold ("K" < "k" < U+212A)
  if (ascii) return name.toUpperCase();
  let out = '';
  for (const ch of name) out += String.fromCodePoint(foldRune(ch.codePointAt(0)!));
  return out;
}
