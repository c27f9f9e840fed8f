// Start one of the peer proxies (bench/phases/bare.js, fastify.js) as a child process: it gets the
// upstream URL, the bench key's secret (it keeps only its digest) and an upstream token, listens
// on a free loopback port and says `{type: 'ready', url}` over IPC. Its CPU is read from /proc, as
// for every other process of the run.

import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { procCpu } from './util.js';

/** `extra`: more options for the peer (bare-full: logFile). */
export function startPeer(children, script, upstreamUrl, extra = {}) {
  const secret = `dg_${randomBytes(24).toString('base64url')}`;
  const keyId = `peer-${randomBytes(4).toString('hex')}`;
  const child = fork(script, [JSON.stringify({ upstreamUrl, secret, keyId, token: 'bench-upstream-token', ...extra })], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.add(child);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${script} did not start within 30 s`)), 30_000);
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`${script} exited (${code ?? sig}) before it was ready`));
    });
    child.on('message', (m) => {
      if (m?.type !== 'ready') return;
      clearTimeout(timer);
      const g = {
        url: m.url,
        secret,
        keyId,
        pid: child.pid,
        peer: true,
        closed: false,
        call: async (op) => {
          if (op !== 'cpu') throw new Error(`${script}: no ${op}`);
          return procCpu(child.pid);
        },
        close: () =>
          new Promise((res) => {
            g.closed = true;
            if (child.exitCode !== null || child.signalCode !== null) return res(children.delete(child));
            const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
            child.once('exit', () => {
              clearTimeout(t);
              children.delete(child);
              res();
            });
            child.kill('SIGTERM');
          }),
      };
      resolve(g);
    });
  });
}

/** The digest a peer keeps of its one key (the same domain-separated SHA-256 as Keygate's). */
export function digest(hash, secret) {
  return hash('sha256', `keygate-api-key:v1\0${secret}`, 'hex');
}
