// A small HTTP + WebSocket upstream that echoes what it receives.
//
// Two users: `keygate demo` (a built-in upstream, so the gateway can be tried without
// Dagu) and the test suite (an upstream that records exactly what the gateway sent).
// Special behaviours are chosen by path SUFFIX so they work under any route prefix,
// e.g. `/api/v1/_sse` or `/dagu/api/v2/events/stream`:
//
//   …/_status/NNN            respond with status NNN (+ set-cookie and x-upstream-header)
//   …/_delay?ms=N            respond after N ms
//   …/_hang                  never respond
//   …/_big?bytes=N&chunk=M   stream N bytes in M-byte chunks (byte k is k % 256)
//   …/_break?bytes=N         promise 2N bytes (content-length), send N, then drop the connection
//   …/_raw-header            200 with X-Raw carrying UTF-8 bytes (non-ASCII)
//   …/_sse, …/events/stream  server-sent events (?count=3&interval=50; count=0: heartbeats forever)
//   POST …/_echo-body        stream the request body back as it arrives
//   anything else            200 JSON describing the request
//   WebSocket upgrade        hello message, then echo every message

import { EventEmitter, once } from 'node:events';
import { createServer } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { setImmediate as yieldToLoop, setTimeout as sleep } from 'node:timers/promises';
import { WebSocketServer } from 'ws';

export interface ReceivedRequest {
  method: string;
  /** raw request target as received */
  url: string;
  path: string;
  /** without '?' */
  query: string;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
  /** the request body; filled in once it has been read completely (empty before) */
  body: Buffer;
  remoteAddress: string;
  /** set when the client (the gateway) closed the connection before the response finished */
  aborted: boolean;
}

export interface EchoUpstream {
  /** e.g. http://127.0.0.1:34567 */
  readonly url: string;
  readonly port: number;
  readonly name: string;
  /** every HTTP request and WebSocket upgrade, in arrival order */
  readonly received: ReceivedRequest[];
  /**
   * Resolves when `n` requests have been received, a request counting once its body has
   * been read completely (or its connection went away); rejects after `timeoutMs`.
   */
  waitForRequests(n: number, timeoutMs?: number): Promise<void>;
  /** resolves when some received request has aborted === true (or rejects after timeoutMs) */
  waitForAbort(timeoutMs?: number): Promise<ReceivedRequest>;
  /** closes the server, all open sockets, SSE streams and WebSockets */
  close(): Promise<void>;
}

export interface EchoUpstreamOptions {
  /** default 127.0.0.1 */
  host?: string;
  /** default 0: a free port */
  port?: number;
  /** reported in every response as `upstream`; default 'echo' */
  name?: string;
  /**
   * A Dagu version to report as `version` in the answer to any path ending in /health, as Dagu
   * does (the gateway's version check for route maps with `requires`); default none.
   */
  daguVersion?: string;
}

const DEFAULT_WAIT_MS = 5000;
const noop = (): void => {};

/** A query parameter that must be a non-negative integer no larger than `max`. */
class BadParam extends Error {}
function intParam(params: URLSearchParams, key: string, def: number, max: number): number {
  const raw = params.get(key);
  if (raw === null || raw === '') return def;
  if (!/^\d+$/.test(raw) || Number(raw) > max) throw new BadParam(`${key} must be an integer from 0 to ${max}`);
  return Number(raw);
}

function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string | string[]> = {}): void {
  const body = Buffer.from(JSON.stringify(value));
  // 204 and 304 must not carry a body.
  const withBody = status !== 204 && status !== 304;
  res.writeHead(status, withBody ? { 'content-type': 'application/json', 'content-length': body.length, ...headers } : headers);
  res.end(withBody ? body : undefined);
}

export async function startEchoUpstream(opts: EchoUpstreamOptions = {}): Promise<EchoUpstream> {
  const host = opts.host ?? '127.0.0.1';
  const name = opts.name ?? 'echo';
  const received: ReceivedRequest[] = [];
  const complete = new WeakSet<ReceivedRequest>(); // entries whose body is final
  const changes = new EventEmitter(); // 'change' whenever an entry completes or aborts
  changes.setMaxListeners(0);
  const sockets = new Set<Socket>();
  const wss = new WebSocketServer({ noServer: true });

  /** Records a request on arrival; its body is collected as it streams in. */
  function record(req: IncomingMessage): ReceivedRequest {
    const target = req.url ?? '';
    const q = target.indexOf('?');
    const entry: ReceivedRequest = {
      method: req.method ?? '',
      url: target,
      path: q === -1 ? target : target.slice(0, q),
      query: q === -1 ? '' : target.slice(q + 1),
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      body: Buffer.alloc(0),
      remoteAddress: req.socket.remoteAddress ?? '',
      aborted: false,
    };
    received.push(entry);
    return entry;
  }

  function markComplete(entry: ReceivedRequest): void {
    if (complete.has(entry)) return;
    complete.add(entry);
    changes.emit('change');
  }

  function markAborted(entry: ReceivedRequest): void {
    if (entry.aborted) return;
    entry.aborted = true;
    changes.emit('change');
  }

  /** Resolves with check()'s result once it is not undefined; rejects after timeoutMs. */
  function waitFor<T>(check: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
    return new Promise((resolve, reject) => {
      const onChange = (): void => {
        const value = check();
        if (value === undefined) return;
        cleanup();
        resolve(value);
      };
      const timer = setTimeout(() => {
        cleanup();
        const seen = received.map((r) => `${r.method} ${r.url}${r.aborted ? ' (aborted)' : ''}`).join(', ') || 'nothing';
        reject(new Error(`echo upstream '${name}': timed out after ${timeoutMs} ms waiting for ${what}; received: ${seen}`));
      }, timeoutMs);
      const cleanup = (): void => {
        clearTimeout(timer);
        changes.off('change', onChange);
      };
      changes.on('change', onChange);
      onChange();
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const entry = record(req);
    req.on('error', noop); // e.g. ECONNRESET when the client goes away mid-body
    res.on('error', noop);

    // Collect the body whatever the path, so every entry shows what was sent.
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    const bodyRead = new Promise<boolean>((resolve) => {
      req.on('end', () => {
        entry.body = Buffer.concat(chunks);
        markComplete(entry);
        resolve(true);
      });
      // 'close' without 'end': the client went away mid-body.
      req.on('close', () => {
        markComplete(entry);
        resolve(false);
      });
    });

    // Every timer and wait below stops when the response closes, whether it finished or
    // the client disconnected; "aborted" means the latter.
    const gone = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) markAborted(entry);
      gone.abort();
    });
    const wait = (ms: number): Promise<boolean> => sleep(ms, true, { signal: gone.signal }).catch(() => false);

    const path = entry.path;
    const params = new URLSearchParams(entry.query);
    try {
      const status = /\/_status\/(\d{3})$/.exec(path);
      if (status) {
        const code = Number(status[1]);
        if (!(await bodyRead)) return;
        if (code < 200 || code > 599) return sendJson(res, 400, { error: 'status must be from 200 to 599' });
        return sendJson(res, code, { status: code }, {
          'set-cookie': [`${name}-session=1; Path=/; HttpOnly`],
          'x-upstream-header': 'yes',
        });
      }

      if (path.endsWith('/_delay')) {
        const ms = intParam(params, 'ms', 0, 600_000);
        if (!(await wait(ms))) return; // the client gave up first: don't respond
        return sendJson(res, 200, { upstream: name, delayed: ms });
      }

      if (path.endsWith('/_hang')) return; // res 'close' marks it aborted when the client leaves

      if (path.endsWith('/_raw-header')) {
        // node writes header strings as latin1: these strings are the UTF-8 bytes, sent as they are
        const utf8 = (text: string) => Buffer.from(text, 'utf8').toString('latin1');
        if (!(await bodyRead)) return;
        return sendJson(res, 200, { raw: true }, { 'x-raw': utf8('naïve ✓') });
      }
      if (path.endsWith('/_break')) {
        const bytes = intParam(params, 'bytes', 1024, 1 << 20);
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(2 * bytes) });
        res.write(Buffer.alloc(bytes, 0x61));
        await sleep(50, undefined, { signal: gone.signal }).catch(() => undefined);
        res.socket?.destroy();
        return;
      }
      if (path.endsWith('/_big')) {
        const bytes = intParam(params, 'bytes', 1 << 20, 2 ** 31);
        const chunk = Math.max(1, intParam(params, 'chunk', 16 << 10, 16 << 20));
        // No content-length: Node sends it chunked.
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        for (let sent = 0; sent < bytes; ) {
          const buf = Buffer.allocUnsafe(Math.min(chunk, bytes - sent));
          for (let i = 0; i < buf.length; i++) buf[i] = (sent + i) & 0xff;
          sent += buf.length;
          // Respect backpressure; otherwise still yield so other I/O gets a turn.
          const ok = res.write(buf)
            ? await yieldToLoop(true, { signal: gone.signal }).catch(() => false)
            : await once(res, 'drain', { signal: gone.signal }).then(() => true, () => false);
          if (!ok) return;
        }
        res.end();
        return;
      }

      if (path.endsWith('/_sse') || path.endsWith('/events/stream')) {
        const count = intParam(params, 'count', 3, 1_000_000);
        const interval = intParam(params, 'interval', 50, 600_000);
        const lastEventId = req.headers['last-event-id'] ?? null;
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        res.write(': connected\n\n');
        if (count === 0) {
          // Heartbeats until the client disconnects; wait() turns false then.
          while (await wait(interval)) res.write(': heartbeat\n\n');
          return;
        }
        // Events every `interval` ms, with a heartbeat halfway between two events.
        for (let n = 1; n <= count; n++) {
          if (n > 1) {
            if (!(await wait(interval / 2))) return;
            res.write(': heartbeat\n\n');
          }
          if (!(await wait(n > 1 ? interval - interval / 2 : interval))) return;
          res.write(`id: ${n}\nevent: message\ndata: ${JSON.stringify({ n, lastEventId })}\n\n`);
        }
        res.end();
        return;
      }

      if (path.endsWith('/_echo-body') && req.method === 'POST') {
        res.writeHead(200, { 'content-type': req.headers['content-type'] ?? 'application/octet-stream' });
        res.flushHeaders(); // the client sees the response start before the body is complete
        req.pipe(res); // pipe() pauses req while res is full, so this streams with backpressure
        return;
      }

      if (!(await bodyRead)) return;
      const body = entry.body;
      return sendJson(res, 200, {
        ...(opts.daguVersion !== undefined && path.endsWith('/health') ? { status: 'healthy', version: opts.daguVersion } : {}),
        upstream: name,
        method: entry.method,
        path,
        query: entry.query,
        headers: entry.headers,
        body: body.toString('utf8'),
        bodyBytes: body.length,
      });
    } catch (err) {
      if (err instanceof BadParam && !res.headersSent) return sendJson(res, 400, { error: err.message });
      res.destroy();
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('error', noop);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    // Node removes its own error handler from an upgraded socket; a reset must not crash us.
    socket.on('error', noop);
    const entry = record(req);
    markComplete(entry);
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('error', noop);
      ws.send(JSON.stringify({ hello: name, path: entry.path, query: entry.query, headers: entry.headers }));
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', noop);

  const port = (server.address() as AddressInfo).port;
  // A wildcard address is not something to connect to; point the URL at loopback instead.
  const urlHost = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  const url = `http://${urlHost.includes(':') ? `[${urlHost}]` : urlHost}:${port}`;

  let closing: Promise<void> | undefined;
  return {
    url,
    port,
    name,
    received,
    waitForRequests(n, timeoutMs = DEFAULT_WAIT_MS) {
      const done = (): true | undefined => (received.filter((r) => complete.has(r)).length >= n ? true : undefined);
      return waitFor(done, timeoutMs, `${n} request(s)`).then(noop);
    },
    waitForAbort(timeoutMs = DEFAULT_WAIT_MS) {
      return waitFor(() => received.find((r) => r.aborted), timeoutMs, 'an aborted request');
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const ws of wss.clients) ws.terminate();
        // server.close() only stops accepting; open connections (keep-alive, hanging
        // requests, SSE streams, upgraded sockets) would keep it waiting forever.
        for (const socket of sockets) socket.destroy();
        wss.close();
      });
      return closing;
    },
  };
}
