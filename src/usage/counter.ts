// Per-key usage (request count, last use, and the hourly allowed/refused history, which the store
// also adds to the history of the key's group), counted in memory on the request path and written to the key store in one batch per interval, so no
// request waits on a disk write and the history costs no write of its own.
//
// Never lost, never doubled: each batch gets an id when it is cut and keeps it (and its exact
// counts) until the store accepted it, and the store applies an id at most once; so a batch whose
// first attempt timed out but did reach the store is not added again by the retry. What cannot be
// written by shutdown goes to a spool file (spool.ts), replayed with the same ids at the next start.

import { randomUUID } from 'node:crypto';
import type { KeyStore, UsageDelta, UsageHour } from '../keys/store.js';

const HOUR_MS = 3_600_000;

/** What a refused request counts as in the usage history. */
export type Refused = 'limited' | 'forbidden' | 'quota';

type Pending = UsageDelta & { lastMs: number; hours: UsageHour[] };

/** Counts cut from the running tally, with the id the store de-duplicates on. */
export interface UsageBatch {
  id: string;
  counts: Map<string, UsageDelta>;
}

export class UsageCounter {
  private pending = new Map<string, Pending>();
  /** batches cut but not yet accepted by the store, oldest first */
  private unsent: UsageBatch[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  /**
   * when the last flush attempt succeeded or had nothing to write (or when counting began), for the
   * flush-lag metric: it grows only while counts wait on a failing store, not while the gateway is idle
   */
  lastFlushMs = Date.now();
  private failures = 0;

  constructor(
    private readonly store: Pick<KeyStore, 'addUsage'>,
    /** short enough that a SIGKILL loses well under a second of counts */
    private readonly intervalMs = 200,
    /** told of each failed attempt, with how many failed in a row */
    private readonly onError: (err: unknown, inRow: number) => void = () => {},
  ) {}

  /** A key's pending delta, made on its first count since the last flush. */
  private pendingOf(keyId: string): Pending {
    let d = this.pending.get(keyId);
    if (d === undefined) {
      d = { count: 0, lastUsedAt: '', lastMs: 0, hours: [] };
      this.pending.set(keyId, d);
    }
    return d;
  }

  /**
   * The hour slot of a pending delta for `nowMs` and the key's group then (a batch spans an hour
   * boundary, or sees the key move to another group, rarely).
   */
  private hourOf(d: Pending, group: string | null, nowMs: number): UsageHour {
    const hourMs = nowMs - (nowMs % HOUR_MS);
    const g = group ?? undefined;
    const last = d.hours[d.hours.length - 1];
    if (last !== undefined && last.hourMs === hourMs && last.group === g) return last;
    let h = d.hours.find((x) => x.hourMs === hourMs && x.group === g);
    if (h === undefined) {
      h = g === undefined ? { hourMs, allowed: 0, limited: 0, forbidden: 0, quota: 0 } : { hourMs, allowed: 0, limited: 0, forbidden: 0, quota: 0, group: g };
      d.hours.push(h);
    }
    return h;
  }

  /** A request forwarded with this key (of this group: null = none). */
  record(keyId: string, group: string | null, nowMs: number): void {
    const d = this.pendingOf(keyId);
    const h = this.hourOf(d, group, nowMs);
    d.count++;
    h.allowed++;
    if (nowMs > d.lastMs) d.lastMs = nowMs;
  }

  /** A request with this key that was refused (429 rate limit, 403 not allowed, 429 quota used up). */
  refused(keyId: string, group: string | null, kind: Refused, nowMs: number): void {
    const h = this.hourOf(this.pendingOf(keyId), group, nowMs);
    if (kind === 'quota') h.quota = (h.quota ?? 0) + 1;
    else h[kind]++;
  }

  /** ids of replayed (spooled) batches not yet accepted */
  private replayed = new Set<string>();

  /** Batches from a spool file, written before the counts cut now. */
  replay(batches: readonly UsageBatch[]): void {
    this.unsent.unshift(...batches);
    for (const b of batches) this.replayed.add(b.id);
  }

  /** Whether batches from a spool still wait for the store. */
  get replaying(): boolean {
    return this.replayed.size > 0;
  }

  /** Requests (allowed) counted but not yet accepted by the store. */
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
    for (const [id, d] of this.pending) counts.set(id, { count: d.count, lastUsedAt: d.lastMs > 0 ? new Date(d.lastMs).toISOString() : '', hours: d.hours });
    this.pending = new Map();
    this.unsent.push({ id: randomUUID(), counts });
  }

  private async write(): Promise<void> {
    // a batch not yet accepted keeps its content (it may have reached the store): new counts wait
    // in `pending` until it is, so an outage holds one batch plus the running tally, not thousands
    if (this.unsent.length === 0) this.cut();
    if (this.unsent.length === 0) {
      this.lastFlushMs = Date.now(); // nothing to write: on time, however long the gateway is idle
      return;
    }
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
      this.replayed.delete(batch.id);
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
    this.replayed.clear();
    return left;
  }
}
