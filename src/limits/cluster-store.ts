// Rate-limit windows shared by the workers of `workers: N`, kept in the primary process and decided
// there: a worker sends the takes of one event-loop turn (one per key, see coalesce.ts) as one IPC
// message and gets one reply. The primary answers each take from its own windows by its own clock,
// synchronously, one message after the other: every decision sees every request counted before it,
// whichever worker sent it, so no worker's clock and no message in flight can let more than the
// limit through.

import type { LocalWindows } from './local.js';
import type { WindowStore } from './limiter.js';
import { takeOf, wireOf, type Take } from './window.js';

export const COUNTERS = 'keygate:counters'; // worker → primary: {type, id, ops}
export const COUNTED = 'keygate:counted'; // primary → worker: {type, id, results}

/** A take: key id, limit per minute, requests (-1: give one back, see WindowStore.giveBack). */
type Op = [string, number, number];
/** a take's wire form (window.ts: takeOf) */
type Result = number[];

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

/** In the primary: a worker's takes, in order, on the shared windows at `nowMs`. */
export function runCounterOps(windows: LocalWindows, req: CountersRequest, nowMs: number = Date.now()): CountersReply {
  try {
    const results = req.ops.map(([keyId, limit, n]) => (n < 0 ? (windows.giveBack(keyId), GIVEN_BACK) : wireOf(windows.take(keyId, limit, n, nowMs))));
    return { type: COUNTED, id: req.id, results };
  } catch (err) {
    return { type: COUNTED, id: req.id, error: (err as Error).message };
  }
}

/** The reply to a give-back (nothing to decide). */
const GIVEN_BACK: Result = [0, 0, 0];

interface Pending {
  resolve(results: Result[]): void;
  reject(err: Error): void;
}

/** In a worker: the windows, through the primary; the takes of one turn travel together. */
export class BatchedCounterClient implements WindowStore {
  private queue: Op[] = [];
  private waiters: Array<{ resolve(v: Take): void; reject(e: Error): void }> = [];
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

  giveBack(keyId: string): Promise<void> {
    return this.take(keyId, 0, -1).then(() => undefined);
  }

  take(keyId: string, limit: number, n: number): Promise<Take> {
    return new Promise((resolve, reject) => {
      this.queue.push([keyId, limit, n]);
      this.waiters.push({ resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        // the coalescer takes every key of its turn in one loop: they leave together, right after it
        process.nextTick(() => this.flush());
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
        waiters.forEach((w, i) => {
          const r = results[i];
          if (r === undefined) w.reject(new Error('the primary sent too few results'));
          else w.resolve(takeOf(r));
        });
      },
      reject: (err) => {
        clearTimeout(timer);
        for (const w of waiters) w.reject(err);
      },
    });
    this.send({ type: COUNTERS, id, ops }, (err) => err && fail(err));
  }
}
