// Reading a whole request body with a size limit, for the few places that must see it before
// forwarding (admin APIs, JSON-RPC method policies). Everything else streams.

import type { IncomingMessage } from 'node:http';
import { KeygateError } from './errors.js';

export class PayloadTooLargeError extends KeygateError {
  constructor(limit: number) {
    super('payload_too_large', 413, `request body is larger than ${limit} bytes`);
  }
}

/** The body's bytes; PayloadTooLargeError past `limit` (checked against Content-Length first). */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw new PayloadTooLargeError(limit);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new PayloadTooLargeError(limit);
    chunks.push(chunk);
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

/** Whether a request has a body at all (any Transfer-Encoding, or a Content-Length other than 0). */
export function carriesBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}
