// Rate-limit response headers: the IETF draft's structured fields and the widely used X- form.
// Every value is in seconds relative to now (X-RateLimit-Reset too, as in the draft's `t`).

import type { LimitDecision } from './window.js';
import { WINDOW_SECONDS } from './window.js';

export function rateLimitHeaders(d: LimitDecision): Record<string, string> {
  const h: Record<string, string> = {
    'ratelimit-policy': `"per-key";q=${d.limit};w=${WINDOW_SECONDS}`,
    ratelimit: `"per-key";r=${d.remaining};t=${d.resetSeconds}`,
    'x-ratelimit-limit': String(d.limit),
    'x-ratelimit-remaining': String(d.remaining),
    'x-ratelimit-reset': String(d.resetSeconds),
  };
  if (!d.allowed) h['retry-after'] = String(d.retryAfterSeconds);
  return h;
}
