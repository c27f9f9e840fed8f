// Phase bare: the floor for any Node gateway. node:http + undici Pool.stream + a Map of key
// digests: the key checked (X-API-Key → digest → Map), the client's credential and hop-by-hop
// headers stripped, the identity and the upstream's credential injected, the path as it came;
// no log, no rate limit, no metrics. Run as a child by proxy.js (bench/lib/peer.js).

import { hash } from 'node:crypto';
import http from 'node:http';
import { Pool } from 'undici';
import { digest } from '../lib/peer.js';

const opts = JSON.parse(process.argv[2]);
const keys = new Map([[digest(hash, opts.secret), { id: opts.keyId, role: 'operator' }]]);
const upstream = new URL(opts.upstreamUrl);
const pool = new Pool(upstream.origin, { connections: 128, pipelining: 1 });
const credential = `Bearer ${opts.token}`;
const DROP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host', 'authorization', 'x-api-key', 'proxy-authorization']);
const DROP_RESPONSE = new Set(['connection', 'keep-alive', 'transfer-encoding']);
const UNAUTHORIZED = JSON.stringify({ code: 'unauthorized', message: 'API key required' });

const server = http.createServer({ keepAliveTimeout: 5_000 }, (req, res) => {
  const secret = req.headers['x-api-key'];
  const key = typeof secret === 'string' ? keys.get(digest(hash, secret)) : undefined;
  if (key === undefined) {
    res.writeHead(401, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(UNAUTHORIZED) });
    res.end(UNAUTHORIZED);
    return;
  }
  const headers = {};
  for (const name in req.headers) if (!DROP.has(name) && !name.startsWith('x-keygate-')) headers[name] = req.headers[name];
  headers.host = upstream.host;
  headers['x-forwarded-for'] = req.socket.remoteAddress;
  headers['x-keygate-key-id'] = key.id;
  headers['x-keygate-role'] = key.role;
  headers.authorization = credential;
  pool.stream(
    { path: req.url, method: req.method, headers, body: req.method === 'GET' || req.method === 'HEAD' ? null : req, opaque: null },
    ({ statusCode, headers: h }) => {
      const out = {};
      for (const name in h) if (!DROP_RESPONSE.has(name)) out[name] = h[name];
      res.writeHead(statusCode, out);
      return res;
    },
    (err) => {
      if (err && !res.headersSent) {
        res.writeHead(502, { 'content-type': 'application/json' });
        res.end('{"code":"bad_gateway"}');
      } else if (err) res.destroy(err);
    },
  );
});
server.listen(0, '127.0.0.1', () => process.send({ type: 'ready', url: `http://127.0.0.1:${server.address().port}` }));
process.on('SIGTERM', () => server.close(() => pool.close().then(() => process.exit(0))));
process.on('disconnect', () => process.exit(0));
