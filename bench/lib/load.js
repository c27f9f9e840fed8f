// The load generator, one child process per phase (forked by proxy.js with the phase's target as
// JSON): autocannon, programmatic; an untimed warm-up run, then the measured run, with our own
// 10 µs latency histogram (autocannon's has 1 ms). Never in a process with a gateway or upstream.

await loadChild(JSON.parse(process.argv[2]));

async function loadChild(opts) {
  const { default: autocannon } = await import('autocannon');
  const run = (duration, record) =>
    new Promise((resolve, reject) => {
      const inst = autocannon(
        // opts.rate: paced (requests per second over all connections) instead of as fast as possible
        { url: opts.url, method: 'GET', headers: opts.headers, connections: opts.connections, duration, timeout: 10, ...(opts.rate ? { overallRate: opts.rate } : {}) },
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
      acMax: res.latency.max,
      cpuMs: (cpu.user + cpu.system) / 1000,
    },
  });
  process.disconnect();
}
