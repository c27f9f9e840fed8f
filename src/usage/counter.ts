// Per-key usage (request count, last use), counted in memory on the request path and written to
// the key store in one batch per interval, so no request waits on a disk write.

import type { KeyStore, UsageDelta } from '../keys/store.js';

export class UsageCounter {
  private pending = new Map<string, UsageDelta & { lastMs: number }>();
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

  record(keyId: string, nowMs: number): void {
    const d = this.pending.get(keyId);
    if (d === undefined) {
      this.pending.set(keyId, { count: 1, lastUsedAt: '', lastMs: nowMs });
    } else {
      d.count++;
      if (nowMs > d.lastMs) d.lastMs = nowMs;
    }
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
    for (const d of batch.values()) d.lastUsedAt = new Date(d.lastMs).toISOString();
    try {
      await this.store.addUsage(batch);
      this.lastFlushMs = Date.now();
    } catch (err) {
      for (const [id, d] of batch) {
        const now = this.pending.get(id);
        if (now === undefined) this.pending.set(id, d);
        else {
          now.count += d.count;
          now.lastMs = Math.max(now.lastMs, d.lastMs);
        }
      }
      this.onError(err);
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
