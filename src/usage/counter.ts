// Per-key usage (request count, last use), counted in memory on the request path and written to
// the key store in one batch per interval, so no request waits on a disk write.
//
// Never lost, never doubled: each batch gets an id when it is cut and keeps it (and its exact
// counts) until the store accepted it, and the store applies an id at most once; so a batch whose
// first attempt timed out but did reach the store is not added again by the retry. What cannot be
// written by shutdown goes to a spool file (spool.ts), replayed with the same ids at the next start.

import { randomUUID } from 'node:crypto';
import type { KeyStore, UsageDelta } from '../keys/store.js';

/** Counts cut from the running tally, with the id the store de-duplicates on. */
export interface UsageBatch {
  id: string;
  counts: Map<string, UsageDelta>;
}

export class UsageCounter {
  private pending = new Map<string, UsageDelta & { lastMs: number }>();
  /** batches cut but not yet accepted by the store, oldest first */
  private unsent: UsageBatch[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  /** when counts last reached the store (or when counting began), for the flush-lag metric */
  lastFlushMs = Date.now();
  private failures = 0;

  constructor(
    private readonly store: Pick<KeyStore, 'addUsage'>,
    /** short enough that a SIGKILL loses well under a second of counts */
    private readonly intervalMs = 200,
    /** told of each failed attempt, with how many failed in a row */
    private readonly onError: (err: unknown, inRow: number) => void = () => {},
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

  /** Batches from a spool file, written before the counts cut now. */
  replay(batches: readonly UsageBatch[]): void {
    this.unsent.unshift(...batches);
  }

  /** Requests counted but not yet accepted by the store. */
  get unwritten(): number {
    let n = 0;
    for (const b of this.unsent) for (const d of b.counts.values()) n += d.count;
    for (const d of this.pending.values()) n += d.count;
    return n;
  }

  start(): void {
    this.timer ??= setInterval(() => void this.flush(), this.intervalMs);
    this.timer.unref();
  }

  /** Write what was counted; on failure the batches are kept, unchanged, for the next attempt. */
  flush(): Promise<void> {
    this.flushing ??= this.write().finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  private cut(): void {
    if (this.pending.size === 0) return;
    const counts = new Map<string, UsageDelta>();
    for (const [id, d] of this.pending) counts.set(id, { count: d.count, lastUsedAt: new Date(d.lastMs).toISOString() });
    this.pending = new Map();
    this.unsent.push({ id: randomUUID(), counts });
  }

  private async write(): Promise<void> {
    // a batch not yet accepted keeps its content (it may have reached the store): new counts wait
    // in `pending` until it is, so an outage holds one batch plus the running tally, not thousands
    if (this.unsent.length === 0) this.cut();
    while (this.unsent.length > 0) {
      const batch = this.unsent[0]!;
      try {
        await this.store.addUsage(batch.counts, batch.id);
      } catch (err) {
        this.onError(err, ++this.failures);
        return;
      }
      this.failures = 0;
      this.unsent.shift();
      this.lastFlushMs = Date.now();
    }
  }

  /** Stop the timer, write everything counted so far; resolves with the batches the store did not take. */
  async stop(): Promise<UsageBatch[]> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
    if (this.pending.size > 0 && this.unsent.length === 0) await this.flush();
    this.cut();
    const left = this.unsent;
    this.unsent = [];
    return left;
  }
}
