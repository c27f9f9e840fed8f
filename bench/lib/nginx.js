// A private nginx for the forward-auth test (test/forward-auth.test.ts) and bench phase
// (bench/phases/nginx-auth.js): deploy/nginx-forward-auth.conf as shipped, its addresses and shared
// secret replaced, inside a minimal nginx.conf whose pid, logs and temp dirs are in its own
// directory; `nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'` on a free loopback port.

import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { freePort } from './util.js';

export const NGINX_BIN = spawnSync('sh', ['-c', 'command -v nginx || { test -x /usr/sbin/nginx && echo /usr/sbin/nginx; }'], { encoding: 'utf8' }).stdout.trim();
/** A tap `skip` value: the reason when nginx is missing. */
export const skipWithoutNginx = NGINX_BIN ? false : 'nginx is not installed (apt-get install nginx-light; .ci/run does it)';

export const SNIPPET_FILE = new URL('../../deploy/nginx-forward-auth.conf', import.meta.url);

/** The shipped snippet with its addresses and secret replaced; throws if one is not where it was. */
export function forwardAuthSnippet({ listen, keygate, dagu, secret }) {
  let text = readFileSync(SNIPPET_FILE, 'utf8');
  const swap = (from, to) => {
    if (!text.includes(from)) throw new Error(`deploy/nginx-forward-auth.conf no longer contains ${JSON.stringify(from)}`);
    text = text.replace(from, to);
  };
  swap('    listen 80;', `    listen ${listen};`);
  swap('server 127.0.0.1:8080;', `server ${keygate};`);
  swap('server 127.0.0.1:8090;', `server ${dagu};`);
  swap('"replace-with-the-forward_auth-secret"', `"${secret}"`);
  return text;
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)));
    s.on('error', () => resolve(false));
  });
}

/**
 * Start nginx in `dir` with `http` (the contents of the http {} block; `{{listen}}` is replaced by
 * the free port's address). Resolves once it accepts connections: { url, port, pid, errorLog(), stop() }.
 */
export async function startNginx(dir, http, { workers = 1 } = {}) {
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o755); // worker processes run as another user when nginx starts as root
  const port = await freePort();
  const listen = `127.0.0.1:${port}`;
  const conf = `# generated for one test / bench run
worker_processes ${workers};
pid ${path.join(dir, 'nginx.pid')};
error_log ${path.join(dir, 'error.log')} warn;
events { worker_connections 1024; }
http {
    access_log off;
    # a client connection is never closed after N requests (nginx's default is 1,000): autocannon
    # may write its next request on a connection nginx is closing, and count an error
    keepalive_requests 1000000;
    client_body_temp_path ${path.join(dir, 'client_body')};
    proxy_temp_path ${path.join(dir, 'proxy')};
    fastcgi_temp_path ${path.join(dir, 'fastcgi')};
    uwsgi_temp_path ${path.join(dir, 'uwsgi')};
    scgi_temp_path ${path.join(dir, 'scgi')};
${http(listen)}
}
`;
  const file = path.join(dir, 'nginx.conf');
  writeFileSync(file, conf);
  // -e: the error log from the first line on (else nginx first tries its compiled-in /var/log/nginx/error.log)
  const child = spawn(NGINX_BIN, ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', file, '-g', 'daemon off;'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const errorLog = () => {
    try {
      return readFileSync(path.join(dir, 'error.log'), 'utf8');
    } catch {
      return '';
    }
  };
  const stop = () =>
    new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      child.once('exit', () => (clearTimeout(t), resolve()));
      child.kill('SIGTERM'); // the master stops its workers
    });
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited (${child.exitCode}): ${out}${errorLog()}`);
    if (await canConnect(port)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`nginx did not listen on ${listen} within 30 s: ${out}${errorLog()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: `http://${listen}`, port, pid: child.pid, child, errorLog, stop };
}
