// Per-key sliding windows kept in this process, answered synchronously: the rate limit of a
// single-process gateway (`store.rate_limits: memory`) and the fallback of a shared store. The same
// buckets and the same evaluate() as the shared path (window.ts), with no counter keys to build,
// no promise and nothing allocated per request but the decision.

import { BUCKETS, BUCKET_MS, bucketOf, evaluate, type LimitDecision, type Take } from './window.js';

interface Window {
  /** the bucket `current` counts */
  bucket: number;
  current: number;
  /** counts of the BUCKETS buckets before `bucket`, newest first */
  readonly closed: Int32Array;
}

/** A window nobody used for this long holds only zeros: dropped at the next sweep. */
const IDLE_MS = (BUCKETS + 1) * BUCKET_MS;

export class LocalWindows {
  private readonly windows = new Map<string, Window>();
  private sweptAt = 0;

  /** Count one request of `keyId` against `limit` per minute at `nowMs`; a denied request is not counted. */
  check(keyId: string, limit: number, nowMs: number): LimitDecision {
    const bucket = bucketOf(nowMs);
    const w = this.window(keyId, bucket, nowMs);
    w.current++;
    const decision = evaluate(limit, w.current, w.closed, nowMs - bucket * BUCKET_MS);
    if (!decision.allowed) w.current--;
    return decision;
  }

  /**
   * Count up to `n` requests of `keyId` at `nowMs` in one step: the first ones that fit under
   * `limit` are counted, the rest are not. The same as `n` check() calls (decisionOf gives each
   * one's decision); what the primary of `workers: N` answers a worker's batch with.
   */
  take(keyId: string, limit: number, n: number, nowMs: number): Take {
    const bucket = bucketOf(nowMs);
    const w = this.window(keyId, bucket, nowMs);
    let closed = 0;
    for (let i = 0; i < BUCKETS; i++) closed += w.closed[i]!;
    const current = w.current;
    const admitted = Math.max(0, Math.min(n, limit - closed - current));
    w.current += admitted;
    return { admitted, current, closed: Array.from(w.closed), msIntoBucket: nowMs - bucket * BUCKET_MS };
  }

  /** The window of `keyId`, moved forward to `bucket`. */
  private window(keyId: string, bucket: number, nowMs: number): Window {
    if (nowMs - this.sweptAt >= IDLE_MS) this.sweep(bucket, nowMs);
    let w = this.windows.get(keyId);
    if (w === undefined) {
      w = { bucket, current: 0, closed: new Int32Array(BUCKETS) };
      this.windows.set(keyId, w);
    } else if (w.bucket !== bucket) advance(w, bucket);
    return w;
  }

  /**
   * Give back one request counted by check() or take() moments ago (a later stage refused it): taken from
   * the newest bucket the window counted into, or the one before when another request has just
   * moved the window on.
   */
  giveBack(keyId: string): void {
    const w = this.windows.get(keyId);
    if (w === undefined) return;
    if (w.current > 0) w.current--;
    else if (w.closed[0]! > 0) w.closed[0]!--;
  }

  private sweep(bucket: number, nowMs: number): void {
    this.sweptAt = nowMs;
    for (const [id, w] of this.windows) if (bucket - w.bucket > BUCKETS) this.windows.delete(id);
  }
}

/** Move a window forward to `bucket`: the current count becomes the newest closed one. */
function advance(w: Window, bucket: number): void {
  const steps = bucket - w.bucket;
  if (steps <= 0) {
    // the clock went back (a test clock, or NTP): count into the newest bucket we have
    return;
  }
  const c = w.closed;
  if (steps > BUCKETS) c.fill(0);
  else {
    c.copyWithin(steps, 0, BUCKETS - steps);
    c.fill(0, 0, steps);
    c[steps - 1] = w.current;
  }
  w.bucket = bucket;
  w.current = 0;
}
