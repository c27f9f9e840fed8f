// Per-key rate limiting composed over rate-limiter-flexible: RLF keeps one atomic counter per
// (key, 5-second bucket) in memory or Redis; this module adds the sliding window (window.ts) and
// what to do when the shared store fails.

import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import type { CircuitBreaker } from '../breaker.js';
import { LocalWindows } from './local.js';
import { BUCKETS, BUCKET_MS, bucketOf, evaluate, type LimitDecision } from './window.js';

/** When the shared store fails: per-instance memory limits, let everything through, or refuse (503). */
export type FallbackPolicy = 'memory' | 'allow' | 'deny';

/** The store could not be asked and the policy is "deny". */
export const UNAVAILABLE = 'unavailable' as const;

/** Bucket counters live a little longer than the 65 s they can be counted for. */
const COUNTER_TTL_SECONDS = Math.ceil(((BUCKETS + 2) * BUCKET_MS) / 1000);
/** RLF refuses past `points`; the limit is applied here instead, so it must never bind. */
const NO_CAP = 1_000_000_000;

export function counterStore(): RateLimiterMemory {
  return new RateLimiterMemory({ points: NO_CAP, duration: COUNTER_TTL_SECONDS, keyPrefix: 'kg_rl' });
}

/**
 * What the limiter needs of a counter store: rate-limiter-flexible's memory and Redis limiters
 * have it, and so has the workers' client of the primary's counters (cluster-store.ts).
 */
export interface CounterStore {
  consume(key: string, points: number): Promise<{ consumedPoints: number }>;
  get(key: string): Promise<{ consumedPoints: number } | null>;
  reward(key: string, points: number): Promise<unknown>;
}

interface ClosedBuckets {
  /** the bucket during which `counts` was assembled */
  bucket: number;
  /** counts of buckets bucket-1 … bucket-BUCKETS (newest first), final once closed */
  counts: number[];
}

export interface LimiterEvents {
  /** the shared store failed (degraded = true) or answered again (false) */
  onSwitch?(degraded: boolean, err?: unknown): void;
}

export class KeyRateLimiter {
  private readonly closed = new Map<string, ClosedBuckets>();
  /** set when the counters are this process's own: answered synchronously (checkNow) */
  private readonly local: LocalWindows | undefined;
  private readonly fallback: KeyRateLimiter | undefined;
  private degraded = false;
  /** times the limiter switched to or from its fallback */
  switches = 0;
  /** store errors seen */
  storeErrors = 0;

  /**
   * @param store the counters: a shared store (Redis, the cluster primary), rate-limiter-flexible's
   *   memory limiter, or 'local' for this process's own windows (synchronous, cannot fail)
   */
  constructor(
    private readonly store: CounterStore | 'local',
    private readonly policy: FallbackPolicy = 'memory',
    private readonly events: LimiterEvents = {},
    private readonly now: () => number = Date.now,
    /** a shared store's breaker: while open, the fallback answers without asking the store */
    private readonly breaker?: CircuitBreaker,
  ) {
    this.local = store === 'local' ? new LocalWindows() : undefined;
    // A memory store cannot fail; a shared one falls back to per-instance memory counters.
    this.fallback = store === 'local' || store instanceof RateLimiterMemory || policy !== 'memory' ? undefined : new KeyRateLimiter('local', 'allow', {}, now);
  }

  /**
   * The decision now, without a promise, when the counters are this process's own; undefined
   * when they are elsewhere (then use check()).
   */
  checkNow(keyId: string, limit: number): LimitDecision | undefined {
    return this.local?.check(keyId, limit, this.now());
  }

  get isDegraded(): boolean {
    return this.degraded;
  }

  /** Count one request of `keyId` against `limit` per minute; a denied request is not counted. */
  async check(keyId: string, limit: number): Promise<LimitDecision | typeof UNAVAILABLE> {
    if (this.local !== undefined) return this.local.check(keyId, limit, this.now());
    if (this.breaker?.isOpen) {
      if (!this.degraded) this.switchTo(true, new Error(this.breaker.reason ?? 'circuit breaker open'));
      return this.fallbackCheck(keyId, limit);
    }
    try {
      const decision = await (this.breaker ? this.breaker.run(() => this.checkStore(keyId, limit)) : this.checkStore(keyId, limit));
      if (this.degraded) this.switchTo(false);
      return decision;
    } catch (err) {
      this.storeErrors++;
      if (!this.degraded) this.switchTo(true, err);
      return this.fallbackCheck(keyId, limit);
    }
  }

  /**
   * Give back one request that check() counted for `keyId` moments ago: a later stage (a group's
   * limit, a quota) refused it, and a refused request consumes nothing. Store failures are ignored
   * (the count then errs on the side of refusing).
   */
  giveBack(keyId: string): void | Promise<void> {
    if (this.local !== undefined) return this.local.giveBack(keyId);
    if (this.degraded || this.breaker?.isOpen) return this.fallback?.giveBack(keyId);
    return (this.store as CounterStore).reward(`${keyId}:${bucketOf(this.now())}`, 1).then(
      () => undefined,
      () => undefined,
    );
  }

  /** The answer of the fallback policy (the store failed or its breaker is open). */
  private fallbackCheck(keyId: string, limit: number): Promise<LimitDecision | typeof UNAVAILABLE> | LimitDecision | typeof UNAVAILABLE {
    if (this.policy === 'deny') return UNAVAILABLE;
    if (this.fallback) return this.fallback.check(keyId, limit);
    return { allowed: true, limit, remaining: limit, resetSeconds: 0, retryAfterSeconds: 0 };
  }

  /** The breaker closed (a background probe got an answer): back to the shared store. */
  storeAnswers(): void {
    if (this.degraded) this.switchTo(false);
  }

  private switchTo(degraded: boolean, err?: unknown): void {
    this.degraded = degraded;
    this.switches++;
    this.events.onSwitch?.(degraded, err);
  }

  private async checkStore(keyId: string, limit: number): Promise<LimitDecision> {
    const now = this.now();
    const bucket = bucketOf(now);
    const counter = `${keyId}:${bucket}`;
    const [current, closed] = await Promise.all([this.consume(counter), this.closedBuckets(keyId, bucket)]);
    const decision = evaluate(limit, current, closed, now - bucket * BUCKET_MS);
    if (!decision.allowed) await (this.store as CounterStore).reward(counter, 1);
    return decision;
  }

  private async consume(counter: string): Promise<number> {
    try {
      return (await (this.store as CounterStore).consume(counter, 1)).consumedPoints;
    } catch (err) {
      // RLF rejects with a RateLimiterRes past `points` (never, given NO_CAP) and with an Error on store failure.
      if (err instanceof RateLimiterRes) return err.consumedPoints;
      throw err;
    }
  }

  /**
   * Counts of the closed buckets. A bucket is read from the store once after it closed (other
   * instances may have counted into it) and reused from then on: steady traffic costs one store
   * operation per request, plus one read per key per bucket.
   */
  private async closedBuckets(keyId: string, bucket: number): Promise<number[]> {
    const known = this.closed.get(keyId);
    if (known !== undefined && known.bucket === bucket) return known.counts;
    const counts = new Array<number>(BUCKETS);
    const reads: Promise<void>[] = [];
    for (let i = 0; i < BUCKETS; i++) {
      const b = bucket - 1 - i;
      // final if it was already closed when `known` was assembled
      if (known !== undefined && b < known.bucket && b >= known.bucket - BUCKETS) {
        counts[i] = known.counts[known.bucket - 1 - b]!;
      } else {
        reads.push((this.store as CounterStore).get(`${keyId}:${b}`).then((r) => void (counts[i] = r?.consumedPoints ?? 0)));
      }
    }
    await Promise.all(reads);
    this.closed.set(keyId, { bucket, counts });
    return counts;
  }
}
