// A private Caddy for test/forward-auth-caddy.test.ts: deploy/Caddyfile.forward-auth as shipped, its
// addresses and shared secret replaced, behind global options that keep it to itself (no admin
// endpoint, no HTTPS, its storage in the test's directory); `caddy run` on a free loopback port.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { freePort } from './ports.js';

export const CADDY_BIN = spawnSync('sh', ['-c', 'command -v caddy'], { encoding: 'utf8' }).stdout.trim();
/** A tap `skip` value: the reason when Caddy is missing. */
export const skipWithoutCaddy = CADDY_BIN ? false : 'caddy is not installed (apt-get install caddy; .ci/run does it)';

export const CADDYFILE = new URL('../deploy/Caddyfile.forward-auth', import.meta.url);

/** The shipped site block with its addresses and secret replaced; throws if one is not where it was. */
export function caddySite(o: { listen: string; keygate: string; dagu: string; secret: string }): string {
  let text = readFileSync(CADDYFILE, 'utf8');
  const swap = (from: string, to: string) => {
    if (!text.includes(from)) throw new Error(`deploy/Caddyfile.forward-auth no longer contains ${JSON.stringify(from)}`);
    text = text.replace(from, to);
  };
  swap('\n:80 {', `\nhttp://${o.listen} {`);
  swap('forward_auth 127.0.0.1:8080 {', `forward_auth ${o.keygate} {`);
  swap('reverse_proxy 127.0.0.1:8090 {', `reverse_proxy ${o.dagu} {`);
  swap('"replace-with-the-forward_auth-secret"', `"${o.secret}"`);
  return text;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)));
    s.on('error', () => resolve(false));
  });
}

export interface Caddy {
  url: string;
  output(): string;
  stop(): Promise<void>;
}

/** Start Caddy in `dir` with `site(listen)` as its only site. Resolves once it accepts connections. */
export async function startCaddy(dir: string, site: (listen: string) => string): Promise<Caddy> {
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const listen = `127.0.0.1:${port}`;
  const file = join(dir, 'Caddyfile');
  writeFileSync(file, `{\n\tadmin off\n\tauto_https off\n}\n${site(listen)}`);
  const env = { ...process.env, HOME: dir, XDG_DATA_HOME: dir, XDG_CONFIG_HOME: dir };
  const child: ChildProcess = spawn(CADDY_BIN, ['run', '--config', file, '--adapter', 'caddyfile'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const stop = () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      child.once('exit', () => (clearTimeout(t), resolve()));
      child.kill('SIGTERM');
    });
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`caddy exited (${child.exitCode}): ${out}`);
    if (await canConnect(port)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`caddy did not listen on ${listen} within 30 s: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: `http://${listen}`, output: () => out, stop };
}
