// Spawns a private redis-server on a free loopback port (never the machine's 6379) for one test.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { freePort } from './ports.js';

export const REDIS_BIN = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).stdout.trim();
/** Pass as a tap `skip` option: a visible reason when redis-server is missing. */
export const skipWithoutRedis = REDIS_BIN ? false : 'redis-server is not installed (apt-get install redis-server; .ci/run does it)';

export interface TestRedis {
  readonly url: string;
  readonly port: number;
  /** stop the server (SIGKILL: as abrupt as a crash) */
  stop(): Promise<void>;
  /** start it again on the same port, empty */
  start(): Promise<void>;
  /** freeze it (SIGSTOP): connections stay open, nothing is answered */
  pause(): void;
  /** thaw it (SIGCONT) */
  resume(): void;
}

export async function startRedis(): Promise<TestRedis> {
  const port = await freePort();
  let child: ChildProcess | undefined;
  const start = () =>
    new Promise<void>((resolve, reject) => {
      const c = spawn(REDIS_BIN, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
      child = c;
      let out = '';
      const timer = setTimeout(() => reject(new Error(`redis-server did not start: ${out}`)), 10_000);
      c.stdout!.on('data', (d) => {
        out += d;
        if (out.includes('Ready to accept connections')) {
          clearTimeout(timer);
          resolve();
        }
      });
      c.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited ${code}: ${out}`));
      });
    });
  const stop = () =>
    new Promise<void>((resolve) => {
      const c = child;
      child = undefined;
      if (!c || c.exitCode !== null) return resolve();
      c.removeAllListeners('exit');
      c.once('exit', () => resolve());
      c.kill('SIGKILL');
    });
  await start();
  const signal = (sig: NodeJS.Signals) => {
    if (child && child.exitCode === null) child.kill(sig);
  };
  // a frozen server still frozen at the test's end would never exit on SIGKILL's wait: thaw first
  const stopThawed = () => (signal('SIGCONT'), stop());
  return { url: `redis://127.0.0.1:${port}`, port, start, stop: stopThawed, pause: () => signal('SIGSTOP'), resume: () => signal('SIGCONT') };
}

export interface TestRedisSet {
  /** URL to put in store.* (credentials, db) */
  readonly url: string;
  /** store.redis settings that reach this set */
  readonly settings: { mode: 'sentinel' | 'cluster'; sentinels?: string[]; sentinel_name?: string; nodes?: string[] };
  stop(): Promise<void>;
}

function spawnReady(args: string[], ready: string, cwd?: string): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const c = spawn(REDIS_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(cwd ? { cwd } : {}) });
    let out = '';
    const timer = setTimeout(() => reject(new Error(`redis did not become ready: ${out}`)), 15_000);
    c.stdout!.on('data', (d) => {
      out += d;
      if (out.includes(ready)) {
        clearTimeout(timer);
        resolve(c);
      }
    });
    c.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`redis exited ${code}: ${out}`));
    });
  });
}

function killAll(children: ChildProcess[]): Promise<void> {
  return Promise.all(
    children.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null) return resolve();
          c.removeAllListeners('exit');
          c.once('exit', () => resolve());
          c.kill('SIGKILL');
        }),
    ),
  ).then(() => undefined);
}

/** A master and one sentinel monitoring it as "keygate-test". */
export async function startSentinel(dir: string): Promise<TestRedisSet> {
  const { writeFileSync } = await import('node:fs');
  const master = await startRedis();
  const port = await freePort();
  const conf = `${dir}/sentinel-${port}.conf`;
  writeFileSync(conf, `port ${port}\nbind 127.0.0.1\nsentinel monitor keygate-test 127.0.0.1 ${master.port} 1\n`);
  const sentinel = await spawnReady([conf, '--sentinel'], '+monitor master keygate-test');
  return {
    url: 'redis://sentinel-managed/0',
    settings: { mode: 'sentinel', sentinels: [`127.0.0.1:${port}`], sentinel_name: 'keygate-test' },
    async stop() {
      await killAll([sentinel]);
      await master.stop();
    },
  };
}

/** Three masters (no replicas) joined into a cluster. */
export async function startCluster(dir: string): Promise<TestRedisSet> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const nodes = await Promise.all(
    ports.map((p) =>
      spawnReady(['--port', String(p), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${p}.conf`, '--save', '', '--appendonly', 'no'], 'Ready to accept connections', dir),
    ),
  );
  const create = spawnSync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8', timeout: 20_000 });
  if (create.status !== 0) {
    await killAll(nodes);
    throw new Error(`redis-cli --cluster create failed: ${create.stdout} ${create.stderr}`);
  }
  // wait until every slot is served
  for (let i = 0; i < 100; i++) {
    const info = spawnSync('redis-cli', ['-p', String(ports[0]), 'cluster', 'info'], { encoding: 'utf8' }).stdout;
    if (info.includes('cluster_state:ok')) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url: `redis://127.0.0.1:${ports[0]}`,
    settings: { mode: 'cluster', nodes: ports.map((p) => `127.0.0.1:${p}`) },
    stop: () => killAll(nodes),
  };
}
