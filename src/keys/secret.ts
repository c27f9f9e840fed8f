// Key secrets: generated once, shown once, stored only as a digest.
// The digest is a domain-separated SHA-256, so a lookup is one indexed equality query and a
// digest leaked from one system cannot be replayed as a digest of another.

import { hash, randomBytes } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
/** 62^43 > 2^256, so 43 base62 digits hold any 32-byte value; padding keeps the length fixed. */
const BODY_LENGTH = 43;
const DIGEST_LABEL = 'keygate-api-key:v1\0';
export const DISPLAY_PREFIX_LENGTH = 8;

export function base62(bytes: Uint8Array): string {
  let n = BigInt('0x' + (Buffer.from(bytes).toString('hex') || '0'));
  let s = '';
  while (n > 0n) {
    s = ALPHABET[Number(n % 62n)] + s;
    n /= 62n;
  }
  return s.padStart(BODY_LENGTH, '0');
}

/** A new secret: the configured prefix + base62 of 32 random bytes. */
export function generateSecret(prefix: string): string {
  return prefix + base62(randomBytes(32));
}

/** The only form in which a secret is stored: hex SHA-256 over a label and the secret. */
export function digestSecret(secret: string): string {
  // crypto.hash (Node ≥ 20.12): one call, no Hash object; the same digest as update(label).update(secret)
  return hash('sha256', DIGEST_LABEL + secret, 'hex');
}

/** What list output shows instead of the secret, e.g. "dg_7Qx2a". */
export function displayPrefix(secret: string): string {
  return secret.slice(0, DISPLAY_PREFIX_LENGTH);
}
