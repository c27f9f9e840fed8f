// Per-key rate limiting: a sliding window of 5-second buckets (window.ts), kept in this process
// (local.ts) or in a shared store that decides atomically by its own clock (Redis: redis-windows.ts;
// the primary of `workers: N`: cluster-store.ts), and what to do when the shared store fails.

import type { CircuitBreaker } from '../breaker.js';
import { CoalescingWindows } from './coalesce.js';
import { LocalWindows } from './local.js';
import type { LimitDecision, Take } from './window.js';

/** When the shared store fails: per-instance memory limits, let everything through, or refuse (503). */
export type FallbackPolicy = 'memory' | 'allow' | 'deny';

/** The store could not be asked and the policy is "deny". */
export const UNAVAILABLE = 'unavailable' as const;

/**
 * A shared store of windows: counts up to `n` requests of `keyId` against `limit` per minute in
 * one atomic step, by the store's own clock (see Take). Redis and the cluster primary have it.
 */
export interface WindowStore {
  take(keyId: string, limit: number, n: number): Promise<Take>;
  /**
   * Uncount one request a take admitted moments ago (a later stage refused it: a key group's
   * limit, a quota): from the newest bucket the window counted into, or the one before.
   */
  giveBack?(keyId: string): Promise<void>;
}

/** The windows the primary of `workers: N` keeps for every worker (cluster-store.ts). */
export function counterStore(): LocalWindows {
  return new LocalWindows();
}

/** Windows in this process's memory behind the WindowStore interface, on `now` (tests). */
export function memoryWindows(now: () => number = Date.now): WindowStore {
  const windows = new LocalWindows();
  return { take: (keyId, limit, n) => Promise.resolve(windows.take(keyId, limit, n, now())), giveBack: (keyId) => Promise.resolve(windows.giveBack(keyId)) };
}

export interface LimiterEvents {
  /** the shared store failed (degraded = true) or answered again (false) */
  onSwitch?(degraded: boolean, err?: unknown): void;
}

export class KeyRateLimiter {
  /** set when the counters are this process's own: answered synchronously (checkNow) */
  private readonly local: LocalWindows | undefined;
  /** a shared store's checks, coalesced per key and event-loop turn */
  private readonly shared: CoalescingWindows | undefined;
  /** the shared store itself (give-backs are not coalesced: they are rare, on refusals only) */
  private readonly store: WindowStore | undefined;
  private readonly fallback: KeyRateLimiter | undefined;
  private degraded = false;
  /** times the limiter switched to or from its fallback */
  switches = 0;
  /** store errors seen */
  storeErrors = 0;

  /**
   * @param store the windows: a shared store (Redis, the cluster primary) or 'local' for this
   *   process's own windows (synchronous, cannot fail)
   * @param now the clock of this process's own windows (and of the fallback); a shared store keeps its own
   */
  constructor(
    store: WindowStore | 'local',
    private readonly policy: FallbackPolicy = 'memory',
    private readonly events: LimiterEvents = {},
    private readonly now: () => number = Date.now,
    /** a shared store's breaker: while open, the fallback answers without asking the store */
    private readonly breaker?: CircuitBreaker,
  ) {
    this.local = store === 'local' ? new LocalWindows() : undefined;
    this.shared = store === 'local' ? undefined : new CoalescingWindows(store);
    this.store = store === 'local' ? undefined : store;
    // a shared store can fail: then per-instance memory windows answer under the 'memory' policy
    this.fallback = store === 'local' || policy !== 'memory' ? undefined : new KeyRateLimiter('local', 'allow', {}, now);
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

  /** store calls made and checks they answered (coalescing; tests and the bench) */
  get storeCalls(): { calls: number; checks: number } {
    return { calls: this.shared?.calls ?? 0, checks: this.shared?.checks ?? 0 };
  }

  /** Count one request of `keyId` against `limit` per minute; a denied request is not counted. */
  async check(keyId: string, limit: number): Promise<LimitDecision | typeof UNAVAILABLE> {
    if (this.local !== undefined) return this.local.check(keyId, limit, this.now());
    if (this.breaker?.isOpen) {
      if (!this.degraded) this.switchTo(true, new Error(this.breaker.reason ?? 'circuit breaker open'));
      return this.fallbackCheck(keyId, limit);
    }
    const shared = this.shared!;
    try {
      const decision = await (this.breaker ? this.breaker.run(() => shared.check(keyId, limit)) : shared.check(keyId, limit));
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
    return this.store?.giveBack?.(keyId).catch(() => undefined);
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
}
