// The JSON-RPC reader: one reading of a call, the same one a Go upstream (encoding/json: member
// names matched case-insensitively with Unicode simple folding, the last one winning) would make.

import t, { type Test } from 'tap';
import type { JsonRpcPolicy } from '../src/config/types.js';
import { foldName, foldRune } from '../src/jsonrpc/fold.js';
import { allowCall, argumentFields, parseCall } from '../src/jsonrpc/policy.js';
import { provablyPlain, readJson, readJsonStrict } from '../src/jsonrpc/read.js';

t.test('folding table: Go unicode.SimpleFold orbits, smallest rune first', async (t) => {
  // [a, b, same field to Go?] — from Go's unicode tables (CaseFolding.txt C + S)
  const table: [string, string, boolean][] = [
    ['s', 'S', true],
    ['ſ', 's', true], // U+017F LATIN SMALL LETTER LONG S
    ['ſ', 'S', true],
    ['\u212a', 'k', true], // KELVIN SIGN
    ['\u212a', 'K', true],
    ['\u212b', 'å', true], // ANGSTROM SIGN
    ['\u2126', 'ω', true], // OHM SIGN
    ['µ', 'μ', true], // MICRO SIGN, GREEK SMALL MU
    ['µ', 'Μ', true],
    ['ς', 'σ', true], // final sigma
    ['ϐ', 'β', true],
    ['ϑ', 'θ', true],
    ['ϴ', 'θ', true],
    ['\u0345', 'ι', true], // COMBINING GREEK YPOGEGRAMMENI
    ['\u1fbe', 'Ι', true],
    ['ẞ', 'ß', true], // CAPITAL SHARP S folds simply to ß
    ['ǅ', 'ǆ', true], // title case
    ['Ǆ', 'ǅ', true],
    ['Ꭰ', 'ꭰ', true], // Cherokee
    ['𐐀', '𐐨', true], // Deseret, outside the BMP
    ['ı', 'i', false], // dotless i: Turkic mapping only
    ['İ', 'i', false], // dotted capital I: Turkic / full only
    ['ß', 's', false], // ß → ss is a full folding, not a simple one
    ['ﬀ', 'f', false],
    ['a', 'b', false],
    ['_', '-', false],
  ];
  for (const [a, b, same] of table) t.equal(foldName(a) === foldName(b), same, `${a} (U+${a.codePointAt(0)!.toString(16)}) ~ ${b}: ${same}`);
  t.equal(foldRune('ſ'.codePointAt(0)!), 0x53, 'the orbit of s is {S, s, ſ}: S is its smallest rune');
  t.equal(foldRune(0x212a), 0x4b);
  t.equal(foldName('ſtring'), foldName('STRING'));
  t.equal(foldName('Method'), foldName('mEtHoD'));
  t.equal(foldName('meth\u00f6d'), foldName('METH\u00d6D'));
  t.not(foldName('method'), foldName('methods'));
});

t.test('reader: RFC 8259 only, null-prototype objects, duplicates reported', async (t) => {
  const ok = (s: string | Uint8Array) => readJson(typeof s === 'string' ? Buffer.from(s) : s);
  t.same(ok('{"a":[1,-2.5e3,true,false,null,"x\\u00e9\\n"]}'), { ok: true, value: { a: [1, -2500, true, false, null, 'xé\n'] }, duplicate: undefined });
  const proto = ok('{"__proto__":{"x":1},"constructor":2}');
  t.ok(proto.ok && Object.getPrototypeOf(proto.value) === null, 'objects have no prototype');
  t.ok(proto.ok && Object.hasOwn(proto.value as object, '__proto__'), '__proto__ is an ordinary member');
  t.ok(ok('{}').ok && !('toString' in ((ok('{}') as { value: object }).value)), 'nothing inherited');
  for (const bad of ['\ufeff{}', '{"a":1,}', '[1,]', '{a:1}', "{'a':1}", '01', '1.', '.5', '+1', 'NaN', '{"a":1} x', '"\t"', '"\\x"', '"\\u12"', '', ' ', '{"a" 1}', 'tru', '[1 2]', '{"a":1', '"abc']) {
    t.notOk(ok(bad).ok, `refused: ${JSON.stringify(bad)}`);
  }
  t.notOk(ok(Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d])).ok, 'invalid UTF-8');
  t.notOk(ok(Buffer.from([0xef, 0xbb, 0xbf, 0x7b, 0x7d])).ok, 'a UTF-8 byte order mark (Go refuses it too)');
  t.notOk(ok('['.repeat(600) + ']'.repeat(600)).ok, 'nesting past the limit');
  t.ok(ok('['.repeat(500) + ']'.repeat(500)).ok, 'deep but within the limit');
  t.same(ok('"\\ud800x"'), { ok: true, value: '\ufffdx', duplicate: undefined }, 'a lone surrogate escape is U+FFFD, as in Go');
  t.same(ok('"\\ud83d\\ude00"'), { ok: true, value: '😀', duplicate: undefined }, 'an escaped pair is one rune');
  t.match(ok('{"a":1,"a":2}'), { ok: true, duplicate: /"a" appears twice/ });
  t.match(ok('{"x":{"y":{"z":1,"z":1}}}'), { ok: true, duplicate: /"z"/ }, 'at any depth');
  t.match(ok('{"a":1,"\\u0061":2}'), { ok: true, duplicate: /"a"/ }, 'an escaped spelling of the same name');
});

const POLICY: JsonRpcPolicy = {
  methods: { initialize: 'viewer', 'tools/list': 'viewer' },
  tools: { dagu_read: 'viewer', dagu_change: 'developer', dagu_execute: 'operator' },
  default_method: 'deny',
  default_tool: 'deny',
  max_body_bytes: 65536,
  tool_workspaces: { dagu_change: { argument: 'workspace', when: { type: ['upsert_wiki_page'] } } },
};

t.test('parseCall: every second reading of a call is refused with -32600 and the readable id', async (t) => {
  const fields = argumentFields(POLICY);
  const call = (s: string) => parseCall(Buffer.from(s), fields);
  const refused: [string, string, unknown][] = [
    ['the issue: Method after method', '{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call","params":{"name":"dagu_change","arguments":{}}}', 1],
    ['Method before method', '{"Method":"tools/call","jsonrpc":"2.0","id":2,"method":"tools/list"}', 2],
    ['METHOD alone', '{"jsonrpc":"2.0","id":3,"METHOD":"tools/call"}', 3],
    ['long s', '{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"name":"x"},"paramſ":{"name":"dagu_change"}}', 4],
    ['Kelvin sign in a field name', '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"dagu_read","arguments":{"\u212aey":1,"key":2}}}', 5],
    ['Params', '{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"dagu_read"},"Params":{"name":"dagu_change"}}', 6],
    ['params.Name', '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"dagu_read","Name":"dagu_change"}}', 7],
    ['params.NAME alone', '{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"NAME":"dagu_change"}}', 8],
    ['Arguments', '{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"dagu_read","arguments":{},"Arguments":{"x":1}}}', 9],
    ['arguments.Workspace (a policy field)', '{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"dagu_change","arguments":{"Workspace":"team-b","type":"upsert_wiki_page"}}}', 10],
    ['arguments.workſpace', '{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"dagu_change","arguments":{"workſpace":"team-b"}}}', 11],
    ['exact duplicate method', '{"jsonrpc":"2.0","id":12,"method":"tools/list","method":"tools/call"}', 12],
    ['exact duplicate name', '{"jsonrpc":"2.0","id":13,"method":"tools/call","params":{"name":"dagu_read","name":"dagu_change"}}', 13],
    ['escaped duplicate', '{"jsonrpc":"2.0","id":14,"method":"tools/list","\\u006dethod":"tools/call"}', 14],
    ['response shape with a Method', '{"jsonrpc":"2.0","id":15,"result":{},"Method":"tools/call","params":{"name":"dagu_change"}}', 15],
    ['response shape with an ID and Result', '{"jsonrpc":"2.0","ID":16,"Result":{}}', null],
    ['ID beside id', '{"jsonrpc":"2.0","id":17,"ID":18,"method":"tools/list"}', null],
    ['JSONRPC', '{"JSONRPC":"2.0","jsonrpc":"2.0","id":19,"method":"tools/list"}', 19],
    ['A2A method twice in case', '{"jsonrpc":"2.0","id":"a","method":"message/send","mEthod":"tasks/cancel"}', 'a'],
    ['duplicate deep inside arguments', '{"jsonrpc":"2.0","id":20,"method":"tools/call","params":{"name":"dagu_read","arguments":{"q":{"a":1,"a":2}}}}', 20],
  ];
  for (const [name, body, id] of refused) {
    const r = call(body);
    t.match(r, { ok: false, code: -32600 }, `${name}: refused`);
    if (!r.ok) t.equal(r.id, id, `${name}: id ${JSON.stringify(id)}`);
  }
  t.match(call('\ufeff{"jsonrpc":"2.0","id":1,"method":"tools/list"}'), { ok: false, code: -32700, id: null }, 'BOM: a parse error');
  // what stays allowed: names the policy does not read may differ only in case where Go cannot be misled
  t.match(call('{"jsonrpc":"2.0","id":21,"method":"tools/call","params":{"name":"dagu_read","arguments":{"Target":"dags","query":"x"}}}'), { ok: true, call: { tool: 'dagu_read' } }, 'an argument name the policy does not read, in any case');
  t.match(call('{"jsonrpc":"2.0","id":22,"method":"tools/call","params":{"name":"dagu_read","arguments":{"x":{"A":1,"a":2}}}}'), { ok: true }, 'deeper objects are data, not fields');
  t.match(call('{"jsonrpc":"2.0","id":23,"method":"tools/call","params":{"name":"dagu_change","arguments":{"workspace":"a","type":"upsert_wiki_page"},"_meta":{"progressToken":1}}}'), { ok: true, call: { id: 23, tool: 'dagu_change', arguments: { workspace: 'a' } } });
});

t.test('policy tables answer for their own entries only', async (t) => {
  const fields = argumentFields(POLICY);
  for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf', 'isPrototypeOf', '__defineGetter__']) {
    const asMethod = parseCall(Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method: name })), fields);
    t.ok(asMethod.ok, `${name} reads as a method`);
    if (asMethod.ok) t.match(allowCall(POLICY, 0, 5, asMethod.call), { allow: false, message: /not allowed/ }, `method ${name}: default_method (deny), even for admin`);
    const asTool = parseCall(Buffer.from(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name } })), fields);
    if (asTool.ok) t.match(allowCall(POLICY, 0, 5, asTool.call), { allow: false, message: /not allowed/ }, `tool ${name}: default_tool (deny)`);
    const open = { ...POLICY, default_method: 'viewer' as const };
    if (asMethod.ok) t.match(allowCall(open, 0, 1, asMethod.call), { allow: true }, `method ${name} with default_method viewer: the default, not a prototype function`);
  }
});

t.test('lookups keyed by request data find own entries only (admin bodies, upstream headers)', async (t) => {
  const { checkBody } = await import('../src/admin/body.js');
  const shape = { fields: { name: { type: 'string' as const, description: 'a name' } } };
  for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
    t.throws(() => checkBody(JSON.parse(`{"${name}": "x"}`), shape), { message: /unknown field/ }, `admin body member ${name}: an unknown field`);
  }
  const { headersObject, upstreamRequestHeaderList } = await import('../src/proxy/headers.js');
  const out = headersObject(upstreamRequestHeaderList({ constructor: 'x', 'x-a': 'b' } as never, 'up', undefined, undefined, { remoteAddress: '127.0.0.1', proto: 'http', host: 'h', trustForwarded: false }));
  t.equal(Object.getPrototypeOf(out), null, 'upstream headers: no prototype');
});

// ------------------------------------------------------------------ the fast path

/** A value written out with its types and prototypes, so that two readings compare exactly. */
function canon(v: unknown): string {
  if (v === null || typeof v !== 'object') return typeof v === 'number' && Object.is(v, -0) ? '-0' : JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(canon).join(',')}]`;
  const proto = Object.getPrototypeOf(v) === null ? '' : '!proto';
  return `{${proto}${Object.keys(v).map((k) => `${JSON.stringify(k)}:${canon((v as Record<string, unknown>)[k])}`).join(',')}}`;
}

function sameReading(t: Test, body: Uint8Array, label: string): void {
  const fast = readJson(body);
  const strict = readJsonStrict(body);
  const key = (r: ReturnType<typeof readJson>) => (r.ok ? `ok ${canon(r.value)} dup=${r.duplicate}` : `refused ${r.message}`);
  if (key(fast) !== key(strict)) t.fail(`${label}: the fast path reads ${key(fast).slice(0, 200)}, the strict reader ${key(strict).slice(0, 200)}`);
  const fields = argumentFields(POLICY);
  if (JSON.stringify(parseCall(body, fields)) !== JSON.stringify(parseCallStrict(body, fields))) t.fail(`${label}: parseCall differs`);
}

/** parseCall as it was before the fast path: the strict reader only. */
function parseCallStrict(body: Uint8Array, fields: ReadonlyMap<string, string>) {
  return parseCall(body, fields, readJsonStrict);
}

t.test('fast path: JSON.parse is used only where it reads exactly as the strict reader', async (t) => {
  const texts: string[] = [
    '{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
    '{"a":[1,-2.5e3,true,false,null,"x\\u00e9\\n"]}',
    '{"__proto__":{"x":1},"constructor":2,"toString":{"valueOf":3}}',
    '{"1":"a","0":"b","x":"c"}',
    '{"a":-0,"b":1e400,"c":-1e-400,"d":123456789012345678901234567890}',
    '{"s":"tab\\tquote\\"slash\\/back\\\\u\\u0041 raw é 😀 \\u2028"}',
    '{"a":"\\"}","b":"\\\\"}',
    '{"a":"x\\\\","a\\\\":1}',
    '{"k":"\\ud83d\\ude00"}',
    '"\\ud800x"',
    '{"a":1,"a":2}',
    '{"a":1,"\\u0061":2}',
    '{"x":{"y":{"z":1,"z":1}}}',
    '[{"a":1},{"a":1}]',
    '{"a":{"b":1},"b":{"a":1}}',
    '{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"k":11,"l":12,"m":13,"n":14,"o":15,"p":16,"q":17,"a":18}',
    '[' + '{"k":1},'.repeat(40) + '{}]',
    '['.repeat(512) + ']'.repeat(512),
    '['.repeat(513) + ']'.repeat(513),
    '{"a":'.repeat(300) + '1' + '}'.repeat(300),
    '\ufeff{}', '{"a":1,}', '[1,]', '{a:1}', '01', '1.', '{"a":1} x', '"\t"', '"\\x"', '"\\u12"', '', ' ', '{"a" 1}', '{"a":1', '"abc', '{"a":"b"', '{"a"}', '}{', '{"a":1}}', '[}', '{"a\\"}":1,"a\\"}":2}',
  ];
  // the hostile calls of the tests above
  for (const body of [
    '{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call","params":{"name":"dagu_change","arguments":{}}}',
    '{"jsonrpc":"2.0","id":14,"method":"tools/list","\\u006dethod":"tools/call"}',
    '{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{"name":"x"},"paramſ":{"name":"dagu_change"}}',
    '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"dagu_read","arguments":{"\u212aey":1,"key":2}}}',
    '{"jsonrpc":"2.0","id":17,"ID":18,"method":"tools/list"}',
    '{"jsonrpc":"2.0","id":20,"method":"tools/call","params":{"name":"dagu_read","arguments":{"q":{"a":1,"a":2}}}}',
  ]) texts.push(body);
  for (const text of texts) sameReading(t, Buffer.from(text), JSON.stringify(text).slice(0, 80));
  sameReading(t, Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]), 'invalid UTF-8');

  // generated: random documents, their duplicates, escapes and truncations
  let seed = 12345;
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff), seed % n);
  const NAMES = ['a', 'b', 'id', 'method', 'Method', '__proto__', 'é', 'ſ', 'x"y', 'x\\y', '\u2028', '😀', '0', '10'];
  const gen = (depth: number): string => {
    const k = rand(depth > 4 ? 4 : 7);
    if (k === 0) return String(rand(2000) - 1000) + (rand(3) === 0 ? '.5e-3' : '');
    if (k === 1) return JSON.stringify(NAMES[rand(NAMES.length)]);
    if (k === 2) return ['true', 'false', 'null'][rand(3)]!;
    if (k === 3) return rand(4) === 0 ? '"\\ud800"' : '"\\u00e9\\n\\"\\\\"';
    if (k === 4) return `[${Array.from({ length: rand(4) }, () => gen(depth + 1)).join(',')}]`;
    const members = Array.from({ length: rand(5) }, () => `${rand(6) === 0 ? '"\\u0061"' : JSON.stringify(NAMES[rand(NAMES.length)])}${' '.repeat(rand(2))}:${gen(depth + 1)}`);
    return `{${members.join(',')}}`;
  };
  let fastTaken = 0;
  for (let i = 0; i < 3000; i++) {
    const text = gen(0);
    if (provablyPlain(text)) fastTaken++;
    sameReading(t, Buffer.from(text), `generated ${JSON.stringify(text).slice(0, 80)}`);
    const cut = text.slice(0, rand(text.length + 1));
    sameReading(t, Buffer.from(cut), `truncated ${JSON.stringify(cut).slice(0, 80)}`);
  }
  t.ok(fastTaken > 300, `the fast path was taken for many generated documents (${fastTaken} of 3000)`);

  // what takes the fast path, and what never does
  const call = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'dagu_change', arguments: { type: 'upsert_dag', spec: 'steps:\n  - echo "hi"\n'.repeat(100) } } });
  t.ok(provablyPlain(call), 'a 4 KB tools/call with escapes in its values: fast path');
  for (const text of ['{"a":1,"a":2}', '{"\\u0061":1}', '{"a":"\\udc00"}', '{"a":"\\uD83D\\uDE00"}', '['.repeat(513)]) {
    t.notOk(provablyPlain(text), `strict reader for ${JSON.stringify(text).slice(0, 40)}`);
  }
  t.pass('every reading above was compared');
});
