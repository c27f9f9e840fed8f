// Stage 7/7b for a key in a group: the request needs the key's minute window (already taken when
// this runs), the group's minute window, the key's quota and the group's quota. Each is taken in
// turn; when one refuses, what the earlier ones took is given back, so a refused request consumes
// nothing anywhere. Synchronous while the counters are (local windows, SQLite quotas); a promise
// only where a counter is remote. Keys without a group never come here (the pipeline's null check).

import type { GroupLimits } from '../keys/group.js';
import { keyQuotaOwner, isPeriodic } from '../keys/quota.js';
import type { KeyAccess } from '../keys/model.js';
import { rateLimitHeaders, type Policy } from './headers.js';
import { UNAVAILABLE, type KeyRateLimiter } from './limiter.js';
import { quotaMessage, quotaRefusalHeaders, type QuotaDecision, type QuotaGate } from './quota.js';
import type { LimitDecision } from './window.js';

/** What the request may go on with: the headers describe the budget with the least remaining. */
export interface GroupAllowed {
  allowed: true;
  rate: LimitDecision;
  /** "per-key" or "per-group": whose window `rate` is */
  ratePolicy: Policy;
  /** the quota with the least remaining (undefined: neither the key nor the group has one) */
  quota: QuotaDecision | undefined;
}

/** A refusal, as the pipeline sends it (it adds the route, path and key). */
export interface GroupRefused {
  allowed: false;
  status: number;
  code: string;
  message: string;
  headers: Record<string, string>;
}

export type GroupResult = GroupAllowed | GroupRefused;

type Maybe<T> = T | Promise<T>;

function then<T, U>(v: Maybe<T>, f: (t: T) => Maybe<U>): Maybe<U> {
  return v instanceof Promise ? v.then(f) : f(v);
}

/** A quota check whose failure (store down) is a value, not a throw. */
type QuotaAnswer = QuotaDecision | { failed: unknown } | undefined;

export class GroupStage {
  constructor(
    private readonly limiter: KeyRateLimiter,
    private readonly quotas: QuotaGate,
  ) {}

  /** `key`: the key's own window decision, allowed (its request is counted there). */
  admit(access: KeyAccess, key: LimitDecision): Maybe<GroupResult> {
    const g = access.group!;
    const window = g.rateLimit === null ? undefined : (this.limiter.checkNow(g.owner, g.rateLimit) ?? this.limiter.check(g.owner, g.rateLimit));
    return then(window, (gw) => {
      if (gw !== undefined && (gw === UNAVAILABLE || !gw.allowed)) {
        this.giveBack(access.key.id);
        if (gw === UNAVAILABLE) return unavailable('rate limits cannot be checked right now (rate-limit store unreachable); retry shortly');
        return { allowed: false, status: 429, code: 'rate_limited', message: groupRateMessage(g, gw), headers: rateLimitHeaders(gw, 'per-group') };
      }
      const windows = () => {
        this.giveBack(access.key.id);
        if (gw !== undefined) this.giveBack(g.owner);
      };
      const keyOwner = keyQuotaOwner(access.key.id);
      return then(this.quota(keyOwner, access), (kq) => {
        if (kq !== undefined && !('allowed' in kq)) {
          windows();
          return unavailable(`this key's quota cannot be checked right now (key store: ${why(kq.failed)}); retry shortly`);
        }
        if (kq !== undefined && !kq.allowed) {
          windows();
          return { allowed: false, status: 429, code: 'quota_exceeded', message: quotaMessage(kq), headers: quotaRefusalHeaders(kq) };
        }
        return then(this.quota(g.owner, undefined, g), (gq) => {
          if (gq !== undefined && (!('allowed' in gq) || !gq.allowed)) {
            windows();
            if (kq !== undefined) void this.quotas.refund(keyOwner, kq);
            if (!('allowed' in gq)) return unavailable(`the quota of group "${g.name}" cannot be checked right now (key store: ${why(gq.failed)}); retry shortly`);
            return { allowed: false, status: 429, code: 'quota_exceeded', message: groupQuotaMessage(g, gq), headers: quotaRefusalHeaders(gq) };
          }
          const groupTighter = gw !== undefined && gw.remaining < key.remaining;
          return {
            allowed: true,
            rate: groupTighter ? gw : key,
            ratePolicy: groupTighter ? 'per-group' : 'per-key',
            quota: kq === undefined ? gq : gq === undefined || kq.remaining <= gq.remaining ? kq : gq,
          };
        });
      });
    });
  }

  /** The key's quota (`access`) or the group's (`g`); undefined when it has none. */
  private quota(owner: string, access?: KeyAccess, g?: GroupLimits): Maybe<QuotaAnswer> {
    const q = access !== undefined ? access.key.quota : g!.quota;
    if (q === null) return undefined;
    try {
      const d = this.quotas.check(owner, q);
      return d instanceof Promise ? d.catch((failed: unknown) => ({ failed })) : d;
    } catch (failed) {
      return { failed };
    }
  }

  private giveBack(owner: string): void {
    const r = this.limiter.giveBack(owner);
    if (r instanceof Promise) r.catch(() => undefined);
  }
}

function unavailable(message: string): GroupRefused {
  return { allowed: false, status: 503, code: 'unavailable', message, headers: { 'retry-after': '1' } };
}

function why(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The group's window refused: the message says it is the group's budget, shared by its keys. */
export function groupRateMessage(g: GroupLimits, d: LimitDecision): string {
  return `group "${g.name}": ${d.limit} requests per minute shared by its keys exceeded; retry in ${d.retryAfterSeconds} s`;
}

export function groupQuotaMessage(g: GroupLimits, d: QuotaDecision): string {
  const q = d.quota;
  if (!isPeriodic(q)) return `group "${g.name}": the quota shared by its keys is used up and does not refill (no Retry-After); an administrator can top it up`;
  return `group "${g.name}": quota of ${q.limit} requests per ${q.period} shared by its keys exhausted; it refills in ${d.resetSeconds} s`;
}
