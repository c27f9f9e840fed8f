// The access line: exactly JSON.stringify of its fields in the documented order (absent ones left
// out), whatever the values hold; and the lines of one event-loop turn written in one write.

import t from 'tap';
import { AccessLog, type AccessEntry } from '../src/access-log.js';

const ORDER = ['request_id', 'remote_address', 'forwarded_for', 'method', 'host', 'path', 'route', 'key_id', 'key_prefix', 'status', 'decision', 'code', 'upstream', 'bytes_in', 'bytes_out', 'user_agent', 'latency_ms', 'upstream_ms', 'via'] as const;
const NUMBERS = new Set(['status', 'bytes_in', 'bytes_out', 'latency_ms', 'upstream_ms']);

function capture() {
  const writes: string[] = [];
  return { writes, stream: { write: (chunk: string) => void writes.push(chunk) } };
}
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

t.test('each line is the JSON of its fields, in order, absent fields left out', async (t) => {
  const { writes, stream } = capture();
  const log = new AccessLog(stream, 4242);
  const odd = ['', 'a"b', 'back\\slash', 'tab\there', 'nl\n', 'ü ☃ 😀', '\u0000\u001f', '</script>', 'x'.repeat(300)];
  let seed = 7;
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  const entries: AccessEntry[] = [];
  for (let i = 0; i < 300; i++) {
    const e: Record<string, unknown> = {};
    for (const name of ORDER) {
      if (name !== 'status' && name !== 'remote_address' && name !== 'decision' && name !== 'latency_ms' && rand(3) === 0) e[name] = undefined;
      else if (NUMBERS.has(name)) e[name] = [0, 200, 431, 1.25, 0.01, 12345.67, 1e21][rand(7)];
      else e[name] = rand(2) === 0 ? `v${i}-${name}` : odd[rand(odd.length)];
    }
    if (e.via !== undefined) e.via = 'forward_auth';
    entries.push(e as unknown as AccessEntry);
    log.write(e as unknown as AccessEntry);
  }
  t.equal(writes.length, 0, 'nothing written before the turn ends');
  await turn();
  t.equal(writes.length, 1, 'the 300 lines of one turn: one write');
  const lines = writes[0]!.split('\n');
  t.equal(lines.pop(), '', 'every line ends with a newline');
  t.equal(lines.length, 300);
  let same = 0;
  lines.forEach((line, i) => {
    const parsed = JSON.parse(line) as Record<string, unknown>;
    const want: Record<string, unknown> = { level: 'info', time: parsed.time, service: 'keygate', pid: 4242 };
    for (const name of ORDER) if (entries[i]![name] !== undefined) want[name] = entries[i]![name];
    want.msg = 'request';
    if (line === JSON.stringify(want)) same++;
    else t.equal(line, JSON.stringify(want), `line ${i}`);
  });
  t.equal(same, 300, 'all 300 byte for byte');
  t.match(JSON.parse(lines[0]!).time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, 'ISO-8601 time');

  log.write(entries[0]!);
  await turn();
  log.write(entries[1]!);
  log.flush();
  t.equal(writes.length, 3, 'a later turn writes again; flush() writes at once');
  log.flush();
  t.equal(writes.length, 3, 'nothing pending: nothing written');
});
