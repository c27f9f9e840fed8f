// Rate-limit response headers: the IETF draft's structured fields and the widely used X- form.
// Every value is in seconds relative to now (X-RateLimit-Reset too, as in the draft's `t`).

import type { LimitDecision } from './window.js';
import { WINDOW_SECONDS } from './window.js';

export function rateLimitHeaders(d: LimitDecision): Record<string, string> {
  const h: Record<string, string> = {};
  stageRateLimitHeaders({ stage: (name, value) => void (h[name] = value) }, d);
  return h;
}

/** The same headers, in the same order, handed to `out.stage` (a response staging its headers). */
export function stageRateLimitHeaders(out: { stage(name: string, value: string): void }, d: LimitDecision): void {
  out.stage('ratelimit-policy', policyOf(d.limit));
  out.stage('ratelimit', `"per-key";r=${d.remaining};t=${d.resetSeconds}`);
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
