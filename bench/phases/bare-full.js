// Phase bare-full: the bare proxy (bare.js) plus what Keygate documents for every allowed request,
// done plainly (Pool.stream and closures, as bare.js), with no pipeline around it: what a straight
// implementation of those promises costs. Per request: X-Request-Id (the client's if usable, else
// a UUID) sent upstream and back; X-Forwarded-For/-Proto/-Host and the five identity headers
// upstream with the credential; a per-key count in a one-minute window and the five rate-limit
// response headers; a usage count; one access-log line (Keygate's fields, built by concatenation)
// written to a file through the writer Keygate uses (dist/log-file.js), the lines of one
// event-loop turn handed over together. Not here: route matching, roles and scopes, quotas, groups,
// metrics, deadlines, CORS, refusals' shapes.

import { hash, randomUUID } from 'node:crypto';
import http from 'node:http';
import { Pool } from 'undici';
import { digest } from '../lib/peer.js';
import { LogFile } from '../../dist/log-file.js';

const opts = JSON.parse(process.argv[2]);
const keys = new Map([[digest(hash, opts.secret), { id: opts.keyId, name: 'bench', role: 'operator', prefix: opts.secret.slice(0, 8), limit: 100_000_000, bucket: 0, count: 0, used: 0 }]]);
const upstream = new URL(opts.upstreamUrl);
const pool = new Pool(upstream.origin, { connections: 128, pipelining: 1 });
const credential = `Bearer ${opts.token}`;
const DROP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host', 'authorization', 'x-api-key', 'proxy-authorization', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-request-source']);
const DROP_RESPONSE = new Set(['connection', 'keep-alive', 'transfer-encoding', 'x-request-id']);
const UNAUTHORIZED = JSON.stringify({ code: 'unauthorized', message: 'API key required' });
const log = new LogFile(opts.logFile);
let pending = '';
let scheduled = false;
const flush = () => {
  scheduled = false;
  log.write(pending);
  pending = '';
};
const UNSAFE = /["\\\u0000-\u001f\ud800-\udfff]/;
const q = (v) => (UNSAFE.test(v) ? JSON.stringify(v) : `"${v}"`);

const server = http.createServer({ keepAliveTimeout: 5_000 }, (req, res) => {
  const started = performance.now();
  const secret = req.headers['x-api-key'];
  const key = typeof secret === 'string' ? keys.get(digest(hash, secret)) : undefined;
  if (key === undefined) {
    res.writeHead(401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(UNAUTHORIZED) });
    res.end(UNAUTHORIZED);
    return;
  }
  const given = req.headers['x-request-id'];
  const id = typeof given === 'string' && given.length > 0 && given.length <= 128 ? given : randomUUID();
  const minute = Math.floor(Date.now() / 60_000);
  if (key.bucket !== minute) (key.bucket = minute), (key.count = 0);
  key.count++;
  key.used++;
  const headers = {};
  for (const name in req.headers) if (!DROP.has(name) && !name.startsWith('x-keygate-')) headers[name] = req.headers[name];
  headers.host = upstream.host;
  headers['x-request-id'] = id;
  headers['x-forwarded-for'] = req.socket.remoteAddress;
  headers['x-forwarded-proto'] = 'http';
  if (req.headers.host) headers['x-forwarded-host'] = req.headers.host;
  headers['x-keygate-key-id'] = key.id;
  headers['x-keygate-key-name'] = key.name;
  headers['x-keygate-role'] = key.role;
  headers['x-keygate-attribution'] = `service_account:${key.name}`;
  headers['x-request-source'] = 'external_api';
  headers.authorization = credential;
  const remaining = String(key.limit - key.count);
  const reset = String(60 - (Math.floor(Date.now() / 1000) % 60));
  pool.stream(
    { path: req.url, method: req.method, headers, body: req.method === 'GET' || req.method === 'HEAD' ? null : req, opaque: null },
    ({ statusCode, headers: h }) => {
      const out = { 'x-request-id': id, 'ratelimit-policy': `"per-key";q=${key.limit};w=60`, ratelimit: `"per-key";r=${remaining};t=${reset}`, 'x-ratelimit-limit': String(key.limit), 'x-ratelimit-remaining': remaining, 'x-ratelimit-reset': reset };
      for (const name in h) if (!DROP_RESPONSE.has(name)) out[name] = h[name];
      res.writeHead(statusCode, out);
      return res;
    },
    (err) => {
      if (err && !res.headersSent) {
        res.writeHead(502, { 'content-type': 'application/json' });
        res.end('{"code":"bad_gateway"}');
      } else if (err) res.destroy(err);
      const ms = Math.round((performance.now() - started) * 100) / 100;
      pending += `{"level":"info","time":"${new Date().toISOString()}","service":"keygate","pid":${process.pid},"request_id":${q(id)},"remote_address":${q(req.socket?.remoteAddress ?? '')},"method":${q(req.method)},"host":${q(req.headers.host ?? '')},"path":${q(req.url)},"route":"GET /api/v1/dags/{fileName}","key_id":${q(key.id)},"key_prefix":${q(key.prefix)},"status":${res.statusCode},"decision":"allowed","upstream":"dagu","latency_ms":${ms},"msg":"request"}\n`;
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    },
  );
});
server.listen(0, '127.0.0.1', () => process.send({ type: 'ready', url: `http://127.0.0.1:${server.address().port}` }));
process.on('SIGTERM', () => server.close(() => pool.close().then(() => process.exit(0))));
process.on('disconnect', () => process.exit(0));
