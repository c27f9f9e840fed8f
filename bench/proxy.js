// Proxy overhead benchmark: the same small JSON GET load, side by side, in alternating rounds.
// One module per phase (bench/phases/):
//   baseline         load → upstream
//   bare             load → a bare Node proxy (node:http + undici Pool.stream + a Map of key digests) → upstream
//   bare-full        load → the bare proxy plus what Keygate documents per request (request id, identity and
//                           forwarding headers, rate-limit headers, a count, an access-log line) → upstream
//   fastify          load → @fastify/http-proxy with a preHandler key check → upstream
//   gateway          load → Keygate (key + role route, access log ON to a file, rate limits in memory) → upstream
//   gateway-nolog    load → Keygate (same, access_log: false)                                           → upstream
//   gateway-redis    load → Keygate (same as gateway, store.rate_limits: a private redis-server)         → upstream
//   gateway-workers  load → `node bin/keygate.js serve` with `workers: auto`                              → upstream
//   gateway-compare  (with BENCH_COMPARE_DIST=DIR) the gateway phase on another build's dist/, e.g. main before a change
//   nginx-auth       load → nginx (auth_request → Keygate's forward_auth endpoint) → upstream (skipped without nginx)
// then the revocation delay across two gateway instances sharing a key store (bench/revocation.js).
//
// Run: npm run bench (builds dist/ first). Env: BENCH_DURATION (s, default 5), BENCH_WARMUP (s,
// default 1), BENCH_CONNECTIONS (default 50), BENCH_ROUNDS (default 5), BENCH_PHASES (comma list,
// default all), BENCH_REVOCATIONS (changes per store, default 100; 0 skips that part),
// BENCH_COMPARE_DIST, BENCH_OUT (JSON file, default keygate-bench-<time>.json in the temp dir),
// BENCH_KEEP=1 keeps the temp dir. BENCH_SHORT=1: one round of 2 s, no warm-up, 10 revocations.
// BENCH_PACED_RATE (default 1000): req/s of the paced runs (upstream direct, bare proxy, Keygate;
// the latency each adds when not saturated; BENCH_PACED_PHASES, default "bare,gateway", picks the
// proxies); BENCH_PACED=0 skips them. Phase gateway-open: the
// gateway process on an auth: none route, for what a key costs.
//
// The upstream (bench/lib/upstream.js): nginx answering a fixed small JSON (the echo upstream with
// BENCH_UPSTREAM=echo or without nginx). Processes: this one (echo upstream + orchestration), the load generator (bench/lib/load.js, a
// child per phase), each proxy in its own child, redis-server when installed. CPU per process is
// read from /proc (10 ms ticks), so every proxy is measured the same way.

import { fork, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startPeer } from './lib/peer.js';
import { FIXED_BODY, startBenchUpstream } from './lib/upstream.js';
import { NO_LIMIT, autocannonVersion, configYaml, countLog, envNumber, fmt, get, median, perReq, procCpu, procPpid, redisVersion, round, signed, spread } from './lib/util.js';
import { startGatewayChild } from './phases/gateway.js';
import { startRedisServer } from './phases/redis-server.js';
import { startClusterGateway } from './phases/workers.js';
import { NGINX_AUTH_SKIPPED, startNginxAuth } from './phases/nginx-auth.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const LOAD = path.join(HERE, 'lib', 'load.js');

await main();

async function main() {
  const SHORT = process.env.BENCH_SHORT === '1';
  const DURATION = envNumber('BENCH_DURATION', SHORT ? 2 : 5, { min: 1 });
  const WARMUP = envNumber('BENCH_WARMUP', SHORT ? 0 : 1, { min: 0 });
  const CONNECTIONS = envNumber('BENCH_CONNECTIONS', 50, { min: 1, int: true });
  const ROUNDS = envNumber('BENCH_ROUNDS', SHORT ? 1 : 5, { min: 1, int: true });
  const REVOCATIONS = envNumber('BENCH_REVOCATIONS', SHORT ? 10 : 100, { min: 0, int: true });
  const PHASES = process.env.BENCH_PHASES ? process.env.BENCH_PHASES.split(',').map((p) => p.trim()) : null;
  const COMPARE_DIST = process.env.BENCH_COMPARE_DIST ? path.resolve(process.env.BENCH_COMPARE_DIST) : undefined;
  const KEEP = process.env.BENCH_KEEP === '1';
  const TARGET = '/api/v1/dags/bench.yaml'; // route: GET /api/v1/dags/{fileName}, key required, role operator
  const OPEN_TARGET = '/api/v1/health'; // route: auth: none (gateway-open)
  const PACED_RATE = envNumber('BENCH_PACED_RATE', 1000, { min: 1, int: true }); // req/s of the paced runs (0 = no paced runs via BENCH_PACED=0)
  const PACED = process.env.BENCH_PACED !== '0';
  // which proxies get a paced run besides the upstream direct (any measured phase: e.g. gateway-nolog to see what the access log adds)
  const PACED_PHASES = (process.env.BENCH_PACED_PHASES ?? 'bare,gateway').split(',').map((p) => p.trim()).filter(Boolean);
  const REDIS_BIN = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).stdout.trim();
  const REDIS_SKIPPED = 'skipped: redis-server not installed (apt-get install redis-server)';

  const children = new Set();
  /** Spawn a child that is killed with the bench and keeps the first 20 kB of its output (for errors). */
  function spawnTracked(cmd, args) {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let out = '';
    const collect = (d) => {
      if (out.length < 20_000) out += d;
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    return { child, output: () => out };
  }
  /** what the phase modules need of the bench: its children, and how to spawn and track them */
  const ctx = { children, spawnTracked, grandchildren: undefined };
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'keygate-bench-'));
  let upstream; // the echo upstream (src/demo/echo-upstream.ts), in this process
  let benchUpstream; // what the proxies forward to: nginx with a fixed answer, or the echo upstream (bench/lib/upstream.js)
  let redis; // { url, port, pid, stop() } of the private redis-server, when installed
  let redisClient; // main's own connection to it: INFO only
  let cleaned = false;
  /** pids of processes our children started (the keygate primary's workers): killed before their parent at cleanup */
  const grandchildren = new Map(); // pid → parent pid
  ctx.grandchildren = grandchildren;
  const cleanup = async () => {
    if (cleaned) return;
    cleaned = true;
    redisClient?.disconnect();
    for (const [pid, ppid] of grandchildren) {
      // only while it is still the child of our child (never a reused pid)
      if (procPpid(pid) === ppid) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {}
      }
    }
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await benchUpstream?.close();
    await upstream?.close();
    if (!KEEP) rmSync(tmp, { recursive: true, force: true });
  };

  // Never unbounded: a hard deadline for the whole run.
  const phasesCount = 10 * ROUNDS;
  const budgetS = phasesCount * (WARMUP + DURATION + 30) + 90 + 60 + 2 * (REVOCATIONS * 1.2 + 60);
  const watchdog = setTimeout(() => {
    console.error(`\nbench: watchdog: still running after ${Math.round(budgetS)} s; killing children and exiting`);
    cleanup().finally(() => process.exit(3));
  }, budgetS * 1000);
  watchdog.unref();
  // stopped (Ctrl-C, `timeout`, a closed terminal): no child, nginx or redis-server left running
  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]]) process.on(sig, () => cleanup().finally(() => process.exit(code)));

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
    benchUpstream = await startBenchUpstream(tmp, upstream);

    const want = (phase) => PHASES === null || PHASES.includes(phase);
    if (REDIS_BIN && (want('gateway-redis') || REVOCATIONS > 0)) {
      redis = await startRedisServer(ctx, REDIS_BIN);
      const { Redis } = await import('ioredis');
      redisClient = new Redis(`${redis.url}/0`, { lazyConnect: true, maxRetriesPerRequest: 1, enableOfflineQueue: false });
      redisClient.on('error', () => {});
      await redisClient.connect();
    }

    // Redis databases of the private server: 0 the gateway-redis limiter; 1, 2 the Redis pair's keys
    // and limits; 3 the limits of the SQLite pair.
    const variants = {
      gateway: { keys: `sqlite:${path.join(tmp, 'keys-log.db')}`, rateLimits: 'memory', log: path.join(tmp, 'gateway.log'), accessLog: true },
      'gateway-nolog': { keys: `sqlite:${path.join(tmp, 'keys-nolog.db')}`, rateLimits: 'memory', log: path.join(tmp, 'nolog.log'), accessLog: false },
      ...(redis ? { 'gateway-redis': { keys: `sqlite:${path.join(tmp, 'keys-redis.db')}`, rateLimits: `${redis.url}/0`, log: path.join(tmp, 'gateway-redis.log'), accessLog: true } } : {}),
      ...(COMPARE_DIST ? { 'gateway-compare': { keys: `sqlite:${path.join(tmp, 'keys-compare.db')}`, rateLimits: 'memory', log: path.join(tmp, 'gateway-compare.log'), accessLog: true, dist: COMPARE_DIST } } : {}),
    };
    const gateways = {};
    if (want('bare')) gateways.bare = await startPeer(children, path.join(HERE, 'phases', 'bare.js'), benchUpstream.url);
    if (want('bare-full')) gateways['bare-full'] = await startPeer(children, path.join(HERE, 'phases', 'bare-full.js'), benchUpstream.url, { logFile: path.join(tmp, 'bare-full.log') });
    if (want('fastify')) gateways.fastify = await startPeer(children, path.join(HERE, 'phases', 'fastify.js'), benchUpstream.url);
    for (const [name, v] of Object.entries(variants)) {
      if (!want(name)) continue;
      const file = path.join(tmp, `${name}.yaml`);
      writeFileSync(file, configYaml({ upstreamUrl: benchUpstream.url, ...v }));
      gateways[name] = await startGatewayChild(children, file, {}, v.dist);
    }
    // gateway-workers: the real binary, `workers: auto`, access log on to a file, rate limits in memory (kept in the primary)
    const WORKERS = os.availableParallelism();
    const workersLog = path.join(tmp, 'gateway-workers.log');
    if (want('gateway-workers')) {
      const file = path.join(tmp, 'gateway-workers.yaml');
      writeFileSync(file, configYaml({ upstreamUrl: benchUpstream.url, keys: `sqlite:${path.join(tmp, 'keys-workers.db')}`, rateLimits: 'memory', log: workersLog, accessLog: true, workers: 'auto' }));
      gateways['gateway-workers'] = await startClusterGateway(ctx, file, workersLog, WORKERS);
    }
    // nginx-auth: nginx + auth_request, Keygate as its key check (forward_auth), against the gateway phase proxying
    if (want('nginx-auth') && !NGINX_AUTH_SKIPPED) gateways['nginx-auth'] = await startNginxAuth(ctx, tmp, benchUpstream.url);

    const busy0 = os.cpus().reduce((s, c) => s + c.times.user + c.times.nice + c.times.sys + c.times.irq, 0);
    await new Promise((r) => setTimeout(r, 1000));
    const busyBefore = Math.round((os.cpus().reduce((s, c) => s + c.times.user + c.times.nice + c.times.sys + c.times.irq, 0) - busy0) / 10);
    const loadBefore = os.loadavg();
    console.log('Keygate proxy benchmark');
    console.log(
      `  node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model.trim()}), load: autocannon ${await autocannonVersion()}, ` +
        `${CONNECTIONS} connections, ${WARMUP} s warmup + ${DURATION} s measured per phase, ${ROUNDS} alternating rounds`,
    );
    console.log(
      `  processes: load generator (one child per phase) | ${Object.entries(gateways)
        .map(([n, g]) => g.describe ?? (g.workerPids ? `${n}: primary pid ${g.pid} + ${g.workerPids.length} workers (${g.workerPids.join(', ')})` : `${n} pid ${g.pid}`))
        .join(' | ')} | ${benchUpstream.describe}` +
        (redis ? ` | redis-server ${await redisVersion(REDIS_BIN)} pid ${redis.pid}` : ''),
    );
    if (!redis) console.log(`  gateway-redis and the Redis revocation pair: ${REDIS_SKIPPED}`);
    if (want('nginx-auth') && NGINX_AUTH_SKIPPED) console.log(`  nginx-auth: ${NGINX_AUTH_SKIPPED}`);
    if (COMPARE_DIST) console.log(`  gateway-compare: the gateway phase on ${COMPARE_DIST}`);
    console.log(`  machine busy before the run (1 s): ${busyBefore}% of one core; load average ${loadBefore.map((x) => x.toFixed(2)).join(' ')}${busyBefore >= 15 ? '  <- not quiet' : ''}`);
    console.log(`  target: GET ${TARGET} (Keygate: route GET /api/v1/dags/{fileName}, key required, role operator; every proxy: X-API-Key checked, stripped, identity and upstream credential injected)`);
    console.log(`  temp dir: ${tmp}${KEEP ? ' (kept)' : ' (removed at exit)'}`);

    // ---- correctness, once, before measuring
    console.log('\nCorrectness');
    const checks = [];
    const check = (ok, what) => {
      checks.push(ok);
      console.log(`  ${ok ? 'ok  ' : 'FAIL'}  ${what}`);
    };
    const direct = await get(benchUpstream.url + TARGET.replace('/api/v1', ''));
    check(direct.status === 200, `upstream direct → ${direct.status}`);
    // the echo upstream answers with what it received (?bench_echo=1 through nginx)
    const ECHO = benchUpstream.kind === 'nginx' ? '?bench_echo=1' : '';
    for (const [name, g] of Object.entries(gateways)) {
      const noKey = await get(g.url + TARGET);
      check(noKey.status === 401, `${name} without key → ${noKey.status} (want 401)`);
      const withKey = await get(g.url + TARGET + ECHO, { 'x-api-key': g.secret });
      let echo = {};
      try {
        echo = JSON.parse(withKey.body);
      } catch {}
      const h = echo.headers ?? {};
      check(withKey.status === 200 && echo.path === TARGET, `${name} with key → ${withKey.status} (want 200), upstream path ${echo.path}`);
      check(h['x-keygate-key-id'] === g.keyId && h['x-api-key'] === undefined && h.authorization === 'Bearer bench-upstream-token', `${name}: upstream saw x-keygate-key-id=${h['x-keygate-key-id']}, not the client's key, and the upstream credential`);
      // nginx-auth: the snippet passes RateLimit-Policy on (not the X- form)
      if (name === 'nginx-auth') check(withKey.headers['ratelimit-policy'] === `"per-key";q=${NO_LIMIT};w=60`, `${name}: ratelimit-policy ${withKey.headers['ratelimit-policy']} (want q=${NO_LIMIT})`);
      else if (!g.peer) check(withKey.headers['x-ratelimit-limit'] === String(NO_LIMIT), `${name}: x-ratelimit-limit ${withKey.headers['x-ratelimit-limit']} (want ${NO_LIMIT})`);
      if (benchUpstream.kind === 'nginx') {
        const fixed = await get(g.url + TARGET, { 'x-api-key': g.secret });
        check(fixed.status === 200 && fixed.body === FIXED_BODY, `${name}: the measured request gets nginx's fixed ${Buffer.byteLength(FIXED_BODY)}-byte answer (${fixed.status}, ${fixed.body.length} bytes)`);
      }
    }
    if (gateways.gateway) {
      const open = await get(gateways.gateway.url + OPEN_TARGET);
      check(open.status === 200, `gateway ${OPEN_TARGET} (auth: none) without key → ${open.status} (want 200)`);
    }
    if (gateways['gateway-workers']) {
      const w = gateways['gateway-workers'];
      check(w.workerPids.length === WORKERS && w.listenUrls.every((u) => u === w.url), `gateway-workers: ${w.workerPids.length} workers (want ${WORKERS}), all on ${w.url}`);
    }
    if (gateways['gateway-redis']) {
      const st = await gateways['gateway-redis'].call('limiter');
      const counters = await redisClient.dbsize();
      check(!st.degraded && st.storeErrors === 0 && counters > 0, `gateway-redis: limiter on Redis (degraded ${st.degraded}, store errors ${st.storeErrors}), ${counters} counter key(s) in Redis db 0`);
    }
    if (checks.includes(false)) throw new Error('correctness checks failed; not measuring');

    // ---- phases, in alternating order: forward in even rounds, backward in odd ones
    // gateway-open: the same gateway process on an `auth: none` route (GET /api/v1/health): what a key costs
    const order = ['baseline', ...Object.keys(gateways), ...(gateways.gateway ? ['gateway-open'] : [])].filter(want);
    const plan = [];
    for (let r = 0; r < ROUNDS; r++) plan.push(...(r % 2 === 0 ? order : [...order].reverse()).map((phase) => ({ phase, round: r })));
    const targetOf = (phase) =>
      phase === 'baseline'
        ? { url: benchUpstream.url + TARGET.replace('/api/v1', ''), headers: {}, gw: null }
        : phase === 'gateway-open'
          ? { url: gateways.gateway.url + OPEN_TARGET, headers: {}, gw: 'gateway' }
          : { url: gateways[phase].url + TARGET, headers: { 'x-api-key': gateways[phase].secret }, gw: phase };
    const results = Object.fromEntries(order.map((p) => [p, []]));
    console.log('\nPhases (cpu = % of one core during the measured run; µs = CPU per request)');
    for (const [i, { phase, round: r }] of plan.entries()) {
      const t = targetOf(phase);
      const res = await runPhase(t, gateways, phase === 'gateway-redis');
      res.round = r;
      res.loadavg = os.loadavg()[0];
      const gwCpu = t.gw ? res.cpu.gw[t.gw] : null;
      res.usPerReq = {
        proxy: gwCpu === null ? null : perReq(gwCpu, res.rps),
        upstream: perReq(res.cpu.upstream, res.rps),
        load: perReq(res.cpu.load, res.rps),
        redis: phase === 'gateway-redis' && res.cpu.redis !== null ? perReq(res.cpu.redis, res.rps) : null,
      };
      const parts = phase === 'nginx-auth' ? res.cpu.gwParts['nginx-auth'] : undefined;
      if (parts) res.usPerReq.split = { keygate: perReq(parts.primary, res.rps), nginx: perReq(parts.workers.reduce((s, x) => s + (x ?? 0), 0), res.rps) };
      results[phase].push(res);
      console.log(
        `  ${String(i + 1).padStart(3)}. r${r + 1} ${phase.padEnd(16)} ${fmt(res.rps, 0).padStart(6)} req/s  p50 ${fmt(res.p50, 2)} ms  p99 ${fmt(res.p99, 2)} ms  ` +
          `err/non-2xx ${res.errors}/${res.non2xx}  ${t.gw ? `${phase} ${gwCpu ?? '-'}% ${res.usPerReq.proxy ?? '-'} µs${res.usPerReq.split ? ` (keygate ${res.usPerReq.split.keygate} + nginx ${res.usPerReq.split.nginx})` : ''}, ` : ''}upstream ${res.cpu.upstream}% ${res.usPerReq.upstream} µs, ` +
          `load gen ${res.cpu.load}% ${res.usPerReq.load} µs${res.usPerReq.redis !== null ? `, redis-server ${res.usPerReq.redis} µs` : ''}, other ${res.cpu.other}%, loadavg ${res.loadavg.toFixed(1)}`,
      );
    }

    // ---- added latency at a paced rate (not saturated): upstream direct, the bare proxy, Keygate
    const paced = await runPaced(['baseline', ...PACED_PHASES].filter((p) => p === 'baseline' || (gateways[p] && want(p))), targetOf);

    // ---- close the proxies (flushes the access logs), then count the lines
    await Promise.all(Object.values(gateways).map((g) => g.close()));
    const logs = {};
    for (const phase of ['gateway', 'gateway-redis', 'gateway-compare', 'gateway-workers', 'nginx-auth']) {
      if (!results[phase]) continue;
      const file = phase === 'gateway-workers' ? workersLog : phase === 'nginx-auth' ? gateways[phase].log : variants[phase].log;
      logs[phase] = {
        ...(await countLog(file)),
        bytes: statSync(file, { throwIfNoEntry: false })?.size ?? 0,
        // + the paced runs through it, + the correctness requests
        expected: results[phase].reduce((s, r) => s + r.completed + r.warmupCompleted, 0) + (paced?.[phase]?.reduce((s, r) => s + r.completed, 0) ?? 0) + 2 +
          (phase === 'gateway' ? 1 + (results['gateway-open'] ?? []).reduce((s, r) => s + r.completed + r.warmupCompleted, 0) : 0),
      };
    }

    const revocation = await runRevocation();

    // ---- summary: per phase the median and range over the rounds; ratios are taken within a round
    const summary = {};
    for (const [phase, rs] of Object.entries(results)) {
      summary[phase] = {
        rps: spread(rs.map((r) => r.rps)),
        p50_ms: spread(rs.map((r) => r.p50)),
        p99_ms: spread(rs.map((r) => r.p99)),
        cpu_us_per_req: rs[0].usPerReq.proxy === null ? null : spread(rs.map((r) => r.usPerReq.proxy)),
        upstream_cpu_us_per_req: spread(rs.map((r) => r.usPerReq.upstream)),
        errors: rs.reduce((s, r) => s + r.errors, 0),
        non2xx: rs.reduce((s, r) => s + r.non2xx, 0),
        loadavg: spread(rs.map((r) => r.loadavg)),
      };
    }
    /** x over ref, round by round (each round has both), then median and range */
    const ratioOf = (x, ref, key) => {
      if (!results[x] || !results[ref]) return null;
      const per = results[x].map((rx) => {
        const rr = results[ref].find((y) => y.round === rx.round);
        const a = key === 'cpu' ? rx.usPerReq.proxy : rx[key];
        const b = key === 'cpu' ? rr?.usPerReq.proxy : rr?.[key];
        return rr && b > 0 ? a / b : NaN;
      });
      return spread(per);
    };
    const ratios = {};
    for (const phase of Object.keys(results)) {
      if (phase === 'baseline') continue;
      ratios[phase] = {
        rps_vs_bare: ratioOf(phase, 'bare', 'rps'),
        cpu_vs_bare: ratioOf(phase, 'bare', 'cpu'),
        rps_vs_fastify: ratioOf(phase, 'fastify', 'rps'),
        rps_vs_baseline: ratioOf(phase, 'baseline', 'rps'),
        p50_vs_bare: ratioOf(phase, 'bare', 'p50'),
        p99_vs_bare: ratioOf(phase, 'bare', 'p99'),
      };
    }
    const m = (s, d = 2) => (s === null ? 'n/a' : `${fmt(s.median, d)} (${fmt(s.min, d)}–${fmt(s.max, d)})`);
    console.log(`\nSummary: median (min–max) over ${ROUNDS} round(s); ratios taken within each round; load average during the run ${fmt(Math.min(...Object.values(summary).map((s) => s.loadavg.min)), 1)}–${fmt(Math.max(...Object.values(summary).map((s) => s.loadavg.max)), 1)}`);
    const rows = [['phase', 'req/s', 'p50 ms', 'p99 ms', 'proxy CPU µs/req', '× bare req/s', '× bare CPU', '× fastify req/s', 'err/non2xx']];
    for (const [phase, s] of Object.entries(summary)) {
      const r = ratios[phase];
      rows.push([phase, m(s.rps, 0), m(s.p50_ms), m(s.p99_ms), m(s.cpu_us_per_req, 0), r ? m(r.rps_vs_bare) : '', r ? m(r.cpu_vs_bare) : '', r ? m(r.rps_vs_fastify) : '', `${s.errors}/${s.non2xx}`]);
    }
    const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
    for (const [i, row] of rows.entries()) {
      console.log('  ' + row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  '));
      if (i === 0) console.log('  ' + widths.map((w) => '-'.repeat(w)).join('  '));
    }
    if (results['bare-full'] && results.gateway) console.log(`  Keygate against bare-full (the same documented work per request, no pipeline): gateway req/s ×${m(ratioOf('gateway', 'bare-full', 'rps'))}, CPU per request ×${m(ratioOf('gateway', 'bare-full', 'cpu'))}; bare-full against bare: CPU ×${m(ratioOf('bare-full', 'bare', 'cpu'))}`);
    if (results['gateway-open'] && results.gateway) console.log(`  a key's cost: gateway (keyed route) req/s ×${m(ratioOf('gateway', 'gateway-open', 'rps'))} of gateway-open (auth: none route), CPU ×${m(ratioOf('gateway', 'gateway-open', 'cpu'))}`);
    if (paced) printPaced(paced, m);
    if (results['gateway-nolog'] && results.gateway) console.log(`  access log: gateway CPU per request ×${m(ratioOf('gateway', 'gateway-nolog', 'cpu'))} of gateway-nolog's`);
    if (results['gateway-redis'] && results.gateway) console.log(`  Redis rate limits: gateway-redis req/s ×${m(ratioOf('gateway-redis', 'gateway', 'rps'))} of gateway's, CPU ×${m(ratioOf('gateway-redis', 'gateway', 'cpu'))}`);
    if (results['nginx-auth'] && results.gateway) {
      console.log(`  nginx + auth_request + Keygate (nginx-auth) vs Keygate proxying (gateway): req/s ×${m(ratioOf('nginx-auth', 'gateway', 'rps'))}, p50 ×${m(ratioOf('nginx-auth', 'gateway', 'p50'))}, CPU per request (nginx + Keygate vs Keygate) ×${m(ratioOf('nginx-auth', 'gateway', 'cpu'))}; of it Keygate ${m(spread(results['nginx-auth'].map((r) => r.usPerReq.split?.keygate ?? NaN)), 0)} µs, nginx ${m(spread(results['nginx-auth'].map((r) => r.usPerReq.split?.nginx ?? NaN)), 0)} µs`);
    }
    if (results['gateway-compare'] && results.gateway) console.log(`  this build vs BENCH_COMPARE_DIST: req/s ×${m(ratioOf('gateway', 'gateway-compare', 'rps'))}, CPU per request ×${m(ratioOf('gateway', 'gateway-compare', 'cpu'))}`);
    for (const [phase, l] of Object.entries(logs)) {
      const slack = 2 * CONNECTIONS * (results[phase].length + (phase === 'gateway' ? (results['gateway-open']?.length ?? 0) : 0)) * 2 + 20 * (paced?.[phase]?.length ?? 0);
      const extra = l.requests - l.expected;
      const ok = extra >= 0 && extra <= slack;
      console.log(`  access log of ${phase}: ${l.requests} request lines, ${fmt(l.bytes / 1e6, 1)} MB; completed ${l.expected}${ok ? ` (+${extra} in flight when autocannon stopped)` : `  <- MISMATCH: ${extra} off`}`);
      if (!ok) process.exitCode = 1;
    }
    const otherMax = Math.max(...Object.values(results).flat().map((r) => r.cpu.other));
    const loadMax = Math.max(...Object.values(summary).map((s) => s.loadavg.max));
    if (otherMax >= 15 || loadMax > os.cpus().length) {
      console.log(`  WARNING: the machine was loaded (other processes up to ${otherMax}% of a core, load average up to ${fmt(loadMax, 1)} on ${os.cpus().length} CPUs): read CPU µs/request and the within-round ratios, not absolute req/s`);
    }
    if (Object.values(summary).some((s) => s.non2xx > 0 || s.errors > 0)) process.exitCode = 1;
    const revLine = (name, x) =>
      typeof x === 'string' ? `  revocation, ${name}: ${x}` : `  revocation, ${name}: median ${fmt(x.median, 2)} ms, p90 ${fmt(x.p90, 2)} ms, max ${fmt(x.max, 2)} ms over ${x.toggles} changes${x.timeouts ? ` (${x.timeouts} not seen within 1 s)` : ''}`;
    if (revocation) {
      console.log(revLine('keys in Redis (pub/sub)   ', revocation.redis));
      console.log(revLine('keys in one SQLite file   ', revocation.sqlite));
    }

    const rnd = (s, d) => (s === null ? null : { median: round(s.median, d), min: round(s.min, d), max: round(s.max, d), n: s.n });
    const revJson = (x) =>
      x === undefined ? null : typeof x === 'string' ? x : { toggles: x.toggles, timeouts: x.timeouts, median_ms: round(x.median, 2), p90_ms: round(x.p90, 2), max_ms: round(x.max, 2) };
    const json = {
      bench: 'keygate-proxy',
      node: process.version,
      cpus: os.cpus().length,
      connections: CONNECTIONS,
      duration_s: DURATION,
      warmup_s: WARMUP,
      rounds: ROUNDS,
      target: TARGET,
      loadavg_before: loadBefore.map((x) => round(x, 2)),
      busy_before_pct: busyBefore,
      other_cpu_max_pct: otherMax,
      phases: Object.fromEntries(
        Object.entries(summary).map(([p, s]) => [
          p,
          {
            rps: rnd(s.rps, 0), p50_ms: rnd(s.p50_ms, 2), p99_ms: rnd(s.p99_ms, 2), cpu_us_per_req: rnd(s.cpu_us_per_req, 0), upstream_cpu_us_per_req: rnd(s.upstream_cpu_us_per_req, 0),
            errors: s.errors, non2xx: s.non2xx, loadavg: rnd(s.loadavg, 2),
            rounds: results[p].map((r) => ({ round: r.round + 1, rps: Math.round(r.rps), p50_ms: round(r.p50, 2), p99_ms: round(r.p99, 2), cpu_us_per_req: r.usPerReq.proxy, loadavg: round(r.loadavg, 2), other_cpu_pct: r.cpu.other })),
          },
        ]),
      ),
      ratios: Object.fromEntries(Object.entries(ratios).map(([p, r]) => [p, Object.fromEntries(Object.entries(r).map(([k, v]) => [k, rnd(v, 3)]))])),
      nginx_auth_vs_gateway: results['nginx-auth'] && results.gateway
        ? { rps: rnd(ratioOf('nginx-auth', 'gateway', 'rps'), 3), p50: rnd(ratioOf('nginx-auth', 'gateway', 'p50'), 3), cpu_per_req: rnd(ratioOf('nginx-auth', 'gateway', 'cpu'), 3) }
        : (NGINX_AUTH_SKIPPED ?? 'not run'),
      access_log_lines: Object.fromEntries(Object.entries(logs).map(([p, l]) => [p, { lines: l.requests, completed: l.expected }])),
      paced: paced?.summary ?? 'skipped: BENCH_PACED=0',
      revocation: revocation ? { redis: revJson(revocation.redis), sqlite: revJson(revocation.sqlite) } : 'skipped: BENCH_REVOCATIONS=0',
    };
    const out = process.env.BENCH_OUT || path.join(os.tmpdir(), `keygate-bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    writeFileSync(out, JSON.stringify(json, null, 2) + '\n');
    console.log(`  JSON: ${out}`);
    console.log(JSON.stringify(json));

    if (redis) {
      redisClient.disconnect();
      redisClient = undefined;
      await redis.stop();
    }
  }

  /** Two gateway processes on one key store, per store kind; A toggles the key, B is polled. */
  async function runRevocation() {
    const { measureRevocation, WARM_REQUESTS, WARM_CHANGES } = await import('./revocation.js');
    console.log('\nRevocation delay across two instances (two gateway child processes A and B sharing a key store)');
    if (REVOCATIONS === 0) {
      console.log('  skipped: BENCH_REVOCATIONS=0');
      return null;
    }
    console.log(
      `  A toggles the key through its own KeyService.setActive on a message from the bench (deactivate / activate alternately, ${REVOCATIONS} changes); ` +
        `B, with the key in its cache, is polled about every 1 ms (one request at a time, kept-alive connection) until a response shows the change (403 / 200), at most 1 s per change.`,
    );
    console.log(
      `  time = from the bench sending the change to A until B's first response showing it (includes the IPC hop and A's setActive; resolution about one poll); ` +
        `untimed warm-up first: ${WARM_REQUESTS} requests through B, ${WARM_CHANGES} changes`,
    );
    const pairs = {
      redis: redis ? { keys: `${redis.url}/1`, rateLimits: `${redis.url}/2`, label: 'keys in Redis (pub/sub)' } : null,
      sqlite: { keys: `sqlite:${path.join(tmp, 'keys-shared.db')}`, rateLimits: redis ? `${redis.url}/3` : 'memory', label: 'keys in one SQLite file (data_version)' },
    };
    const out = {};
    for (const [name, p] of Object.entries(pairs)) {
      if (!p) {
        out[name] = REDIS_SKIPPED;
        console.log(`  keys in Redis (pub/sub): ${REDIS_SKIPPED}`);
        continue;
      }
      const started = [];
      const t0 = performance.now();
      try {
        const files = ['a', 'b'].map((who) => {
          const file = path.join(tmp, `revocation-${name}-${who}.yaml`);
          writeFileSync(file, configYaml({ upstreamUrl: benchUpstream.url, keys: p.keys, rateLimits: p.rateLimits, log: path.join(tmp, `revocation-${name}-${who}.log`), accessLog: false }));
          return file;
        });
        const a = await startGatewayChild(children, files[0], { key: { name: `revoke-${name}` } });
        started.push(a);
        const b = await startGatewayChild(children, files[1], { key: null }); // B only uses the key A made
        started.push(b);
        const r = await measureRevocation({ a, b, keyId: a.keyId, secret: a.secret, target: TARGET, toggles: REVOCATIONS, pollMs: 1, boundMs: 1000 });
        out[name] = r;
        const odd = Object.keys(r.unexpected).length ? `; unexpected statuses from B ${JSON.stringify(r.unexpected)}` : '';
        console.log(
          `  ${p.label}, rate limits ${p.rateLimits === 'memory' ? 'memory' : 'Redis'}: median ${fmt(r.median, 2)} ms, p90 ${fmt(r.p90, 2)} ms, max ${fmt(r.max, 2)} ms ` +
            `(min ${fmt(r.min, 2)}; deactivate median ${fmt(r.deactivateMedian, 2)}, activate median ${fmt(r.activateMedian, 2)}; ${r.toggles} changes, ${r.timeouts} not seen within 1 s${odd})`,
        );
        console.log(
          `      A's setActive median ${fmt(r.setActiveMedian, 2)} ms (max ${fmt(r.setActiveMax, 2)}); B poll round trip median ${fmt(r.pollRttMedian, 2)} ms, ` +
            `mean poll interval ${fmt(r.pollIntervalMean, 2)} ms, polls per change median ${r.pollsPerChangeMedian}; B round trip with nothing changing (warm-up) median ${fmt(r.steadyRttMedian, 2)} ms; ` +
            `pair took ${fmt((performance.now() - t0) / 1000, 1)} s with start-up`,
        );
      } finally {
        await Promise.all(started.map((g) => g.close()));
      }
    }
    return out;
  }

  /**
   * Latency at PACED_RATE req/s (10 connections, not saturated), each target once per round in
   * alternating order: what a proxy adds to a request when the machine is not the bottleneck.
   */
  async function runPaced(targets, targetOf) {
    if (!PACED) return null;
    const runs = Object.fromEntries(targets.map((t) => [t, []]));
    for (let r = 0; r < ROUNDS; r++) {
      for (const name of r % 2 === 0 ? targets : [...targets].reverse()) {
        const t = targetOf(name);
        const child = fork(LOAD, [JSON.stringify({ url: t.url, headers: t.headers, connections: 10, duration: DURATION, warmup: 1, rate: PACED_RATE })], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
        children.add(child);
        const res = await new Promise((resolve, reject) => {
          const timer = setTimeout(() => {
            child.kill('SIGKILL');
            reject(new Error('paced load generator did not finish'));
          }, (DURATION + 31) * 1000);
          child.on('message', (msg) => {
            if (msg.type === 'result') {
              clearTimeout(timer);
              resolve(msg.result);
            }
          });
          child.on('exit', (code, sig) => {
            clearTimeout(timer);
            reject(new Error(`paced load generator exited (${code ?? sig}) without a result`));
          });
        });
        children.delete(child);
        runs[name].push({ round: r, p50: res.p50, p99: res.p99, rps: res.completed / res.duration, completed: res.completed + res.warmupCompleted, errors: res.errors + res.non2xx });
      }
    }
    return runs;
  }

  function printPaced(paced, m) {
    console.log(`\nPaced: ${PACED_RATE} req/s over 10 connections, ${DURATION} s per run, ${ROUNDS} alternating round(s); added = the proxy's latency minus the upstream's direct, round by round`);
    const added = {};
    for (const [name, rs] of Object.entries(paced)) {
      const base = (r, k) => paced.baseline.find((b) => b.round === r.round)?.[k];
      const a50 = name === 'baseline' ? null : spread(rs.map((r) => r.p50 - base(r, 'p50')));
      const a99 = name === 'baseline' ? null : spread(rs.map((r) => r.p99 - base(r, 'p99')));
      added[name] = { p50_ms: spread(rs.map((r) => r.p50)), p99_ms: spread(rs.map((r) => r.p99)), added_p50_ms: a50, added_p99_ms: a99, errors: rs.reduce((s, r) => s + r.errors, 0) };
      console.log(`  ${name.padEnd(9)} p50 ${m(added[name].p50_ms)} ms  p99 ${m(added[name].p99_ms)} ms${a50 ? `  added p50 ${m(a50)} ms, p99 ${m(a99)} ms` : ''}  (${fmt(median(rs.map((r) => r.rps)), 0)} req/s, errors ${added[name].errors})`);
    }
    paced.summary = added;
  }

  async function runPhase(t, gateways, withRedis) {
    const child = fork(LOAD, [JSON.stringify({ url: t.url, headers: t.headers, connections: CONNECTIONS, duration: DURATION, warmup: WARMUP })], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    children.add(child);
    const limitMs = (WARMUP + DURATION + 30) * 1000;
    try {
      let before;
      let cmdsBefore;
      const result = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
          reject(new Error(`load generator did not finish within ${limitMs / 1000} s`));
        }, limitMs);
        child.on('message', (m) => {
          if (m.type === 'measuring') {
            before = snapshot(gateways);
            if (withRedis) cmdsBefore = redisCommands();
          } else if (m.type === 'result') {
            clearTimeout(timer);
            resolve(m.result);
          }
        });
        child.on('exit', (code, sig) => {
          clearTimeout(timer);
          reject(new Error(`load generator exited (${code ?? sig}) without a result`));
        });
      });
      const after = await snapshot(gateways);
      const b = await before;
      const wallMs = after.wall - b.wall;
      const pct = (a0, a1) => (a0 && a1 ? Math.round(((a1.user + a1.system - a0.user - a0.system) / 1000 / wallMs) * 100) : null);
      const cpu = {
        load: Math.round((result.cpuMs / (result.duration * 1000)) * 100),
        upstream: benchUpstream.kind === 'nginx' ? pct(b.upstream, after.upstream) : pct(b.self, after.self),
        gw: Object.fromEntries(Object.keys(gateways).map((n) => [n, pct(b.gws[n], after.gws[n])])),
        redis: redis ? pct(b.redis, after.redis) : null,
        // gateways made of several processes (gateway-workers): the primary and each worker
        gwParts: Object.fromEntries(
          Object.keys(gateways)
            .filter((n) => after.gws[n]?.parts)
            .map((n) => [n, { primary: pct(b.gws[n]?.parts.primary, after.gws[n].parts.primary), workers: after.gws[n].parts.workers.map((w, i) => pct(b.gws[n]?.parts.workers[i], w)) }]),
        ),
      };
      // Busy time of the whole machine minus ours: other processes (e.g. a test run) competing for the 2 cores.
      const machinePct = Math.round(((after.machine - b.machine) / wallMs) * 100);
      const ours = cpu.load + cpu.upstream + (benchUpstream.kind === 'nginx' ? (pct(b.self, after.self) ?? 0) : 0) + Object.values(cpu.gw).reduce((s, x) => s + (x ?? 0), 0) + (cpu.redis ?? 0);
      cpu.other = Math.max(0, machinePct - ours);
      const extra = {};
      if (withRedis) {
        // Redis commands during the measured run, per request completed in it; main's INFO calls are 2 of them.
        const [c0, c1] = [await cmdsBefore, await redisCommands()];
        extra.redisCmds = c1 - c0;
        extra.completedAll = result.completed;
        extra.limiter = await gateways['gateway-redis'].call('limiter');
      }
      return {
        ...result,
        ...extra,
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

  async function redisCommands() {
    const info = await redisClient.info('stats');
    return Number(/total_commands_processed:(\d+)/.exec(info)?.[1] ?? NaN);
  }

  async function snapshot(gateways) {
    const wall = performance.now();
    const self = process.cpuUsage();
    const machine = os.cpus().reduce((s, c) => s + c.times.user + c.times.nice + c.times.sys + c.times.irq, 0); // ms, all cores
    const redisCpu = redis ? procCpu(redis.pid) : null;
    const upstreamCpu = benchUpstream.cpu();
    const names = Object.keys(gateways);
    // every process from /proc (the same 10 ms ticks for all); a workers gateway sums its primary and workers
    const usages = await Promise.all(names.map((n) => (gateways[n].closed ? null : gateways[n].workerPids || gateways[n].describe ? gateways[n].call('cpu') : procCpu(gateways[n].pid))));
    return { wall, self, machine, upstream: upstreamCpu, redis: redisCpu, gws: Object.fromEntries(names.map((n, i) => [n, usages[i]])) };
  }
}

