// `workers: N|auto`: a primary process forks N workers that share the listeners (node:cluster).
// The primary serves no requests; it keeps the rate-limit counters every worker shares
// (limits/cluster-store.ts), aggregates /metrics, relays SIGHUP, and drains the workers on SIGTERM/SIGINT.

import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import { KeygateError } from './errors.js';
import { isCountersRequest, runCounterOps } from './limits/cluster-store.js';
import { counterStore } from './limits/limiter.js';
import { reopenLogFile, type Logger } from './log.js';

export function workerCount(workers: number | 'auto'): number {
  return workers === 'auto' ? availableParallelism() : workers;
}

/** Sent by a worker once its listeners are up. */
export const LISTENING = 'keygate:listening';

export function reportListening(): void {
  if (cluster.isWorker) process.send?.(LISTENING);
}

// /metrics with workers: the worker that takes the scrape asks the primary, the primary collects
// every listening worker's registry as JSON and sums them (prom-client's AggregatorRegistry.aggregate,
// which honours each metric's aggregator: counters and histograms add up, gauges like
// keygate_rate_limit_degraded take the max). prom-client's own clusterMetrics() is not used because
// it asks every forked worker, including one still starting that would never answer.
const SCRAPE = 'keygate:scrape'; // worker → primary: a scrape arrived, send me the cluster's metrics
const SCRAPED = 'keygate:scraped'; // primary → that worker: the aggregate, or why there is none
const COLLECT = 'keygate:collect'; // primary → each worker: send me your registry
const COLLECTED = 'keygate:collected'; // worker → primary: here it is
/** a scrape fails (503) rather than report part of the workers: partial sums would look like counter resets */
export const COLLECT_TIMEOUT_MS = 3000;

type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;
type ClusterMessage =
  | { type: typeof SCRAPE; id: number }
  | { type: typeof SCRAPED; id: number; body?: string; contentType?: string; error?: string }
  | { type: typeof COLLECT; id: number }
  | { type: typeof COLLECTED; id: number; metrics: MetricsJson };

function isClusterMessage(msg: unknown): msg is ClusterMessage {
  const type = (msg as { type?: unknown } | null)?.type;
  return type === SCRAPE || type === SCRAPED || type === COLLECT || type === COLLECTED;
}

/**
 * A send() callback: without one, a send on a channel that just closed emits 'error', which would
 * stop the process; a closed channel means the other side is gone, which 'disconnect' handles.
 */
const ignoreClosed = (): void => {};

/** A cluster scrape that could not be answered: 503, so Prometheus records a failed scrape. */
const scrapeError = (message: string) => new KeygateError('metrics_unavailable', 503, message);

/**
 * In a worker: answer the primary's collection requests from `registry`, and return what the admin
 * listener's /metrics serves — the whole cluster's metrics, fetched through the primary.
 */
export function clusterMetricsSource(registry: Registry): () => Promise<{ contentType: string; body: string }> {
  const waiting = new Map<number, { resolve(v: { contentType: string; body: string }): void; reject(e: Error): void }>();
  let next = 0;
  process.on('message', (msg: unknown) => {
    if (!isClusterMessage(msg)) return;
    if (msg.type === COLLECT) {
      registry.getMetricsAsJSON().then(
        (metrics) => process.send?.({ type: COLLECTED, id: msg.id, metrics }, undefined, undefined, ignoreClosed),
        () => process.send?.({ type: COLLECTED, id: msg.id, metrics: [] }, undefined, undefined, ignoreClosed),
      );
    } else if (msg.type === SCRAPED) {
      const w = waiting.get(msg.id);
      if (!w) return;
      waiting.delete(msg.id);
      if (msg.body !== undefined) w.resolve({ contentType: msg.contentType ?? registry.contentType, body: msg.body });
      else w.reject(scrapeError(msg.error ?? 'the primary sent no metrics'));
    }
  });
  return () =>
    new Promise((resolve, reject) => {
      const id = next++;
      // the primary answers within COLLECT_TIMEOUT_MS; this only guards against a primary gone silent
      const timer = setTimeout(() => {
        waiting.delete(id);
        reject(scrapeError('the primary did not answer the metrics request'));
      }, COLLECT_TIMEOUT_MS + 2000);
      waiting.set(id, {
        resolve: (v) => { clearTimeout(timer); resolve(v); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      // (send() returning false means back-pressure, not loss: the message is queued)
      process.send?.({ type: SCRAPE, id }, undefined, undefined, (err) => {
        if (!err) return;
        waiting.get(id)?.reject(scrapeError('the primary is gone'));
        waiting.delete(id);
      });
    });
}

/** The primary's side: its own few metrics, and the aggregation of the workers' registries. */
class ClusterMetrics {
  private readonly registry = new Registry();
  private readonly restarts: Counter;
  private readonly pending = new Map<number, { want: Set<number>; got: MetricsJson[]; done(): void }>();
  private next = 0;

  constructor(private readonly listening: () => Worker[]) {
    const registers = [this.registry];
    new Gauge({ name: 'keygate_workers', help: 'Worker processes serving requests.', registers, collect() { this.set(listening().length); } });
    this.restarts = new Counter({ name: 'keygate_worker_restarts_total', help: 'Workers that exited unexpectedly and were replaced.', registers });
  }

  workerRestarted(): void {
    this.restarts.inc();
  }

  onMessage(worker: Worker, msg: ClusterMessage): void {
    if (msg.type === SCRAPE) {
      this.aggregate().then(
        (body) => worker.send({ type: SCRAPED, id: msg.id, body, contentType: this.registry.contentType }, ignoreClosed),
        (err: Error) => worker.send({ type: SCRAPED, id: msg.id, error: err.message }, ignoreClosed),
      );
    } else if (msg.type === COLLECTED) {
      const p = this.pending.get(msg.id);
      if (!p || !p.want.delete(worker.id)) return;
      p.got.push(msg.metrics);
      if (p.want.size === 0) p.done();
    }
  }

  /** A worker went away: a collection waiting for it finishes without it. */
  forget(worker: Worker): void {
    for (const p of this.pending.values()) if (p.want.delete(worker.id) && p.want.size === 0) p.done();
  }

  private async aggregate(): Promise<string> {
    const workers = this.listening();
    const id = this.next++;
    const got: MetricsJson[] = [await this.registry.getMetricsAsJSON()];
    const want = new Set(workers.map((w) => w.id));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        const silent = workers.filter((w) => want.has(w.id)).map((w) => w.process.pid);
        reject(new Error(`worker(s) ${silent.join(', ')} did not send their metrics within ${COLLECT_TIMEOUT_MS} ms`));
      }, COLLECT_TIMEOUT_MS);
      this.pending.set(id, {
        want,
        got,
        done: () => {
          clearTimeout(timer);
          this.pending.delete(id);
          resolve();
        },
      });
      // a worker that went away meanwhile is forgotten on its 'disconnect' (see runPrimary)
      for (const w of workers) w.send({ type: COLLECT, id }, ignoreClosed);
    });
    return AggregatorRegistry.aggregate(got).metrics();
  }
}

/** Run the primary until every worker has stopped; resolves with the exit status. */
export function runPrimary(n: number, logger: Logger): Promise<number> {
  const counters = counterStore(); // the rate-limit windows every worker shares (limits/cluster-store.ts)
  let stopping = false;
  let everListening = false;
  /** workers that reported their listeners up: the ones asked for metrics */
  const serving = new Map<number, Worker>();
  const metrics = new ClusterMetrics(() => [...serving.values()].filter((w) => w.isConnected()));
  return new Promise<number>((resolve) => {
    const fork = () => {
      const worker = cluster.fork();
      worker.on('message', (msg: unknown) => {
        if (msg === LISTENING) {
          everListening = true;
          serving.set(worker.id, worker);
        } else if (isCountersRequest(msg)) {
          worker.send(runCounterOps(counters, msg), ignoreClosed);
        } else if (isClusterMessage(msg)) metrics.onMessage(worker, msg);
      });
      worker.on('disconnect', () => {
        serving.delete(worker.id);
        metrics.forget(worker);
      });
    };
    cluster.on('exit', (worker, code, signal) => {
      const alive = Object.keys(cluster.workers ?? {}).length;
      if (stopping) {
        if (alive === 0) {
          logger.info('all workers stopped');
          logger.info({ exit_code: 0 }, 'keygate stopped');
          logger.flush(() => resolve(0));
        }
        return;
      }
      if (!everListening) {
        // failing before it ever served (a port in use, a bad store): restarting would only loop
        logger.fatal({ pid: worker.process.pid, code, signal }, 'a worker failed to start; stopping');
        stopping = true;
        for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
        if (alive === 0) resolve(1);
        return;
      }
      logger.error({ pid: worker.process.pid, code, signal }, 'a worker exited; starting another');
      metrics.workerRestarted();
      setTimeout(fork, 500).unref();
    });
    process.on('SIGHUP', () => {
      reopenLogFile(logger);
      logger.info('SIGHUP: every worker reloads the configuration');
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGHUP');
    });
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, 'shutting down: draining every worker');
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    logger.info({ workers: n }, 'keygate primary: starting workers');
    for (let i = 0; i < n; i++) fork();
  });
}
