// Checks of one key made during one event-loop turn travel to the shared store as one take (one
// Redis script call, or one entry of the IPC message to the primary). The store decides them
// together, atomically by its own clock, and each request keeps its own place: the decisions are
// the ones the store would have given to the same checks made one by one, so the limit stays exact
// across instances, and each admitted request gets its own `remaining`. Under load a turn carries
// many requests of a hot key (a CI runner's, an agent's): one call and one reply instead of one each.

import type { WindowStore } from './limiter.js';
import { decisionOf, type LimitDecision, type Take } from './window.js';

interface Batch {
  keyId: string;
  limit: number;
  waiters: Waiter[];
}

interface Waiter {
  resolve(d: LimitDecision): void;
  reject(err: unknown): void;
}

export class CoalescingWindows {
  private batches = new Map<string, Batch>();
  private scheduled = false;
  /** store calls made, and checks answered (for tests and the bench) */
  calls = 0;
  checks = 0;

  constructor(private readonly store: WindowStore) {}

  /** Count one request of `keyId` against `limit` per minute; a denied request is not counted. */
  check(keyId: string, limit: number): Promise<LimitDecision> {
    let batch = this.batches.get(keyId);
    if (batch === undefined || batch.limit !== limit) batch = this.batchOf(keyId, limit, batch);
    if (!this.scheduled) {
      this.scheduled = true;
      // after the I/O callbacks of this turn: every request parsed in it has joined
      setImmediate(() => this.flush());
    }
    const waiters = batch.waiters;
    return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
  }

  /** A new batch; the key's limit changed within the turn (rare): the other limit gets its own. */
  private batchOf(keyId: string, limit: number, other: Batch | undefined): Batch {
    const slot = other === undefined ? keyId : `${keyId}\0${limit}`;
    let batch = this.batches.get(slot);
    if (batch === undefined) {
      batch = { keyId, limit, waiters: [] };
      this.batches.set(slot, batch);
    }
    return batch;
  }

  private flush(): void {
    const batches = this.batches;
    this.batches = new Map();
    this.scheduled = false;
    for (const batch of batches.values()) {
      this.calls++;
      this.store.take(batch.keyId, batch.limit, batch.waiters.length).then(
        (take) => this.settle(batch, take),
        (err: unknown) => {
          for (const w of batch.waiters) w.reject(err);
        },
      );
    }
  }

  private settle(batch: Batch, take: Take): void {
    const waiters = batch.waiters;
    this.checks += waiters.length;
    for (let i = 0; i < waiters.length; i++) waiters[i]!.resolve(decisionOf(batch.limit, take, i));
  }
}
