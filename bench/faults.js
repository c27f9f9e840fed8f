// Key-store faults, measured (the figures of issue 13's table; tests only check behaviour):
//   freeze     p50/p99/max latency of requests through `keygate serve` while its Redis (keys and
//              rate limits) is frozen with SIGSTOP, against the same load before the freeze
//   kill-loss  usage counts lost when the gateway is SIGKILLed under load, over N kills: requests
//              the client got a 200 for, minus what reached Redis, in seconds of traffic
// Usage: npm run build && node bench/faults.js [--kills 20] [--freeze-seconds 10]
// Needs redis-server on PATH. Everything runs on loopback, on free ports, and is killed at the end.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { Agent, request } from 'undici';
import { startEchoUpstream } from '../dist/demo/echo-upstream.js';
import { startBenchUpstream } from './lib/upstream.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const BIN = path.join(ROOT, 'bin', 'keygate.js');
const { values } = parseArgs({ options: { kills: { type: 'string', default: '20' }, 'freeze-seconds': { type: 'string', default: '10' }, concurrency: { type: 'string', default: '8' } } });
const KILLS = Number(values.kills);
const FREEZE_S = Number(values['freeze-seconds']);
const CONCURRENCY = Number(values.concurrency);
const SECRET = 'dg_bench_faults_key_0123456789abcdefghijklmnop';
const REDIS_BIN = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).stdout.trim();
if (!REDIS_BIN) {
  console.log('skipped: redis-server not installed');
  process.exit(0);
}

const children = new Set();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}
function spawnReady(cmd, args, ready) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not ready: ${out}`)), 20_000);
    const on = (d) => {
      out += d;
      const m = ready.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, match: m, output: () => out });
      }
    };
    child.stdout.on('data', on);
    child.stderr.on('data', on);
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${out}`)));
  });
}
function kill(child, sig = 'SIGKILL') {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.removeAllListeners('exit');
    child.once('exit', () => resolve());
    child.kill(sig);
  });
}
function pct(sorted, p) {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const dir = mkdtempSync(path.join(os.tmpdir(), 'keygate-faults-'));
let upstream; // what the gateway forwards to (below)
// Stopped (Ctrl-C, `timeout`, a closed terminal): no gateway or redis-server left behind, not even a
// frozen one (SIGKILL ends a SIGSTOPped process too).
for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]]) {
  process.once(sig, () => {
    for (const c of children) c.kill('SIGKILL');
    try {
      if (upstream?.pid !== undefined) process.kill(upstream.pid, 'SIGTERM'); // nginx's master stops its worker
    } catch {} // gone already
    rmSync(dir, { recursive: true, force: true });
    process.exit(code);
  });
}
const redisPort = await freePort();
const redis = await spawnReady(REDIS_BIN, ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], /Ready to accept connections/);
const echo = await startEchoUpstream({ name: 'up' });
// nginx with a fixed answer where installed (bench/lib/upstream.js): the echo upstream would share
// this process with the load, which then used more CPU than the gateway it measures
upstream = await startBenchUpstream(dir, echo);
const cfg = path.join(dir, 'gw.yaml');
writeFileSync(
  cfg,
  `listen: { host: 127.0.0.1, port: 0 }
admin: { enabled: false }
log: { level: info, access_log: false }
store: { keys: "redis://127.0.0.1:${redisPort}/0", rate_limits: "redis://127.0.0.1:${redisPort}/1" }
keys:
  rate_limit: { default: 60, min: 1, max: 1000000 }
  declared:
    - { name: bench, role: viewer, rate_limit: 1000000, secret: "${SECRET}" }
upstreams: [{ name: up, api_base_url: "${upstream.url}" }]
routes:
  - { path: /x, upstream: up }
`,
);
const startGateway = async () => {
  const r = await spawnReady(process.execPath, [BIN, 'serve', '-c', cfg], /keygate listening/);
  const url = /"url":"(http:\/\/[^"]+)"/.exec(r.output())?.[1];
  return { child: r.child, url };
};
const db = new Redis(`redis://127.0.0.1:${redisPort}/0`);
const stored = async () => {
  const id = await db.hget('{keygate}:key-names', 'bench');
  return Number((await db.hget(`{keygate}:key-usage:${id}`, 'count')) ?? 0);
};

/** Closed-loop load: `concurrency` clients, each sending the next request when the last is answered. */
async function load(url, ms, onResult) {
  const agent = new Agent({ connections: CONCURRENCY, headersTimeout: 30_000, bodyTimeout: 30_000 });
  const end = Date.now() + ms;
  const worker = async () => {
    while (Date.now() < end) {
      const t0 = performance.now();
      try {
        const r = await request(`${url}/x`, { headers: { 'x-api-key': SECRET }, dispatcher: agent });
        await r.body.dump();
        onResult(r.statusCode, performance.now() - t0);
      } catch {
        onResult(0, performance.now() - t0);
        if (Date.now() < end) await sleep(5);
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  await agent.destroy().catch(() => {});
}

function summary(name, lat, statuses) {
  const s = [...lat].sort((a, b) => a - b);
  const codes = Object.entries(statuses).map(([c, n]) => `${c}: ${n}`).join(', ');
  console.log(`${name}: ${s.length} requests, p50 ${pct(s, 50).toFixed(1)} ms, p99 ${pct(s, 99).toFixed(1)} ms, max ${s[s.length - 1].toFixed(1)} ms (${codes})`);
}

try {
  console.log(`node ${process.version}, ${os.cpus().length} cores, load ${os.loadavg()[0].toFixed(2)}; concurrency ${CONCURRENCY}; ${upstream.describe}`);
  // ---------------------------------------------------------------- freeze
  const gw = await startGateway();
  const run = async (name, ms) => {
    const lat = [];
    const statuses = {};
    await load(gw.url, ms, (status, t) => {
      lat.push(t);
      statuses[status] = (statuses[status] ?? 0) + 1;
    });
    summary(name, lat, statuses);
  };
  await run('warm-up (Redis up)', 2000);
  await run('Redis up', FREEZE_S * 1000);
  redis.child.kill('SIGSTOP');
  await run(`Redis frozen (SIGSTOP), ${FREEZE_S} s from the moment of the freeze`, FREEZE_S * 1000);
  redis.child.kill('SIGCONT');
  await sleep(2000);
  await run('Redis resumed (SIGCONT)', 3000);
  await kill(gw.child, 'SIGTERM');

  // ---------------------------------------------------------------- kill-loss
  const losses = [];
  for (let i = 0; i < KILLS; i++) {
    const g = await startGateway();
    await sleep(500); // declared key synced, caches warm
    const before = await stored();
    let ok = 0;
    const started = Date.now();
    const loadMs = 1500 + Math.floor(Math.random() * 1000);
    const loading = load(g.url, loadMs + 2000, (status) => status === 200 && ok++);
    await sleep(loadMs);
    const servedAtKill = ok;
    await kill(g.child, 'SIGKILL');
    const elapsed = (Date.now() - started) / 1000;
    await loading; // the rest fail: the gateway is gone
    const after = await stored();
    const lost = servedAtKill - (after - before);
    const rate = servedAtKill / elapsed;
    losses.push({ lost, seconds: lost / rate, rate });
    console.log(`kill ${i + 1}: ${servedAtKill} answered 200, ${after - before} stored, lost ${lost} = ${(lost / rate).toFixed(3)} s of traffic at ${rate.toFixed(0)} req/s`);
  }
  const secs = losses.map((l) => l.seconds).sort((a, b) => a - b);
  if (KILLS > 0) console.log(`kill-loss over ${KILLS} SIGKILLs: median ${pct(secs, 50).toFixed(3)} s, max ${secs[secs.length - 1].toFixed(3)} s, runs over 1 s: ${secs.filter((s) => s > 1).length}`);
} finally {
  for (const c of children) await kill(c);
  await db.quit().catch(() => db.disconnect());
  await upstream.close();
  await echo.close();
  rmSync(dir, { recursive: true, force: true });
}
