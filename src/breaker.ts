// A circuit breaker for a networked store on the request path (the Redis rate limiter and key
// store). After `threshold` failures in a row (timeouts, refused connections) it opens: calls fail
// at once with BreakerOpenError, so requests go straight to their fallback instead of each waiting
// for a timeout. While open, a probe runs in the background every `probeMs` (never a request); the
// first probe that succeeds closes it.

export class BreakerOpenError extends Error {
  constructor(name: string, reason: string) {
    super(`${name} not answering (${reason}); not asked again until a background probe succeeds`);
    this.name = 'BreakerOpenError';
  }
}

export interface BreakerOptions {
  /** for messages: "key store", "rate-limit store" */
  name: string;
  /** failures in a row that open the breaker (default 3) */
  threshold?: number;
  /** background probe interval while open (default 500 ms) */
  probeMs?: number;
  /** resolves when the store answers again; rejects otherwise */
  probe: () => Promise<unknown>;
  /** told on every open (with the last error) and close */
  onChange?: (open: boolean, err?: unknown) => void;
}

export class CircuitBreaker {
  private failures = 0;
  private openError: BreakerOpenError | undefined;
  private timer: NodeJS.Timeout | undefined;
  private probing = false;
  /** times the breaker opened */
  opens = 0;
  /** why it is open (the last error's message); undefined while closed */
  reason: string | undefined;

  constructor(private readonly opts: BreakerOptions) {}

  get isOpen(): boolean {
    return this.openError !== undefined;
  }

  /** Throws BreakerOpenError while open: check before starting the call. */
  check(): void {
    if (this.openError !== undefined) throw this.openError;
  }

  /** Run `call` unless open; its failures count towards opening. */
  run<T>(call: () => Promise<T>): Promise<T> {
    if (this.openError !== undefined) return Promise.reject(this.openError);
    return call().then(
      (v) => {
        this.success();
        return v;
      },
      (err: unknown) => {
        this.failure(err);
        throw err;
      },
    );
  }

  success(): void {
    this.failures = 0;
  }

  failure(err: unknown): void {
    if (this.openError !== undefined) return;
    if (++this.failures < (this.opts.threshold ?? 3)) return;
    this.trip(err);
  }

  /** Open now (e.g. the connection is known to be gone). */
  trip(err: unknown): void {
    if (this.openError !== undefined) return;
    this.reason = err instanceof Error ? err.message : String(err);
    this.openError = new BreakerOpenError(this.opts.name, this.reason);
    this.opens++;
    this.opts.onChange?.(true, err);
    this.timer = setInterval(() => this.runProbe(), this.opts.probeMs ?? 500);
    this.timer.unref();
  }

  private runProbe(): void {
    if (this.probing) return;
    this.probing = true;
    this.opts.probe().then(
      () => {
        this.probing = false;
        this.close();
      },
      () => (this.probing = false),
    );
  }

  /** Close (a probe or a reconnect says the store answers). */
  close(): void {
    if (this.openError === undefined) return;
    clearInterval(this.timer);
    this.timer = undefined;
    this.openError = undefined;
    this.reason = undefined;
    this.failures = 0;
    this.opts.onChange?.(false);
  }

  /** Stop probing (shutdown). */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
