// Consumes of one counter made during one event-loop turn travel to the shared store as one
// increment. Each request still gets its own position in the counter (the store's total after the
// increment, minus what the requests after it in the batch added), so the decisions are the ones
// the store would have given to the same increments made one by one: the limit stays exact across
// instances. Under load a turn carries many requests of a hot key (a CI runner's, an agent's): one
// Redis script call and one reply instead of one each.

import { RateLimiterRes } from 'rate-limiter-flexible';
import type { CounterStore } from './limiter.js';

interface Batch {
  points: number;
  waiters: Waiter[];
}

interface Waiter {
  /** points of the batch up to and including this consume */
  upTo: number;
  resolve(r: { consumedPoints: number }): void;
  reject(err: unknown): void;
}

export class CoalescingCounters implements CounterStore {
  private batches = new Map<string, Batch>();
  private scheduled = false;
  /** store calls made for consumes, and consumes answered (for tests and the bench) */
  calls = 0;
  consumes = 0;

  constructor(private readonly inner: CounterStore) {}

  consume(key: string, points: number): Promise<{ consumedPoints: number }> {
    let batch = this.batches.get(key);
    if (batch === undefined) {
      batch = { points: 0, waiters: [] };
      this.batches.set(key, batch);
    }
    batch.points += points;
    const upTo = batch.points;
    if (!this.scheduled) {
      this.scheduled = true;
      // after the I/O callbacks of this turn: every request parsed in it has joined
      setImmediate(() => this.flush());
    }
    return new Promise((resolve, reject) => batch.waiters.push({ upTo, resolve, reject }));
  }

  get(key: string): Promise<{ consumedPoints: number } | null> {
    return this.inner.get(key);
  }

  reward(key: string, points: number): Promise<unknown> {
    return this.inner.reward(key, points);
  }

  private flush(): void {
    const batches = this.batches;
    this.batches = new Map();
    this.scheduled = false;
    for (const [key, batch] of batches) {
      this.calls++;
      this.inner.consume(key, batch.points).then(
        (r) => this.settle(batch, r.consumedPoints),
        (err: unknown) => {
          // rate-limiter-flexible rejects with the counter's state past its cap (never set to bind)
          if (err instanceof RateLimiterRes) this.settle(batch, err.consumedPoints);
          else for (const w of batch.waiters) w.reject(err);
        },
      );
    }
  }

  private settle(batch: Batch, total: number): void {
    const before = total - batch.points;
    this.consumes += batch.waiters.length;
    for (const w of batch.waiters) w.resolve({ consumedPoints: before + w.upTo });
  }
}
