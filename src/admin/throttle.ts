// Failed admin authentications, counted per client address: after `max` failures within one
// window the address is refused (429) until that window ends, so an admin token cannot be
// guessed at network speed. Counted in this process (with `workers: N`, per worker).

/** Addresses remembered at most; past that, expired entries go, then (a flood) everything. */
const MAX_TRACKED = 10_000;

export class FailedAuthThrottle {
  private readonly seen = new Map<string, { start: number; count: number }>();

  /** `max` 0 turns the throttle off. */
  constructor(
    private readonly max: number,
    private readonly windowMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {}

  /** Seconds until `address` may try again; 0 = it may now. */
  retryAfter(address: string): number {
    const e = this.seen.get(address);
    if (e === undefined || e.count < this.max) return 0;
    const left = e.start + this.windowMs - this.now();
    if (left <= 0) {
      this.seen.delete(address);
      return 0;
    }
    return Math.ceil(left / 1000);
  }

  /** Count one failure; true when it is the one that blocks the address (for a single log line). */
  failed(address: string): boolean {
    if (this.max === 0) return false;
    const now = this.now();
    let e = this.seen.get(address);
    if (e === undefined || now - e.start >= this.windowMs) {
      if (e === undefined && this.seen.size >= MAX_TRACKED) this.prune(now);
      e = { start: now, count: 0 };
      this.seen.set(address, e);
    }
    e.count++;
    return e.count === this.max;
  }

  private prune(now: number): void {
    for (const [a, e] of this.seen) if (now - e.start >= this.windowMs) this.seen.delete(a);
    if (this.seen.size >= MAX_TRACKED) this.seen.clear();
  }
}
