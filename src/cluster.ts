// `workers: N|auto`: a primary process forks N workers that share the listeners (node:cluster).
// The primary serves no requests; it keeps the rate-limit counters every worker shares
// (rate-limiter-flexible's cluster master), relays SIGHUP, and drains the workers on SIGTERM/SIGINT.

import cluster from 'node:cluster';
import { availableParallelism } from 'node:os';
import { RateLimiterClusterMaster } from 'rate-limiter-flexible';
import type { Logger } from './log.js';

export function workerCount(workers: number | 'auto'): number {
  return workers === 'auto' ? availableParallelism() : workers;
}

/** Sent by a worker once its listeners are up. */
export const LISTENING = 'keygate:listening';

export function reportListening(): void {
  if (cluster.isWorker) process.send?.(LISTENING);
}

/** Run the primary until every worker has stopped; resolves with the exit status. */
export function runPrimary(n: number, logger: Logger): Promise<number> {
  new RateLimiterClusterMaster(); // answers the workers' RateLimiterCluster calls
  let stopping = false;
  let everListening = false;
  return new Promise<number>((resolve) => {
    const fork = () => {
      const worker = cluster.fork();
      worker.on('message', (msg) => {
        if (msg === LISTENING) everListening = true;
      });
    };
    cluster.on('exit', (worker, code, signal) => {
      const alive = Object.keys(cluster.workers ?? {}).length;
      if (stopping) {
        if (alive === 0) {
          logger.info('all workers stopped');
          logger.flush();
          resolve(0);
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
      setTimeout(fork, 500).unref();
    });
    process.on('SIGHUP', () => {
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
