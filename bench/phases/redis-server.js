// The private redis-server of the gateway-redis phase and the Redis revocation pair: a free
// loopback port (never 6379), no persistence, stopped at the end (as test/redis.ts does).

import { freePort } from '../lib/util.js';

/** A private redis-server on a free loopback port, no persistence (as test/redis.ts does). */
export async function startRedisServer({ spawnTracked, children }, bin) {
  let port = await freePort();
  if (port === 6379) port = await freePort(); // never the machine's usual Redis port
  const { child, output } = spawnTracked(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server did not start within 10 s: ${output()}`)), 10_000);
    const onData = () => {
      if (output().includes('Ready to accept connections')) {
        clearTimeout(timer);
        child.stdout.off('data', onData);
        child.off('exit', onExit);
        resolve();
      }
    };
    const onExit = (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited (${code ?? sig}) before it was ready: ${output()}`));
    };
    child.stdout.on('data', onData);
    child.once('exit', onExit);
  });
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    pid: child.pid,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve(children.delete(child));
        const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
        child.once('exit', () => {
          clearTimeout(t);
          children.delete(child);
          resolve();
        });
        child.kill('SIGTERM');
      }),
  };
}
