// Configuration reload: under continuous load nothing fails; a bad file changes nothing.

import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { Agent, request } from 'undici';
import { loadConfig } from '../src/config/load.js';
import { ConfigError } from '../src/errors.js';
import { startEchoUpstream } from '../src/demo/echo-upstream.js';
import { spawnKeygate } from './binary.js';
import { startStack } from './helpers.js';

t.test('20 reloads under continuous load: no request fails, new routes apply', async (t) => {
  const dir = t.testdir();
  // The key's limit is far above what 4 loops can send (a fast machine sent > 600 in the ~1 s run):
  // this test is about reloads, a 429 would be noise.
  const s = await startStack(dir, { yaml: 'keys: { rate_limit: { default: 60, min: 1, max: 1000000 } }' });
  t.teardown(() => s.close());
  const k = await s.key({ name: 'reload', role: 'operator', rateLimit: 1000000 });
  const env = { DAGU_URL: s.dagu.url, DAGEN_URL: s.dagen.url, DAGU_TOKEN: 'upstream-dagu-token' };
  const base = readFileSync(join(dir, 'gateway.yaml'), 'utf8');
  // B adds a route and changes the dagu upstream's timeout (so its connection pool is replaced).
  const b = base.replace('timeout: 2\n', 'timeout: 3\n').replace('routes:\n', 'routes:\n  - { path: /api/v1/new, upstream: dagu, role: viewer, strip_prefix: /api/v1 }\n');
  t.not(b, base, 'variant B differs');
  writeFileSync(join(dir, 'a.yaml'), base);
  writeFileSync(join(dir, 'b.yaml'), b);
  const configs = [loadConfig(join(dir, 'a.yaml'), env), loadConfig(join(dir, 'b.yaml'), env)];

  const agent = new Agent({ connections: 8 });
  t.teardown(() => agent.close());
  let running = true;
  const results = { ok: 0, failed: [] as string[] };
  const loop = async () => {
    while (running) {
      try {
        const r = await request(`${s.url}/api/v1/dags`, { headers: { 'x-api-key': k.secret }, dispatcher: agent });
        await r.body.dump();
        if (r.statusCode === 200) results.ok++;
        else results.failed.push(String(r.statusCode));
      } catch (err) {
        results.failed.push((err as Error).message);
      }
    }
  };
  const loops = Array.from({ length: 4 }, loop);
  for (let i = 0; i < 20; i++) {
    await new Promise((r) => setTimeout(r, 40));
    await s.gateway.reload(configs[(i + 1) % 2]!);
  }
  await new Promise((r) => setTimeout(r, 40));
  running = false;
  await Promise.all(loops);
  t.same(results.failed, [], 'no request failed');
  t.ok(results.ok > 40, `requests kept flowing throughout (${results.ok})`);
  t.equal(s.gateway.reloads.ok, 20);
  const onA = await request(`${s.url}/api/v1/new`, { headers: { 'x-api-key': k.secret } });
  await onA.body.dump();
  t.equal(onA.statusCode, 404, 'after 20 reloads config A is live: its routes, not B\'s');
  await s.gateway.reload(configs[1]!);
  const onB = await request(`${s.url}/api/v1/new`, { headers: { 'x-api-key': k.secret } });
  await onB.body.dump();
  t.equal(onB.statusCode, 200, 'a route added by a reload answers');

  // A config that loads but does not compile (route names an unknown upstream after a typo) changes nothing.
  const broken = { ...configs[0]!, routes: [{ ...configs[0]!.routes[0]!, upstream: 'nowhere' }] };
  await t.rejects(s.gateway.reload(broken), ConfigError);
  t.equal(s.gateway.reloads.failed, 1, 'the failure is counted');
  const still = await request(`${s.url}/api/v1/new`, { headers: { 'x-api-key': k.secret } });
  await still.body.dump();
  t.equal(still.statusCode, 200, 'the previous configuration stays live');
});

const ROUTE_A = '  - { path: /a, upstream: up, auth: none }\n';
const ROUTE_ALL = '  - { path: "/**", upstream: up, auth: none }\n';

/**
 * An echo upstream "up" and a config file for it in a fresh directory: `head` holds the sections
 * the test is about (listen, admin, log, reload); `write(routes)` (re)writes the file with those
 * route lines, the store and the upstream. With a two-line `head` the routes start on line 6 (the
 * SIGHUP test's expected position relies on it).
 */
async function echoConfig(t: Test, head: string) {
  const dir = t.testdir();
  const echo = await startEchoUpstream({ name: 'up' });
  t.teardown(() => echo.close());
  const cfg = join(dir, 'gw.yaml');
  const write = (routes: string) =>
    writeFileSync(cfg, `${head}\nstore: { keys: "sqlite:./k.db" }\nupstreams: [{ name: up, api_base_url: "${echo.url}" }]\nroutes:\n${routes}`);
  return { dir, cfg, write };
}

t.test('SIGHUP: the binary reloads a good file and refuses a bad one with its position', async (t) => {
  const { cfg, write } = await echoConfig(t, 'listen: { host: 127.0.0.1, port: 0 }\nadmin: { port: 0 }');
  const good = (extra: string) => write(`${ROUTE_A}${extra}`);
  good('');
  const gw = spawnKeygate(t, ['serve', '-c', cfg]);
  const url = (await gw.waitFor(/"url":"(http:\/\/[^"]+)"/))?.[1];
  t.ok(url, 'started');
  const status = async (p: string) => {
    const r = await request(`${url}${p}`);
    await r.body.dump();
    return r.statusCode;
  };
  t.equal(await status('/b'), 404);

  good('  - { path: /b, upstream: up, auth: none }\n');
  gw.child.kill('SIGHUP');
  t.ok(await gw.waitFor(/configuration reloaded/), 'reload logged');
  t.equal(await status('/b'), 200, 'the new route answers');

  good('  - { path: /c, upstream: up, auth: none, colour: red }\n');
  gw.child.kill('SIGHUP');
  t.ok(await gw.waitFor(/reload refused/), 'refusal logged');
  t.match(gw.output(), /gw\.yaml:7:43: routes\[1\]\.colour: unknown field \\"colour\\"/, 'with file, line, column and field');
  t.equal(await status('/b'), 200, 'the previous configuration still serves');
  t.equal(gw.child.exitCode, null, 'and the process is still up');

  gw.child.kill('SIGTERM');
  t.equal(await gw.exited, 0);
});

/** A gateway in front of an echo upstream, with listen.drain_timeout: 1 (s); the test closes it. */
async function startDraining(t: Test) {
  const { cfg, write } = await echoConfig(t, 'listen: { host: 127.0.0.1, port: 0, drain_timeout: 1 }\nadmin: { enabled: false }\nlog: { level: silent }');
  write(ROUTE_ALL);
  const { Gateway } = await import('../src/server.js');
  return Gateway.start({ config: loadConfig(cfg, {}), port: 0 });
}

t.test('listen.shutdown_delay: readyz says 503 while requests are still served, then the listener closes', async (t) => {
  const { cfg, write } = await echoConfig(t, 'listen: { host: 127.0.0.1, port: 0, shutdown_delay: 1 }\nadmin: { port: 0 }\nlog: { level: silent }');
  write(ROUTE_ALL);
  const { Gateway } = await import('../src/server.js');
  const gw = await Gateway.start({ config: loadConfig(cfg, {}), port: 0, adminPort: 0 });
  const get = async (url: string) => {
    // a new connection each time: what a load balancer's probe and a new client do
    const r = await request(url, { headers: { connection: 'close' } });
    return { status: r.statusCode, headers: r.headers, json: JSON.parse(await r.body.text()) as Record<string, any> }; // eslint-disable-line @typescript-eslint/no-explicit-any
  };
  t.equal((await get(`${gw.url}/_keygate/readyz`)).status, 200, 'ready before');
  const keepAlive = new Agent({ connections: 1 });
  t.teardown(() => keepAlive.close());
  const before = await request(`${gw.url}/x`, { dispatcher: keepAlive });
  await before.body.dump();
  t.not(before.headers.connection, 'close', 'a kept-alive connection before the shutdown');

  const started = performance.now();
  const closed = gw.close();
  const ready = await get(`${gw.url}/_keygate/readyz`);
  t.equal(ready.status, 503, 'readyz 503 as soon as the shutdown begins');
  t.equal(ready.json.checks.shutdown, 'draining: the gateway is shutting down');
  t.equal((await get(`${gw.adminUrl!}/readyz`)).status, 503, 'on the admin listener too');
  t.equal((await get(`${gw.url}/x`)).status, 200, 'a new connection is still served during the delay');
  const during = await request(`${gw.url}/x`, { dispatcher: keepAlive });
  await during.body.dump();
  t.equal(during.statusCode, 200);
  t.equal(during.headers.connection, 'close', 'and a kept-alive client is told to reconnect (elsewhere)');
  const url = gw.url;
  await closed;
  t.ok(performance.now() - started >= 950, 'the listener closed only after the delay');
  await t.rejects(request(`${url}/x`, { headers: { connection: 'close' } }), 'then new connections are refused');
});

t.test('graceful shutdown waits for open streams up to listen.drain_timeout, then closes them', async (t) => {
  const gw = await startDraining(t);
  const res = await request(`${gw.url}/_sse?count=0&interval=100`);
  t.equal(res.statusCode, 200);
  const ended = new Promise<number>((resolve) => {
    res.body.on('data', () => {});
    res.body.on('error', () => resolve(performance.now()));
    res.body.on('end', () => resolve(performance.now()));
  });
  const started = performance.now();
  await gw.close(); // the configured drain_timeout, 1 s
  const closedAfter = performance.now() - started;
  t.ok(closedAfter >= 900 && closedAfter < 3000, `waited for the stream about 1 s, not forever (${Math.round(closedAfter)} ms)`);
  t.ok((await ended) - started < 3500, 'the client saw its stream end');
});

t.test('SIGHUP also reopens a log file, as logrotate needs', async (t) => {
  const { dir, cfg, write } = await echoConfig(t, 'listen: { host: 127.0.0.1, port: 0 }\nadmin: { enabled: false }\nlog: { destination: ./logs/keygate.log }');
  const log = join(dir, 'logs', 'keygate.log');
  write(ROUTE_A);
  const gw = spawnKeygate(t, ['serve', '-c', cfg]);
  const read = (f: string) => (existsSync(f) ? readFileSync(f, 'utf8') : '');
  const waitForLine = async (f: string, re: RegExp, count = 1) => {
    for (let i = 0; i < 200 && (read(f).match(new RegExp(re.source, 'g')) ?? []).length < count; i++) await new Promise((r) => setTimeout(r, 50));
    return (read(f).match(new RegExp(re.source, 'g')) ?? []).length >= count;
  };
  t.ok(await waitForLine(log, /keygate listening/), `started, logging to the file ${gw.output()}`);
  const url = /"url":"(http:\/\/[^"]+)"/.exec(read(log))![1];
  const hit = async () => {
    const r = await request(`${url}/a`);
    await r.body.dump();
    return r.statusCode;
  };
  t.equal(await hit(), 200);
  t.ok(await waitForLine(log, /"msg":"request"/), 'the request is in the log');
  renameSync(log, `${log}.1`); // what logrotate does
  gw.child.kill('SIGHUP');
  t.ok(await waitForLine(log, /configuration reloaded/), 'a new file at the configured path, written after SIGHUP');
  t.equal(await hit(), 200);
  t.ok(await waitForLine(log, /"msg":"request"/), 'requests after the SIGHUP go to the new file');
  t.equal((read(`${log}.1`).match(/"msg":"request"/g) ?? []).length, 1, 'the rotated file kept the one before');
  gw.child.kill('SIGTERM');
  t.equal(await gw.exited, 0);
});

t.test('reload.watch: a change of the file reloads it, a bad change is refused', async (t) => {
  const { cfg, write } = await echoConfig(t, 'reload: { watch: true }\nlisten: { host: 127.0.0.1, port: 0 }\nadmin: { enabled: false }');
  const yaml = (extra: string) => write(`${ROUTE_A}${extra}`);
  yaml('');
  const gw = spawnKeygate(t, ['serve', '-c', cfg]);
  t.ok(await gw.waitFor(/keygate listening/), 'started');
  const url = /"url":"(http:\/\/[^"]+)"/.exec(gw.output())![1];
  const status = async (p: string) => {
    const r = await request(`${url}${p}`);
    await r.body.dump();
    return r.statusCode;
  };
  t.equal(await status('/b'), 404);
  await new Promise((r) => setTimeout(r, 1100)); // a new modification time (the poll compares it)
  yaml('  - { path: /b, upstream: up, auth: none }\n');
  t.ok(await gw.waitFor(/configuration reloaded/), 'the change was noticed and reloaded, no signal sent');
  t.equal(await status('/b'), 200);
  await new Promise((r) => setTimeout(r, 1100));
  yaml('  - { path: /c, upstream: up, auth: none, colour: red }\n');
  t.ok(await gw.waitFor(/reload refused/), 'a bad change is refused');
  t.equal(await status('/b'), 200, 'and the previous configuration keeps serving');
  gw.child.kill('SIGTERM');
  t.equal(await gw.exited, 0);
});

t.test('graceful shutdown also drains WebSocket connections, closing them at the deadline', async (t) => {
  const { default: WebSocket } = await import('ws');
  const gw = await startDraining(t);
  const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/socket`);
  await new Promise((resolve, reject) => {
    ws.once('message', resolve);
    ws.once('error', reject);
  });
  const wsClosed = new Promise<number>((resolve) => ws.once('close', () => resolve(performance.now())));
  const open = (await gw.metrics.scrape()).body.split('\n').filter((l) => l.startsWith('keygate_open_connections{'));
  t.strictSame(open, ['keygate_open_connections{kind="http"} 0', 'keygate_open_connections{kind="websocket"} 1'], 'the open WebSocket shows in /metrics');
  const started = performance.now();
  await gw.close();
  const took = performance.now() - started;
  t.ok(took >= 900 && took < 3000, `close waited for the open WebSocket about 1 s (${Math.round(took)} ms)`);
  t.ok((await wsClosed) - started < 3500, 'and the client saw its WebSocket closed');
});
