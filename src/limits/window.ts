// Sliding-window arithmetic, pure. A key's minute is split into BUCKETS buckets; a request is
// allowed when the current bucket plus the BUCKETS closed buckets before it hold at most the limit.
// That span covers 60 to 65 s, never less than 60: over ANY rolling 60 s a key gets at most its
// limit (no burst at a window edge can pass 2×). The price is under-admission of at most one bucket
// (5 s of 60 = 8.3%) for a client sending at exactly its limit. The classic "current + weighted
// previous window" estimate was rejected: a burst at the end of one window lets ~2× through.

export const WINDOW_SECONDS = 60;
export const BUCKETS = 12;
export const BUCKET_MS = (WINDOW_SECONDS * 1000) / BUCKETS;

export function bucketOf(nowMs: number): number {
  return Math.floor(nowMs / BUCKET_MS);
}

export interface LimitDecision {
  readonly allowed: boolean;
  readonly limit: number;
  /** requests left in the window after this one */
  readonly remaining: number;
  /** seconds until more quota is available (the oldest counted requests leave the window) */
  readonly resetSeconds: number;
  /** seconds a denied client should wait; 0 when allowed */
  readonly retryAfterSeconds: number;
}

/**
 * @param current requests in the current bucket, this one included
 * @param closed  counts of the closed buckets, newest first (closed[0] = previous bucket); length BUCKETS
 * @param msIntoBucket time since the current bucket began
 */
export function evaluate(limit: number, current: number, closed: ArrayLike<number>, msIntoBucket: number): LimitDecision {
  let total = current;
  for (let i = 0; i < BUCKETS; i++) total += closed[i] ?? 0;
  const allowed = total <= limit;
  const untilBoundary = BUCKET_MS - msIntoBucket;
  // Counted requests leave the window bucket by bucket, oldest first, one bucket per boundary.
  const secondsUntilFreed = (needed: number): number => {
    let freed = 0;
    for (let k = 0; k <= BUCKETS; k++) {
      freed += k < BUCKETS ? (closed[BUCKETS - 1 - k] ?? 0) : current;
      if (freed >= needed) return Math.ceil((untilBoundary + k * BUCKET_MS) / 1000);
    }
    return Math.ceil((untilBoundary + BUCKETS * BUCKET_MS) / 1000);
  };
  if (!allowed) {
    // this request is not counted; it fits once total - limit earlier ones have left
    const wait = secondsUntilFreed(total - limit);
    return { allowed, limit, remaining: 0, resetSeconds: wait, retryAfterSeconds: wait };
  }
  return { allowed, limit, remaining: limit - total, resetSeconds: secondsUntilFreed(1), retryAfterSeconds: 0 };
}
