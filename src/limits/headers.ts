// Rate-limit response headers: the IETF draft's structured fields and the widely used X- form.
// Every value is in seconds relative to now (X-RateLimit-Reset too, as in the draft's `t`).

import type { LimitDecision } from './window.js';
import { WINDOW_SECONDS } from './window.js';

/** `policy`: the budget's name in the IETF fields, "per-key" or (a key group's shared budget) "per-group". */
export function rateLimitHeaders(d: LimitDecision, policy: Policy = 'per-key'): Record<string, string> {
  const h: Record<string, string> = {};
  stageRateLimitHeaders({ stage: (name, value) => void (h[name] = value) }, d, policy);
  return h;
}

export type Policy = 'per-key' | 'per-group';

/** The same headers, in the same order, handed to `out.stage` (a response staging its headers). */
export function stageRateLimitHeaders(out: { stage(name: string, value: string): void }, d: LimitDecision, policy: Policy = 'per-key'): void {
  out.stage('ratelimit-policy', policy === 'per-key' ? policyOf(d.limit) : `"${policy}";q=${d.limit};w=${WINDOW_SECONDS}`);
  out.stage('ratelimit', `"${policy}";r=${d.remaining};t=${d.resetSeconds}`);
  out.stage('x-ratelimit-limit', String(d.limit));
  out.stage('x-ratelimit-remaining', String(d.remaining));
  out.stage('x-ratelimit-reset', String(d.resetSeconds));
  if (!d.allowed) out.stage('retry-after', String(d.retryAfterSeconds));
}

/** RateLimit-Policy of the last limit seen: the same string while a key's limit stays the same. */
let lastPolicy = { limit: -1, value: '' };
function policyOf(limit: number): string {
  if (lastPolicy.limit !== limit) lastPolicy = { limit, value: `"per-key";q=${limit};w=${WINDOW_SECONDS}` };
  return lastPolicy.value;
}
