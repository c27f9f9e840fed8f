// The usage history of one key as a series: hourly or daily buckets (UTC) over a range, zero-filled,
// with allowed / rate-limited / forbidden / quota-exceeded counts. Pure: the rows come from the store.

import { ValidationError } from '../errors.js';
import type { UsageRow } from './store.js';

export type UsageBucket = 'hour' | 'day';

export interface UsagePoint {
  /** ISO 8601 start of the bucket (UTC) */
  start: string;
  allowed: number;
  limited: number;
  forbidden: number;
  /** refused with 429 quota_exceeded */
  quota: number;
}

export interface UsageSeries {
  bucket: UsageBucket;
  /** ISO 8601, inclusive (a bucket start) */
  from: string;
  /** ISO 8601, exclusive (a bucket end) */
  to: string;
  points: UsagePoint[];
  totals: { allowed: number; limited: number; forbidden: number; quota: number };
}

export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;
const SIZE: Record<UsageBucket, number> = { hour: HOUR_MS, day: DAY_MS };
/** default range: 7 days of hours, 30 days of days (what the key page's chart shows) */
const DEFAULT_DAYS: Record<UsageBucket, number> = { hour: 7, day: 30 };
/** longest range a request may ask for, in buckets */
const MAX_POINTS: Record<UsageBucket, number> = { hour: 31 * 24, day: 366 };

const INSTANT = /^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2}))?$/;

function instant(field: string, v: unknown): number | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  const ms = typeof v === 'string' && INSTANT.test(v) ? Date.parse(v.length === 10 ? `${v}T00:00:00Z` : v) : NaN;
  if (Number.isNaN(ms)) throw new ValidationError(field, 'must be a date (YYYY-MM-DD, UTC) or an ISO 8601 date-time with an offset');
  return ms;
}

export interface UsageQuery {
  from?: unknown;
  to?: unknown;
  bucket?: unknown;
  /** instead of from: this many days back from `to` */
  days?: unknown;
}

/** The checked range of a query: [fromMs, toMs) aligned to bucket boundaries. */
export function usageRange(q: UsageQuery, nowMs: number): { bucket: UsageBucket; fromMs: number; toMs: number } {
  const bucket = q.bucket === undefined || q.bucket === '' ? 'hour' : q.bucket;
  if (bucket !== 'hour' && bucket !== 'day') throw new ValidationError('bucket', 'must be hour or day');
  const size = SIZE[bucket];
  const toIn = instant('to', q.to);
  // `to` is exclusive: a given instant is rounded up to a bucket end; by default the bucket of now is the last
  const toMs = toIn !== undefined ? Math.ceil(toIn / size) * size : (Math.floor(nowMs / size) + 1) * size;
  let fromIn = instant('from', q.from);
  if (q.days !== undefined) {
    if (fromIn !== undefined) throw new ValidationError('days', 'cannot be given together with from');
    const days = typeof q.days === 'string' && /^\d{1,4}$/.test(q.days) ? Number(q.days) : q.days;
    const max = Math.floor((MAX_POINTS[bucket] * size) / DAY_MS);
    if (typeof days !== 'number' || !Number.isInteger(days) || days < 1 || days > max) {
      throw new ValidationError('days', `must be a whole number of days from 1 to ${max}`);
    }
    fromIn = toMs - days * DAY_MS;
  }
  const fromMs = Math.floor((fromIn ?? toMs - DEFAULT_DAYS[bucket] * DAY_MS) / size) * size;
  if (fromMs >= toMs) throw new ValidationError('from', 'must be before to');
  if ((toMs - fromMs) / size > MAX_POINTS[bucket]) {
    throw new ValidationError('from', `the range is at most ${MAX_POINTS[bucket]} ${bucket}s (${Math.floor((MAX_POINTS[bucket] * size) / DAY_MS)} days) for bucket=${bucket}`);
  }
  return { bucket, fromMs, toMs };
}

/** Stored hour rows → zero-filled buckets over [fromMs, toMs). */
export function usageSeries(rows: readonly UsageRow[], bucket: UsageBucket, fromMs: number, toMs: number): UsageSeries {
  const size = SIZE[bucket];
  const points: UsagePoint[] = [];
  for (let t = fromMs; t < toMs; t += size) points.push({ start: new Date(t).toISOString(), allowed: 0, limited: 0, forbidden: 0, quota: 0 });
  const totals = { allowed: 0, limited: 0, forbidden: 0, quota: 0 };
  for (const r of rows) {
    const ms = Date.parse(r.hour);
    if (!(ms >= fromMs && ms < toMs)) continue;
    const p = points[Math.floor((ms - fromMs) / size)]!;
    p.allowed += r.allowed;
    p.limited += r.limited;
    p.forbidden += r.forbidden;
    p.quota += r.quota;
    totals.allowed += r.allowed;
    totals.limited += r.limited;
    totals.forbidden += r.forbidden;
    totals.quota += r.quota;
  }
  return { bucket, from: new Date(fromMs).toISOString(), to: new Date(toMs).toISOString(), points, totals };
}
