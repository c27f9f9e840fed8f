// workers: N — one budget per key across worker processes, reload and shutdown reach every worker.

import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { startEchoUpstream } from '../src/demo/echo-upstream.js';
import { BIN, CHILD_ENV, spawnKeygate } from './binary.js';

t.test('two workers: shared rate limit, both serve, SIGHUP and SIGTERM reach each', async (t) => {
  const dir = t.testdir();
  const echo = await startEchoUpstream({ name: 'up' });
  t.teardown(() => echo.close());
  const cfg = join(dir, 'gw.yaml');
  const yaml = (extra = '') =>
    `workers: 2\nlisten: { host: 127.0.0.1, port: 0 }\nadmin: { port: 0 }\nstore: { keys: "sqlite:./k.db" }\nupstreams: [{ name: up, api_base_url: "${echo.url}" }]\nroutes:\n  - { name: x, path: /x, upstream: up, role: viewer }\n${extra}`;
  writeFileSync(cfg, yaml());
  const created = JSON.parse(execFileSync(process.execPath, [BIN, 'keys', 'create', '-c', cfg, '--name', 'w', '--rate-limit', '10', '--json'], { env: CHILD_ENV, encoding: 'utf8' }));
  const secret: string = created.key;

  const gw = spawnKeygate(t, ['serve', '-c', cfg]);
  const { lines } = gw;
  t.ok(await gw.waitFor(/"msg":"keygate listening"/, 2), 'two workers listening');
  const listening = lines().filter((l) => l.msg === 'keygate listening');
  t.not(listening[0].pid, listening[1].pid, 'in two processes');
  t.equal(listening[0].url, listening[1].url, 'on one shared port');
  const url: string = listening[0].url;

  const statuses: number[] = [];
  for (let i = 0; i < 30; i++) {
    // a new connection each time, so the primary hands them to both workers
    const r = await request(`${url}/x`, { headers: { 'x-api-key': secret, connection: 'close' } });
    await r.body.dump();
    statuses.push(r.statusCode);
  }
  t.equal(statuses.filter((s) => s === 200).length, 10, 'exactly the key\'s 10 per minute, across both workers');
  t.equal(statuses.filter((s) => s === 429).length, 20);
  const servedBy = new Set(lines().filter((l) => l.msg === 'request').map((l) => l.pid));
  t.equal(servedBy.size, 2, 'both workers served requests');

  // /metrics answers for the whole cluster, whichever worker takes the scrape
  const adminUrl: string = listening[0].admin_url;
  const sample = (text: string, series: string) => {
    const line = text.split('\n').find((l) => l.startsWith(series + ' '));
    return line === undefined ? undefined : Number(line.slice(series.length + 1));
  };
  for (let i = 0; i < 6; i++) {
    const r = await request(`${adminUrl}/metrics`, { headers: { connection: 'close' } });
    const text = await r.body.text();
    t.equal(r.statusCode, 200, `scrape ${i} answered`);
    t.equal(sample(text, 'keygate_requests_total{route="x",status_class="2xx",decision="allowed"}'), 10, `scrape ${i}: allowed requests of both workers`);
    t.equal(sample(text, 'keygate_requests_total{route="x",status_class="4xx",decision="rate_limited"}'), 20, `scrape ${i}: refused requests of both workers`);
    t.equal(sample(text, 'keygate_workers'), 2, `scrape ${i}: two workers`);
    t.equal(sample(text, 'keygate_rate_limit_degraded'), 0, `scrape ${i}: a gauge is not summed`);
    t.equal(sample(text, 'keygate_request_duration_seconds_count{route="x"}'), 30, `scrape ${i}: histograms add up`);
  }

  // A worker that cannot answer makes the scrape fail (503 naming it) rather than report part of
  // the cluster: partial sums would look to Prometheus like counter resets.
  const [a, b] = listening.map((l) => l.pid as number);
  process.kill(a!, 'SIGSTOP');
  // two new connections: the primary hands them out round robin, so the one the stopped worker
  // does not take reaches the other worker, which asks the primary, which waits for the stopped one
  const scrapes = [0, 1].map(() =>
    request(`${adminUrl}/metrics`, { headers: { connection: 'close' } }).then(async (r) => ({ status: r.statusCode, body: await r.body.text() })),
  );
  try {
    const first = await Promise.race(scrapes);
    t.equal(first.status, 503, 'a scrape while a worker is stopped fails');
    t.match(JSON.parse(first.body), { code: 'metrics_unavailable', message: new RegExp(`worker\\(s\\) ${a} did not send`) }, 'naming the silent worker');
  } finally {
    process.kill(a!, 'SIGCONT');
  }
  const settled = await Promise.all(scrapes);
  t.ok(settled.every((s) => s.status === 200 || s.status === 503), 'the other scrape is answered once the worker runs again');

  // A worker that dies is replaced; the scrape counts the replacement and the restart.
  process.kill(b!, 'SIGKILL');
  t.ok(await gw.waitFor(/"msg":"keygate listening"/, 3), 'a replacement worker listening');
  for (let i = 0; i < 4; i++) {
    const r = await request(`${adminUrl}/metrics`, { headers: { connection: 'close' } });
    const text = await r.body.text();
    t.equal(r.statusCode, 200, `after the restart, scrape ${i} answered`);
    t.equal(sample(text, 'keygate_workers'), 2, `after the restart, scrape ${i}: two workers`);
    t.equal(sample(text, 'keygate_worker_restarts_total'), 1, `after the restart, scrape ${i}: one restart`);
  }

  writeFileSync(cfg, yaml('  - { path: /y, upstream: up, auth: none }\n'));
  gw.child.kill('SIGHUP');
  t.ok(await gw.waitFor(/"msg":"configuration reloaded"/, 2), 'both workers reloaded');
  let ok = 0;
  for (let i = 0; i < 6; i++) {
    const r = await request(`${url}/y`, { headers: { connection: 'close' } });
    await r.body.dump();
    if (r.statusCode === 200) ok++;
  }
  t.equal(ok, 6, 'the new route answers on every worker');

  gw.child.kill('SIGTERM');
  t.equal(await gw.exited, 0, 'the primary exits 0 once every worker drained');
  t.equal(lines().filter((l) => l.msg === 'shutting down: draining in-flight requests').length, 2, 'each worker drained');
  const shown = JSON.parse(execFileSync(process.execPath, [BIN, 'keys', 'show', '-c', cfg, 'w', '--json'], { env: CHILD_ENV, encoding: 'utf8' }));
  t.equal(shown.apiKey.requestCount, 10, 'usage from both workers adds up exactly');
  t.notOk(gw.output().includes(secret), 'no secret in any log');
});

t.test('two workers: bursts aimed across a bucket boundary of the primary\'s clock pass exactly the limit', async (t) => {
  const { BUCKET_MS } = await import('../src/limits/window.js');
  const dir = t.testdir();
  const echo = await startEchoUpstream({ name: 'up' });
  t.teardown(() => echo.close());
  const cfg = join(dir, 'gw.yaml');
  writeFileSync(cfg, `workers: 2\nlisten: { host: 127.0.0.1, port: 0 }\nadmin: { port: 0 }\nstore: { keys: "sqlite:./k.db" }\nupstreams: [{ name: up, api_base_url: "${echo.url}" }]\nroutes:\n  - { name: x, path: /x, upstream: up, role: viewer }\n`);
  const create = (name: string): string =>
    JSON.parse(execFileSync(process.execPath, [BIN, 'keys', 'create', '-c', cfg, '--name', name, '--rate-limit', '100', '--json'], { env: CHILD_ENV, encoding: 'utf8' })).key;
  const gw = spawnKeygate(t, ['serve', '-c', cfg]);
  t.ok(await gw.waitFor(/"msg":"keygate listening"/, 2), 'two workers listening');
  const url: string = gw.lines().find((l) => l.msg === 'keygate listening')!.url;

  const counts: Array<{ ok: number; limited: number; other: number }> = [];
  let straddled = 0;
  for (let round = 0; straddled < 1 && round < 4; round++) {
    const secrets = [0, 1, 2, 3].map((k) => create(`burst-${round}-${k}`));
    // 150 requests per key over the 0.3 s around the next boundary, each on a new connection (the
    // primary hands connections to the workers in turn); the keys' limit is 100 per minute
    let boundary = Math.ceil(Date.now() / BUCKET_MS) * BUCKET_MS;
    if (boundary - Date.now() < 400) boundary += BUCKET_MS;
    const pending: Array<Promise<number>[]> = secrets.map(() => []);
    let first = 0;
    let last = 0;
    for (let tick = 0; tick < 30; tick++) {
      await new Promise((r) => setTimeout(r, Math.max(0, boundary - 150 + tick * 10 - Date.now())));
      last = Date.now();
      if (tick === 0) first = last;
      secrets.forEach((secret, k) => {
        for (let i = 0; i < 5; i++) {
          pending[k]!.push(request(`${url}/x`, { headers: { 'x-api-key': secret, connection: 'close' } }).then(async (r) => (await r.body.dump(), r.statusCode)));
        }
      });
    }
    const statuses = await Promise.all(pending.map((p) => Promise.all(p)));
    if (!(first < boundary && last >= boundary)) continue; // a machine too loaded to aim: another round
    straddled++;
    for (const s of statuses) counts.push({ ok: s.filter((x) => x === 200).length, limited: s.filter((x) => x === 429).length, other: s.filter((x) => x !== 200 && x !== 429).length });
  }
  t.equal(straddled, 1, 'the bursts straddled a boundary');
  t.same(counts, counts.map(() => ({ ok: 100, limited: 50, other: 0 })), `each key: exactly 100 of 150 allowed, 50 refused (${counts.map((c) => c.ok).join(', ')} allowed)`);
  t.equal(new Set(gw.lines().filter((l) => l.msg === 'request').map((l) => l.pid)).size, 2, 'both workers served the bursts');
  gw.child.kill('SIGTERM');
  t.equal(await gw.exited, 0);
});
