// Per-key usage (request count, last use, and the hourly allowed/refused history), counted in
// memory on the request path and written to the key store in one batch per interval, so no
// request waits on a disk write and the history costs no write of its own.

import type { KeyStore, UsageDelta, UsageHour } from '../keys/store.js';

const HOUR_MS = 3_600_000;

/** What a refused request counts as in the usage history. */
export type Refused = 'limited' | 'forbidden';

type Pending = UsageDelta & { lastMs: number; hours: UsageHour[] };

export class UsageCounter {
  private pending = new Map<string, Pending>();
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  /**
   * when the last flush attempt succeeded or had nothing to write (or when counting began), for the
   * flush-lag metric: it grows only while counts wait on a failing store, not while the gateway is idle
   */
  lastFlushMs = Date.now();

  constructor(
    private readonly store: Pick<KeyStore, 'addUsage'>,
    private readonly intervalMs = 1000,
    private readonly onError: (err: unknown) => void = () => {},
  ) {}

  /** The hour slot of a key's pending delta for `nowMs` (a batch spans an hour boundary rarely). */
  private hour(keyId: string, nowMs: number): { d: Pending; h: UsageHour } {
    const hourMs = nowMs - (nowMs % HOUR_MS);
    let d = this.pending.get(keyId);
    if (d === undefined) {
      d = { count: 0, lastUsedAt: '', lastMs: 0, hours: [] };
      this.pending.set(keyId, d);
    }
    const last = d.hours[d.hours.length - 1];
    if (last !== undefined && last.hourMs === hourMs) return { d, h: last };
    let h = d.hours.find((x) => x.hourMs === hourMs);
    if (h === undefined) {
      h = { hourMs, allowed: 0, limited: 0, forbidden: 0 };
      d.hours.push(h);
    }
    return { d, h };
  }

  /** A request forwarded with this key. */
  record(keyId: string, nowMs: number): void {
    const { d, h } = this.hour(keyId, nowMs);
    d.count++;
    h.allowed++;
    if (nowMs > d.lastMs) d.lastMs = nowMs;
  }

  /** A request with this key that was refused (429 rate limit, 403 not allowed). */
  refused(keyId: string, kind: Refused, nowMs: number): void {
    this.hour(keyId, nowMs).h[kind]++;
  }

  start(): void {
    this.timer ??= setInterval(() => void this.flush(), this.intervalMs);
    this.timer.unref();
  }

  /** Write what was counted; on failure the counts are kept for the next attempt. */
  flush(): Promise<void> {
    this.flushing ??= this.write().finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  private async write(): Promise<void> {
    if (this.pending.size === 0) {
      this.lastFlushMs = Date.now();
      return;
    }
    const batch = this.pending;
    this.pending = new Map();
    for (const d of batch.values()) d.lastUsedAt = d.lastMs > 0 ? new Date(d.lastMs).toISOString() : '';
    try {
      await this.store.addUsage(batch);
      this.lastFlushMs = Date.now();
    } catch (err) {
      for (const [id, d] of batch) this.keep(id, d);
      this.onError(err);
    }
  }

  /** Put a batch entry that could not be written back, merged with what was counted since. */
  private keep(id: string, d: Pending): void {
    const now = this.pending.get(id);
    if (now === undefined) {
      this.pending.set(id, d);
      return;
    }
    now.count += d.count;
    now.lastMs = Math.max(now.lastMs, d.lastMs);
    for (const h of d.hours) {
      const same = now.hours.find((x) => x.hourMs === h.hourMs);
      if (same === undefined) now.hours.unshift(h);
      else {
        same.allowed += h.allowed;
        same.limited += h.limited;
        same.forbidden += h.forbidden;
      }
    }
  }

  /** Stop the timer and write everything counted so far. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
    if (this.pending.size > 0) await this.flush();
  }
}
