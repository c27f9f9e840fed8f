// Phase fastify: the peer, @fastify/http-proxy (exact-pinned devDependency) with a preHandler that
// checks the key the same way (X-API-Key → digest → Map) and rewriteRequestHeaders that strips
// the client's key and injects the identity and the upstream's credential; fastify's logger off.
// Run as a child by proxy.js (bench/lib/peer.js).

import { hash } from 'node:crypto';
import Fastify from 'fastify';
import proxy from '@fastify/http-proxy';
import { digest } from '../lib/peer.js';

const opts = JSON.parse(process.argv[2]);
const keys = new Map([[digest(hash, opts.secret), { id: opts.keyId, role: 'operator' }]]);
const credential = `Bearer ${opts.token}`;

const app = Fastify({ logger: false });
await app.register(proxy, {
  upstream: opts.upstreamUrl,
  prefix: '/api/v1',
  rewritePrefix: '/api/v1', // the upstream gets the path as Keygate sends it
  preHandler: (req, reply, done) => {
    const secret = req.headers['x-api-key'];
    const key = typeof secret === 'string' ? keys.get(digest(hash, secret)) : undefined;
    if (key === undefined) {
      reply.code(401).send({ code: 'unauthorized', message: 'API key required' });
      return;
    }
    req.key = key;
    done();
  },
  replyOptions: {
    rewriteRequestHeaders: (req, headers) => {
      const { 'x-api-key': _k, authorization: _a, ...rest } = headers;
      return { ...rest, 'x-keygate-key-id': req.key.id, 'x-keygate-role': req.key.role, 'x-forwarded-for': req.socket.remoteAddress, authorization: credential };
    },
  },
});
await app.listen({ port: 0, host: '127.0.0.1' });
process.send({ type: 'ready', url: `http://127.0.0.1:${app.server.address().port}` });
process.on('SIGTERM', () => app.close().then(() => process.exit(0)));
process.on('disconnect', () => process.exit(0));
