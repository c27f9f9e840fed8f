// The A2A agent card is public; Keygate makes sure it tells clients which key to send. If the
// upstream's card does not already declare an X-API-Key header scheme, one is added (in the card's
// own protocol version: v0.3 `{type: apiKey}` + `security`, or v1.0 `{apiKeySecurityScheme}` +
// `securityRequirements`), as an alternative to whatever the card already requires.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { UPSTREAM_OVERLOADED, timeoutFailure, upstreamFailure, type ForwardResult } from './forward.js';
import type { Upstream } from './upstream.js';

const CARD_PATH = /\/\.well-known\/agent(?:-card)?\.json$/;
const MAX_CARD_BYTES = 1024 * 1024;
const SCHEME_NAME = 'keygate';
const DESCRIPTION = 'Keygate API key: send it as X-API-Key (or Authorization: Bearer).';

export function isAgentCardPath(path: string): boolean {
  return CARD_PATH.test(path);
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function declaresKeyHeader(schemes: Json): boolean {
  return Object.values(schemes).some((s) => {
    if (!isObject(s)) return false;
    const v1 = s['apiKeySecurityScheme'];
    if (isObject(v1)) return v1['location'] === 'header' && String(v1['name']).toLowerCase() === 'x-api-key';
    return s['type'] === 'apiKey' && s['in'] === 'header' && String(s['name']).toLowerCase() === 'x-api-key';
  });
}

/** The card with Keygate's key scheme declared; unchanged when it already declares X-API-Key. */
export function withKeySchemeDeclared(card: unknown): unknown {
  if (!isObject(card)) return card;
  const schemes = isObject(card['securitySchemes']) ? card['securitySchemes'] : {};
  if (declaresKeyHeader(schemes)) return card;
  const v1 = Array.isArray(card['supportedInterfaces']) || String(card['protocolVersion'] ?? '').startsWith('1.');
  if (v1) {
    const required = Array.isArray(card['securityRequirements']) ? card['securityRequirements'] : [];
    return {
      ...card,
      securitySchemes: { ...schemes, [SCHEME_NAME]: { apiKeySecurityScheme: { location: 'header', name: 'X-API-Key', description: DESCRIPTION } } },
      securityRequirements: [...required, { schemes: { [SCHEME_NAME]: { list: [] } } }],
    };
  }
  const required = Array.isArray(card['security']) ? card['security'] : [];
  return {
    ...card,
    securitySchemes: { ...schemes, [SCHEME_NAME]: { type: 'apiKey', in: 'header', name: 'X-API-Key', description: DESCRIPTION } },
    security: [...required, { [SCHEME_NAME]: [] }],
  };
}

/** Fetch the card from the upstream, declare the key scheme, answer. Non-JSON answers pass as they are. */
export function forwardAgentCard(
  res: ServerResponse,
  _req: IncomingMessage,
  upstream: Upstream,
  path: string,
  headers: Record<string, string | string[]>,
  sendError: (res: ServerResponse, status: number, code: string, message: string) => void,
  done: (result: ForwardResult) => void,
): void {
  // the same bounds as every forwarded request: max_pending, and the upstream's timeout exactly
  if (!upstream.admit()) {
    const message = `upstream "${upstream.name}" has ${upstream.pending} requests waiting for a connection (max_pending); retry shortly`;
    sendError(res, 503, UPSTREAM_OVERLOADED, message);
    done({ status: 503, upstreamMs: -1, error: { code: UPSTREAM_OVERLOADED, message } });
    return;
  }
  const started = performance.now();
  const { 'accept-encoding': _encoding, ...plain } = headers; // the card is rewritten: ask for it uncompressed
  const deadline = AbortSignal.timeout(upstream.timeoutMs);
  upstream.pool
    .request({ path, method: 'GET', headers: plain, signal: deadline })
    .then(async (r) => {
      const upstreamMs = performance.now() - started;
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of r.body) {
        size += chunk.length;
        if (size > MAX_CARD_BYTES) throw Object.assign(new Error('agent card larger than 1 MiB'), { code: 'CARD_TOO_LARGE' });
        chunks.push(chunk as Buffer);
      }
      let body = Buffer.concat(chunks);
      const type = String(r.headers['content-type'] ?? '');
      if (r.statusCode === 200 && type.includes('json')) {
        try {
          body = Buffer.from(JSON.stringify(withKeySchemeDeclared(JSON.parse(body.toString('utf8')))));
        } catch {
          /* not JSON after all: pass it on unchanged */
        }
      }
      res.writeHead(r.statusCode, { 'content-type': type || 'application/json', 'content-length': body.length, 'cache-control': String(r.headers['cache-control'] ?? 'no-cache') });
      res.end(body);
      done({ status: r.statusCode, upstreamMs });
    })
    .catch((err: Error & { code?: string }) => {
      const failure = deadline.aborted ? timeoutFailure(upstream.name, upstream.timeoutMs) : upstreamFailure(err, upstream.name);
      if (!res.headersSent) sendError(res, failure.status, failure.code, failure.message);
      done({ status: failure.status, upstreamMs: -1, error: failure });
    })
    .finally(() => upstream.release());
}
