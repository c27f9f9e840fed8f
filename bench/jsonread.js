// Micro-benchmark of the JSON-RPC reader (`node bench/jsonread.js`, after `npm run build`): µs per
// parseCall of a ~4 KB MCP tools/call (a dagu_change with a DAG spec), through the strict reader
// alone, through readJson (the fast path when it applies), and plain JSON.parse for scale.

import { parseCall, argumentFields } from '../dist/jsonrpc/policy.js';
import { readJson, readJsonStrict } from '../dist/jsonrpc/read.js';

const spec = Array.from({ length: 60 }, (_, i) => `  - name: step-${i}\n    command: echo "hello ${i}" && sleep 1\n`).join('');
const call = {
  jsonrpc: '2.0',
  id: 42,
  method: 'tools/call',
  params: { name: 'dagu_change', arguments: { mode: 'apply', type: 'upsert_dag', name: 'nightly-report', spec: `steps:\n${spec}`, labels: ['a', 'b'], meta: { owner: 'ops', retries: 3, ratio: 0.25 } }, _meta: { progressToken: 7 } },
};
const body = Buffer.from(JSON.stringify(call));
const policy = { methods: {}, tools: {}, default_tool: 'deny', max_body_bytes: 1 << 20, tool_workspaces: { dagu_change: { argument: 'workspace', when: { type: ['upsert_wiki_page'] } } } };
const fields = argumentFields(policy);

function time(name, fn, rounds = 5, n = 20000) {
  for (let i = 0; i < 2000; i++) fn(); // warm up
  const runs = [];
  for (let r = 0; r < rounds; r++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < n; i++) fn();
    runs.push(Number(process.hrtime.bigint() - start) / n / 1000);
  }
  runs.sort((a, b) => a - b);
  console.log(`${name.padEnd(34)} ${runs[Math.floor(rounds / 2)].toFixed(2).padStart(7)} µs  (min ${runs[0].toFixed(2)})`);
}

console.log(`body: ${body.length} bytes`);
time('JSON.parse(body.toString())', () => JSON.parse(body.toString('utf8')));
time('readJsonStrict (the strict reader)', () => readJsonStrict(body));
time('readJson (fast path + fallback)', () => readJson(body));
time('parseCall', () => parseCall(body, fields));
