// normaliseTarget: the one place where a request target becomes the path that is both authorised
// and forwarded. A table of exact results, then the security property against a small route table,
// then idempotence over every accepted input.

import t from 'tap';
import { DAGU_UPSTREAM, routeConfig, type RouteInput } from './factories.js';
import type { RouteConfig } from '../src/config/types.js';
import { decodeSegmentValue, normaliseTarget } from '../src/routes/path.js';
import { RouteTable } from '../src/routes/table.js';

type Ok = { path: string; query?: string };
type Case = readonly [input: string, expected: Ok | { refused: string }];

const ABSOLUTE = 'request target must be an absolute path';
const FRAGMENT = 'fragment in request target';
const MALFORMED = 'malformed percent-encoding in path';

const CASES: Record<string, readonly Case[]> = {
  'plain paths pass through unchanged': [
    ['/', { path: '/' }],
    ['/api/v1/dags', { path: '/api/v1/dags' }],
    ['/api/v1/dags/', { path: '/api/v1/dags/' }],
    ["/a/-._~!$&'()*+,;=:@/z", { path: "/a/-._~!$&'()*+,;=:@/z" }],
    ['/a/..b/.c/c./...', { path: '/a/..b/.c/c./...' }],
    ['/api/v1/dags?limit=5&q=a%20b', { path: '/api/v1/dags', query: 'limit=5&q=a%20b' }],
    ['/a?', { path: '/a', query: '' }],
    ['/a?b?c', { path: '/a', query: 'b?c' }],
    ['/?x=1', { path: '/', query: 'x=1' }],
  ],
  'unreserved escapes are decoded': [
    ['/%41', { path: '/A' }],
    ['/%7E', { path: '/~' }],
    ['/%7e', { path: '/~' }],
    ['/a%2eb', { path: '/a.b' }],
    ['/%2D%5F%30%7a', { path: '/-_0z' }],
    ['/api/v1/adm%69n', { path: '/api/v1/admin' }],
  ],
  'reserved and other escapes are kept, hex upper-cased': [
    ['/a%3ab', { path: '/a%3Ab' }],
    ['/a%3Ab', { path: '/a%3Ab' }],
    ['/a%20b', { path: '/a%20b' }],
    ['/%21%40', { path: '/%21%40' }],
    ['/%e9', { path: '/%E9' }],
    ['/%25', { path: '/%25' }],
    ['/%2541', { path: '/%2541' }],
    ['/%252e%252e', { path: '/%252e%252e' }],
    ['/a%3fb', { path: '/a%3Fb' }],
    ['/a%23b', { path: '/a%23b' }],
  ],
  'dot segments are removed, clamped at the root': [
    ['/a/./b', { path: '/a/b' }],
    ['/a/../b', { path: '/b' }],
    ['/a/b/..', { path: '/a/' }],
    ['/a/b/../', { path: '/a/' }],
    ['/a/b/.', { path: '/a/b/' }],
    ['/a/b/./', { path: '/a/b/' }],
    ['/.', { path: '/' }],
    ['/./', { path: '/' }],
    ['/..', { path: '/' }],
    ['/../a', { path: '/a' }],
    ['/a/b/../../../c', { path: '/c' }],
    ['/a/%2e%2e/b', { path: '/b' }],
    ['/a/%2E%2E/b', { path: '/b' }],
    ['/a/.%2E/b', { path: '/b' }],
    ['/a/%2e./b', { path: '/b' }],
    ['/a/%2e/b', { path: '/a/b' }],
    ['/a/..?x=/../', { path: '/', query: 'x=/../' }],
  ],
  'runs of slashes collapse, the trailing slash is kept': [
    ['//a///b', { path: '/a/b' }],
    ['//', { path: '/' }],
    ['/a//', { path: '/a/' }],
    ['/a/b/', { path: '/a/b/' }],
    ['//a///b?x=//..', { path: '/a/b', query: 'x=//..' }],
  ],
  'bytes outside pchar are percent-encoded': [
    ['/caf\u00e9', { path: '/caf%E9' }],
    ['/a b', { path: '/a%20b' }],
    ['/a"b', { path: '/a%22b' }],
    ['/<x>', { path: '/%3Cx%3E' }],
    ['/a`b{c}|^[]', { path: '/a%60b%7Bc%7D%7C%5E%5B%5D' }],
    ['/a\tb\u007f', { path: '/a%09b%7F' }],
    ['/\u20ac', { path: '/%E2%82%AC' }],
  ],
  'the query is never altered': [
    ['/a b?x y=%zz&q=\u00e9&p=%2F..%5C', { path: '/a%20b', query: 'x y=%zz&q=\u00e9&p=%2F..%5C' }],
    ['/a/%41?%41=%41', { path: '/a/A', query: '%41=%41' }],
    ['/a?\\', { path: '/a', query: '\\' }],
  ],
  'ambiguous or malformed targets are refused': [
    ['/a%2Fb', { refused: 'encoded slash (%2F) in path' }],
    ['/a%2fb', { refused: 'encoded slash (%2F) in path' }],
    ['/a%5Cb', { refused: 'encoded backslash (%5C) in path' }],
    ['/a%5cb', { refused: 'encoded backslash (%5C) in path' }],
    ['/a\\b', { refused: 'backslash in path' }],
    ['/a%00b', { refused: 'encoded NUL (%00) in path' }],
    ['/a\u0000b', { refused: 'NUL in path' }],
    ['/a%G1', { refused: MALFORMED }],
    ['/a%1G', { refused: MALFORMED }],
    ['/a%', { refused: MALFORMED }],
    ['/a%4', { refused: MALFORMED }],
    ['/%%41', { refused: MALFORMED }],
    ['/a#f', { refused: FRAGMENT }],
    ['/a?b#f', { refused: FRAGMENT }],
    ['/#', { refused: FRAGMENT }],
    ['http://x/a', { refused: ABSOLUTE }],
    ['*', { refused: ABSOLUTE }],
    ['', { refused: ABSOLUTE }],
    ['a/b', { refused: ABSOLUTE }],
    ['?x=1', { refused: ABSOLUTE }],
  ],
};

/** Every accepted normalised path, for the idempotence check. */
const accepted: string[] = [];

for (const [group, cases] of Object.entries(CASES)) {
  t.test(group, async (t) => {
    for (const [input, expected] of cases) {
      const got = normaliseTarget(input);
      if ('refused' in expected) {
        t.same(got, { ok: false, message: expected.refused }, JSON.stringify(input));
      } else {
        t.same(got, { ok: true, path: expected.path, query: expected.query ?? '' }, JSON.stringify(input));
        accepted.push(expected.path);
      }
    }
  });
}

t.test('an already-normal path comes back as the same string', async (t) => {
  for (const input of ['/api/v1/dags/x', "/a/-._~!$&'()*+,;=:@"]) {
    const got = normaliseTarget(input);
    t.equal(got.ok && got.path, input);
  }
});

// ---------------------------------------------------------------- security property

const UPSTREAM = DAGU_UPSTREAM;

function route(index: number, r: RouteInput): RouteConfig {
  return routeConfig({ name: r.path, ...r }, index);
}

const table = RouteTable.compile({
  upstreams: [UPSTREAM],
  routes: [
    route(0, { path: '/api/v1/public/**', auth: 'none', name: 'public' }),
    route(1, { path: '/api/v1/admin', role: 'admin', name: 'admin' }),
  ],
});

function routeName(path: string): string | null {
  return table.match('GET', undefined, path)?.route.config.name ?? null;
}

/** What an upstream that decodes each segment once and then cleans dot segments would serve. */
function upstreamView(path: string): string {
  const out: string[] = [];
  const segs = path.split('/').slice(1);
  segs.forEach((raw, i) => {
    let seg: string;
    try {
      seg = decodeURIComponent(raw);
    } catch {
      seg = unescape(raw); // latin1 bytes, as Go would keep them
    }
    for (const piece of seg.split(/[/\\]/)) {
      if (piece === '..') out.pop();
      else if (piece !== '.' && piece !== '') out.push(piece);
    }
    if (i === segs.length - 1 && (seg === '' || seg === '.' || seg === '..')) out.push('');
  });
  return '/' + out.join('/');
}

type Attack = readonly [input: string, expected: { refused: true } | { path: string; route: 'public' | 'admin' | null }];

const ATTACKS: readonly Attack[] = [
  ['/api/v1/public/../admin', { path: '/api/v1/admin', route: 'admin' }],
  ['/api/v1/public/%2e%2e/admin', { path: '/api/v1/admin', route: 'admin' }],
  ['/api/v1/public/.%2E/admin', { path: '/api/v1/admin', route: 'admin' }],
  ['/api/v1/public/x/../../admin', { path: '/api/v1/admin', route: 'admin' }],
  ['/api/v1/public%2F..%2Fadmin', { refused: true }],
  ['/api/v1/public/..%2fadmin', { refused: true }],
  ['/api/v1//admin', { path: '/api/v1/admin', route: 'admin' }],
  ['/api/v1/./admin', { path: '/api/v1/admin', route: 'admin' }],
  ['/API/v1/admin', { path: '/API/v1/admin', route: null }],
  ['/api/v1/admin/', { path: '/api/v1/admin/', route: null }],
  ['/api/v1/admin%00', { refused: true }],
  ['/api/v1/adm%69n', { path: '/api/v1/admin', route: 'admin' }],
  ['/api/v1/public/..%5cadmin', { refused: true }],
  ['/api/v1/public/..\\admin', { refused: true }],
  ['/api/v1/public/%252e%252e/admin', { path: '/api/v1/public/%252e%252e/admin', route: 'public' }],
  ['/api/v1/public/..;/admin', { path: '/api/v1/public/..;/admin', route: 'public' }],
  ['/api/v1/public/%c0%ae%c0%ae/admin', { path: '/api/v1/public/%C0%AE%C0%AE/admin', route: 'public' }],
  ['/api/v1/public/%2e%2e%2e/admin', { path: '/api/v1/public/.../admin', route: 'public' }],
  ['/api/v1/public/x?/../../admin', { path: '/api/v1/public/x', route: 'public' }],
  ['/api/v1/public#/../../admin', { refused: true }],
];

// Generated: every traversal token between the public prefix and "admin".
const TOKENS = ['..', '.', '%2e%2e', '%2E%2e', '.%2e', '%2e.', '%2e', '..%2f', '%2f..', '..%5c', '%5c..', '..\\', '%252e%252e', '..;', '%00', '', '%2e%2e%2f', '.%00.', '..%00'];
const GENERATED = TOKENS.flatMap((tok) => ['/', '//'].map((sep) => `/api/v1/public${sep}${tok}/admin`));

t.test('no encoding trick reaches the admin route through the public one', async (t) => {
  for (const [input, expected] of ATTACKS) {
    const got = normaliseTarget(input);
    if ('refused' in expected) {
      t.equal(got.ok, false, `${input} is refused`);
      continue;
    }
    t.same(got.ok && { path: got.path, route: routeName(got.path) }, expected, input);
  }
});

t.test('for every attack input, the route checked is the route the upstream serves', async (t) => {
  for (const input of [...ATTACKS.map(([i]) => i), ...GENERATED]) {
    const got = normaliseTarget(input);
    if (!got.ok) continue;
    accepted.push(got.path);
    const checked = routeName(got.path);
    // the admin route is reached only by its own exact path, so it is always checked as admin
    if (checked !== 'admin') t.not(upstreamView(got.path), '/api/v1/admin', `${input} → ${got.path} must not serve admin`);
    t.equal(routeName(upstreamView(got.path)), checked, `${input} → ${got.path}: upstream sees ${upstreamView(got.path)}`);
    if (checked === 'public') t.match(got.path, /^\/api\/v1\/public(\/|$)/, `${input} stays under the public prefix`);
  }
});

t.test('the helper that models the upstream is itself sound', async (t) => {
  t.equal(upstreamView('/api/v1/public/%2e%2e/admin'), '/api/v1/admin');
  t.equal(upstreamView('/api/v1/public/%252e%252e/admin'), '/api/v1/public/%2e%2e/admin');
  t.equal(upstreamView('/a/b/'), '/a/b/');
  t.equal(decodeSegmentValue('%E9'), '%E9'); // not UTF-8: kept as is
  t.equal(decodeSegmentValue('a%20b'), 'a b');
  t.equal(decodeSegmentValue('plain'), 'plain');
});

t.test('normalising a normalised path is the identity', async (t) => {
  t.ok(accepted.length > 60, `checked ${accepted.length} paths`);
  for (const path of accepted) {
    t.same(normaliseTarget(path), { ok: true, path, query: '' }, path);
  }
});
