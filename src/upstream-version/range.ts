// Version ranges a route map declares (`requires: { dagu: ">=1.30.0 <2.0.0" }`) and the check of a
// version an upstream reported against them. Pure: no I/O, compiled once per configuration.
//
// A range is one or more comparators separated by spaces, all of which must hold:
// `>=1.30.0 <2.0.0`, `>=2.0.0`, `=1.30.2`, `1.30.2` (equal). Versions are MAJOR.MINOR.PATCH with an
// optional leading "v" and an optional -prerelease / +build; a prerelease sorts before its release
// (2.0.0-beta.1 < 2.0.0), so `>=2.0.0` refuses a 2.0.0 beta rather than guess what it serves.

export type Version = readonly [number, number, number, string];

const VERSION_RE = /^v?(\d{1,9})\.(\d{1,9})\.(\d{1,9})(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$/;
const COMPARATOR_RE = /^(>=|<=|>|<|=)?(.+)$/;

export function parseVersion(text: string): Version | undefined {
  const m = VERSION_RE.exec(text.trim());
  if (!m) return undefined;
  return [Number(m[1]), Number(m[2]), Number(m[3]), m[4] ?? ''];
}

export function formatVersion(v: Version): string {
  return `${v[0]}.${v[1]}.${v[2]}${v[3] ? `-${v[3]}` : ''}`;
}

/** <0, 0, >0 as a is before, equal to, after b. */
export function compareVersions(a: Version, b: Version): number {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return (a[i] as number) - (b[i] as number);
  if (a[3] === b[3]) return 0;
  if (a[3] === '') return 1; // a release after its prereleases
  if (b[3] === '') return -1;
  return a[3] < b[3] ? -1 : 1;
}

type Op = '>=' | '<=' | '>' | '<' | '=';
interface Comparator {
  op: Op;
  version: Version;
}

export interface VersionRange {
  /** as written in the configuration, for messages */
  readonly text: string;
  readonly comparators: readonly Comparator[];
}

/** A range, or the reason it is not one (for the config loader's message). */
export function parseRange(text: string): VersionRange | string {
  const parts = text.trim().split(/\s+/).filter((p) => p !== '');
  if (parts.length === 0) return 'is empty (e.g. ">=2.0.0" or ">=1.30.0 <2.0.0")';
  const comparators: Comparator[] = [];
  for (const part of parts) {
    const m = COMPARATOR_RE.exec(part)!;
    const version = parseVersion(m[2]!);
    if (version === undefined) return `"${part}" is not a comparator (>=, <=, >, < or = and a version MAJOR.MINOR.PATCH, e.g. ">=1.30.0 <2.0.0")`;
    comparators.push({ op: (m[1] ?? '=') as Op, version });
  }
  return { text: parts.join(' '), comparators };
}

export function satisfies(version: Version, range: VersionRange): boolean {
  for (const c of range.comparators) {
    const d = compareVersions(version, c.version);
    const ok = c.op === '>=' ? d >= 0 : c.op === '<=' ? d <= 0 : c.op === '>' ? d > 0 : c.op === '<' ? d < 0 : d === 0;
    if (!ok) return false;
  }
  return true;
}
