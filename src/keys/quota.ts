// Quotas (usage credits), pure: the spec a key (later a group) carries, the calendar periods it
// refills on, and the refill rule. No timer per key: a counter holds (balance, period index) and
// the refill is computed from the period when the counter is next read or consumed. The stores
// apply `refill` atomically (SQLite: one UPSERT statement; Redis: one Lua script) and a test checks
// both against this function.

export const QUOTA_PERIODS = ['day', 'week', 'month'] as const;
export const QUOTA_REFILLS = ['reset', 'add'] as const;
export type QuotaPeriod = (typeof QUOTA_PERIODS)[number];
export type QuotaRefill = (typeof QUOTA_REFILLS)[number];

/**
 * `limit` credits per `period`: `reset` sets the balance back to `limit` at each new period, `add`
 * adds `limit` per period elapsed (unused credits carry over). Periods follow UTC calendar
 * boundaries (day 00:00, week Monday 00:00, month the 1st 00:00), or repeat from `start` when given
 * (its time of day, weekday or day of month; a day of month the month lacks is its last day).
 */
export interface PeriodicQuota {
  limit: number;
  period: QuotaPeriod;
  refill: QuotaRefill;
  /** ISO 8601 instant the periods are anchored at; null = calendar boundaries */
  start: string | null;
}

/** `remaining` credits, never refilled (a trial key, a one-time key); topped up by an administrator. */
export interface OneTimeQuota {
  remaining: number;
}

export type Quota = PeriodicQuota | OneTimeQuota;

export function isPeriodic(q: Quota): q is PeriodicQuota {
  return (q as PeriodicQuota).period !== undefined;
}

/** A counter as stored: the balance left and the period index it belongs to. */
export interface QuotaState {
  balance: number;
  period: number;
}

/** What one consume needs, computed from the spec and the clock (the stores do no calendar math). */
export interface QuotaTick {
  /** the period index now (0 for a one-time quota) */
  period: number;
  /** the balance of a counter never used, and what `reset` refills to */
  limit: number;
  /** refill `add` (false: reset, or a one-time quota) */
  add: boolean;
}

export const DAY_MS = 86_400_000;
const WEEK_MS = 7 * DAY_MS;
/** 1970-01-05, the first Monday after the epoch: calendar weeks start there. */
const FIRST_MONDAY_MS = 4 * DAY_MS;

function daysInMonth(year: number, month: number): number {
  return new Date(Date.UTC(year, month + 1, 0)).getUTCDate();
}

/** The instant `k` months after the anchor (k may be negative), its day of month clamped. */
function monthBoundary(anchor: Date, k: number): number {
  const y = anchor.getUTCFullYear();
  const m = anchor.getUTCMonth() + k;
  const year = y + Math.floor(m / 12);
  const month = ((m % 12) + 12) % 12;
  const day = Math.min(anchor.getUTCDate(), daysInMonth(year, month));
  return Date.UTC(year, month, day, anchor.getUTCHours(), anchor.getUTCMinutes(), anchor.getUTCSeconds(), anchor.getUTCMilliseconds());
}

/** The anchor of a spec: `start`, or the calendar's (1970-01-01, a Monday for weeks). */
function anchorMs(q: PeriodicQuota): number {
  if (q.start !== null) return Date.parse(q.start);
  return q.period === 'week' ? FIRST_MONDAY_MS : 0;
}

/** Index of the period `nowMs` falls in (any integer; only differences and order matter). */
export function periodIndex(q: PeriodicQuota, nowMs: number): number {
  const a = anchorMs(q);
  if (q.period === 'day') return Math.floor((nowMs - a) / DAY_MS);
  if (q.period === 'week') return Math.floor((nowMs - a) / WEEK_MS);
  const anchor = new Date(a);
  const now = new Date(nowMs);
  let k = (now.getUTCFullYear() - anchor.getUTCFullYear()) * 12 + (now.getUTCMonth() - anchor.getUTCMonth());
  if (monthBoundary(anchor, k) > nowMs) k--;
  else if (monthBoundary(anchor, k + 1) <= nowMs) k++;
  return k;
}

/** When period `index` begins (ms since the epoch). */
export function periodStartMs(q: PeriodicQuota, index: number): number {
  const a = anchorMs(q);
  if (q.period === 'day') return a + index * DAY_MS;
  if (q.period === 'week') return a + index * WEEK_MS;
  return monthBoundary(new Date(a), index);
}

/** When the next refill happens after `nowMs`; null for a one-time quota (never). */
export function nextRefillMs(q: Quota, nowMs: number): number | null {
  if (!isPeriodic(q)) return null;
  return periodStartMs(q, periodIndex(q, nowMs) + 1);
}

export function tickOf(q: Quota, nowMs: number): QuotaTick {
  if (!isPeriodic(q)) return { period: 0, limit: q.remaining, add: false };
  return { period: periodIndex(q, nowMs), limit: q.limit, add: q.refill === 'add' };
}

/**
 * The rule: a counter's balance as of period `t.period`. Never used → `limit`; a later period →
 * `limit` (reset) or the balance plus `limit` per period elapsed (add); the same or an earlier
 * period (a clock set back) → unchanged.
 */
export function refill(state: QuotaState | undefined, t: QuotaTick): QuotaState {
  if (state === undefined) return { balance: t.limit, period: t.period };
  if (state.period >= t.period) return state;
  return { balance: t.add ? state.balance + t.limit * (t.period - state.period) : t.limit, period: t.period };
}

/** The result of one consume: allowed (one credit taken) or not (nothing taken), and what is left. */
export interface QuotaCount {
  allowed: boolean;
  /** credits left after this request */
  remaining: number;
}

/** The reference consume (memory): what the stores do atomically. */
export function consume(state: QuotaState | undefined, t: QuotaTick): { next: QuotaState | undefined; count: QuotaCount } {
  const now = refill(state, t);
  if (now.balance <= 0) return { next: state, count: { allowed: false, remaining: Math.max(0, now.balance) } };
  const next = { balance: now.balance - 1, period: now.period };
  return { next, count: { allowed: true, remaining: next.balance } };
}

/** A key's quota as the admin APIs and the CLI show it: the spec plus its counter now. */
export interface QuotaStatus {
  remaining: number;
  /** ISO 8601 of the next refill; null for a one-time quota */
  nextRefillAt: string | null;
}

export function statusOf(q: Quota, state: QuotaState | undefined, nowMs: number): QuotaStatus {
  const balance = refill(state, tickOf(q, nowMs)).balance;
  const next = nextRefillMs(q, nowMs);
  return { remaining: Math.max(0, balance), nextRefillAt: next === null ? null : new Date(next).toISOString() };
}

/** The counter owner of a key's quota (a group's would be `group:<id>`). */
export function keyQuotaOwner(keyId: string): string {
  return keyId;
}
