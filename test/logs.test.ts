// Logs of the real binary: ISO-8601 time and level names, the access line's fields (bytes_out is
// what the client really received), the access log in a destination of its own, the addresses
// really bound at start-up, a "keygate stopped" line at exit, and log.format: pretty.

import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { startEchoUpstream } from '../src/demo/echo-upstream.js';
import { BIN, CHILD_ENV, spawnKeygate } from './binary.js';

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** One raw HTTP/1.1 request on its own connection; resolves with every byte the server sent. */
function rawGet(url: string, path: string, headers: Record<string, string>): Promise<Buffer> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = connect(Number(port), hostname, () => {
      socket.write(`GET ${path} HTTP/1.1\r\nhost: ${hostname}:${port}\r\nconnection: close\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`);
    });
    socket.on('data', (d) => chunks.push(d));
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('error', reject);
  });
}

async function setup(t: Test, log: string) {
  const dir = t.testdir();
  const echo = await startEchoUpstream({ name: 'up' });
  t.teardown(() => echo.close());
  const cfg = join(dir, 'gw.yaml');
  writeFileSync(
    cfg,
    `listen: { host: 0.0.0.0, port: 0 }\nadmin: { host: 127.0.0.1, port: 0 }\nstore: { keys: "sqlite:./k.db" }\n` +
      `upstreams: [{ name: up, api_base_url: "${echo.url}" }]\nroutes:\n  - { name: x, path: /x, upstream: up, role: viewer }\n${log}`,
  );
  const created = JSON.parse(execFileSync(process.execPath, [BIN, 'keys', 'create', '-c', cfg, '--name', 'logged', '--json'], { env: CHILD_ENV, encoding: 'utf8' }));
  return { dir, cfg, secret: created.key as string, keyId: created.apiKey.id as string };
}

t.test('default: JSON lines with ISO time and level names; the access line; bound addresses; a stopped line', async (t) => {
  const s = await setup(t, '');
  const gw = spawnKeygate(t, ['serve', '-c', s.cfg]);
  t.ok(await gw.waitFor(/"msg":"keygate listening"/, 1, 90_000), `started: ${gw.output()}`);
  const start = gw.lines().find((l) => l.msg === 'keygate listening')!;
  t.match(start, { level: 'info', service: 'keygate' });
  t.match(start.time, ISO, 'time is ISO-8601');
  t.match(start.listen, /^http:\/\/0\.0\.0\.0:\d+$/, 'listen: the address really bound (every interface)');
  t.match(start.admin_listen, /^http:\/\/127\.0\.0\.1:\d+$/, 'admin_listen: the admin address bound');
  const url: string = start.url;

  const raw = await rawGet(url, '/x?secret=hidden', { 'x-api-key': s.secret, 'user-agent': 'logs-test/1.0 "quoted"', 'x-request-id': 'logs-1' });
  t.match(raw.toString('latin1'), /^HTTP\/1\.1 200 /);
  const refused = await rawGet(url, '/x', { 'user-agent': 'anon' });
  t.match(refused.toString('latin1'), /^HTTP\/1\.1 401 /);
  t.ok(await gw.waitFor(/"msg":"request"/, 2), 'two access lines');
  const [ok, denied] = gw.lines().filter((l) => l.msg === 'request');
  t.match(ok, {
    level: 'info',
    request_id: 'logs-1',
    method: 'GET',
    host: new URL(url).host,
    path: '/x',
    route: 'x',
    key_id: s.keyId,
    status: 200,
    decision: 'allowed',
    upstream: 'up',
    user_agent: 'logs-test/1.0 "quoted"',
  });
  t.match(ok.time, ISO);
  t.equal(ok.bytes_out, raw.length, 'bytes_out: every byte the client received, status line and headers included');
  t.equal(denied.bytes_out, refused.length, 'for a refusal too');
  t.match(denied, { status: 401, decision: 'unauthenticated', user_agent: 'anon' });
  t.equal(denied.upstream, undefined, 'no upstream for a request that did not reach one');
  t.notOk(gw.output().includes('hidden'), 'the query string is never logged');
  t.notOk(gw.output().includes(s.secret), 'nor the key');

  gw.child.kill('SIGTERM');
  t.equal(await gw.exited, 0);
  const last = gw.lines().at(-1)!;
  t.match(last, { msg: 'keygate stopped', level: 'info', signal: 'SIGTERM', exit_code: 0 }, 'the last line says it stopped');
});

t.test('log.access_log names its own destination: request lines there, the rest where they were', async (t) => {
  const s = await setup(t, 'log: { access_log: ./access.log }\n');
  const gw = spawnKeygate(t, ['serve', '-c', s.cfg]);
  const m = await gw.waitFor(/"url":"(http:\/\/[^"]+)"/, 1, 90_000);
  t.ok(m, `started: ${gw.output()}`);
  for (let i = 0; i < 3; i++) await rawGet(m![1]!, '/x', { 'x-api-key': s.secret });
  // logrotate: move the file away, SIGHUP, and the next lines go to a new access.log
  const file = join(s.dir, 'access.log');
  for (let i = 0; i < 100 && !(existsSync(file) && readFileSync(file, 'utf8').split('\n').length > 3); i++) await new Promise((r) => setTimeout(r, 50));
  renameSync(file, `${file}.1`);
  gw.child.kill('SIGHUP');
  t.ok(await gw.waitFor(/"msg":"configuration reloaded"/), 'SIGHUP handled');
  await rawGet(m![1]!, '/x', { 'x-api-key': s.secret });
  gw.child.kill('SIGTERM');
  t.equal(await gw.exited, 0);
  const rotated = readFileSync(`${file}.1`, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  t.equal(rotated.length, 3, 'three lines in the rotated file');
  const access = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  t.equal(access.length, 1, 'the one after SIGHUP in the new access.log');
  access.push(...rotated);
  t.ok(access.every((l) => l.msg === 'request' && l.status === 200 && ISO.test(l.time)), 'all of them request lines');
  t.notOk(gw.output().includes('"msg":"request"'), 'none in the application log');
  t.ok(gw.output().includes('"msg":"keygate stopped"'), 'which still has the rest');
});

t.test('log.access_log: false writes no request line', async (t) => {
  const s = await setup(t, 'log: { access_log: false }\n');
  const gw = spawnKeygate(t, ['serve', '-c', s.cfg]);
  const m = await gw.waitFor(/"url":"(http:\/\/[^"]+)"/, 1, 90_000);
  t.ok(m, `started: ${gw.output()}`);
  t.match((await rawGet(m![1]!, '/x', { 'x-api-key': s.secret })).toString('latin1'), /^HTTP\/1\.1 200 /);
  gw.child.kill('SIGTERM');
  t.equal(await gw.exited, 0);
  t.notOk(gw.output().includes('"msg":"request"'));
});

t.test('log.format: pretty: readable lines for a terminal (pino-pretty)', async (t) => {
  const s = await setup(t, 'log: { format: pretty }\n');
  const gw = spawnKeygate(t, ['serve', '-c', s.cfg]);
  const m = await gw.waitFor(/url: "(http:\/\/[^"]+)"/, 1, 90_000);
  t.ok(m, `started: ${gw.output()}`);
  await rawGet(m![1]!, '/x', { 'x-api-key': s.secret });
  t.ok(await gw.waitFor(/INFO.*: request/), 'the access line, pretty too');
  gw.child.kill('SIGTERM');
  t.equal(await gw.exited, 0);
  const out = gw.output();
  t.match(out, /^\[\d{2}:\d{2}:\d{2}\.\d{3}\] INFO \(\d+\): keygate listening$/m, 'time, level name, pid, message');
  t.notOk(out.split('\n').some((l) => l.startsWith('{')), 'no JSON line');
  t.match(out, /INFO \(\d+\): keygate stopped/);
});
