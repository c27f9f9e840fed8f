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

/**
 * What a window store answers for n requests of one key taken together, decided at one instant of
 * the store's own clock against everything counted before: the first `admitted` of the n are
 * counted, the rest are not (a denied request is never counted, so there is nothing to give back).
 */
export interface Take {
  /** how many of the n were admitted: the first ones, in the order they asked */
  readonly admitted: number;
  /** requests counted in the current bucket before these */
  readonly current: number;
  /** counts of the BUCKETS closed buckets, newest first */
  readonly closed: ArrayLike<number>;
  /** time since the current bucket began, by the store's clock */
  readonly msIntoBucket: number;
}

/** The decision of the i-th (0-based) of a take's requests: the one n checks made one by one would give. */
export function decisionOf(limit: number, take: Take, i: number): LimitDecision {
  // an admitted request counts itself; a denied one sees the window as the admitted ones left it
  const current = take.current + (i < take.admitted ? i : take.admitted) + 1;
  return evaluate(limit, current, take.closed, take.msIntoBucket);
}

/** A take from its wire form (the Redis script's reply, the primary's IPC reply): admitted, current, ms into the bucket, then the closed counts. */
export function takeOf(r: readonly number[]): Take {
  return { admitted: r[0]!, current: r[1]!, msIntoBucket: r[2]!, closed: r.slice(3) };
}

/** A take in its wire form (see takeOf). */
export function wireOf(t: Take): number[] {
  const r = [t.admitted, t.current, t.msIntoBucket];
  for (let i = 0; i < t.closed.length; i++) r.push(t.closed[i]!);
  return r;
}
