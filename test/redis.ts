// Spawns a private redis-server on a free loopback port (never the machine's 6379) for one test.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';

export const REDIS_BIN = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).stdout.trim();
/** Pass as a tap `skip` option: a visible reason when redis-server is missing. */
export const skipWithoutRedis = REDIS_BIN ? false : 'redis-server is not installed (apt-get install redis-server; .ci/run does it)';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
    srv.on('error', reject);
  });
}

export interface TestRedis {
  readonly url: string;
  readonly port: number;
  /** stop the server (SIGKILL: as abrupt as a crash) */
  stop(): Promise<void>;
  /** start it again on the same port, empty */
  start(): Promise<void>;
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
  return { url: `redis://127.0.0.1:${port}`, port, start, stop };
}
