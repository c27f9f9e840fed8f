// Phase nginx-auth: nginx (one worker) proxies to the echo upstream and asks Keygate about every
// request with auth_request: deploy/nginx-forward-auth.conf as shipped (addresses and secret
// replaced), Keygate a gateway child (phases/gateway.js) with `forward_auth` and the same routes,
// access log and limits as the gateway phase. Its CPU is Keygate's plus nginx's (master and worker).
// Skipped, saying why, when nginx is not installed.

import { readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { forwardAuthSnippet, skipWithoutNginx, startNginx } from '../lib/nginx.js';
import { configYaml, procCpu, procPpid } from '../lib/util.js';
import { startGatewayChild } from './gateway.js';

export const NGINX_AUTH_SKIPPED = skipWithoutNginx ? `skipped: ${skipWithoutNginx}` : undefined;

const SECRET = 'bench-forward-auth-secret-0123456789';

/** Processes whose parent is `ppid` (nginx's workers), from /proc. */
function childPids(ppid) {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((pid) => procPpid(pid) === ppid);
}

/**
 * Start Keygate (forward_auth on) and nginx in front of `upstreamUrl`. Same shape as
 * startGatewayChild's result: url (nginx's), secret, keyId, pid (Keygate's), call('cpu') (Keygate
 * + nginx master + workers, summed; the parts: Keygate as primary, nginx as workers), close(); `log` is Keygate's access log file.
 */
export async function startNginxAuth({ children, grandchildren }, tmp, upstreamUrl) {
  const log = path.join(tmp, 'nginx-auth-keygate.log');
  const file = path.join(tmp, 'nginx-auth.yaml');
  writeFileSync(file, `${configYaml({ upstreamUrl, keys: `sqlite:${path.join(tmp, 'keys-nginx-auth.db')}`, rateLimits: 'memory', log, accessLog: true })}forward_auth:\n  secret: ${SECRET}\n`);
  const keygate = await startGatewayChild(children, file);
  let nginx;
  try {
    const upstream = new URL(upstreamUrl);
    nginx = await startNginx(path.join(tmp, 'nginx'), (listen) => forwardAuthSnippet({ listen, keygate: new URL(keygate.url).host, dagu: upstream.host, secret: SECRET }), { workers: 1 });
  } catch (err) {
    await keygate.close();
    throw err;
  }
  children.add(nginx.child);
  const workers = childPids(nginx.pid);
  for (const pid of workers) grandchildren.set(pid, nginx.pid); // killed before the master at cleanup
  const g = {
    url: nginx.url,
    secret: keygate.secret,
    keyId: keygate.keyId,
    pid: keygate.pid,
    log,
    describe: `nginx-auth: keygate pid ${keygate.pid} + nginx master ${nginx.pid} and worker ${workers.join(', ')}`,
    closed: false,
    call: async (op) => {
      if (op !== 'cpu') return keygate.call(op);
      const all = [keygate.pid, nginx.pid, ...workers].map(procCpu);
      if (all.includes(null)) return null;
      // parts: Keygate as the "primary", nginx's master and worker(s) as the "workers"
      return { user: all.reduce((s, c) => s + c.user, 0), system: all.reduce((s, c) => s + c.system, 0), parts: { primary: all[0], workers: all.slice(1) } };
    },
    close: async () => {
      if (g.closed) return;
      g.closed = true;
      await nginx.stop();
      children.delete(nginx.child);
      for (const pid of workers) grandchildren.delete(pid);
      await keygate.close();
    },
  };
  return g;
}
