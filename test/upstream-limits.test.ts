// Upstream limits: the gateway's own timeout (queueing included), and max_pending beyond which a
// request is refused at once instead of waiting behind a full pool.

import { writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import pino from 'pino';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { loadConfig } from '../src/config/load.js';
import { startEchoUpstream } from '../src/demo/echo-upstream.js';
import { Gateway } from '../src/server.js';

async function gateway(t: Test, upstream: string): Promise<{ url: string; secret: string }> {
  const echo = await startEchoUpstream({ name: 'up' });
  t.teardown(() => echo.close());
  const file = join(t.testdir(), 'gw.yaml');
  writeFileSync(
    file,
    `listen: { host: 127.0.0.1 }\nadmin: { enabled: false }\nstore: { keys: "sqlite::memory:" }\nlog: { level: silent }\nupstreams:\n  - { name: up, api_base_url: "${echo.url}", ${upstream} }\nroutes: [{ path: "/**", upstream: up }]\n`,
  );
  const gw = await Gateway.start({ config: loadConfig(file), port: 0, logger: pino({ level: 'silent' }) });
  t.teardown(() => gw.close(0, 0));
  const { secret } = await gw.keys.create({ name: 'k', rateLimit: 600 }, 'test');
  return { url: gw.url, secret };
}

async function get(url: string, secret: string): Promise<{ status: number; code: string; ms: number }> {
  const started = performance.now();
  const r = await request(url, { headers: { 'x-api-key': secret } });
  const body = (await r.body.json()) as { code?: string };
  return { status: r.statusCode, code: body.code ?? '', ms: performance.now() - started };
}

t.test('a silent upstream is cut at its timeout, not at the next tick of a coarse timer', async (t) => {
  const { url, secret } = await gateway(t, 'timeout: 2');
  const r = await get(`${url}/_hang`, secret);
  t.equal(r.status, 504);
  t.equal(r.code, 'timeout');
  t.comment(`504 after ${Math.round(r.ms)} ms for timeout: 2`);
  // undici's own headers timer answered after ~2.5 s; the gateway's timer answers at 2 s
  t.ok(r.ms >= 1990 && r.ms < 3000, `answered at the timeout, not after it (a hang guard; the exact figure is in the note) (${Math.round(r.ms)} ms)`);
});

t.test('time queued behind a full pool counts against the timeout', async (t) => {
  const { url, secret } = await gateway(t, 'timeout: 2, connections: 1');
  const first = get(`${url}/_hang`, secret);
  await new Promise((r) => setTimeout(r, 200));
  const queued = await get(`${url}/_hang`, secret);
  t.equal(queued.status, 504, 'the queued request times out too');
  t.comment(`queued request: 504 after ${Math.round(queued.ms)} ms`);
  // before: its timeout started only once the first request gave its connection up (~4.5 s)
  t.ok(queued.ms < 3000, `within its own 2 s, not after the first one's (${Math.round(queued.ms)} ms)`);
  t.equal((await first).status, 504);
});

t.test('beyond connections + max_pending a request is refused at once with 503 upstream_overloaded', async (t) => {
  const { url, secret } = await gateway(t, 'timeout: 5, connections: 1, max_pending: 2');
  let settled = 0;
  const waiting = [0, 1, 2].map(() => get(`${url}/_hang`, secret).finally(() => settled++));
  await new Promise((r) => setTimeout(r, 300));
  const refused = await get(`${url}/x`, secret);
  t.equal(refused.status, 503);
  t.equal(refused.code, 'upstream_overloaded');
  t.equal(settled, 0, 'while the one on the connection and the two queued still wait');
  const results = await Promise.all(waiting);
  t.same(results.map((r) => r.status), [504, 504, 504]);
  const after = await get(`${url}/x`, secret);
  t.equal(after.status, 200, 'places are given back');
});

// ---------------------------------------------------------------- client timeouts

async function openConnections(gw: Gateway): Promise<number> {
  const { body } = await gw.metrics.scrape();
  return Number(/keygate_open_connections\{kind="http"\} (\d+)/.exec(String(body))?.[1] ?? NaN);
}

/** A raw client that keeps its side open (allowHalfOpen), dripping `bytes` one every `everyMs`. */
function slowClient(url: string, head: string, drip: string, everyMs: number) {
  const { port } = new URL(url);
  const socket = connect({ port: Number(port), host: '127.0.0.1', allowHalfOpen: true });
  let received = '';
  let i = 0;
  const started = performance.now();
  const timer = setInterval(() => {
    if (i < drip.length && socket.writable) socket.write(drip[i++]!);
  }, everyMs);
  socket.setEncoding('latin1');
  socket.on('data', (d) => (received += d));
  socket.on('error', () => {});
  socket.write(head);
  const ended = new Promise<number>((resolve) => socket.once('end', () => resolve(performance.now() - started)));
  return { ended, received: () => received, close: () => (clearInterval(timer), socket.destroy()) };
}

async function started(t: Test, listen: string): Promise<Gateway> {
  const echo = await startEchoUpstream({ name: 'up' });
  t.teardown(() => echo.close());
  const file = join(t.testdir(), 'gw.yaml');
  writeFileSync(file, `listen: { host: 127.0.0.1, ${listen} }\nadmin: { enabled: false }\nstore: { keys: "sqlite::memory:" }\nlog: { level: silent }\nupstreams: [{ name: up, api_base_url: "${echo.url}" }]\nroutes: [{ path: "/**", upstream: up, auth: none }]\n`);
  const gw = await Gateway.start({ config: loadConfig(file), port: 0, logger: pino({ level: 'silent' }) });
  t.teardown(() => gw.close(0, 0));
  return gw;
}

t.test('slow loris: headers not complete within listen.header_timeout get 408 and the socket is destroyed', async (t) => {
  const gw = await started(t, 'header_timeout: 2');
  const c = slowClient(gw.url, 'GET /x HTTP/1.1\r\nHost: a\r\nX-Slow: ', 'abcdefghijklmnopqrstuvwxyz', 300);
  t.teardown(c.close);
  const ms = await c.ended;
  t.match(c.received(), /^HTTP\/1\.1 408 Request Timeout\r\n/);
  t.match(c.received(), /"code":"request_timeout"/);
  t.comment(`408 after ${Math.round(ms)} ms for header_timeout: 2`);
  t.ok(ms >= 1900 && ms < 4000, `cut near 2 s (${Math.round(ms)} ms), not after 90 s`);
  // our side is still open (allowHalfOpen): a half-close by the gateway would keep its socket too
  let open = await openConnections(gw);
  for (let i = 0; i < 20 && open > 0; i++) {
    await new Promise((r) => setTimeout(r, 50));
    open = await openConnections(gw);
  }
  t.equal(open, 0, 'the gateway destroyed its socket, not just half-closed it');
});

t.test('a body slower than listen.request_timeout is cut', async (t) => {
  const gw = await started(t, 'header_timeout: 1, request_timeout: 2');
  const c = slowClient(gw.url, 'POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n', 'x'.repeat(100), 300);
  t.teardown(c.close);
  const ms = await c.ended;
  t.comment(`cut after ${Math.round(ms)} ms for request_timeout: 2 (${JSON.stringify(c.received().slice(0, 40))})`);
  t.ok(ms >= 1900 && ms < 4000, `cut near 2 s (${Math.round(ms)} ms)`);
});

t.test('header_timeout above request_timeout is a config error', async (t) => {
  const file = join(t.testdir(), 'gw.yaml');
  writeFileSync(file, 'listen: { header_timeout: 60, request_timeout: 30 }\nstore: { keys: "sqlite::memory:" }\n');
  t.throws(() => loadConfig(file), /listen\.header_timeout: must not exceed request_timeout \(30 s\)/);
});

t.test('the A2A agent card fetch keeps the same bounds: its timeout, and max_pending', async (t) => {
  const { createServer } = await import('node:http');
  const silent = createServer(() => {}); // never answers
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => { silent.closeAllConnections(); silent.close(() => r()); }));
  const file = join(t.testdir(), 'gw.yaml');
  writeFileSync(
    file,
    `listen: { host: 127.0.0.1 }\nadmin: { enabled: false }\nstore: { keys: "sqlite::memory:" }\nlog: { level: silent }\n` +
      `upstreams:\n  - { name: agent, api_base_url: "http://127.0.0.1:${(silent.address() as { port: number }).port}", timeout: 1, connections: 1, max_pending: 1 }\n` +
      `routes: [{ path: /.well-known/agent-card.json, methods: [GET], upstream: agent, auth: none, surface: a2a }]\n`,
  );
  const gw = await Gateway.start({ config: loadConfig(file), port: 0, logger: pino({ level: 'silent' }) });
  t.teardown(() => gw.close(0, 0));
  const card = async () => {
    const started = performance.now();
    const r = await request(`${gw.url}/.well-known/agent-card.json`);
    return { status: r.statusCode, code: ((await r.body.json()) as { code?: string }).code, ms: performance.now() - started };
  };
  const [a, b, c] = await Promise.all([card(), card(), new Promise((r) => setTimeout(r, 100)).then(card)]);
  t.match(c, { status: 503, code: 'upstream_overloaded' }, 'a third card fetch beyond connections + max_pending is refused at once');
  t.ok(c.ms + 100 < Math.min(a.ms, b.ms), `answered before the two waiting ones time out (${Math.round(c.ms)} ms)`);
  for (const r of [a, b]) {
    t.match(r, { status: 504, code: 'timeout' }, 'a silent upstream: 504 at its timeout');
    t.ok(r.ms >= 990 && r.ms < 3000, `at the 1 s timeout (a hang guard) (${Math.round(r.ms)} ms)`);
  }
});
