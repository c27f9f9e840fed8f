// Proxy overhead benchmark: the same small JSON GET load, side by side,
//   baseline       load → echo upstream
//   gateway        load → Keygate (key + role route, access log ON to a file) → echo upstream
//   gateway-nolog  load → Keygate (same, access_log: false)                    → echo upstream
//
// Run: npm run bench   (builds dist/ first). Env: BENCH_DURATION (s, default 10), BENCH_WARMUP (s,
// default 2), BENCH_CONNECTIONS (default 50), BENCH_ROUNDS (default 1), BENCH_KEEP=1 keeps the temp dir.
//
// Processes (this one file plays three roles, chosen by argv[2]):
//   main       echo upstream + orchestration (idle while a phase runs, apart from the upstream)
//   --gateway  one Gateway per config (log / nolog), each in its own process; started from dist/
//   --load     autocannon (programmatic), one child per phase: warmup run, then the measured run
// The load generator never shares an event loop or process with the gateway or the upstream.

import { fork } from 'node:child_process';
import { createReadStream, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SELF = fileURLToPath(import.meta.url);
const role = process.argv[2];

if (role === '--gateway') await gatewayChild(process.argv[3]);
else if (role === '--load') await loadChild(JSON.parse(process.argv[3]));
else await main();

// ============================================================================ gateway child

async function gatewayChild(configFile) {
  const { loadConfig } = await import('../dist/config/load.js');
  const { Gateway } = await import('../dist/server.js');
  const config = loadConfig(configFile, process.env);
  const gw = await Gateway.start({ config, port: 0 }); // logger from config.log: the real path
  const { key, secret } = await gw.keys.create({ name: 'bench', role: 'operator', scopes: ['agents', 'workflows'] }, 'bench');
  let closing;
  const shutdown = () => {
    closing ??= gw.close(2_000).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('message', (m) => {
    if (m?.type === 'cpu') process.send({ type: 'cpu', id: m.id, usage: process.cpuUsage() });
    else if (m?.type === 'close') shutdown();
  });
  process.on('disconnect', shutdown); // the parent went away: never linger
  process.send({ type: 'ready', url: gw.url, secret, keyId: key.id, pid: process.pid });
}

// ============================================================================ load child

async function loadChild(opts) {
  const { default: autocannon } = await import('autocannon');
  const run = (duration, record) =>
    new Promise((resolve, reject) => {
      const inst = autocannon(
        { url: opts.url, method: 'GET', headers: opts.headers, connections: opts.connections, duration, timeout: 10 },
        (err, res) => (err ? reject(err) : resolve(res)),
      );
      // autocannon's own histogram has 1 ms resolution; keep our own at 10 µs for p50/p99 (2xx only, like autocannon).
      if (record) inst.on('response', (_client, status, _bytes, ms) => { if (status >= 200 && status < 300) record(ms); });
    });

  const warm = opts.warmup > 0 ? await run(opts.warmup, null) : null;
  process.send({ type: 'measuring' });
  const BUCKET_MS = 0.01;
  const buckets = new Uint32Array(1_000_000); // 0..10 s in 10 µs steps; the last bucket takes the rest
  let n = 0;
  const record = (ms) => {
    buckets[Math.min(buckets.length - 1, Math.floor(ms / BUCKET_MS))]++;
    n++;
  };
  const cpu0 = process.cpuUsage();
  const res = await run(opts.duration, record);
  const cpu = process.cpuUsage(cpu0);
  const pct = (p) => {
    if (n === 0) return null;
    const rank = Math.ceil((p / 100) * n);
    let seen = 0;
    for (let i = 0; i < buckets.length; i++) {
      seen += buckets[i];
      if (seen >= rank) return (i + 1) * BUCKET_MS; // upper edge of the bucket
    }
    return null;
  };
  process.send({
    type: 'result',
    result: {
      duration: res.duration,
      warmupCompleted: warm ? warm.requests.total : 0,
      completed: res.requests.total,
      ok2xx: res['2xx'],
      non2xx: res.non2xx,
      errors: res.errors,
      timeouts: res.timeouts,
      statusCodes: Object.fromEntries(Object.entries(res.statusCodeStats).map(([k, v]) => [k, v.count])),
      totalBytes: res.throughput.total,
      p50: pct(50),
      p99: pct(99),
      acP50: res.latency.p50,
      acP99: res.latency.p99,
      cpuMs: (cpu.user + cpu.system) / 1000,
    },
  });
  process.disconnect();
}

// ============================================================================ main

function envNumber(name, def, { min = 0, int = false } = {}) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return def;
  const v = Number(raw);
  if (!Number.isFinite(v) || v < min || (int && !Number.isInteger(v))) {
    console.error(`${name}=${raw}: expected ${int ? 'an integer' : 'a number'} >= ${min}`);
    process.exit(2);
  }
  return v;
}

/** A single request on a fresh connection (nothing left open afterwards). */
function get(url, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { connection: 'close', ...headers }, agent: false, timeout: 5_000 }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout: GET ${url}`)));
    req.on('error', reject);
  });
}

function countLines(file) {
  return new Promise((resolve) => {
    let n = 0;
    createReadStream(file)
      .on('data', (b) => {
        for (let i = b.indexOf(10); i !== -1; i = b.indexOf(10, i + 1)) n++;
      })
      .on('end', () => resolve(n))
      .on('error', () => resolve(-1));
  });
}

function configYaml({ upstreamUrl, db, log, accessLog }) {
  // The Dagu routes of gateway.example.yaml, every upstream pointed at the echo server.
  return `# generated by bench/proxy.js
listen:
  host: 127.0.0.1
  port: 0
admin:
  host: 127.0.0.1
  port: 0
store:
  keys: sqlite:${db}
  rate_limits: memory
keys:
  prefix: dg_
upstreams:
  - name: dagu
    api_base_url: ${upstreamUrl}/api/v1
    auth_type: token
    auth_token: bench-upstream-token
    timeout: 30
routes:
  - path: /api/v1/health
    methods: [GET]
    upstream: dagu
    auth: none
    strip_prefix: /api/v1
  - path: /api/v1/dags
    methods: [GET]
    upstream: dagu
    role: viewer
    workspace: { query: workspace }
    strip_prefix: /api/v1
  - path: /api/v1/dags/{fileName}
    methods: [GET]
    upstream: dagu
    role: operator
    strip_prefix: /api/v1
  - path: /api/v1/dags/{fileName}/start
    methods: [POST]
    upstream: dagu
    role: operator
    strip_prefix: /api/v1
  - path: /api/v1/dag-runs
    methods: [GET]
    upstream: dagu
    role: viewer
    strip_prefix: /api/v1
log:
  level: info
  destination: ${log}
  access_log: ${accessLog}
`;
}

async function main() {
  const DURATION = envNumber('BENCH_DURATION', 10, { min: 1 });
  const WARMUP = envNumber('BENCH_WARMUP', 2, { min: 0 });
  const CONNECTIONS = envNumber('BENCH_CONNECTIONS', 50, { min: 1, int: true });
  const ROUNDS = envNumber('BENCH_ROUNDS', 1, { min: 1, int: true });
  const KEEP = process.env.BENCH_KEEP === '1';
  const TARGET = '/api/v1/dags/bench.yaml'; // route: GET /api/v1/dags/{fileName}, key required, role operator

  const children = new Set();
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'keygate-bench-'));
  let upstream;
  let cleaned = false;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await upstream?.close();
    if (!KEEP) rmSync(tmp, { recursive: true, force: true });
  };

  // Never unbounded: a hard deadline for the whole run.
  const phasesCount = 1 + 3 * ROUNDS;
  const budgetS = phasesCount * (WARMUP + DURATION + 30) + 90;
  const watchdog = setTimeout(() => {
    console.error(`\nbench: watchdog: still running after ${budgetS} s; killing children and exiting`);
    cleanup().finally(() => process.exit(3));
  }, budgetS * 1000);
  watchdog.unref();
  process.on('SIGINT', () => cleanup().finally(() => process.exit(130)));

  try {
    await run();
  } catch (err) {
    console.error('\nbench failed:', err?.stack ?? err);
    process.exitCode = 1;
  } finally {
    await cleanup();
    clearTimeout(watchdog);
  }

  async function run() {
    const { startEchoUpstream } = await import('../dist/demo/echo-upstream.js');
    upstream = await startEchoUpstream({ name: 'echo' });
    // The echo upstream is a test helper that records every request it receives; under load that
    // list grows without bound (GC drift, memory). Empty it often: the bench never reads it.
    setInterval(() => {
      upstream.received.length = 0;
    }, 200).unref();

    const variants = {
      log: { db: path.join(tmp, 'keys-log.db'), log: path.join(tmp, 'access.log'), accessLog: true },
      nolog: { db: path.join(tmp, 'keys-nolog.db'), log: path.join(tmp, 'nolog.log'), accessLog: false },
    };
    const gateways = {};
    for (const [name, v] of Object.entries(variants)) {
      const file = path.join(tmp, `gateway-${name}.yaml`);
      writeFileSync(file, configYaml({ upstreamUrl: upstream.url, ...v }));
      gateways[name] = await startGatewayChild(file);
    }

    const idle0 = os.cpus().reduce((s, c) => s + c.times.user + c.times.nice + c.times.sys + c.times.irq, 0);
    await new Promise((r) => setTimeout(r, 1000));
    const busyBefore = Math.round((os.cpus().reduce((s, c) => s + c.times.user + c.times.nice + c.times.sys + c.times.irq, 0) - idle0) / 10);
    console.log('Keygate proxy benchmark');
    console.log(
      `  node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model.trim()}), load: autocannon ${await autocannonVersion()}, ` +
        `${CONNECTIONS} connections, ${WARMUP} s warmup + ${DURATION} s measured per phase, rounds ${ROUNDS}`,
    );
    console.log(`  processes: load generator (one child per phase) | gateway-log child pid ${gateways.log.pid} | gateway-nolog child pid ${gateways.nolog.pid} | echo upstream in the bench process pid ${process.pid}`);
    console.log(`  machine busy before the run (1 s, all processes): ${busyBefore}% of one core${busyBefore >= 15 ? '  <- not quiet' : ''}`);
    console.log(`  target: GET ${TARGET} (route GET /api/v1/dags/{fileName}: key required, role operator; key role operator, X-API-Key)`);
    console.log(`  temp dir: ${tmp}${KEEP ? ' (kept)' : ' (removed at exit)'}; access log of the logging gateway: ${variants.log.log}`);

    // ---- correctness, once, before measuring
    console.log('\nCorrectness');
    const checks = [];
    const check = (ok, what) => {
      checks.push(ok);
      console.log(`  ${ok ? 'ok  ' : 'FAIL'}  ${what}`);
    };
    const direct = await get(upstream.url + TARGET.replace('/api/v1', ''));
    check(direct.status === 200, `upstream direct → ${direct.status}`);
    for (const [name, g] of Object.entries(gateways)) {
      const noKey = await get(g.url + TARGET);
      check(noKey.status === 401, `gateway-${name} without key → ${noKey.status} (want 401)`);
      const withKey = await get(g.url + TARGET, { 'x-api-key': g.secret });
      let echo = {};
      try {
        echo = JSON.parse(withKey.body);
      } catch {}
      const h = echo.headers ?? {};
      check(withKey.status === 200, `gateway-${name} with key → ${withKey.status} (want 200), upstream path ${echo.path}`);
      check(h['x-keygate-key-id'] === g.keyId, `gateway-${name}: upstream saw x-keygate-key-id=${h['x-keygate-key-id']} (want ${g.keyId}), x-keygate-role=${h['x-keygate-role']}`);
      check(h['x-api-key'] === undefined && h.authorization === 'Bearer bench-upstream-token', `gateway-${name}: client key not forwarded; upstream credential sent`);
    }
    if (checks.includes(false)) throw new Error('correctness checks failed; not measuring');

    // ---- phases, interleaved
    const plan = ['baseline'];
    for (let r = 0; r < ROUNDS; r++) plan.push(...(r % 2 === 0 ? ['gateway', 'gateway-nolog'] : ['gateway-nolog', 'gateway']), 'baseline');
    const targets = {
      baseline: { url: upstream.url + TARGET.replace('/api/v1', ''), headers: {}, gw: null },
      gateway: { url: gateways.log.url + TARGET, headers: { 'x-api-key': gateways.log.secret }, gw: gateways.log },
      'gateway-nolog': { url: gateways.nolog.url + TARGET, headers: { 'x-api-key': gateways.nolog.secret }, gw: gateways.nolog },
    };
    const results = { baseline: [], gateway: [], 'gateway-nolog': [] };
    console.log('\nPhases (cpu = % of one core during the measured run)');
    for (const [i, phase] of plan.entries()) {
      const t = targets[phase];
      const r = await runPhase(t, [gateways.log, gateways.nolog]);
      results[phase].push(r);
      console.log(
        `  ${String(i + 1).padStart(2)}. ${phase.padEnd(13)} ${fmt(r.rps, 0).padStart(7)} req/s  p50 ${fmt(r.p50, 2)} ms  p99 ${fmt(r.p99, 2)} ms  ` +
          `errors/non-2xx ${r.errors}/${r.non2xx}${r.timeouts ? ` (timeouts ${r.timeouts})` : ''}  ${Math.round(r.bytesPerResponse)} B/resp  ` +
          `cpu: load ${r.cpu.load}%, gateway ${t.gw ? r.cpu[t.gw === gateways.log ? 'gwLog' : 'gwNolog'] : '-'}%, upstream ${r.cpu.upstream}%, other processes ${r.cpu.other}%`,
      );
      const gwCpu = t.gw ? r.cpu[t.gw === gateways.log ? 'gwLog' : 'gwNolog'] : null;
      r.usPerReq = { gateway: gwCpu === null ? null : perReq(gwCpu, r.rps), upstream: perReq(r.cpu.upstream, r.rps), load: perReq(r.cpu.load, r.rps) };
      console.log(
        `      cpu per request: ${t.gw ? `gateway ${r.usPerReq.gateway} µs, ` : ''}upstream ${r.usPerReq.upstream} µs, load generator ${r.usPerReq.load} µs`,
      );
    }

    // ---- close gateways (flushes the access log), then look at it
    await Promise.all(Object.values(gateways).map((g) => g.close()));
    const logLines = await countLines(variants.log.log);
    const logBytes = statSync(variants.log.log, { throwIfNoEntry: false })?.size ?? 0;
    const nologLines = await countLines(variants.nolog.log);
    const gwSent = results.gateway.reduce((s, r) => s + r.completed, 0);
    const gwWarm = results.gateway.reduce((s, r) => s + r.warmupCompleted, 0);

    // ---- summary
    const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const agg = (rs) => ({
      runs: rs.length,
      rps: mean(rs.map((r) => r.rps)),
      p50: mean(rs.map((r) => r.p50)),
      p99: mean(rs.map((r) => r.p99)),
      errors: rs.reduce((s, r) => s + r.errors, 0),
      non2xx: rs.reduce((s, r) => s + r.non2xx, 0),
      gwUsPerReq: rs[0].usPerReq.gateway === null ? null : Math.round(mean(rs.map((r) => r.usPerReq.gateway))),
      upUsPerReq: Math.round(mean(rs.map((r) => r.usPerReq.upstream))),
    });
    const A = { baseline: agg(results.baseline), gateway: agg(results.gateway), 'gateway-nolog': agg(results['gateway-nolog']) };
    const base = A.baseline;
    const ratio = (x, y) => (y > 0 ? x / y : NaN);
    const bRps = results.baseline.map((r) => r.rps);
    const drift = bRps.length > 1 ? (Math.max(...bRps) - Math.min(...bRps)) / mean(bRps) : 0;

    console.log(`\nSummary (baseline = mean of ${base.runs} runs: ${bRps.map((x) => fmt(x, 0)).join(', ')} req/s; spread ${fmt(drift * 100, 1)}%)`);
    const rows = [
      ['phase', 'req/s', 'p50 ms', 'p99 ms', 'err/non2xx', 'rps ×base', 'p50 ×base', 'p99 ×base'],
      ...Object.entries(A).map(([name, a]) => [
        name,
        fmt(a.rps, 0),
        fmt(a.p50, 2),
        fmt(a.p99, 2),
        `${a.errors}/${a.non2xx}`,
        fmt(ratio(a.rps, base.rps), 2),
        fmt(ratio(a.p50, base.p50), 2),
        fmt(ratio(a.p99, base.p99), 2),
      ]),
    ];
    const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
    for (const [i, r] of rows.entries()) {
      console.log('  ' + r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  '));
      if (i === 0) console.log('  ' + widths.map((w) => '-'.repeat(w)).join('  '));
    }
    const logCost = 1 - ratio(A.gateway.rps, A['gateway-nolog'].rps);
    console.log(
      `  CPU per request: upstream ${base.upUsPerReq} µs; gateway ${A.gateway.gwUsPerReq} µs with access log, ${A['gateway-nolog'].gwUsPerReq} µs without ` +
        `(×${fmt(ratio(A.gateway.gwUsPerReq, base.upUsPerReq), 2)} / ×${fmt(ratio(A['gateway-nolog'].gwUsPerReq, base.upUsPerReq), 2)} the upstream's own cost)`,
    );
    console.log(`  access log: costs ${fmt(logCost * 100, 1)}% throughput (gateway vs gateway-nolog); p50 ×${fmt(ratio(A.gateway.p50, A['gateway-nolog'].p50), 2)}, p99 ×${fmt(ratio(A.gateway.p99, A['gateway-nolog'].p99), 2)}; gateway CPU per request ${signed((ratio(A.gateway.gwUsPerReq, A['gateway-nolog'].gwUsPerReq) - 1) * 100, 1)}%`);
    const all = Object.values(results).flat();
    const otherMax = Math.max(...all.map((r) => r.cpu.other));
    if (otherMax >= 15) {
      console.log(`  WARNING: other processes on this machine used up to ${otherMax}% of a core during a measured phase: numbers are disturbed; rerun on a quiet machine`);
    }
    // + the 401 and 200 of the correctness check. autocannon stops with up to one request in flight per
    // connection at the end of each warmup and measured run: those reach the gateway (and its log) uncounted.
    const expected = gwSent + gwWarm + 2;
    const slack = 2 * CONNECTIONS * results.gateway.length;
    const extra = logLines - expected;
    console.log(
      `  access log file: ${logLines} lines, ${fmt(logBytes / 1e6, 1)} MB; completed requests ${expected} (${gwSent} measured + ${gwWarm} warmup + 2 checks)` +
        (extra >= 0 && extra <= slack ? `, +${extra} in flight when autocannon stopped (ok, ≤ ${slack})` : `  <- MISMATCH: ${extra} lines off (at most +${slack} expected)`) +
        `; no-log gateway wrote ${nologLines} lines`,
    );

    const json = {
      bench: 'keygate-proxy',
      node: process.version,
      cpus: os.cpus().length,
      connections: CONNECTIONS,
      duration_s: DURATION,
      warmup_s: WARMUP,
      rounds: ROUNDS,
      target: TARGET,
      baseline_runs_rps: bRps.map((x) => Math.round(x)),
      other_cpu_max_pct: otherMax,
      busy_before_pct: busyBefore,
      ...Object.fromEntries(
        Object.entries(A).map(([name, a]) => [
          name.replace('-', '_'),
          {
            rps: Math.round(a.rps),
            p50_ms: round(a.p50, 2),
            p99_ms: round(a.p99, 2),
            errors: a.errors,
            non2xx: a.non2xx,
            ...(a.gwUsPerReq === null ? {} : { gateway_cpu_us_per_req: a.gwUsPerReq }),
            upstream_cpu_us_per_req: a.upUsPerReq,
          },
        ]),
      ),
      ratio: {
        gateway_rps: round(ratio(A.gateway.rps, base.rps), 3),
        gateway_p50: round(ratio(A.gateway.p50, base.p50), 3),
        gateway_p99: round(ratio(A.gateway.p99, base.p99), 3),
        nolog_rps: round(ratio(A['gateway-nolog'].rps, base.rps), 3),
        nolog_p50: round(ratio(A['gateway-nolog'].p50, base.p50), 3),
        nolog_p99: round(ratio(A['gateway-nolog'].p99, base.p99), 3),
        log_cost_rps: round(logCost, 3),
        log_cost_cpu_per_req: round(ratio(A.gateway.gwUsPerReq, A['gateway-nolog'].gwUsPerReq) - 1, 3),
      },
    };
    console.log(JSON.stringify(json));
  }

  async function runPhase(t, gws) {
    const child = fork(SELF, ['--load', JSON.stringify({ url: t.url, headers: t.headers, connections: CONNECTIONS, duration: DURATION, warmup: WARMUP })], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    children.add(child);
    const limitMs = (WARMUP + DURATION + 30) * 1000;
    try {
      let before;
      const result = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
          reject(new Error(`load generator did not finish within ${limitMs / 1000} s`));
        }, limitMs);
        child.on('message', (m) => {
          if (m.type === 'measuring') before = snapshot(gws);
          else if (m.type === 'result') {
            clearTimeout(timer);
            resolve(m.result);
          }
        });
        child.on('exit', (code, sig) => {
          clearTimeout(timer);
          reject(new Error(`load generator exited (${code ?? sig}) without a result`));
        });
      });
      const after = await snapshot(gws);
      const b = await before;
      const wallMs = after.wall - b.wall;
      const pct = (a0, a1) => Math.round(((a1.user + a1.system - a0.user - a0.system) / 1000 / wallMs) * 100);
      const cpu = {
        load: Math.round((result.cpuMs / (result.duration * 1000)) * 100),
        upstream: pct(b.self, after.self),
        gwLog: pct(b.gws[0], after.gws[0]),
        gwNolog: pct(b.gws[1], after.gws[1]),
      };
      // Busy time of the whole machine minus ours: other processes (e.g. a test run) competing for the 2 cores.
      const machinePct = Math.round(((after.machine - b.machine) / wallMs) * 100);
      cpu.other = Math.max(0, machinePct - cpu.load - cpu.upstream - cpu.gwLog - cpu.gwNolog);
      return {
        ...result,
        rps: result.completed / result.duration,
        bytesPerResponse: result.completed ? result.totalBytes / result.completed : 0,
        cpu,
      };
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        await new Promise((resolve) => {
          child.once('exit', resolve);
          setTimeout(() => {
            child.kill('SIGKILL');
            resolve();
          }, 5_000).unref();
        });
      }
      children.delete(child);
    }
  }

  async function snapshot(gws) {
    const wall = performance.now();
    const self = process.cpuUsage();
    const machine = os.cpus().reduce((s, c) => s + c.times.user + c.times.nice + c.times.sys + c.times.irq, 0); // ms, all cores
    return { wall, self, machine, gws: await Promise.all(gws.map((g) => g.cpu())) };
  }

  function startGatewayChild(configFile) {
    const child = fork(SELF, ['--gateway', configFile], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    children.add(child);
    let nextId = 0;
    const pending = new Map();
    child.on('message', (m) => {
      if (m?.type === 'cpu') {
        pending.get(m.id)?.(m.usage);
        pending.delete(m.id);
      }
    });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`gateway child (${configFile}) did not start within 30 s`)), 30_000);
      child.once('exit', (code, sig) => {
        clearTimeout(timer);
        reject(new Error(`gateway child (${configFile}) exited (${code ?? sig}) before it was ready`));
      });
      child.on('message', (m) => {
        if (m?.type !== 'ready') return;
        clearTimeout(timer);
        resolve({
          ...m,
          cpu: () =>
            new Promise((res, rej) => {
              const id = nextId++;
              pending.set(id, res);
              child.send({ type: 'cpu', id });
              setTimeout(() => pending.has(id) && (pending.delete(id), rej(new Error('gateway child did not answer'))), 5_000).unref();
            }),
          close: () =>
            new Promise((res) => {
              if (child.exitCode !== null || child.signalCode !== null) return res();
              const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
              child.once('exit', () => {
                clearTimeout(t);
                children.delete(child);
                res();
              });
              child.send({ type: 'close' });
            }),
        });
      });
    });
  }
}

async function autocannonVersion() {
  try {
    const { createRequire } = await import('node:module');
    return createRequire(import.meta.url)('autocannon/package.json').version;
  } catch {
    return '?';
  }
}

/** µs of CPU per request from a CPU share (% of one core) and a request rate */
function perReq(cpuPct, rps) {
  return rps > 0 ? Math.round(((cpuPct / 100) * 1e6) / rps) : null;
}

function signed(x, digits) {
  return Number.isFinite(x) ? (x >= 0 ? '+' : '') + x.toFixed(digits) : 'n/a';
}

function fmt(x, digits) {
  return x === null || x === undefined || Number.isNaN(x) ? 'n/a' : x.toFixed(digits);
}

function round(x, digits) {
  return Number.isFinite(x) ? Number(x.toFixed(digits)) : null;
}
