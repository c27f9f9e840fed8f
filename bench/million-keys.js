// A million keys in SQLite against ten: start time, memory, throughput, reloads under load, and the
// listings (run by `npm run bench` after bench/proxy.js; on its own: node bench/million-keys.js
// after npm run build).
//
// Both gateways run side by side and their load runs alternate, BENCH_ROUNDS (default 3) rounds;
// ratios are taken within each round (the machine's speed drifts by minutes).
// Env: BENCH_KEYS (default 1000000), BENCH_DURATION (s per load run, default 10), BENCH_CONNECTIONS
// (default 50), BENCH_ROUNDS, BENCH_SHORT=1 (one round of 2 s), BENCH_KEEP=1 keeps the temp dir. Goals (issue 13): start <= 2 s, RSS <= 200 MB,
// a SIGHUP reload never blocks requests, throughput >= 0.95x of the ten-key store.

import Database from 'better-sqlite3';
import { fork, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startEchoUpstream } from '../dist/demo/echo-upstream.js';
import { SqliteKeyStore } from '../dist/keys/sqlite-store.js';
import { envNumber, median, procCpu, spread } from './lib/util.js';
import { startBenchUpstream } from './lib/upstream.js';
import { digestSecret, displayPrefix, generateSecret } from '../dist/keys/secret.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = path.join(ROOT, 'bin/keygate.js');
const LOAD = path.join(ROOT, 'bench/lib/load.js');
// BENCH_SHORT=1 (the smoke run of `npm run bench`): one round of 2 s
const SHORT = process.env.BENCH_SHORT === '1';
const KEYS = envNumber('BENCH_KEYS', 1_000_000, { min: 1, int: true });
const DURATION = envNumber('BENCH_DURATION', SHORT ? 2 : 10, { min: 1 });
const CONNECTIONS = envNumber('BENCH_CONNECTIONS', 50, { min: 1, int: true });
const ROUNDS = envNumber('BENCH_ROUNDS', SHORT ? 1 : 3, { min: 1, int: true });
const TOKEN = 'bench-admin-token-0123456789';

/** A store of `n` keys written in one transaction; returns one usable secret. */
function fillStore(file, n) {
  new SqliteKeyStore(file).close(); // the schema, as the gateway makes it
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  const insert = db.prepare(
    `INSERT INTO api_keys (id, name, description, digest, prefix, scopes, role, workspace, workspace_access, surfaces, attribution_class,
       service_account_name, owner_user_id, rate_limit, expires_at, is_active, request_count, last_used_at, created_at, updated_at, created_by, updated_by, managed_by)
     VALUES (?, ?, '', ?, ?, '["agents","workflows"]', 'viewer', NULL, '{"all":true,"grants":[]}', NULL, 'service_account', ?, NULL, 1000000, NULL, 1, 0, NULL, ?, ?, 'bench', 'bench', 'api')`,
  );
  const secret = generateSecret('dg_');
  const start = Date.parse('2026-01-01T00:00:00Z');
  db.transaction(() => {
    for (let i = 0; i < n; i++) {
      const last = i === n - 1;
      const digest = last ? digestSecret(secret) : createHash('sha256').update(`bench-key-${i}`).digest('hex');
      const at = new Date(start + i).toISOString();
      insert.run(`id-${i}`, `key-${i}`, digest, last ? displayPrefix(secret) : 'dg_bench', `key-${i}`, at, at);
    }
  })();
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
  return secret;
}

function rssMb(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** Gateways and load generators running now: killed when the bench itself is stopped, never left behind. */
const running = new Set();
let upstreamPid; // the nginx upstream's master, when nginx is the upstream
let workDir; // removed on a stop too, unless BENCH_KEEP=1 (a million-key store is ~300 MB)
for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]]) {
  process.once(sig, () => {
    for (const child of running) child.kill('SIGKILL');
    try {
      if (upstreamPid !== undefined) process.kill(upstreamPid, 'SIGTERM'); // nginx's master stops its worker
    } catch {} // gone already
    if (workDir !== undefined && process.env.BENCH_KEEP !== '1') rmSync(workDir, { recursive: true, force: true });
    process.exit(code);
  });
}

/** keygate serve; resolves once it logs "keygate listening", with the time that took. */
function serve(cfg) {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(process.execPath, [BIN, 'serve', '-c', cfg], { env: { ...process.env, NODE_OPTIONS: '' } });
    running.add(child);
    child.once('exit', () => running.delete(child));
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const onData = () => {
      const m = /"url":"(http:\/\/[^"]+)","admin_url":"(http:\/\/[^"]+)"/.exec(out);
      if (m && /keygate listening/.test(out)) {
        child.stdout.off('data', onData);
        resolve({ child, url: m[1], admin: m[2], startMs: performance.now() - started, log: () => out });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (d) => (out += d));
    child.once('exit', (code) => reject(new Error(`keygate exited ${code}: ${out}`)));
  });
}

function stop(gw) {
  return new Promise((resolve) => {
    if (gw.child.exitCode !== null || gw.child.signalCode !== null) return resolve();
    gw.child.removeAllListeners('exit');
    gw.child.once('exit', resolve);
    gw.child.kill('SIGTERM');
  });
}

/** One autocannon run from a child process (bench/lib/load.js): never in this process, which hosts the upstream. */
function load(url, secret, seconds) {
  return new Promise((resolve, reject) => {
    const child = fork(LOAD, [JSON.stringify({ url, headers: { 'x-api-key': secret }, connections: CONNECTIONS, duration: seconds, warmup: 0 })], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    running.add(child);
    let result;
    child.on('message', (m) => {
      if (m.type === 'result') result = m.result;
    });
    child.once('exit', (code) => {
      running.delete(child);
      if (result === undefined) return reject(new Error(`load generator exited ${code} without a result`));
      resolve({
        rps: result.completed / result.duration,
        total: result.completed,
        p99_ms: result.p99,
        max_ms: result.acMax,
        errors: result.errors + result.non2xx,
      });
    });
  });
}

function timed(url, headers = {}) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    http
      .get(url, { headers }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode, ms: performance.now() - t0, body }));
      })
      .on('error', reject);
  });
}

function runCli(args) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, NODE_OPTIONS: '' } });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.once('exit', (code) => resolve({ code, ms: performance.now() - t0, out }));
  });
}

/** One store: filled, its config written, the gateway started (start time, RSS at start). */
async function prepare(dir, name, n, upstream) {
  const db = path.join(dir, `${name}.db`);
  const t0 = performance.now();
  const secret = fillStore(db, n);
  const fillS = (performance.now() - t0) / 1000;
  const cfg = path.join(dir, `${name}.yaml`);
  writeFileSync(
    cfg,
    `listen: { host: 127.0.0.1, port: 0 }\nadmin: { host: 127.0.0.1, port: 0, token: ${TOKEN} }\nstore: { keys: "sqlite:${db}" }\nlog: { level: info, access_log: false }\n` +
      `keys: { rate_limit: { default: 60, min: 1, max: 1000000 } }\nupstreams: [{ name: up, api_base_url: "${upstream}" }]\nroutes: [{ path: "/**", upstream: up }]\n`,
  );
  const gw = await serve(cfg);
  return { keys: n, cfg, secret, gw, fill_s: fillS, start_ms: gw.startMs, rss_start_mb: rssMb(gw.child.pid) };
}

/** The gateway's longest event-loop delay since the last scrape, in ms (prom-client resets it when /metrics is read). */
async function loopLagMaxMs(s) {
  const r = await timed(s.gw.admin + '/metrics');
  const m = /^keygate_nodejs_eventloop_lag_max_seconds (\S+)$/m.exec(r.body);
  return m ? Number(m[1]) * 1000 : NaN;
}

/**
 * One load run on a gateway: req/s, latency, its CPU per request (from /proc) and its longest
 * event-loop stall; with `reloads`, a SIGHUP every second while it lasts (the slowest request shows
 * whether one blocked).
 */
async function loadRun(s, seconds, { reloads = false } = {}) {
  await loopLagMaxMs(s); // starts the gateway's event-loop delay record afresh
  const cpu0 = procCpu(s.gw.child.pid);
  const hup = reloads
    ? setInterval(() => {
        s.gw.child.kill('SIGHUP');
        s.sighups++;
      }, 1000)
    : undefined;
  const r = await load(s.gw.url + '/x', s.secret, seconds);
  clearInterval(hup);
  const cpu1 = procCpu(s.gw.child.pid);
  const cpuUs = cpu0 && cpu1 ? cpu1.user + cpu1.system - cpu0.user - cpu0.system : NaN;
  // the slowest request against the gateway's own longest stall: a slow request with no stall was slow elsewhere
  const lagMs = await loopLagMaxMs(s);
  return { rps: r.rps, p99_ms: r.p99_ms, max_ms: r.max_ms, loop_lag_max_ms: lagMs, errors: r.errors, cpu_us_per_req: r.total > 0 ? cpuUs / r.total : NaN };
}

/**
 * Both gateways run side by side, and their load runs alternate (small first in odd rounds, big
 * first in even ones): the machine's drift over minutes falls on both alike, and the ratios are
 * taken within each round.
 */
export async function millionKeys() {
  const dir = (workDir = mkdtempSync(path.join(tmpdir(), 'keygate-million-')));
  const echo = await startEchoUpstream({ name: 'up' });
  // nginx with a fixed answer (bench/lib/upstream.js) where installed: an upstream that is never the
  // bottleneck, so req/s is the gateway's (the echo upstream shares this process and saturated first)
  const upstream = await startBenchUpstream(dir, echo);
  upstreamPid = upstream.pid;
  const stores = [];
  try {
    const small = await prepare(dir, 'ten', 10, upstream.url);
    stores.push(small);
    const big = await prepare(dir, 'million', KEYS, upstream.url);
    stores.push(big);
    for (const s of stores) {
      s.runs = [];
      s.sighups = 0;
      await loadRun(s, 2); // warm-up
    }
    const rounds = [];
    for (let r = 1; r <= ROUNDS; r++) {
      const order = r % 2 ? [small, big] : [big, small];
      for (const s of order) s.runs.push(await loadRun(s, DURATION));
      rounds.push({ rps: big.runs.at(-1).rps / small.runs.at(-1).rps, cpu: big.runs.at(-1).cpu_us_per_req / small.runs.at(-1).cpu_us_per_req });
    }
    for (const s of stores) s.rss_load_mb = rssMb(s.gw.child.pid);
    for (const s of stores) s.reload = await loadRun(s, DURATION, { reloads: true });
    const auth = { authorization: `Bearer ${TOKEN}` };
    const out = [];
    for (const s of stores) {
      const info = await timed(s.gw.admin + '/api/info', auth);
      const page = await timed(s.gw.admin + '/api/v1/api-keys?limit=10', auth);
      const list = await runCli(['keys', 'list', '-c', s.cfg, '--limit', '10', '--json']);
      const reloadLines = s.gw.log().split('\n').filter((l) => l.includes('configuration reloaded')).length;
      const rel = s.reload;
      out.push({
        keys: s.keys,
        fill_s: s.fill_s,
        start_ms: s.start_ms,
        rss_start_mb: s.rss_start_mb,
        rss_load_mb: s.rss_load_mb,
        rps: median(s.runs.map((x) => x.rps)),
        cpu_us_per_req: median(s.runs.map((x) => x.cpu_us_per_req)),
        p99_ms: median(s.runs.map((x) => x.p99_ms)),
        max_ms: Math.max(...s.runs.map((x) => x.max_ms)),
        loop_lag_max_ms: Math.max(...s.runs.map((x) => x.loop_lag_max_ms)),
        errors: s.runs.reduce((n, x) => n + x.errors, 0),
        runs: s.runs,
        reload: { sighups: s.sighups, logged: reloadLines, rps: rel.rps, p99_ms: rel.p99_ms, max_ms: rel.max_ms, loop_lag_max_ms: rel.loop_lag_max_ms, errors: rel.errors },
        info_ms: info.ms,
        page_ms: page.ms,
        page_status: page.status,
        cli_list_ms: list.ms,
        cli_list_code: list.code,
      });
    }
    return { upstream: upstream.describe, small: out[0], big: out[1], rounds: ROUNDS, rps_ratio: spread(rounds.map((x) => x.rps)), cpu_ratio: spread(rounds.map((x) => x.cpu)) };
  } finally {
    await Promise.all(stores.map((s) => stop(s.gw)));
    await upstream.close();
    upstreamPid = undefined;
    await echo.close();
    if (process.env.BENCH_KEEP !== '1') rmSync(dir, { recursive: true, force: true });
  }
}

const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : String(x));

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { upstream, small, big, rounds, rps_ratio, cpu_ratio } = await millionKeys();
  const r2 = (x) => `${fmt(x.median, 2)} (${fmt(x.min, 2)}–${fmt(x.max, 2)})`;
  console.log(`\nkeygate with ${big.keys.toLocaleString('en')} keys in SQLite vs 10 (${CONNECTIONS} connections, ${DURATION} s per run, ${rounds} alternating round(s), both gateways up side by side)\n  upstream: ${upstream}`);
  for (const r of [small, big]) {
    console.log(
      `  ${String(r.keys).padStart(8)} keys: filled in ${fmt(r.fill_s, 1)} s; start ${fmt(r.start_ms)} ms; RSS ${fmt(r.rss_start_mb)} MB at start, ${fmt(r.rss_load_mb)} MB under load; ` +
        `${fmt(r.rps)} req/s, ${fmt(r.cpu_us_per_req)} µs CPU per request, p99 ${fmt(r.p99_ms)} ms (medians over the rounds), max ${fmt(r.max_ms)} ms, gateway's longest event-loop stall ${fmt(r.loop_lag_max_ms)} ms, errors ${r.errors}`,
    );
    console.log(
      `            reloads: ${r.reload.sighups} SIGHUPs under load (${r.reload.logged} logged): ${fmt(r.reload.rps)} req/s, p99 ${fmt(r.reload.p99_ms)} ms, max ${fmt(r.reload.max_ms)} ms, longest event-loop stall ${fmt(r.reload.loop_lag_max_ms)} ms, errors ${r.reload.errors}; ` +
        `GET /api/info ${fmt(r.info_ms, 1)} ms, GET /api/v1/api-keys?limit=10 ${r.page_status} in ${fmt(r.page_ms, 1)} ms, keys list --limit 10 exit ${r.cli_list_code} in ${fmt(r.cli_list_ms)} ms`,
    );
  }
  console.log(`  ${big.keys.toLocaleString('en')} keys against 10, within each round: req/s ×${r2(rps_ratio)}, CPU per request ×${r2(cpu_ratio)}`);
  const ratio = rps_ratio.median;
  console.log(
    `  goals: start <= 2000 ms: ${fmt(big.start_ms)} ms ${big.start_ms <= 2000 ? 'ok' : 'MISSED'}; RSS <= 200 MB: ${fmt(Math.max(big.rss_start_mb, big.rss_load_mb))} MB ${Math.max(big.rss_start_mb, big.rss_load_mb) <= 200 ? 'ok' : 'MISSED'}; ` +
      `throughput ${fmt(ratio, 2)}x of 10 keys ${ratio >= 0.95 ? 'ok' : 'MISSED'}; slowest request during reloads ${fmt(big.reload.max_ms)} ms (10 keys: ${fmt(small.reload.max_ms)} ms), the gateway's longest event-loop stall then ${fmt(big.reload.loop_lag_max_ms)} ms (10 keys: ${fmt(small.reload.loop_lag_max_ms)} ms)`,
  );
  console.log(JSON.stringify({ bench: 'million-keys', upstream, small, big, rounds, rps_ratio, cpu_ratio }));
}
