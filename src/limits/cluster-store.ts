// Rate-limit counters shared by the workers of `workers: N`, kept in the primary process. A worker
// sends the counter operations of one event-loop turn as one IPC message and gets one reply,
// instead of a message per operation (rate-limiter-flexible's RateLimiterCluster): under load a
// turn carries several requests' checks, and each IPC message costs both processes CPU.

import type { RateLimiterMemory } from 'rate-limiter-flexible';
import type { CounterStore } from './limiter.js';

export const COUNTERS = 'keygate:counters'; // worker → primary: {type, id, ops}
export const COUNTED = 'keygate:counted'; // primary → worker: {type, id, results}

/** consume / get / reward, with the counter key and points; the result is the counter's value (null: none) */
type Op = ['c' | 'g' | 'r', string, number];
type Result = number | null;

export interface CountersRequest {
  type: typeof COUNTERS;
  id: number;
  ops: Op[];
}
export interface CountersReply {
  type: typeof COUNTED;
  id: number;
  results?: Result[];
  error?: string;
}

export function isCountersRequest(msg: unknown): msg is CountersRequest {
  return (msg as { type?: unknown } | null)?.type === COUNTERS;
}

/** In the primary: run a worker's operations in order on the shared counters. */
export async function runCounterOps(counters: RateLimiterMemory, req: CountersRequest): Promise<CountersReply> {
  const results: Result[] = [];
  try {
    for (const [op, key, points] of req.ops) {
      if (op === 'c') results.push((await counters.consume(key, points).catch(reachedCap)).consumedPoints);
      else if (op === 'r') results.push((await counters.reward(key, points)).consumedPoints);
      else results.push((await counters.get(key))?.consumedPoints ?? null);
    }
    return { type: COUNTED, id: req.id, results };
  } catch (err) {
    return { type: COUNTED, id: req.id, error: (err as Error).message };
  }
}

/** RLF rejects a consume past its points with the counter's state; the gateway's cap never binds, but a result is a result. */
function reachedCap(res: unknown): { consumedPoints: number } {
  if (res !== null && typeof res === 'object' && 'consumedPoints' in res) return res as { consumedPoints: number };
  throw res;
}

interface Pending {
  resolve(results: Result[]): void;
  reject(err: Error): void;
}

/** In a worker: the counters, through the primary; operations of one turn travel together. */
export class BatchedCounterClient implements CounterStore {
  private queue: Op[] = [];
  private waiters: Array<{ resolve(v: Result): void; reject(e: Error): void }> = [];
  private scheduled = false;
  private next = 0;
  private readonly pending = new Map<number, Pending>();

  /** `send` to the primary; call `receive` with every message from it; no answer within `timeoutMs` fails the batch. */
  constructor(
    private readonly send: (msg: CountersRequest, onError: (err: Error | null) => void) => void,
    private readonly timeoutMs = 1000,
  ) {}

  receive(msg: unknown): void {
    const m = msg as CountersReply;
    if (m?.type !== COUNTED) return;
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    if (m.results) p.resolve(m.results);
    else p.reject(new Error(m.error ?? 'the primary sent no result'));
  }

  consume(key: string, points: number): Promise<{ consumedPoints: number }> {
    return this.enqueue(['c', key, points]).then((v) => ({ consumedPoints: v ?? 0 }));
  }

  reward(key: string, points: number): Promise<{ consumedPoints: number }> {
    return this.enqueue(['r', key, points]).then((v) => ({ consumedPoints: v ?? 0 }));
  }

  get(key: string): Promise<{ consumedPoints: number } | null> {
    return this.enqueue(['g', key, 0]).then((v) => (v === null ? null : { consumedPoints: v }));
  }

  private enqueue(op: Op): Promise<Result> {
    return new Promise((resolve, reject) => {
      this.queue.push(op);
      this.waiters.push({ resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const ops = this.queue;
    const waiters = this.waiters;
    this.queue = [];
    this.waiters = [];
    const id = this.next++;
    const fail = (err: Error) => {
      if (!this.pending.delete(id)) return;
      clearTimeout(timer);
      for (const w of waiters) w.reject(err);
    };
    const timer = setTimeout(() => fail(new Error(`the primary did not answer ${ops.length} rate-limit operation(s) within ${this.timeoutMs} ms`)), this.timeoutMs);
    this.pending.set(id, {
      resolve: (results) => {
        clearTimeout(timer);
        waiters.forEach((w, i) => w.resolve(results[i] ?? null));
      },
      reject: (err) => {
        clearTimeout(timer);
        for (const w of waiters) w.reject(err);
      },
    });
    this.send({ type: COUNTERS, id, ops }, (err) => err && fail(err));
  }
}
