// Stage 7b of a request: the key's quota (usage credits), after the per-minute rate limit and
// before forwarding. One consume per request of a quota key, in the key store (exact across
// instances); keys without a quota never get here. Decisions and headers are pure.

import { isPeriodic, nextRefillMs, tickOf, type Quota, type QuotaCount, type QuotaTick } from '../keys/quota.js';
import type { QuotaCounters } from '../keys/store.js';

/** A quota decision with what the response headers say. */
export interface QuotaDecision extends QuotaCount {
  quota: Quota;
  /** seconds until the next refill (rounded up); null for a one-time quota */
  resetSeconds: number | null;
  /** the period the credit was taken in (what a refund gives it back to) */
  tick: QuotaTick;
}

export function decisionOf(q: Quota, count: QuotaCount, nowMs: number, tick: QuotaTick = tickOf(q, nowMs)): QuotaDecision {
  const next = nextRefillMs(q, nowMs);
  return { allowed: count.allowed, remaining: count.remaining, quota: q, resetSeconds: next === null ? null : Math.max(1, Math.ceil((next - nowMs) / 1000)), tick };
}

export class QuotaGate {
  constructor(
    private readonly counters: Pick<QuotaCounters, 'consumeQuota' | 'refundQuota'>,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Take one credit of `owner`'s counter under `quota`: synchronous with a SQLite store, a promise
   * with Redis. A refused request takes nothing. Throws (or rejects) when the store cannot answer.
   */
  check(owner: string, quota: Quota): QuotaDecision | Promise<QuotaDecision> {
    const nowMs = this.now();
    const tick = tickOf(quota, nowMs);
    const count = this.counters.consumeQuota(owner, tick);
    return count instanceof Promise ? count.then((c) => decisionOf(quota, c, nowMs, tick)) : decisionOf(quota, count, nowMs, tick);
  }

  /**
   * Give back the credit an allowed decision took (a later stage refused the request: a refused
   * request consumes nothing). A store failure is ignored: the credit stays spent.
   */
  refund(owner: string, d: QuotaDecision): void | Promise<void> {
    if (!d.allowed) return;
    try {
      const r = this.counters.refundQuota(owner, d.tick);
      if (r instanceof Promise) return r.catch(() => undefined);
    } catch {
      // the credit stays spent
    }
  }
}

/**
 * The response headers of a quota key, on allowed responses and on the 429: X-Quota-Limit and
 * X-Quota-Period (day, week, month; none for a one-time quota), X-Quota-Remaining, and
 * X-Quota-Reset (seconds to the next refill; absent when none comes).
 */
export function stageQuotaHeaders(out: { stage(name: string, value: string): void }, d: QuotaDecision): void {
  const q = d.quota;
  if (isPeriodic(q)) {
    out.stage('x-quota-limit', String(q.limit));
    out.stage('x-quota-period', q.period);
  } else out.stage('x-quota-period', 'none');
  out.stage('x-quota-remaining', String(d.remaining));
  if (d.resetSeconds !== null) out.stage('x-quota-reset', String(d.resetSeconds));
}

/** The headers of the 429: the quota headers and Retry-After (seconds to the next refill) when one comes. */
export function quotaRefusalHeaders(d: QuotaDecision): Record<string, string> {
  const h: Record<string, string> = {};
  stageQuotaHeaders({ stage: (name, value) => void (h[name] = value) }, d);
  if (d.resetSeconds !== null) h['retry-after'] = String(d.resetSeconds);
  return h;
}

/** The 429's message. */
export function quotaMessage(d: QuotaDecision): string {
  const q = d.quota;
  if (!isPeriodic(q)) return "quota exhausted: this key's credits are used up and do not refill (no Retry-After); an administrator can top them up";
  return `quota of ${q.limit} requests per ${q.period} exhausted; it refills in ${d.resetSeconds} s`;
}
