import { Readable } from 'node:stream';
import t from 'tap';
import type { Test } from 'tap';
import { request } from 'undici';
import { WebSocket } from 'ws';
import { startEchoUpstream } from '../src/demo/echo-upstream.js';
import type { EchoUpstream } from '../src/demo/echo-upstream.js';

/** A fresh upstream per test, closed when the test ends, so `received` is exact. */
async function start(tt: Test, name = 'echo'): Promise<EchoUpstream> {
  const up = await startEchoUpstream({ name });
  tt.teardown(() => up.close());
  return up;
}

/** Rejects if `p` has not settled within `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Messages from a WebSocket, taken one at a time in arrival order. */
function messageQueue(ws: WebSocket): () => Promise<{ data: Buffer; isBinary: boolean }> {
  const queued: { data: Buffer; isBinary: boolean }[] = [];
  const waiting: ((m: { data: Buffer; isBinary: boolean }) => void)[] = [];
  ws.on('message', (data, isBinary) => {
    const m = { data: data as Buffer, isBinary };
    const w = waiting.shift();
    if (w) w(m);
    else queued.push(m);
  });
  return () => {
    const m = queued.shift();
    return within(m ? Promise.resolve(m) : new Promise((resolve) => waiting.push(resolve)), 3000, 'WebSocket message');
  };
}

t.test('echoes method, path, query, headers and body', async (t) => {
  const up = await start(t, 'up-a');
  t.match(up.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  t.equal(up.url, `http://127.0.0.1:${up.port}`);
  t.equal(up.name, 'up-a');

  const res = await request(`${up.url}/api/v1/dags/x?limit=5&q=a%20b`, {
    method: 'PUT',
    headers: { 'content-type': 'text/plain', 'x-custom': 'v1' },
    body: 'héllo',
  });
  t.equal(res.statusCode, 200);
  t.equal(res.headers['content-type'], 'application/json');
  const json = (await res.body.json()) as Record<string, unknown> & { headers: Record<string, string> };
  t.equal(json.upstream, 'up-a');
  t.equal(json.method, 'PUT');
  t.equal(json.path, '/api/v1/dags/x');
  t.equal(json.query, 'limit=5&q=a%20b');
  t.equal(json.body, 'héllo');
  t.equal(json.bodyBytes, 6);
  t.equal(json.headers['x-custom'], 'v1');
  t.equal(json.headers['content-type'], 'text/plain');

  await up.waitForRequests(1);
  t.equal(up.received.length, 1);
  const r = up.received[0]!;
  t.equal(r.method, 'PUT');
  t.equal(r.url, '/api/v1/dags/x?limit=5&q=a%20b');
  t.equal(r.path, '/api/v1/dags/x');
  t.equal(r.query, 'limit=5&q=a%20b');
  t.equal(r.headers['x-custom'], 'v1');
  t.equal(r.rawHeaders[r.rawHeaders.indexOf('x-custom') + 1], 'v1');
  t.same(r.body, Buffer.from('héllo'));
  t.equal(r.remoteAddress, '127.0.0.1');
  t.equal(r.aborted, false);
});

t.test('received lists every request in arrival order; waitForRequests times out', async (t) => {
  const up = await start(t);
  await (await request(`${up.url}/one`)).body.text();
  await (await request(`${up.url}/two?x=1`, { method: 'POST', body: 'b' })).body.text();
  await up.waitForRequests(2);
  t.same(
    up.received.map((r) => [r.method, r.url, r.body.toString()]),
    [
      ['GET', '/one', ''],
      ['POST', '/two?x=1', 'b'],
    ],
  );
  await t.rejects(up.waitForRequests(3, 100), /timed out after 100 ms waiting for 3 request/);
  await t.rejects(up.waitForAbort(100), /timed out after 100 ms waiting for an aborted request/);
});

t.test('_status/418 sets the status and pass-through headers', async (t) => {
  const up = await start(t);
  const res = await request(`${up.url}/api/v1/_status/418`);
  t.equal(res.statusCode, 418);
  t.same(await res.body.json(), { status: 418 });
  t.equal(res.headers['x-upstream-header'], 'yes');
  t.same(res.headers['set-cookie'], 'echo-session=1; Path=/; HttpOnly');

  const noContent = await request(`${up.url}/_status/204`);
  t.equal(noContent.statusCode, 204);
  t.equal(await noContent.body.text(), '');
});

t.test('_delay responds after ms', async (t) => {
  const up = await start(t);
  const t0 = Date.now();
  const res = await request(`${up.url}/x/_delay?ms=150`);
  t.equal(res.statusCode, 200);
  t.same(await res.body.json(), { upstream: 'echo', delayed: 150 });
  t.ok(Date.now() - t0 >= 140, `took ${Date.now() - t0} ms`);

  const bad = await request(`${up.url}/_delay?ms=abc`);
  t.equal(bad.statusCode, 400);
  await bad.body.text();
});

t.test('_delay aborted by the client: marked aborted, waitForAbort resolves', async (t) => {
  const up = await start(t);
  const ac = new AbortController();
  const pending = request(`${up.url}/_delay?ms=5000`, { signal: ac.signal });
  await up.waitForRequests(1);
  t.equal(up.received[0]!.aborted, false);
  ac.abort();
  await t.rejects(pending);
  const aborted = await up.waitForAbort(2000);
  t.equal(aborted, up.received[0]);
  t.equal(aborted.path, '/_delay');
  t.equal(aborted.aborted, true);
});

t.test('_hang never responds; a client leaving marks it aborted', async (t) => {
  const up = await start(t);
  const ac = new AbortController();
  const pending = request(`${up.url}/p/_hang`, { signal: ac.signal });
  await up.waitForRequests(1);
  await t.rejects(up.waitForAbort(300)); // still hanging, not aborted
  ac.abort();
  await t.rejects(pending);
  t.equal((await up.waitForAbort(2000)).path, '/p/_hang');
});

t.test('_big streams exactly N bytes, chunked', async (t) => {
  const up = await start(t);
  const n = 1_000_003;
  const res = await request(`${up.url}/api/_big?bytes=${n}&chunk=65536`);
  t.equal(res.statusCode, 200);
  t.equal(res.headers['content-type'], 'application/octet-stream');
  t.equal(res.headers['content-length'], undefined);
  t.equal(res.headers['transfer-encoding'], 'chunked');
  let total = 0;
  let patternOk = true;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    for (let i = 0; i < chunk.length; i++) if (chunk[i] !== ((total + i) & 0xff)) patternOk = false;
    total += chunk.length;
  }
  t.equal(total, n);
  t.ok(patternOk, 'byte k is k % 256');
});

t.test('_sse sends events one by one and echoes Last-Event-ID', async (t) => {
  const up = await start(t);
  const t0 = Date.now();
  const res = await request(`${up.url}/api/v1/_sse?count=3&interval=200`, { headers: { 'last-event-id': '41' } });
  t.equal(res.statusCode, 200);
  t.equal(res.headers['content-type'], 'text/event-stream');
  t.equal(res.headers['cache-control'], 'no-cache');
  let text = '';
  let firstEventAt = -1;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    text += chunk.toString('utf8');
    if (firstEventAt < 0 && text.includes('id: 1\n')) firstEventAt = Date.now() - t0;
  }
  const endedAt = Date.now() - t0;
  t.equal(
    text,
    ': connected\n\n' +
      'id: 1\nevent: message\ndata: {"n":1,"lastEventId":"41"}\n\n' +
      ': heartbeat\n\n' +
      'id: 2\nevent: message\ndata: {"n":2,"lastEventId":"41"}\n\n' +
      ': heartbeat\n\n' +
      'id: 3\nevent: message\ndata: {"n":3,"lastEventId":"41"}\n\n',
  );
  // Events at ~200, ~400, ~600 ms: the first must reach us long before the end.
  t.ok(firstEventAt >= 0 && endedAt - firstEventAt >= 300, `first event at ${firstEventAt} ms, end at ${endedAt} ms`);
});

t.test("Dagu's /events/stream path, without Last-Event-ID", async (t) => {
  const up = await start(t);
  const res = await request(`${up.url}/api/v2/events/stream?count=1&interval=10`);
  t.equal(res.headers['content-type'], 'text/event-stream');
  t.equal(await res.body.text(), ': connected\n\nid: 1\nevent: message\ndata: {"n":1,"lastEventId":null}\n\n');
});

t.test('_sse count=0 sends heartbeats until the client disconnects', async (t) => {
  const up = await start(t);
  const res = await request(`${up.url}/_sse?count=0&interval=20`);
  let text = '';
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    text += chunk.toString('utf8');
    if (text.split(': heartbeat\n\n').length > 3) break; // three heartbeats, then hang up
  }
  res.body.destroy();
  t.ok(text.startsWith(': connected\n\n: heartbeat\n\n: heartbeat\n\n: heartbeat\n\n'), JSON.stringify(text));
  t.notOk(text.includes('id:'), 'no events');
  t.equal((await up.waitForAbort(2000)).path, '/_sse');
});

t.test('_echo-body streams the request body back as it arrives', async (t) => {
  const up = await start(t);
  let firstChunkEchoed!: () => void;
  const echoed = new Promise<void>((resolve) => (firstChunkEchoed = resolve));
  // The second part is only sent once the first has come back: if either side buffered
  // the whole body, this would never finish.
  async function* body(): AsyncGenerator<Buffer> {
    yield Buffer.from('part-one;');
    await within(echoed, 3000, 'first chunk echoed');
    yield Buffer.from('part-two');
  }
  const res = await within(
    request(`${up.url}/api/_echo-body`, { method: 'POST', headers: { 'content-type': 'text/x-test' }, body: Readable.from(body()) }),
    3000,
    'response headers',
  );
  t.equal(res.statusCode, 200);
  t.equal(res.headers['content-type'], 'text/x-test');
  let text = '';
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    text += chunk.toString('utf8');
    if (text === 'part-one;') firstChunkEchoed();
  }
  t.equal(text, 'part-one;part-two');
  await up.waitForRequests(1);
  t.equal(up.received[0]!.body.toString(), 'part-one;part-two');
});

t.test('WebSocket: hello, then text and binary echo', async (t) => {
  const up = await start(t, 'ws-up');
  const ws = new WebSocket(`${up.url.replace('http:', 'ws:')}/api/ws/logs?tail=1`, { headers: { 'x-ws': 'yes' } });
  t.teardown(() => ws.terminate());
  const next = messageQueue(ws);

  const hello = await next();
  t.equal(hello.isBinary, false);
  const h = JSON.parse(hello.data.toString()) as { hello: string; path: string; query: string; headers: Record<string, string> };
  t.equal(h.hello, 'ws-up');
  t.equal(h.path, '/api/ws/logs');
  t.equal(h.query, 'tail=1');
  t.equal(h.headers['x-ws'], 'yes');
  t.equal(h.headers.upgrade, 'websocket');

  ws.send('ping text');
  const text = await next();
  t.equal(text.isBinary, false);
  t.equal(text.data.toString(), 'ping text');

  ws.send(Buffer.from([0, 1, 2, 255]));
  const bin = await next();
  t.equal(bin.isBinary, true);
  t.same(bin.data, Buffer.from([0, 1, 2, 255]));

  t.equal(up.received.length, 1);
  t.equal(up.received[0]!.method, 'GET');
  t.equal(up.received[0]!.url, '/api/ws/logs?tail=1');
  t.equal(up.received[0]!.headers['x-ws'], 'yes');
});

t.test('close() resolves with a hanging request and an open WebSocket', async (t) => {
  const up = await startEchoUpstream();
  const hanging = request(`${up.url}/_hang`);
  hanging.catch(() => {}); // rejected by close(); checked below
  const ws = new WebSocket(`${up.url.replace('http:', 'ws:')}/socket`);
  const wsClosed = new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));
  ws.on('error', () => {});
  await within(new Promise((resolve) => ws.once('message', resolve)), 3000, 'WebSocket hello');
  await up.waitForRequests(2);

  await within(up.close(), 2000, 'close()');
  await t.rejects(within(hanging, 2000, 'hanging request'));
  t.equal(await within(wsClosed, 2000, 'WebSocket close'), 1006); // terminated, no close frame
  t.equal(up.received.find((r) => r.path === '/_hang')?.aborted, true);
  await within(up.close(), 500, 'second close()'); // idempotent
  await t.rejects(request(`${up.url}/`), 'no longer listening');
});
