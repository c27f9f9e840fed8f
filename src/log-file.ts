// Where JSON log lines go (a file, stdout or stderr): written asynchronously, the text encoded
// once, as it is handed over. Lines written while a write is in flight collect (as Buffers, off
// V8's heap) and go out together in the next one, so a busy gateway writes once per several
// requests, not once per line. It replaces sonic-boom (pino's destination), which on every write measured the
// whole pending text again and, after each write, encoded all of it a second time: measured at
// about 3 µs of each proxied request under load (its `release`), for the access log alone.

import { EventEmitter } from 'node:events';
import { closeSync, openSync, write, writeSync } from 'node:fs';

/**
 * At most one write per 10 ms (unless 64 KB are waiting): each write hands a buffer to libuv's
 * thread pool, measured at ~55 µs of CPU per call whatever its size, and a busy gateway would
 * otherwise write every few requests. A quiet gateway's line is written at once.
 */
const MIN_GAP_MS = 10;
const BATCH_BYTES = 64 * 1024;

/** How long to wait before writing again to a full pipe (EAGAIN), as sonic-boom does. */
const BUSY_RETRY_MS = 100;

const SLEEP = new Int32Array(new SharedArrayBuffer(4));

/** Open destinations: what is still pending in them is written before the process exits (as pino does for its own). */
const open = new Set<LogFile>();
let exitHooked = false;
function flushAllSync(): void {
  for (const f of open) f.flushSync();
}

export class LogFile extends EventEmitter {
  private fd: number;
  /**
   * what was written since the write in flight began, already encoded: off V8's heap, so lines that
   * wait for a slow write do not survive young-generation collections and need a full one
   */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** the bytes of the write in flight; undefined when idle */
  private inFlight: Buffer | undefined = undefined;
  private waiting: ((err?: Error) => void)[] = [];
  private reopening = false;
  private ending = false;
  private closed = false;
  /** when the last write began (performance.now()) */
  private lastWriteAt = -Infinity;
  /** set while pending lines wait for MIN_GAP_MS since the last write */
  private gap: NodeJS.Timeout | undefined = undefined;
  private readonly gapOver = (): void => {
    this.gap = undefined;
    if (this.inFlight === undefined && !this.reopening) this.next();
  };
  /** set while the bytes in flight wait to be written again (a full pipe) */
  private retry: NodeJS.Timeout | undefined = undefined;
  /** the last write error told on stderr (once a minute at most), ms */
  private lastErrorTold = 0;

  constructor(
    /** a file path (opened for appending), or 1 / 2 for stdout / stderr */
    private readonly target: string | 1 | 2,
  ) {
    super();
    this.fd = typeof target === 'number' ? target : openSync(target, 'a');
    open.add(this);
    if (!exitHooked) {
      exitHooked = true;
      process.on('exit', flushAllSync);
    }
  }

  write(text: string): boolean {
    if (this.closed) return false;
    const buf = Buffer.from(text, 'utf8');
    this.pending.push(buf);
    this.pendingBytes += buf.length;
    if (this.inFlight === undefined && !this.reopening && this.gap === undefined) this.writeOrWait();
    return true;
  }

  /** `cb` once everything written so far has reached the file (or failed). */
  flush(cb?: (err?: Error) => void): void {
    if (cb === undefined) return;
    if (this.inFlight === undefined && this.pendingBytes === 0) return void process.nextTick(cb);
    this.waiting.push(cb);
    if (this.inFlight === undefined && !this.reopening) this.next(); // now, not after the gap
  }

  /** Write what is pending now, synchronously (process exit). A write in flight may land after it. */
  flushSync(): void {
    if (this.closed) return;
    if (this.retry !== undefined) {
      // the bytes in flight are waiting for a full pipe: they go first
      clearTimeout(this.retry);
      this.retry = undefined;
      this.writeAllSync(this.inFlight!);
      this.inFlight = undefined;
    }
    if (this.pendingBytes === 0) return;
    this.writeAllSync(this.takePending());
  }

  private writeAllSync(buf: Buffer): void {
    // a full pipe: wait 10 ms and try again, for up to 10 s (the process is ending; its lines matter)
    for (let tries = 0; buf.length > 0 && tries < 1000; tries++) {
      try {
        buf = buf.subarray(writeSync(this.fd, buf));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') return;
        Atomics.wait(SLEEP, 0, 0, 10);
      }
    }
  }

  /** Open the file again by its name (after logrotate moved it): the write in flight ends in the old one. */
  reopen(): void {
    if (typeof this.target === 'number' || this.closed) return;
    if (this.inFlight !== undefined) this.reopening = true;
    else this.reopenNow();
  }

  /** Close once everything written so far is out. */
  end(): void {
    if (this.closed) return;
    this.ending = true;
    if (this.inFlight === undefined && !this.reopening) this.next(); // what is pending, then close
  }

  private reopenNow(): void {
    this.reopening = false;
    const old = this.fd;
    this.fd = openSync(this.target as string, 'a');
    closeSync(old);
  }

  /** Write now if the last write began MIN_GAP_MS ago (or a batch is full), else when it has. */
  private writeOrWait(): void {
    const wait = this.lastWriteAt + MIN_GAP_MS - performance.now();
    if (wait <= 0 || this.pendingBytes >= BATCH_BYTES || this.waiting.length > 0 || this.ending) this.next();
    else this.gap = setTimeout(this.gapOver, wait).unref();
  }

  private takePending(): Buffer {
    const bufs = this.pending;
    const buf = bufs.length === 1 ? bufs[0]! : Buffer.concat(bufs, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    return buf;
  }

  private next(): void {
    if (this.gap !== undefined) {
      clearTimeout(this.gap);
      this.gap = undefined;
    }
    if (this.pendingBytes === 0) {
      this.inFlight = undefined;
      const waiting = this.waiting;
      if (waiting.length > 0) {
        this.waiting = [];
        for (const cb of waiting) cb();
      }
      if (this.ending) this.close();
      return;
    }
    this.send(this.takePending());
  }

  private send(buf: Buffer): void {
    this.inFlight = buf;
    this.lastWriteAt = performance.now();
    write(this.fd, buf, 0, buf.length, null, this.written);
  }

  private readonly written = (err: NodeJS.ErrnoException | null, n: number): void => {
    const buf = this.inFlight!;
    if (err !== null) {
      if (err.code === 'EAGAIN' || err.code === 'EBUSY') {
        // a full pipe: try again shortly (the pending write keeps the process alive, as it should)
        this.retry = setTimeout(() => {
          this.retry = undefined;
          this.send(buf);
        }, BUSY_RETRY_MS);
        return;
      }
      // A broken destination (disk full, a closed pipe) loses these lines, never the gateway.
      this.tell(err);
    } else if (n < buf.length) {
      this.send(buf.subarray(n));
      return;
    }
    this.inFlight = undefined;
    if (this.reopening) this.reopenNow();
    if (this.pendingBytes === 0) this.next(); // idle: tell whoever waits, close if ending
    else this.writeOrWait();
  };

  private tell(err: Error): void {
    const now = Date.now();
    if (now - this.lastErrorTold < 60_000) return;
    this.lastErrorTold = now;
    const where = typeof this.target === 'number' ? (this.target === 1 ? 'stdout' : 'stderr') : this.target;
    try {
      process.stderr.write(`keygate: log lines could not be written to ${where} (${err.message}); they are dropped until it works again\n`);
    } catch {
      // stderr itself is gone
    }
  }

  private close(): void {
    this.closed = true;
    open.delete(this);
    if (typeof this.target !== 'number') {
      try {
        closeSync(this.fd);
      } catch {
        // already closed
      }
    }
  }
}
