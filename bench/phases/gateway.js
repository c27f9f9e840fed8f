// Phases gateway, gateway-nolog, gateway-redis (and gateway-compare): Keygate in a child process of
// its own, started from dist/ (or BENCH_KEYGATE_DIST, another build, to compare two versions in one
// run) with a config written by the bench and read by loadConfig; it answers the bench over IPC
// (its CPU, its limiter state, setActive for the revocation part).
//
//   node bench/phases/gateway.js CONFIG_FILE OPTS_JSON   (forked by startGatewayChild)

import { fork } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NO_LIMIT } from '../lib/util.js';

const SELF = fileURLToPath(import.meta.url);

if (process.argv[1] === SELF) await gatewayChild(process.argv[2], JSON.parse(process.argv[3] ?? '{}'));

async function gatewayChild(configFile, opts) {
  const dist = process.env.BENCH_KEYGATE_DIST ?? new URL('../../dist/', import.meta.url).pathname;
  const { loadConfig } = await import(path.join(dist, 'config/load.js'));
  const { Gateway } = await import(path.join(dist, 'server.js'));
  const config = loadConfig(configFile, process.env);
  const gw = await Gateway.start({ config, port: 0 }); // logger from config.log: the real path
  // opts.key: create the bench key here (null for a second instance that shares another's key store)
  const created = opts.key === null ? null : await gw.keys.create({ name: opts.key?.name ?? 'bench', role: 'operator', scopes: ['agents', 'workflows'], rateLimit: NO_LIMIT }, 'bench');
  let closing;
  const shutdown = () => {
    closing ??= gw.close(2_000).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  // A tiny control channel for main: {type: 'call', id, op, args} → {type: 'reply', id, ok, value | error}
  const ops = {
    cpu: () => process.cpuUsage(),
    limiter: () => gw.limiterState,
    setActive: async ({ id, active }) => {
      const t0 = performance.now();
      await gw.keys.setActive(id, active, 'bench');
      return { ms: performance.now() - t0 };
    },
  };
  process.on('message', (m) => {
    if (m?.type === 'call') {
      Promise.resolve()
        .then(() => ops[m.op](m.args))
        .then(
          (value) => process.send({ type: 'reply', id: m.id, ok: true, value }),
          (err) => process.send({ type: 'reply', id: m.id, ok: false, error: String(err?.stack ?? err) }),
        );
    } else if (m?.type === 'close') shutdown();
  });
  process.on('disconnect', shutdown); // the parent went away: never linger
  process.send({ type: 'ready', url: gw.url, secret: created?.secret, keyId: created?.key.id, pid: process.pid });
}

/**
 * Fork a gateway child; resolves once it listens, with its url, bench key (secret, keyId), pid,
 * call(op, args) and close(). `children`: the bench's set of live children (killed on failure).
 */
export function startGatewayChild(children, configFile, opts = {}, dist = undefined) {
  const child = fork(SELF, [configFile, JSON.stringify(opts)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: dist ? { ...process.env, BENCH_KEYGATE_DIST: dist } : process.env });
  children.add(child);
  let nextId = 0;
  const pending = new Map();
  child.on('message', (m) => {
    if (m?.type === 'reply') {
      const p = pending.get(m.id);
      pending.delete(m.id);
      if (p) m.ok ? p.resolve(m.value) : p.reject(new Error(`gateway child: ${m.error}`));
    }
  });
  child.on('exit', () => {
    for (const p of pending.values()) p.reject(new Error('gateway child exited'));
    pending.clear();
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway child (${configFile}) did not start within 30 s`)), 30_000);
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`gateway child (${configFile}) exited (${code ?? sig}) before it was ready`));
    });
    child.on('message', (m) => {
      if (m?.type !== 'ready') return;
      clearTimeout(timer);
      resolve({
        ...m,
        /** ask the child: cpu, limiter, setActive {id, active} */
        call: (op, args, timeoutMs = 5_000) =>
          new Promise((res, rej) => {
            const id = nextId++;
            const timer = setTimeout(() => pending.has(id) && (pending.delete(id), rej(new Error(`gateway child did not answer ${op} within ${timeoutMs} ms`))), timeoutMs);
            timer.unref();
            pending.set(id, {
              resolve: (v) => (clearTimeout(timer), res(v)),
              reject: (e) => (clearTimeout(timer), rej(e)),
            });
            child.send({ type: 'call', id, op, args });
          }),
        close: () =>
          new Promise((res) => {
            if (child.exitCode !== null || child.signalCode !== null) {
              children.delete(child);
              return res();
            }
            const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
            child.once('exit', () => {
              clearTimeout(t);
              children.delete(child);
              res();
            });
            child.send({ type: 'close' });
          }),
      });
    });
  });
}
