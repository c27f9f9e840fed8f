// Where a client's key comes from: `X-API-Key: <key>` or `Authorization: Bearer <key>`.

import type { IncomingHttpHeaders } from 'node:http';

export type CredentialResult =
  | { readonly kind: 'none' }
  | { readonly kind: 'key'; readonly secret: string }
  | { readonly kind: 'invalid'; readonly message: string };

const NONE: CredentialResult = Object.freeze({ kind: 'none' });

function bearer(value: string | undefined): string | undefined {
  if (value === undefined || value.length < 7) return undefined;
  // RFC 9110: the scheme is case-insensitive; one space, then the token.
  if (value.charCodeAt(6) !== 32 || value.slice(0, 6).toLowerCase() !== 'bearer') return undefined;
  return value.slice(7).trim();
}

/** The presented key, none, or why the credential headers are unusable. */
export function extractCredential(headers: IncomingHttpHeaders): CredentialResult {
  const apiKey = headers['x-api-key'];
  const fromHeader = typeof apiKey === 'string' ? apiKey.trim() : undefined;
  const fromBearer = bearer(headers.authorization);
  if (fromHeader !== undefined && fromHeader.indexOf(',') !== -1) {
    // Node joins repeated X-API-Key headers with ", ": two keys in one request.
    return { kind: 'invalid', message: 'more than one X-API-Key header' };
  }
  if (fromHeader && fromBearer && fromHeader !== fromBearer) {
    return { kind: 'invalid', message: 'X-API-Key and Authorization: Bearer carry different credentials; send one' };
  }
  const secret = fromHeader || fromBearer;
  return secret ? { kind: 'key', secret } : NONE;
}
