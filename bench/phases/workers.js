// Phase gateway-workers: the real binary, `node bin/keygate.js serve -c FILE` with `workers: auto`
// (a primary and availableParallelism() workers sharing one port; rate limits counted in the
// primary over IPC). The key is made beforehand with `keygate keys create … --json`.

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NO_LIMIT, procCpu, procPpid } from '../lib/util.js';

const KEYGATE_BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'keygate.js');


/**
 * gateway-workers: the key made with `keygate keys create … --json`, then `node bin/keygate.js serve -c FILE`
 * (the config says `workers: auto`), our child being the primary; ready once `want` workers have logged
 * "keygate listening" (to the log file). Same shape as startGatewayChild's result: url, secret, keyId, pid,
 * call('cpu') (summed /proc CPU of the primary and its workers, with the parts), close() (SIGTERM, wait for exit).
 */
export async function startClusterGateway({ spawnTracked, children, grandchildren }, configFile, logFile, want) {
  const made = spawnSync(
    process.execPath,
    [KEYGATE_BIN, 'keys', 'create', '-c', configFile, '--name', 'bench-workers', '--role', 'operator', '--scopes', 'agents,workflows', '--rate-limit', String(NO_LIMIT), '--json'],
    { encoding: 'utf8', timeout: 30_000 },
  );
  let created;
  try {
    created = JSON.parse(made.stdout);
  } catch {
    throw new Error(`keygate keys create failed (exit ${made.status ?? made.signal}${made.error ? `, ${made.error.message}` : ''}): ${made.stdout}${made.stderr}`);
  }
  if (made.status !== 0 || !created?.key || !created?.apiKey?.id) throw new Error(`keygate keys create: exit ${made.status}, ${made.stdout}${made.stderr}`);

  const { child, output } = spawnTracked(process.execPath, [KEYGATE_BIN, 'serve', '-c', configFile]);
  let exit = null;
  const exited = new Promise((resolve) =>
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      children.delete(child);
      resolve();
    }),
  );

  // the workers log "keygate listening" (with their pid and url) to the log file; poll it
  const listening = new Map(); // worker pid → url
  const t0 = performance.now();
  while (listening.size < want) {
    if (exit) throw new Error(`keygate serve exited (${exit.code ?? exit.signal}) before ${want} workers listened: ${output()}`);
    if (performance.now() - t0 > 30_000) throw new Error(`keygate serve: ${listening.size} of ${want} workers listening after 30 s: ${output()}`);
    await new Promise((r) => setTimeout(r, 50));
    let text = '';
    try {
      text = readFileSync(logFile, 'utf8');
    } catch {}
    for (const line of text.split('\n')) {
      if (!line.includes('"keygate listening"')) continue;
      try {
        const j = JSON.parse(line);
        if (j.pid !== child.pid) listening.set(j.pid, j.url);
      } catch {}
    }
  }
  const workerPids = [...listening.keys()];
  for (const pid of workerPids) grandchildren.set(pid, child.pid);
  const g = {
    pid: child.pid,
    workerPids,
    listenUrls: [...listening.values()],
    url: listening.get(workerPids[0]),
    secret: created.key,
    keyId: created.apiKey.id,
    closed: false,
    exit: null,
    call: async (op) => {
      if (op !== 'cpu') throw new Error(`gateway-workers: no ${op} (not an IPC child)`);
      const primary = procCpu(child.pid);
      const workers = workerPids.map((pid) => (procPpid(pid) === child.pid ? procCpu(pid) : null)); // null: gone (restarted?)
      if (!primary || workers.includes(null)) return null;
      const all = [primary, ...workers];
      return { user: all.reduce((s, c) => s + c.user, 0), system: all.reduce((s, c) => s + c.system, 0), parts: { primary, workers } };
    },
    close: async () => {
      if (g.closed) return;
      g.closed = true;
      const t = performance.now();
      if (!exit) {
        const kill = setTimeout(() => {
          for (const pid of workerPids) {
            if (procPpid(pid) === child.pid) {
              try {
                process.kill(pid, 'SIGKILL');
              } catch {}
            }
          }
          child.kill('SIGKILL');
        }, 15_000);
        child.kill('SIGTERM'); // the primary drains every worker, then exits 0
        await exited;
        clearTimeout(kill);
      }
      g.exit = { ...exit, ms: performance.now() - t };
      for (const pid of workerPids) grandchildren.delete(pid);
    },
  };
  return g;
}
