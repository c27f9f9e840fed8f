// Backups and moves on the real binary: `keygate backup` and `keygate keys export` while the
// gateway serves traffic and keys are being created, then a restore (and an import into a new
// store) where every key that existed before the backup opens the gateway again.

import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { startEchoUpstream } from '../src/demo/echo-upstream.js';
import { runKeygate, spawnKeygate } from './binary.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
if (!existsSync(join(ROOT, 'dist/cli.js'))) t.fail('dist/ is missing: run "npm run build"');
const TOKEN = 'admin-token-for-backups-0123';

const run = runKeygate;

function config(dir: string, upstream: string, db: string): string {
  const file = join(dir, 'gw.yaml');
  writeFileSync(
    file,
    `listen: { host: 127.0.0.1, port: 0 }\nadmin: { port: 0, token: ${TOKEN} }\nstore: { keys: "sqlite:./${db}" }\nlog: { level: info, access_log: false }\nupstreams: [{ name: up, api_base_url: "${upstream}" }]\nroutes: [{ path: "/**", upstream: up }]\n`,
  );
  return file;
}

async function serve(t: Test, cfg: string, cwd: string): Promise<{ url: string; admin: string; stop(): Promise<unknown> }> {
  const gw = spawnKeygate(t, ['serve', '-c', cfg], { cwd });
  const admin = (await gw.waitFor(/"admin_url":"(http:\/\/[^"]+)"/))?.[1];
  const url = (await gw.waitFor(/"url":"(http:\/\/[^"]+)"/))?.[1];
  if (!url || !admin) throw new Error(`gateway did not start: ${gw.output()}`);
  return {
    url,
    admin,
    stop: () => {
      gw.child.kill('SIGTERM');
      return gw.exited;
    },
  };
}

async function createKey(admin: string, name: string): Promise<string> {
  const r = await request(`${admin}/api/keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name, scopes: ['workflows'] }),
  });
  const body = (await r.body.json()) as { key: string };
  if (r.statusCode !== 201) throw new Error(`create ${name}: ${r.statusCode} ${JSON.stringify(body)}`);
  return body.key;
}

async function status(url: string, secret: string): Promise<number> {
  const r = await request(`${url}/x`, { headers: { 'x-api-key': secret } });
  await r.body.dump();
  return r.statusCode;
}

/** How many of `secrets` the gateway at `url` lets through (200). */
async function working(url: string, secrets: Iterable<string>): Promise<number> {
  let ok = 0;
  for (const s of secrets) if ((await status(url, s)) === 200) ok++;
  return ok;
}

t.test('backup and export under load; restore and import bring back every key', async (t) => {
  const dir = t.testdir({ restored: {}, imported: {} });
  const echo = await startEchoUpstream({ name: 'up' });
  t.teardown(() => echo.close());
  const cfg = config(dir, echo.url, 'keys.db');
  const live = await serve(t, cfg, dir);
  const secrets = new Map<string, string>();
  for (let i = 0; i < 40; i++) secrets.set(`k${i}`, await createKey(live.admin, `k${i}`));

  // load: requests with every key (usage flushes write every second) and keys still being created
  let loading = true;
  let served = 0;
  const traffic = (async () => {
    const all = [...secrets.values()];
    for (let i = 0; loading; i++) if ((await status(live.url, all[i % all.length]!)) === 200) served++;
  })();
  let extra = 0;
  const creating = (async () => {
    while (loading) secrets.set(`late${extra}`, await createKey(live.admin, `late${extra++}`));
  })();
  await new Promise((r) => setTimeout(r, 300));
  const before = new Map(secrets); // every key whose creation finished before the backup began
  const backup = await run(['backup', '-c', cfg, join(dir, 'backup.db')], dir);
  const exported = await run(['keys', 'export', '-c', cfg, '--output', join(dir, 'keys.jsonl'), '--audit'], dir);
  await new Promise((r) => setTimeout(r, 300));
  loading = false;
  await Promise.all([traffic, creating]);
  await live.stop();
  t.equal(backup.code, 0, backup.stderr);
  t.equal(exported.code, 0, exported.stderr);
  t.ok(served > 0 && extra > 0, `load ran: ${served} requests served, ${extra} keys created meanwhile`);
  const backedUp = Number(/backed up (\d+) key\(s\)/.exec(backup.stdout)?.[1]);
  t.ok(backedUp >= before.size, `the backup holds every key created before it began (${backedUp} >= ${before.size})`);
  t.notOk(existsSync(join(dir, 'backup.db-wal')), 'one self-contained file');

  const lines = readFileSync(join(dir, 'keys.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const keyLines = lines.filter((l) => l.type === 'key');
  t.ok(keyLines.length >= before.size, 'the export holds every key too');
  t.ok(lines.some((l) => l.type === 'audit'), 'and, with --audit, the audit trail');
  t.ok(keyLines.every((l) => /^[0-9a-f]{64}$/.test(l.digest)), 'each key with its digest');
  const text = readFileSync(join(dir, 'keys.jsonl'), 'utf8');
  for (const s of secrets.values()) if (text.includes(s)) t.fail('a secret is in the export');

  // restore: the backup file where the store lives, then start
  copyFileSync(join(dir, 'backup.db'), join(dir, 'restored', 'keys.db'));
  const restored = await serve(t, config(join(dir, 'restored'), echo.url, 'keys.db'), join(dir, 'restored'));
  t.equal(await working(restored.url, before.values()), before.size, `every one of the ${before.size} keys works after the restore`);
  await restored.stop();

  // move: import the export into a new store (twice: the second changes nothing)
  const cfg2 = config(join(dir, 'imported'), echo.url, 'keys.db');
  const dry = await run(['keys', 'import', '-c', cfg2, join(dir, 'keys.jsonl'), '--dry-run'], join(dir, 'imported'));
  t.match(dry.stdout, new RegExp(`dry run: ${keyLines.length} created, 0 updated, 0 skipped \\(nothing was changed\\)`));
  const first = await run(['keys', 'import', '-c', cfg2, join(dir, 'keys.jsonl')], join(dir, 'imported'));
  t.equal(first.code, 0, first.stderr);
  t.match(first.stdout, new RegExp(`^${keyLines.length} created, 0 updated, 0 skipped`));
  const second = await run(['keys', 'import', '-c', cfg2, join(dir, 'keys.jsonl')], join(dir, 'imported'));
  t.match(second.stdout, new RegExp(`^0 created, 0 updated, ${keyLines.length} skipped`), 'idempotent');
  const moved = await serve(t, cfg2, join(dir, 'imported'));
  t.equal(await working(moved.url, before.values()), before.size, 'every key works after the import');
  const shown = JSON.parse((await run(['keys', 'show', '-c', cfg2, 'k0', '--json'], join(dir, 'imported'))).stdout).apiKey;
  t.equal(shown.requestCount, keyLines.find((l) => l.name === 'k0').requestCount + 1, 'usage carried over (plus the request just made)');
  await moved.stop();
});

t.test('backup refuses what it cannot do, in one line', async (t) => {
  const dir = t.testdir();
  const cfg = config(dir, 'http://127.0.0.1:1', 'keys.db');
  const missing = await run(['backup', '-c', cfg, join(dir, 'b.db')], dir);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /keys\.db: no such file/);
  await run(['keys', 'create', '-c', cfg, '--name', 'a'], dir);
  t.equal((await run(['backup', '-c', cfg, join(dir, 'b.db')], dir)).code, 0);
  const again = await run(['backup', '-c', cfg, join(dir, 'b.db')], dir);
  t.equal(again.code, 1);
  t.match(again.stderr, /b\.db exists; choose a new file/);
  writeFileSync(cfg, readFileSync(cfg, 'utf8').replace('sqlite:./keys.db', 'redis://127.0.0.1:1/0'));
  const redis = await run(['backup', '-c', cfg, join(dir, 'c.db')], dir);
  t.equal(redis.code, 2);
  t.match(redis.stderr, /backup copies a SQLite key store.*keygate keys export/);
  const bad = join(dir, 'bad.jsonl');
  writeFileSync(bad, '{"type":"key","id":"x"}\nnot json\n{"type":"key","id":"group:ci","name":"n"}\n');
  writeFileSync(cfg, readFileSync(cfg, 'utf8').replace('redis://127.0.0.1:1/0', 'sqlite:./keys.db'));
  const refused = await run(['keys', 'import', '-c', cfg, bad], dir);
  t.equal(refused.code, 1);
  t.match(refused.stderr, /line 1: name: must be a non-empty string/);
  t.match(refused.stderr, /line 2: not a JSON object/);
  t.match(refused.stderr, /line 3: id: must be a non-empty string without ":"/, "a key id that would share a group's counters");
  t.match(refused.stdout, /0 created, 0 updated, 0 skipped; 3 line\(s\) refused/);
});
