// What keeps keys and usage counts whole across key-store faults, around the key service and the
// usage counter:
//  - start without the store: the declared keys are synced when it becomes reachable;
//  - a local snapshot of the key cache (networked stores), restored at start, so an instance
//    restarted during an outage still serves the keys it knew;
//  - a reconnect revalidates the cache; a store found empty (its marker key gone) is said loudly,
//    counted, and the declared keys are synced into it again;
//  - the usage spool: counts not written by shutdown are kept in a file and replayed at start.

import { readdirSync, renameSync, rmSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { KeygateError } from './errors.js';
import type { Logger } from './log.js';
import type { KeyService, SnapshotEntry } from './keys/service.js';
import type { StoreAvailable } from './keys/store.js';
import type { UsageBatch, UsageCounter } from './usage/counter.js';
import { readSpool, writeSpool } from './usage/spool.js';

const SNAPSHOT_FILE = 'key-cache.json';
const SPOOL_PREFIX = 'usage-spool.';
/** How often the key-cache snapshot is rewritten (when the cache changed). */
const SNAPSHOT_EVERY_MS = 30_000;
/** How often a declared-key sync that failed (store unreachable) is tried again. */
const SYNC_RETRY_MS = 2_000;

export interface GuardOptions {
  keys: KeyService;
  usage: UsageCounter;
  logger: Logger;
  /** store.state_dir */
  dir: string;
  staleTtlSeconds: number;
}

export class StoreGuard {
  /** times the key store was found empty after it had content */
  contentLost = 0;
  private declaredSynced = false;
  private syncChain: Promise<void> = Promise.resolve();
  private syncTimer: NodeJS.Timeout | undefined;
  private snapshotTimer: NodeJS.Timeout | undefined;
  private lastSnapshot = '';
  private snapshotFailing = false;
  /** spool files this process took over at start: removed once their batches are written */
  private claimed: string[] = [];
  private stopped = false;

  constructor(private readonly opts: GuardOptions) {
    const store = opts.keys.store;
    store.onAvailable?.((e) => this.onAvailable(e));
  }

  private get networked(): boolean {
    return this.opts.keys.store.onAvailable !== undefined;
  }

  /** Before listening: replay the spool, restore the snapshot, wait briefly for the store, sync declared keys. */
  async start(): Promise<void> {
    this.replaySpool();
    const store = this.opts.keys.store;
    if (this.networked) {
      const restored = await this.restoreSnapshot();
      if (restored > 0) this.opts.logger.info({ keys: restored, file: join(this.opts.dir, SNAPSHOT_FILE) }, 'key cache restored from the local snapshot (revalidated once the key store answers)');
      this.snapshotTimer = setInterval(() => void this.writeSnapshot(), SNAPSHOT_EVERY_MS).unref();
    }
    let reachable = true;
    if (store.ready) {
      reachable = await store.ready(3000).then(
        () => true,
        () => false,
      );
      if (!reachable) this.opts.logger.warn({ stale_ttl_s: this.opts.staleTtlSeconds }, 'key store not reachable at start: serving the keys of the local snapshot; declared keys are synced when it answers');
    }
    if (reachable) await this.syncDeclared(true);
  }

  /**
   * The declared-key sync, one at a time (the start and the store's first "available" would
   * otherwise both insert the same key); `force` syncs again even after a success (content lost).
   */
  private syncDeclared(atStart: boolean, reason?: string, force = false): Promise<void> {
    const run = this.syncChain.then(() => (this.declaredSynced && !force ? undefined : this.syncOnce(atStart, reason)));
    this.syncChain = run.catch(() => {});
    return run;
  }

  /** A store failure is retried (not fatal), a config conflict is. */
  private async syncOnce(atStart: boolean, reason?: string): Promise<void> {
    clearTimeout(this.syncTimer);
    try {
      const synced = await this.opts.keys.syncDeclared();
      this.declaredSynced = true;
      const g = synced.groups;
      if (synced.created + synced.updated + synced.deleted + g.created + g.updated + g.deleted > 0 || reason) this.opts.logger.info({ ...synced, ...(reason ? { reason } : {}) }, 'keys declared in the config synced to the key store');
    } catch (err) {
      if (err instanceof KeygateError && atStart) throw err;
      if (err instanceof KeygateError) {
        this.opts.logger.error({ err: err.message }, 'declared keys could not be synced');
        return;
      }
      this.declaredSynced = false;
      this.opts.logger.warn({ err: (err as Error).message, retry_in_s: SYNC_RETRY_MS / 1000 }, 'declared keys not synced: key store unreachable; trying again');
      if (!this.stopped) this.syncTimer = setTimeout(() => void this.syncDeclared(false, reason, true), SYNC_RETRY_MS).unref();
    }
  }

  private onAvailable(e: StoreAvailable): void {
    if (this.stopped) return;
    const { keys, logger } = this.opts;
    if (e.emptied) {
      this.contentLost++;
      logger.error(
        { content_lost: this.contentLost },
        'KEY STORE CONTENT LOST: Redis came back without the keygate marker key (restarted empty or flushed). Keys created through the API or CLI are gone from it (restore them from a backup); declared keys are synced again now',
      );
      void this.syncDeclared(false, 'key store content lost', true);
    } else {
      void this.syncDeclared(false, e.first ? 'key store reachable' : 'key store reachable again');
    }
    if (!e.first || e.emptied) logger.info('key store reachable again: cached keys are revalidated');
    keys.revalidate();
    keys.warm().then(
      (n) => logger.debug({ keys: n }, 'key cache revalidated'),
      () => {},
    );
  }

  // ------------------------------------------------------------------ snapshot

  private async restoreSnapshot(): Promise<number> {
    let text: string;
    try {
      text = await readFile(join(this.opts.dir, SNAPSHOT_FILE), 'utf8');
    } catch {
      return 0;
    }
    try {
      const entries = JSON.parse(text) as SnapshotEntry[];
      if (!Array.isArray(entries)) throw new Error('not a list');
      this.lastSnapshot = text;
      return this.opts.keys.restore(entries.filter((e) => typeof e?.digest === 'string' && typeof e.key === 'object' && e.key !== null));
    } catch (err) {
      this.opts.logger.warn({ err: (err as Error).message, file: join(this.opts.dir, SNAPSHOT_FILE) }, 'key-cache snapshot unreadable: ignored');
      return 0;
    }
  }

  /** Write the snapshot when it changed (mode 0600: it holds digests, which open nothing alone). */
  async writeSnapshot(): Promise<void> {
    const entries = this.opts.keys.snapshot();
    if (entries.length === 0) return;
    const text = JSON.stringify(entries);
    if (text === this.lastSnapshot) return;
    const file = join(this.opts.dir, SNAPSHOT_FILE);
    const tmp = `${file}.${process.pid}.tmp`;
    try {
      await mkdir(this.opts.dir, { recursive: true, mode: 0o700 });
      await writeFile(tmp, text, { mode: 0o600 });
      await rename(tmp, file);
      this.lastSnapshot = text;
      this.snapshotFailing = false;
    } catch (err) {
      // once per run of failures (an unwritable state_dir would otherwise warn every 30 s)
      if (!this.snapshotFailing) this.opts.logger.warn({ err: (err as Error).message, file }, 'key-cache snapshot not written (store.state_dir); keys are still cached in memory');
      this.snapshotFailing = true;
    }
  }

  // ------------------------------------------------------------------ spool

  /** Take over every spool file (a rename: with workers, each file goes to one process) and queue its batches. */
  private replaySpool(): void {
    let names: string[];
    try {
      // .replaying: taken by a process that died before writing them; a second replay adds nothing (batch ids)
      names = readdirSync(this.opts.dir).filter((n) => n.startsWith(SPOOL_PREFIX) && (n.endsWith('.jsonl') || n.endsWith('.replaying')));
    } catch {
      return;
    }
    const batches: UsageBatch[] = [];
    let requests = 0;
    for (const name of names) {
      const taken = join(this.opts.dir, `${SPOOL_PREFIX}${process.pid}.${Date.now()}.replaying`);
      try {
        renameSync(join(this.opts.dir, name), taken);
      } catch {
        continue; // another worker took it
      }
      const spool = readSpool(taken);
      if (spool.damaged > 0) this.opts.logger.warn({ file: name, damaged_lines: spool.damaged }, 'usage spool: damaged lines skipped');
      batches.push(...spool.batches);
      requests += spool.requests;
      this.claimed.push(taken);
    }
    if (batches.length === 0) return;
    this.opts.usage.replay(batches);
    this.opts.logger.warn({ requests, batches: batches.length, files: names.length }, `usage spool: replaying the counts of ${requests} requests not written before the last shutdown`);
    // once they are in the store, the files go
    const done = () => {
      if (this.opts.usage.replaying && !this.stopped) return;
      clearInterval(check);
      for (const f of this.claimed.splice(0)) rmSync(f, { force: true });
    };
    const check = setInterval(done, 1000);
    check.unref();
  }

  /** At shutdown: batches the store did not take go to this process's spool file. */
  async stop(left: readonly UsageBatch[]): Promise<void> {
    this.stopped = true;
    clearTimeout(this.syncTimer);
    clearInterval(this.snapshotTimer);
    if (this.networked) await this.writeSnapshot();
    const claimed = this.claimed.splice(0);
    if (left.length > 0) {
      const file = join(this.opts.dir, `${SPOOL_PREFIX}${process.pid}.jsonl`);
      let requests = 0;
      for (const b of left) for (const d of b.counts.values()) requests += d.count;
      try {
        writeSpool(file, left);
        this.opts.logger.warn({ requests, batches: left.length, file }, `usage counts of ${requests} requests could not be written to the key store: spooled, replayed at the next start`);
      } catch (err) {
        this.opts.logger.error({ requests, err: (err as Error).message, file }, `usage counts of ${requests} requests LOST: neither the key store nor the spool file took them`);
        return; // keep the claimed files: their batches are not lost either
      }
    }
    // the claimed files' batches are written now, or in the new spool
    for (const f of claimed) rmSync(f, { force: true });
  }

  /** For readyz: "ok", or why keys are served from the cache (degraded) or not at all. */
  keyStoreCheck(nowMs: number): { state: 'ok' | 'degraded' | 'unreachable'; message: string } {
    const { keys } = this.opts;
    const down = keys.store.unreachable?.();
    const stale = keys.staleState;
    if (down === undefined && stale === undefined) return { state: 'ok', message: 'ok' };
    const reason = down ?? stale!.reason;
    const since = stale?.since ?? nowMs;
    const left = this.opts.staleTtlSeconds - Math.floor((nowMs - since) / 1000);
    if (left <= 0) return { state: 'unreachable', message: `unreachable: ${reason}; stale_ttl (${this.opts.staleTtlSeconds} s) is over, keys are refused` };
    return { state: 'degraded', message: `degraded: ${reason}; serving cached keys as last known for up to ${left} s more (store.stale_ttl), unknown keys get 503` };
  }
}
