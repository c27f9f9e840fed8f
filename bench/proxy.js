// Proxy overhead benchmark: the same small JSON GET load, side by side,
//   baseline       load → echo upstream
//   gateway        load → Keygate (key + role route, access log ON to a file, rate limits in memory) → echo upstream
//   gateway-nolog  load → Keygate (same, access_log: false)                                           → echo upstream
//   gateway-redis  load → Keygate (same as gateway, store.rate_limits: a private redis-server)         → echo upstream
//   gateway-workers load → `node bin/keygate.js serve` with `workers: auto` (a primary + availableParallelism()
//                  workers sharing one port; access log ON to a file; rate limits counted in the primary) → echo upstream
// then the revocation delay across two gateway instances sharing a key store (bench/revocation.js):
// keys in Redis (pub/sub invalidation) and, for comparison, keys in one SQLite file (data_version).
//
// Run: npm run bench   (builds dist/ first). Env: BENCH_DURATION (s, default 10), BENCH_WARMUP (s,
// default 2), BENCH_CONNECTIONS (default 50), BENCH_ROUNDS (default 1), BENCH_REVOCATIONS (changes per
// store, default 100; 0 skips that part), BENCH_KEEP=1 keeps the temp dir.
//
// Processes (this one file plays three roles, chosen by argv[2]):
//   main       echo upstream + orchestration (idle while a phase runs, apart from the upstream)
//   --gateway  one Gateway per config, each in its own process; started from dist/; answers calls
//              from main over IPC (cpu, limiter state, setActive)
//   --load     autocannon (programmatic), one child per phase: warmup run, then the measured run
//   redis-server (when installed): private, on a free loopback port, no persistence; never 6379
//   keygate serve  the real binary (bin/keygate.js) with `workers: auto`: its primary is our child, its workers
//              the primary's; the key is made beforehand with `keygate keys create … --json`; stopped with SIGTERM
// The load generator never shares an event loop or process with the gateway or the upstream.

import { fork, spawn, spawnSync } from 'node:child_process';
import { createReadStream, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SELF = fileURLToPath(import.meta.url);
const KEYGATE_BIN = path.join(path.dirname(path.dirname(SELF)), 'bin', 'keygate.js');
const role = process.argv[2];
/** Per-key limit of the bench keys (and keys.rate_limit.max of the bench configs): no request is ever limited. */
const NO_LIMIT = 100_000_000;

if (role === '--gateway') await gatewayChild(process.argv[3], JSON.parse(process.argv[4] ?? '{}'));
else if (role === '--load') await loadChild(JSON.parse(process.argv[3]));
else await main();

// ============================================================================ gateway child

async function gatewayChild(configFile, opts) {
  const { loadConfig } = await import('../dist/config/load.js');
  const { Gateway } = await import('../dist/server.js');
  const config = loadConfig(configFile, process.env);
  const gw = await Gateway.start({ config, port: 0 }); // logger from config.log: the real path
  // opts.key: create the bench key here (null for a second instance that shares another's key store)
  const created = opts.key === null ? null : await gw.keys.create({ name: opts.key?.name ?? 'bench', role: 'operator', scopes: ['agents', 'workflows'], rateLimit: NO_LIMIT }, 'bench');
  let closing;
  const shutdown = () => {
    closing ??= gw.close(2_000).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  // A tiny control channel for main: {type: 'call', id, op, args} → {type: 'reply', id, ok, value | error}
  const ops = {
    cpu: () => process.cpuUsage(),
    limiter: () => gw.limiterState,
    setActive: async ({ id, active }) => {
      const t0 = performance.now();
      await gw.keys.setActive(id, active, 'bench');
      return { ms: performance.now() - t0 };
    },
  };
  process.on('message', (m) => {
    if (m?.type === 'call') {
      Promise.resolve()
        .then(() => ops[m.op](m.args))
        .then(
          (value) => process.send({ type: 'reply', id: m.id, ok: true, value }),
          (err) => process.send({ type: 'reply', id: m.id, ok: false, error: String(err?.stack ?? err) }),
        );
    } else if (m?.type === 'close') shutdown();
  });
  process.on('disconnect', shutdown); // the parent went away: never linger
  process.send({ type: 'ready', url: gw.url, secret: created?.secret, keyId: created?.key.id, pid: process.pid });
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

/** Lines of a log file, and how many of them are access-log entries ("msg":"request"); -1 if unreadable. */
function countLog(file) {
  return new Promise((resolve) => {
    let lines = 0;
    let requests = 0;
    let tail = '';
    createReadStream(file, 'utf8')
      .on('data', (chunk) => {
        const parts = (tail + chunk).split('\n');
        tail = parts.pop();
        for (const l of parts) {
          lines++;
          if (l.includes('"msg":"request"')) requests++;
        }
      })
      .on('end', () => {
        if (tail !== '') {
          lines++;
          if (tail.includes('"msg":"request"')) requests++;
        }
        resolve({ lines, requests });
      })
      .on('error', () => resolve({ lines: -1, requests: -1 }));
  });
}

function configYaml({ upstreamUrl, keys, rateLimits, log, accessLog, workers }) {
  // The Dagu routes of gateway.example.yaml, every upstream pointed at the echo server.
  // keys.rate_limit.max is raised so the bench key can be given a limit no load reaches.
  return `# generated by bench/proxy.js
${workers === undefined ? '' : `workers: ${workers}\n`}listen:
  host: 127.0.0.1
  port: 0
admin:
  host: 127.0.0.1
  port: 0
store:
  keys: ${keys}
  rate_limits: ${rateLimits}
keys:
  prefix: dg_
  rate_limit:
    max: ${NO_LIMIT}
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

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** CPU time of another process (µs, like process.cpuUsage()), from /proc; null where there is none. */
function procCpu(pid) {
  try {
    // kept on the function: a module-level const/let would not be initialised yet (main() runs from a top-level await above)
    const clkTck = (procCpu.clkTck ??= Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100);
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // fields from 3 (state) on
    return { user: (Number(f[11]) * 1e6) / clkTck, system: (Number(f[12]) * 1e6) / clkTck };
  } catch {
    return null;
  }
}

async function main() {
  const DURATION = envNumber('BENCH_DURATION', 10, { min: 1 });
  const WARMUP = envNumber('BENCH_WARMUP', 2, { min: 0 });
  const CONNECTIONS = envNumber('BENCH_CONNECTIONS', 50, { min: 1, int: true });
  const ROUNDS = envNumber('BENCH_ROUNDS', 1, { min: 1, int: true });
  const REVOCATIONS = envNumber('BENCH_REVOCATIONS', 100, { min: 0, int: true });
  const KEEP = process.env.BENCH_KEEP === '1';
  const TARGET = '/api/v1/dags/bench.yaml'; // route: GET /api/v1/dags/{fileName}, key required, role operator
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
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'keygate-bench-'));
  let upstream;
  let redis; // { url, port, pid, stop() } of the private redis-server, when installed
  let redisClient; // main's own connection to it: INFO only
  let cleaned = false;
  /** pids of processes our children started (the keygate primary's workers): killed before their parent at cleanup */
  const grandchildren = new Map(); // pid → parent pid
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
    await upstream?.close();
    if (!KEEP) rmSync(tmp, { recursive: true, force: true });
  };

  // Never unbounded: a hard deadline for the whole run.
  const phasesCount = 1 + 5 * ROUNDS;
  const budgetS = phasesCount * (WARMUP + DURATION + 30) + 90 + 60 + 2 * (REVOCATIONS * 1.2 + 60);
  const watchdog = setTimeout(() => {
    console.error(`\nbench: watchdog: still running after ${Math.round(budgetS)} s; killing children and exiting`);
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

    if (REDIS_BIN) {
      redis = await startRedisServer(REDIS_BIN);
      const { Redis } = await import('ioredis');
      redisClient = new Redis(`${redis.url}/0`, { lazyConnect: true, maxRetriesPerRequest: 1, enableOfflineQueue: false });
      redisClient.on('error', () => {});
      await redisClient.connect();
    }

    // Redis databases of the private server: 0 the gateway-redis limiter; 1, 2 the Redis pair's keys
    // and limits; 3 the limits of the SQLite pair.
    const variants = {
      log: { keys: `sqlite:${path.join(tmp, 'keys-log.db')}`, rateLimits: 'memory', log: path.join(tmp, 'access.log'), accessLog: true },
      nolog: { keys: `sqlite:${path.join(tmp, 'keys-nolog.db')}`, rateLimits: 'memory', log: path.join(tmp, 'nolog.log'), accessLog: false },
      ...(redis ? { redis: { keys: `sqlite:${path.join(tmp, 'keys-redis.db')}`, rateLimits: `${redis.url}/0`, log: path.join(tmp, 'access-redis.log'), accessLog: true } } : {}),
    };
    const gateways = {};
    for (const [name, v] of Object.entries(variants)) {
      const file = path.join(tmp, `gateway-${name}.yaml`);
      writeFileSync(file, configYaml({ upstreamUrl: upstream.url, ...v }));
      gateways[name] = await startGatewayChild(file);
    }
    // gateway-workers: the real binary, `workers: auto`, access log on to a file, rate limits in memory (kept in the primary)
    const WORKERS = os.availableParallelism();
    const workersVariant = { keys: `sqlite:${path.join(tmp, 'keys-workers.db')}`, rateLimits: 'memory', log: path.join(tmp, 'access-workers.log'), accessLog: true, workers: 'auto' };
    {
      const file = path.join(tmp, 'gateway-workers.yaml');
      writeFileSync(file, configYaml({ upstreamUrl: upstream.url, ...workersVariant }));
      gateways.workers = await startClusterGateway(file, workersVariant.log, WORKERS);
    }

    const idle0 = os.cpus().reduce((s, c) => s + c.times.user + c.times.nice + c.times.sys + c.times.irq, 0);
    await new Promise((r) => setTimeout(r, 1000));
    const busyBefore = Math.round((os.cpus().reduce((s, c) => s + c.times.user + c.times.nice + c.times.sys + c.times.irq, 0) - idle0) / 10);
    console.log('Keygate proxy benchmark');
    console.log(
      `  node ${process.version}, ${os.cpus().length} CPUs (${os.cpus()[0]?.model.trim()}), load: autocannon ${await autocannonVersion()}, ` +
        `${CONNECTIONS} connections, ${WARMUP} s warmup + ${DURATION} s measured per phase, rounds ${ROUNDS}`,
    );
    console.log(
      `  processes: load generator (one child per phase) | ${Object.entries(gateways)
        .map(([n, g]) => (g.workerPids ? `gateway-${n}: keygate serve primary pid ${g.pid} + ${g.workerPids.length} workers (pids ${g.workerPids.join(', ')}), all on ${g.url}` : `gateway-${n} child pid ${g.pid}`))
        .join(' | ')} | ` +
        `echo upstream in the bench process pid ${process.pid}` +
        (redis ? ` | redis-server ${await redisVersion(REDIS_BIN)} pid ${redis.pid}, 127.0.0.1:${redis.port}` : ''),
    );
    if (!redis) console.log(`  gateway-redis and the Redis revocation pair: ${REDIS_SKIPPED}`);
    console.log(`  machine busy before the run (1 s, all processes): ${busyBefore}% of one core${busyBefore >= 15 ? '  <- not quiet' : ''}`);
    console.log(`  target: GET ${TARGET} (route GET /api/v1/dags/{fileName}: key required, role operator; key role operator, X-API-Key)`);
    console.log(`  bench keys: rate limit ${NO_LIMIT}/min (keys.rate_limit.max raised to that in the bench configs), so no request is limited`);
    console.log(`  temp dir: ${tmp}${KEEP ? ' (kept)' : ' (removed at exit)'}; access logs: ${variants.log.log}${redis ? `, ${variants.redis.log}` : ''}, ${workersVariant.log}`);
    console.log(
      `  gateway-workers: \`node bin/keygate.js serve -c gateway-workers.yaml\` with \`workers: auto\` (= availableParallelism() = ${WORKERS}); ` +
        `key made beforehand with \`keygate keys create --rate-limit ${NO_LIMIT} --json\`; per-key rate limits counted in the primary over IPC`,
    );

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
      check(withKey.headers['x-ratelimit-limit'] === String(NO_LIMIT), `gateway-${name}: x-ratelimit-limit ${withKey.headers['x-ratelimit-limit']} (want ${NO_LIMIT}), remaining ${withKey.headers['x-ratelimit-remaining']}`);
    }
    {
      const w = gateways.workers;
      check(w.workerPids.length === WORKERS && w.listenUrls.every((u) => u === w.url), `gateway-workers: ${w.workerPids.length} workers (want ${WORKERS}) logged "keygate listening", all on ${w.url} (${w.listenUrls.join(', ')})`);
    }
    if (redis) {
      const st = await gateways.redis.call('limiter');
      const counters = await redisClient.dbsize();
      check(!st.degraded && st.storeErrors === 0 && counters > 0, `gateway-redis: limiter on Redis (degraded ${st.degraded}, store errors ${st.storeErrors}), ${counters} counter key(s) in Redis db 0`);
    }
    if (checks.includes(false)) throw new Error('correctness checks failed; not measuring');

    // ---- phases, interleaved
    const gwPhases = ['gateway', 'gateway-nolog', ...(redis ? ['gateway-redis'] : []), 'gateway-workers'];
    const plan = ['baseline'];
    for (let r = 0; r < ROUNDS; r++) plan.push(...(r % 2 === 0 ? gwPhases : [...gwPhases].reverse()), 'baseline');
    const gwOf = { gateway: 'log', 'gateway-nolog': 'nolog', 'gateway-redis': 'redis', 'gateway-workers': 'workers' };
    const targetOf = (phase) => {
      if (phase === 'baseline') return { url: upstream.url + TARGET.replace('/api/v1', ''), headers: {}, gw: null };
      const g = gateways[gwOf[phase]];
      return { url: g.url + TARGET, headers: { 'x-api-key': g.secret }, gw: gwOf[phase] };
    };
    const results = Object.fromEntries(['baseline', ...gwPhases].map((p) => [p, []]));
    console.log('\nPhases (cpu = % of one core during the measured run)');
    if (!redis) console.log(`   -. gateway-redis  ${REDIS_SKIPPED}`);
    for (const [i, phase] of plan.entries()) {
      const t = targetOf(phase);
      const r = await runPhase(t, gateways, phase === 'gateway-redis');
      results[phase].push(r);
      const gwCpu = t.gw ? r.cpu.gw[t.gw] : null;
      const parts = t.gw ? r.cpu.gwParts[t.gw] : null; // gateway-workers: primary and each worker
      console.log(
        `  ${String(i + 1).padStart(2)}. ${phase.padEnd(15)} ${fmt(r.rps, 0).padStart(7)} req/s  p50 ${fmt(r.p50, 2)} ms  p99 ${fmt(r.p99, 2)} ms  ` +
          `errors/non-2xx ${r.errors}/${r.non2xx}${r.timeouts ? ` (timeouts ${r.timeouts})` : ''}${r.non2xx ? ` (status codes ${JSON.stringify(r.statusCodes)})` : ''}  ${Math.round(r.bytesPerResponse)} B/resp  ` +
          `cpu: load ${r.cpu.load}%, gateway ${gwCpu ?? '-'}%${parts ? ` (primary ${parts.primary ?? 'n/a'}%, workers ${parts.workers.map((x) => `${x ?? 'n/a'}%`).join(' + ')})` : ''}, upstream ${r.cpu.upstream}%${phase === 'gateway-redis' ? `, redis-server ${r.cpu.redis ?? 'n/a'}%` : ''}, other processes ${r.cpu.other}%`,
      );
      if (parts) r.parts = parts;
      r.usPerReq = {
        gateway: gwCpu === null ? null : perReq(gwCpu, r.rps),
        upstream: perReq(r.cpu.upstream, r.rps),
        load: perReq(r.cpu.load, r.rps),
        redis: phase === 'gateway-redis' && r.cpu.redis !== null ? perReq(r.cpu.redis, r.rps) : null,
      };
      console.log(
        `      cpu per request: ${t.gw ? `gateway ${r.usPerReq.gateway} µs, ` : ''}${r.usPerReq.redis !== null ? `redis-server ${r.usPerReq.redis} µs, ` : ''}upstream ${r.usPerReq.upstream} µs, load generator ${r.usPerReq.load} µs` +
          (phase === 'gateway-redis' ? `; redis ${fmt(r.redisCmds / r.completedAll, 2)} commands/request; limiter degraded ${r.limiter.degraded}, switches ${r.limiter.switches}, store errors ${r.limiter.storeErrors}` : ''),
      );
    }

    // ---- close gateways (flushes the access logs), then look at them
    await Promise.all(Object.values(gateways).map((g) => g.close()));
    const workersExit = gateways.workers.exit; // { code, signal, ms } of the keygate primary after SIGTERM
    const logged = { gateway: variants.log.log, ...(redis ? { 'gateway-redis': variants.redis.log } : {}), 'gateway-workers': workersVariant.log };
    const logs = {};
    for (const [phase, file] of Object.entries(logged)) {
      logs[phase] = {
        ...(await countLog(file)),
        bytes: statSync(file, { throwIfNoEntry: false })?.size ?? 0,
        sent: results[phase].reduce((s, r) => s + r.completed, 0),
        warm: results[phase].reduce((s, r) => s + r.warmupCompleted, 0),
      };
    }
    const nolog = await countLog(variants.nolog.log);

    // ---- revocation delay across two instances
    const revocation = await runRevocation();

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
      redisUsPerReq: rs[0].usPerReq.redis === null ? null : Math.round(mean(rs.map((r) => r.usPerReq.redis))),
      redisCmdsPerReq: rs[0].redisCmds === undefined ? null : rs.reduce((s, r) => s + r.redisCmds, 0) / rs.reduce((s, r) => s + r.completedAll, 0),
    });
    const A = Object.fromEntries(Object.entries(results).map(([name, rs]) => [name, agg(rs)]));
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
      ...(redis ? [] : [['gateway-redis', REDIS_SKIPPED, '', '', '', '', '', '']]),
    ];
    const widths = rows[0].map((_, c) => Math.max(...rows.filter((r) => r[2] !== '').map((r) => r[c].length)));
    for (const [i, r] of rows.entries()) {
      console.log('  ' + (r[2] === '' ? `${r[0].padEnd(widths[0])}  ${r[1]}` : r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ')));
      if (i === 0) console.log('  ' + widths.map((w) => '-'.repeat(w)).join('  '));
    }
    const logCost = 1 - ratio(A.gateway.rps, A['gateway-nolog'].rps);
    console.log(
      `  CPU per request: upstream ${base.upUsPerReq} µs; gateway ${A.gateway.gwUsPerReq} µs with access log, ${A['gateway-nolog'].gwUsPerReq} µs without ` +
        `(×${fmt(ratio(A.gateway.gwUsPerReq, base.upUsPerReq), 2)} / ×${fmt(ratio(A['gateway-nolog'].gwUsPerReq, base.upUsPerReq), 2)} the upstream's own cost)`,
    );
    console.log(`  access log: costs ${fmt(logCost * 100, 1)}% throughput (gateway vs gateway-nolog); p50 ×${fmt(ratio(A.gateway.p50, A['gateway-nolog'].p50), 2)}, p99 ×${fmt(ratio(A.gateway.p99, A['gateway-nolog'].p99), 2)}; gateway CPU per request ${signed((ratio(A.gateway.gwUsPerReq, A['gateway-nolog'].gwUsPerReq) - 1) * 100, 1)}%`);
    const R = A['gateway-redis'];
    if (R) {
      console.log(
        `  Redis rate limits (gateway-redis vs gateway, both with access log): rps ×${fmt(ratio(R.rps, A.gateway.rps), 2)}, p50 ×${fmt(ratio(R.p50, A.gateway.p50), 2)}, p99 ×${fmt(ratio(R.p99, A.gateway.p99), 2)}; ` +
          `gateway CPU per request ${signed((ratio(R.gwUsPerReq, A.gateway.gwUsPerReq) - 1) * 100, 1)}% (${R.gwUsPerReq} vs ${A.gateway.gwUsPerReq} µs), plus redis-server ${R.redisUsPerReq} µs; ` +
          `${fmt(R.redisCmdsPerReq, 2)} redis commands/request; non-2xx ${R.non2xx}${R.non2xx === 0 ? ' (no request limited)' : '  <- REQUESTS REFUSED'}`,
      );
    } else console.log(`  Redis rate limits: ${REDIS_SKIPPED}`);
    const W = A['gateway-workers'];
    const wParts = results['gateway-workers'].map((r) => r.parts).filter(Boolean);
    const meanPct = (xs) => (xs.length && xs.every((x) => x !== null) ? Math.round(mean(xs)) : null);
    const wPrimaryPct = meanPct(wParts.map((p) => p.primary));
    const wWorkersPct = wParts.length ? wParts[0].workers.map((_, i) => meanPct(wParts.map((p) => p.workers[i]))) : [];
    const wTotalPct = meanPct(results['gateway-workers'].map((r) => r.cpu.gw.workers));
    console.log(
      `  workers (gateway-workers: \`keygate serve\`, workers: auto = ${WORKERS}, vs gateway: 1 process, both with access log): rps ×${fmt(ratio(W.rps, A.gateway.rps), 2)}, ` +
        `p50 ×${fmt(ratio(W.p50, A.gateway.p50), 2)}, p99 ×${fmt(ratio(W.p99, A.gateway.p99), 2)}; vs baseline rps ×${fmt(ratio(W.rps, base.rps), 2)}, p50 ×${fmt(ratio(W.p50, base.p50), 2)}, p99 ×${fmt(ratio(W.p99, base.p99), 2)}; ` +
        `non-2xx ${W.non2xx}, errors ${W.errors}${W.non2xx === 0 && W.errors === 0 ? ' (no request limited or failed)' : '  <- REQUESTS REFUSED OR FAILED'}`,
    );
    console.log(
      `      cpu (% of one core, /proc of the primary and its workers): ${wTotalPct ?? 'n/a'}% in all = primary ${wPrimaryPct ?? 'n/a'}% + workers ${wWorkersPct.map((x) => `${x ?? 'n/a'}%`).join(' + ')}; ` +
        `${W.gwUsPerReq ?? 'n/a'} µs per request (gateway: ${A.gateway.gwUsPerReq} µs); stopped with SIGTERM: exit ${workersExit.code ?? workersExit.signal} after ${fmt(workersExit.ms, 0)} ms` +
        (workersExit.code === 0 ? ' (every worker drained)' : '  <- DID NOT EXIT 0'),
    );
    console.log(
      `      on this ${os.cpus().length}-core machine the load generator and the echo upstream compete with the ${WORKERS} workers for the same cores ` +
        `(the primary also keeps the shared rate-limit counters, asked over IPC): this ratio understates what more cores give a gateway with workers`,
    );
    if (W.non2xx !== 0 || workersExit.code !== 0) process.exitCode = 1; // a check, not only a number
    const all = Object.values(results).flat();
    const otherMax = Math.max(...all.map((r) => r.cpu.other));
    if (otherMax >= 15) {
      console.log(`  WARNING: other processes on this machine used up to ${otherMax}% of a core during a measured phase: numbers are disturbed; rerun on a quiet machine`);
    }
    // + the 401 and 200 of the correctness check. autocannon stops with up to one request in flight per
    // connection at the end of each warmup and measured run: those reach the gateway (and its log) uncounted.
    for (const [phase, l] of Object.entries(logs)) {
      const expected = l.sent + l.warm + 2;
      const slack = 2 * CONNECTIONS * results[phase].length;
      const extra = l.requests - expected;
      console.log(
        `  access log of ${phase}: ${l.requests} request lines (+${l.lines - l.requests} other log lines, e.g. the audit record of the key's creation), ${fmt(l.bytes / 1e6, 1)} MB; completed requests ${expected} (${l.sent} measured + ${l.warm} warmup + 2 checks)` +
          (extra >= 0 && extra <= slack ? `, +${extra} in flight when autocannon stopped (ok, ≤ ${slack})` : `  <- MISMATCH: ${extra} lines off (at most +${slack} expected)`) +
          (phase === 'gateway' ? `; no-log gateway wrote ${nolog.requests} request lines (${nolog.lines} in all)` : ''),
      );
    }
    const revLine = (name, x) =>
      typeof x === 'string'
        ? `  revocation, ${name}: ${x}`
        : `  revocation, ${name}: median ${fmt(x.median, 2)} ms, p90 ${fmt(x.p90, 2)} ms, max ${fmt(x.max, 2)} ms over ${x.toggles} changes${x.timeouts ? ` (${x.timeouts} not seen within 1 s)` : ''}`;
    if (revocation) {
      console.log(revLine('keys in Redis (pub/sub)   ', revocation.redis));
      console.log(revLine('keys in one SQLite file   ', revocation.sqlite));
    }

    const revJson = (x) =>
      x === undefined ? null : typeof x === 'string' ? x : {
        toggles: x.toggles, timeouts: x.timeouts, median_ms: round(x.median, 2), p90_ms: round(x.p90, 2), max_ms: round(x.max, 2),
        set_active_median_ms: round(x.setActiveMedian, 2), poll_rtt_median_ms: round(x.pollRttMedian, 2), poll_interval_mean_ms: round(x.pollIntervalMean, 2),
      };
    /** `<prefix>_rps`, `_p50`, `_p99`: a phase's numbers over a reference phase's, for the JSON line */
    const ratios = (prefix, x, ref) => ({
      [`${prefix}_rps`]: round(ratio(x.rps, ref.rps), 3),
      [`${prefix}_p50`]: round(ratio(x.p50, ref.p50), 3),
      [`${prefix}_p99`]: round(ratio(x.p99, ref.p99), 3),
    });
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
            ...(a.redisUsPerReq === null ? {} : { redis_server_cpu_us_per_req: a.redisUsPerReq, redis_commands_per_req: round(a.redisCmdsPerReq, 2) }),
            upstream_cpu_us_per_req: a.upUsPerReq,
          },
        ]),
      ),
      ...(R ? {} : { gateway_redis: REDIS_SKIPPED }),
      workers: { count: WORKERS, cpu_pct: wTotalPct, primary_cpu_pct: wPrimaryPct, worker_cpu_pct: wWorkersPct, exit_code: workersExit.code, stop_ms: round(workersExit.ms, 0) },
      ratio: {
        ...ratios('gateway', A.gateway, base),
        ...ratios('nolog', A['gateway-nolog'], base),
        log_cost_rps: round(logCost, 3),
        log_cost_cpu_per_req: round(ratio(A.gateway.gwUsPerReq, A['gateway-nolog'].gwUsPerReq) - 1, 3),
        ...ratios('workers', W, base),
        ...ratios('workers_vs_gateway', W, A.gateway),
        ...(R
          ? {
              ...ratios('redis', R, base),
              ...ratios('redis_vs_gateway', R, A.gateway),
              redis_vs_gateway_cpu_per_req: round(ratio(R.gwUsPerReq, A.gateway.gwUsPerReq) - 1, 3),
            }
          : {}),
      },
      revocation: revocation ? { redis: revJson(revocation.redis), sqlite: revJson(revocation.sqlite) } : 'skipped: BENCH_REVOCATIONS=0',
    };
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
          writeFileSync(file, configYaml({ upstreamUrl: upstream.url, keys: p.keys, rateLimits: p.rateLimits, log: path.join(tmp, `revocation-${name}-${who}.log`), accessLog: false }));
          return file;
        });
        const a = await startGatewayChild(files[0], { key: { name: `revoke-${name}` } });
        started.push(a);
        const b = await startGatewayChild(files[1], { key: null }); // B only uses the key A made
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

  async function runPhase(t, gateways, withRedis) {
    const child = fork(SELF, ['--load', JSON.stringify({ url: t.url, headers: t.headers, connections: CONNECTIONS, duration: DURATION, warmup: WARMUP })], {
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
        upstream: pct(b.self, after.self),
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
      const ours = cpu.load + cpu.upstream + Object.values(cpu.gw).reduce((s, x) => s + (x ?? 0), 0) + (cpu.redis ?? 0);
      cpu.other = Math.max(0, machinePct - ours);
      const extra = {};
      if (withRedis) {
        // Redis commands during the measured run, per request completed in it; main's INFO calls are 2 of them.
        const [c0, c1] = [await cmdsBefore, await redisCommands()];
        extra.redisCmds = c1 - c0;
        extra.completedAll = result.completed;
        extra.limiter = await gateways.redis.call('limiter');
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
    const names = Object.keys(gateways);
    const usages = await Promise.all(names.map((n) => (gateways[n].closed ? null : gateways[n].call('cpu'))));
    return { wall, self, machine, redis: redisCpu, gws: Object.fromEntries(names.map((n, i) => [n, usages[i]])) };
  }

  /** A private redis-server on a free loopback port, no persistence (as test/redis.ts does). */
  async function startRedisServer(bin) {
    let port = await freePort();
    if (port === 6379) port = await freePort(); // never the machine's usual Redis port
    const { child, output } = spawnTracked(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server did not start within 10 s: ${output()}`)), 10_000);
      const onData = () => {
        if (output().includes('Ready to accept connections')) {
          clearTimeout(timer);
          child.stdout.off('data', onData);
          child.off('exit', onExit);
          resolve();
        }
      };
      const onExit = (code, sig) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited (${code ?? sig}) before it was ready: ${output()}`));
      };
      child.stdout.on('data', onData);
      child.once('exit', onExit);
    });
    return {
      url: `redis://127.0.0.1:${port}`,
      port,
      pid: child.pid,
      stop: () =>
        new Promise((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve(children.delete(child));
          const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
          child.once('exit', () => {
            clearTimeout(t);
            children.delete(child);
            resolve();
          });
          child.kill('SIGTERM');
        }),
    };
  }

  /**
   * gateway-workers: the key made with `keygate keys create … --json`, then `node bin/keygate.js serve -c FILE`
   * (the config says `workers: auto`), our child being the primary; ready once `want` workers have logged
   * "keygate listening" (to the log file). Same shape as startGatewayChild's result: url, secret, keyId, pid,
   * call('cpu') (summed /proc CPU of the primary and its workers, with the parts), close() (SIGTERM, wait for exit).
   */
  async function startClusterGateway(configFile, logFile, want) {
    const made = spawnSync(
      process.execPath,
      [KEYGATE_BIN, 'keys', 'create', '-c', configFile, '--name', 'bench-workers', '--role', 'operator', '--scopes', 'agents,workflows', '--rate-limit', String(NO_LIMIT), '--json'],
      { encoding: 'utf8', timeout: 30_000 },
    );
    let created;
    try {
      created = JSON.parse(made.stdout);
    } catch {
      throw new Error(`keygate keys create failed (exit ${made.status ?? made.signal}${made.error ? `, ${made.error.message}` : ''}): ${made.stdout}${made.stderr}`);
    }
    if (made.status !== 0 || !created?.key || !created?.apiKey?.id) throw new Error(`keygate keys create: exit ${made.status}, ${made.stdout}${made.stderr}`);

    const { child, output } = spawnTracked(process.execPath, [KEYGATE_BIN, 'serve', '-c', configFile]);
    let exit = null;
    const exited = new Promise((resolve) =>
      child.once('exit', (code, signal) => {
        exit = { code, signal };
        children.delete(child);
        resolve();
      }),
    );

    // the workers log "keygate listening" (with their pid and url) to the log file; poll it
    const listening = new Map(); // worker pid → url
    const t0 = performance.now();
    while (listening.size < want) {
      if (exit) throw new Error(`keygate serve exited (${exit.code ?? exit.signal}) before ${want} workers listened: ${output()}`);
      if (performance.now() - t0 > 30_000) throw new Error(`keygate serve: ${listening.size} of ${want} workers listening after 30 s: ${output()}`);
      await new Promise((r) => setTimeout(r, 50));
      let text = '';
      try {
        text = readFileSync(logFile, 'utf8');
      } catch {}
      for (const line of text.split('\n')) {
        if (!line.includes('"keygate listening"')) continue;
        try {
          const j = JSON.parse(line);
          if (j.pid !== child.pid) listening.set(j.pid, j.url);
        } catch {}
      }
    }
    const workerPids = [...listening.keys()];
    for (const pid of workerPids) grandchildren.set(pid, child.pid);
    const g = {
      pid: child.pid,
      workerPids,
      listenUrls: [...listening.values()],
      url: listening.get(workerPids[0]),
      secret: created.key,
      keyId: created.apiKey.id,
      closed: false,
      exit: null,
      call: async (op) => {
        if (op !== 'cpu') throw new Error(`gateway-workers: no ${op} (not an IPC child)`);
        const primary = procCpu(child.pid);
        const workers = workerPids.map((pid) => (procPpid(pid) === child.pid ? procCpu(pid) : null)); // null: gone (restarted?)
        if (!primary || workers.includes(null)) return null;
        const all = [primary, ...workers];
        return { user: all.reduce((s, c) => s + c.user, 0), system: all.reduce((s, c) => s + c.system, 0), parts: { primary, workers } };
      },
      close: async () => {
        if (g.closed) return;
        g.closed = true;
        const t = performance.now();
        if (!exit) {
          const kill = setTimeout(() => {
            for (const pid of workerPids) {
              if (procPpid(pid) === child.pid) {
                try {
                  process.kill(pid, 'SIGKILL');
                } catch {}
              }
            }
            child.kill('SIGKILL');
          }, 15_000);
          child.kill('SIGTERM'); // the primary drains every worker, then exits 0
          await exited;
          clearTimeout(kill);
        }
        g.exit = { ...exit, ms: performance.now() - t };
        for (const pid of workerPids) grandchildren.delete(pid);
      },
    };
    return g;
  }

  function startGatewayChild(configFile, opts = {}) {
    const child = fork(SELF, ['--gateway', configFile, JSON.stringify(opts)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    children.add(child);
    let nextId = 0;
    const pending = new Map();
    child.on('message', (m) => {
      if (m?.type === 'reply') {
        const p = pending.get(m.id);
        pending.delete(m.id);
        if (p) m.ok ? p.resolve(m.value) : p.reject(new Error(`gateway child: ${m.error}`));
      }
    });
    child.on('exit', () => {
      for (const p of pending.values()) p.reject(new Error('gateway child exited'));
      pending.clear();
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
          /** ask the child: cpu, limiter, setActive {id, active} */
          call: (op, args, timeoutMs = 5_000) =>
            new Promise((res, rej) => {
              const id = nextId++;
              const timer = setTimeout(() => pending.has(id) && (pending.delete(id), rej(new Error(`gateway child did not answer ${op} within ${timeoutMs} ms`))), timeoutMs);
              timer.unref();
              pending.set(id, {
                resolve: (v) => (clearTimeout(timer), res(v)),
                reject: (e) => (clearTimeout(timer), rej(e)),
              });
              child.send({ type: 'call', id, op, args });
            }),
          close: () =>
            new Promise((res) => {
              if (child.exitCode !== null || child.signalCode !== null) {
                children.delete(child);
                return res();
              }
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

/** Parent pid of a process, from /proc; null where there is none. */
function procPpid(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return null;
  }
}

async function redisVersion(bin) {
  return /v=(\S+)/.exec(spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout ?? '')?.[1] ?? '?';
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
