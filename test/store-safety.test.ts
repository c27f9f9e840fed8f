// Store mistakes are loud: a typo in the sqlite: path, a new empty store, a read-only or corrupt
// database, a port in use. The real binary, real SQLite files, real sockets.

import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { startEchoUpstream } from '../src/demo/echo-upstream.js';
import { BIN, CHILD_ENV, spawnKeygate } from './binary.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
if (!existsSync(join(ROOT, 'dist/cli.js'))) t.fail('dist/ is missing: run "npm run build"');

// root writes through file modes: as root, run the gateway as "nobody" so a read-only file is one
const AS: { uid?: number; gid?: number } = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};

function run(args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const [cmd, pre] = AS.uid === undefined ? [process.execPath, []] : ['/usr/bin/env', ['-u', 'NODE_OPTIONS', process.execPath]];
    execFile(cmd, [...pre, BIN, ...args], { cwd, env: CHILD_ENV, timeout: 30_000, ...AS }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** A directory the gateway (perhaps running as nobody) may write, removed at the end. */
function workDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-store-'));
  chmodSync(dir, 0o777);
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function config(dir: string, store: string, upstream = 'http://127.0.0.1:1', extra = ''): string {
  const file = join(dir, 'gw.yaml');
  writeFileSync(
    file,
    `listen: { host: 127.0.0.1, port: 0 }\nadmin: { port: 0, token: admin-secret-token-1234 }\nstore: { keys: "${store}" }\n${extra}upstreams: [{ name: up, api_base_url: "${upstream}" }]\nroutes: [{ path: "/**", upstream: up }]\n`,
  );
  chmodSync(file, 0o644);
  return file;
}

/** One line on stderr, naming the problem, no stack trace, exit 1. */
function oneLine(t: Test, output: string, code: number | null, re: RegExp): void {
  t.equal(code, 1, 'exit status 1');
  const lines = output.trim().split('\n');
  t.equal(lines.length, 1, `one line: ${output}`);
  t.match(lines[0], re);
  t.notMatch(output, /\n\s+at |unexpected error/, 'no stack trace');
}

t.test('a sqlite: path whose directory does not exist is an error, not a new empty store', async (t) => {
  const dir = workDir(t);
  const cfg = config(dir, 'sqlite:./typo/keys.db');
  const gw = spawnKeygate(t, ['serve', '-c', cfg], { cwd: dir, ...AS });
  const code = await gw.exited;
  oneLine(t, gw.output(), code, /store\.keys sqlite:.*typo\/keys\.db: the directory .*typo does not exist/);
  t.notOk(existsSync(join(dir, 'typo')), 'no directory was made');
  const keys = await run(['keys', 'list', '-c', cfg], dir);
  t.equal(keys.code, 1);
  t.match(keys.stderr, /typo does not exist/);
  const check = await run(['check', '-c', cfg], dir);
  t.equal(check.code, 1, 'check fails too');
  t.match(check.stdout, /key store:\s+ERROR: .*does not exist/);
});

t.test('a new empty store is created with a log line; check prints the key count', async (t) => {
  const dir = workDir(t);
  const cfg = config(dir, 'sqlite:./keys.db');
  t.match((await run(['check', '-c', cfg], dir)).stdout, /key store:\s+sqlite:.*keys\.db \(does not exist yet: serve creates it, empty\)/);
  t.notOk(existsSync(join(dir, 'keys.db')), 'check creates nothing');
  const gw = spawnKeygate(t, ['serve', '-c', cfg], { cwd: dir, ...AS });
  t.ok(await gw.waitFor(/keygate listening/), gw.output());
  const created = gw.lines().find((l) => /did not exist: created a new, empty one/.test(l.msg ?? ''));
  t.ok(created, 'the log says a new, empty store was created');
  t.equal(created?.level, 'warn', 'as a warning');
  gw.child.kill('SIGTERM');
  await gw.exited;
  await run(['keys', 'create', '-c', cfg, '--name', 'a'], dir);
  await run(['keys', 'create', '-c', cfg, '--name', 'b'], dir);
  t.match((await run(['check', '-c', cfg], dir)).stdout, /key store:\s+sqlite:.*keys\.db \(2 keys\)/);
  const again = spawnKeygate(t, ['serve', '-c', cfg], { cwd: dir, ...AS });
  t.ok(await again.waitFor(/keygate listening/));
  t.notMatch(again.output(), /created a new, empty/, 'an existing store is not announced as new');
  again.child.kill('SIGTERM');
  await again.exited;
});

t.test('a read-only database: readyz fails with the reason, key changes answer 503, keys still authenticate', async (t) => {
  const dir = workDir(t);
  const echo = await startEchoUpstream({ name: 'up' });
  t.teardown(() => echo.close());
  const cfg = config(dir, 'sqlite:./keys.db', echo.url);
  const secret = JSON.parse((await run(['keys', 'create', '-c', cfg, '--name', 'svc', '--json'], dir)).stdout).key as string;
  chmodSync(join(dir, 'keys.db'), 0o444);
  const gw = spawnKeygate(t, ['serve', '-c', cfg], { cwd: dir, ...AS });
  const admin = (await gw.waitFor(/"admin_url":"(http:\/\/[^"]+)"/))?.[1];
  const url = (await gw.waitFor(/"url":"(http:\/\/[^"]+)"/))?.[1];
  t.ok(admin && url, gw.output());
  const ready = await request(`${admin}/readyz`);
  const body = (await ready.body.json()) as { status: string; checks: Record<string, string> };
  t.equal(ready.statusCode, 503, 'readyz fails');
  t.match(body.checks.key_store, /cannot take changes: attempt to write a readonly database \(SQLITE_READONLY/);
  const auth = { authorization: 'Bearer admin-secret-token-1234', 'content-type': 'application/json' };
  const create = await request(`${admin}/api/keys`, { method: 'POST', headers: auth, body: JSON.stringify({ name: 'new', scopes: ['workflows'] }) });
  const refusal = (await create.body.json()) as { code: string; message: string };
  t.equal(create.statusCode, 503, `a key change answers 503: ${JSON.stringify(refusal)}`);
  t.equal(refusal.code, 'store_unavailable');
  t.match(refusal.message, /readonly database/);
  const del = await request(`${admin}/api/v1/api-keys/svc`, { method: 'DELETE', headers: auth });
  await del.body.dump();
  t.equal(del.statusCode, 503, 'so does a delete');
  const used = await request(`${url}/x`, { headers: { 'x-api-key': secret } });
  await used.body.dump();
  t.equal(used.statusCode, 200, 'existing keys keep working');
  gw.child.kill('SIGTERM');
  await gw.exited;
  chmodSync(join(dir, 'keys.db'), 0o644);
});

t.test('a corrupt database and a port in use stop the start with one line', async (t) => {
  const dir = workDir(t);
  writeFileSync(join(dir, 'keys.db'), 'this is not a database, '.repeat(200));
  chmodSync(join(dir, 'keys.db'), 0o666);
  const corrupt = spawnKeygate(t, ['serve', '-c', config(dir, 'sqlite:./keys.db')], { cwd: dir, ...AS });
  oneLineOf(t, corrupt, await corrupt.exited, /store\.keys sqlite:.*keys\.db: cannot open the database: file is not a database \(SQLITE_NOTADB\)/);

  const busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  t.teardown(() => busy.close());
  const port = (busy.address() as { port: number }).port;
  const cfg = config(dir, 'sqlite:./ok.db');
  writeFileSync(cfg, readPortConfig(cfg, port));
  await run(['keys', 'create', '-c', cfg, '--name', 'x'], dir); // an existing store: only the port fails
  const taken = spawnKeygate(t, ['serve', '-c', cfg], { cwd: dir, ...AS });
  oneLineOf(t, taken, await taken.exited, new RegExp(`listen: cannot listen on 127\\.0\\.0\\.1:${port}: the address is already in use`));
});

function oneLineOf(t: Test, p: { output(): string }, code: number | null, re: RegExp): void {
  oneLine(t, p.output(), code, re);
}

function readPortConfig(file: string, port: number): string {
  return readFileSync(file, 'utf8').replace('listen: { host: 127.0.0.1, port: 0 }', `listen: { host: 127.0.0.1, port: ${port} }`);
}
