// The `keygate` command as scripts use it: the real binary in a child process.

import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { request } from 'undici';
import { startEchoUpstream } from '../src/demo/echo-upstream.js';
import { BIN, CHILD_ENV, spawnKeygate } from './binary.js';
import { startStack } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

if (!existsSync(join(ROOT, 'dist/cli.js'))) {
  t.fail('dist/ is missing: run "npm run build" (npm test does it first)');
}

function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...CHILD_ENV, ...env }, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

t.test('--help lists every command', async (t) => {
  const r = await run(['--help']);
  t.equal(r.code, 0);
  for (const cmd of ['serve', 'check', 'routes explain', 'keys create', 'keys list', 'keys show', 'keys update', 'activate|deactivate|regenerate|delete', 'demo']) {
    t.match(r.stdout, cmd);
  }
});

t.test('--version prints the package version', async (t) => {
  const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
  for (const args of [['--version'], ['-V'], ['version']]) {
    const r = await run(args);
    t.equal(r.code, 0);
    t.equal(r.stdout.trim(), `keygate ${version} (node ${process.version})`, args.join(' '));
  }
});

t.test('--help: every example runs (on a copy of the example config)', async (t) => {
  const help = (await run(['--help'])).stdout;
  const examples = help
    .slice(help.indexOf('Examples:'))
    .split('\n')
    .map((l) => l.replace(/#.*$/, '').trim())
    .filter((l) => l.startsWith('keygate ') && !/^keygate (serve|demo)\b/.test(l));
  t.ok(examples.length >= 9, `${examples.length} examples to run`);
  const dir = t.testdir();
  const cfg = join(dir, 'gateway.yaml');
  writeFileSync(cfg, readFileSync(join(ROOT, 'gateway.example.yaml'), 'utf8').replaceAll('include: config/routes/', `include: ${join(ROOT, 'config/routes')}/`));
  for (const line of examples) {
    const r = await run([...line.split(/\s+/).slice(1), '-c', cfg]);
    t.equal(r.code, 0, `${line}: ${r.stderr}`);
  }
});

t.test('check: summary for a good file, positions and exit 1 for a bad one', async (t) => {
  const ok = await run(['check', '-c', 'gateway.example.yaml']);
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stdout, /gateway\.example\.yaml: OK/);
  t.match(ok.stdout, /routes:\s+230 /); // config/routes/dagu.yaml (224 operations but login and setup) + config/routes/dagen.yaml (8)
  t.notMatch(ok.stdout, /upstream-secret/);

  const dir = t.testdir({
    'bad.yaml': 'upstreams:\n  - name: dagu\n    api_base_url: http://127.0.0.1:1\n    auth_type: token\n    auth_token: ${NOPE_NOT_SET}\nroutes:\n  - { path: /x, upstream: dagu, role: boss }\n',
  });
  const bad = await run(['check', '-c', join(dir, 'bad.yaml')]);
  t.equal(bad.code, 1);
  t.match(bad.stderr, /bad\.yaml:5:17: upstreams\[0\]\.auth_token: environment variable NOPE_NOT_SET is not set/);
  t.match(bad.stderr, /bad\.yaml:7:\d+: routes\[0\]\.role: must be one of/);
});

t.test('routes explain: route, requirements and upstream URL; 404 and 400 cases exit 1', async (t) => {
  const r = await run(['routes', 'explain', '-c', 'gateway.example.yaml', 'POST', '/api/v1/dags/deploy/start?x=1', '--json']);
  t.equal(r.code, 0, r.stderr);
  const e = JSON.parse(r.stdout);
  t.match(e, { matched: true, auth: 'required', surface: 'rest_api', role: 'operator', upstream: 'dagu', params: { fileName: 'deploy' } });
  t.equal(e.upstream_url, 'http://127.0.0.1:8090/api/v1/dags/deploy/start?x=1');
  const text = await run(['routes', 'explain', '-c', 'gateway.example.yaml', 'GET', '/api/v1/workflows']);
  t.match(text.stdout, /scopes:\s+workflows/);
  t.match(text.stdout, /workspace:\s+the key's workspace/);
  const none = await run(['routes', 'explain', '-c', 'gateway.example.yaml', 'DELETE', '/api/v1/dags']);
  t.equal(none.code, 1);
  t.match(none.stdout, /no route: DELETE \/api\/v1\/dags gets 404/);
  const bad = await run(['routes', 'explain', '-c', 'gateway.example.yaml', 'GET', '/api/v1/dags%2F..%2Fadmin']);
  t.equal(bad.code, 1);
  t.match(bad.stdout, /refused with 400: encoded slash/);
});

t.test('keys: create, list, show, update, deactivate, regenerate, delete; secrets only at create/regenerate', async (t) => {
  const dir = t.testdir();
  const cfg = join(dir, 'gw.yaml');
  writeFileSync(cfg, 'store: { keys: "sqlite:./k.db" }\nkeys: { prefix: kg_, rate_limit: { default: 30, min: 1, max: 100 } }\n');
  const c = ['-c', cfg];

  const created = await run(['keys', 'create', ...c, '--name', 'ci', '--scopes', 'workflows', '--role', 'operator', '--description', 'CI runner', '--json']);
  t.equal(created.code, 0, created.stderr);
  const { apiKey, key: secret } = JSON.parse(created.stdout);
  t.match(secret, /^kg_[0-9A-Za-z]{43}$/);
  t.match(apiKey, { name: 'ci', description: 'CI runner', scopes: ['workflows'], role: 'operator', rateLimit: 30, isActive: true, status: 'active', keyPrefix: secret.slice(0, 8), allowedSurfaces: ['rest_api', 'mcp', 'a2a'], attributionClass: 'service_account' });
  t.equal(apiKey.digest, undefined);

  const human = await run(['keys', 'create', ...c, '--name', 'bot', '--grant', 'ops:developer', '--expires-at', '2099-01-31']);
  t.equal(human.code, 0, human.stderr);
  t.match(human.stdout, /only time the full key is shown/);

  const list = await run(['keys', 'list', ...c, '--json']);
  t.equal(list.code, 0);
  t.notOk(list.stdout.includes(secret), 'list never prints a secret');
  t.notOk(list.stdout.includes('digest'), 'nor a digest');
  const keys = JSON.parse(list.stdout).apiKeys;
  t.same(keys.map((k: { name: string }) => k.name).sort(), ['bot', 'ci']);
  t.same(keys.find((k: { name: string }) => k.name === 'bot').workspaceAccess, { all: false, grants: [{ workspace: 'ops', role: 'developer' }] });
  t.equal(keys.find((k: { name: string }) => k.name === 'bot').expiresAt, '2099-01-31T00:00:00.000Z');

  const table = await run(['keys', 'list', ...c]);
  t.match(table.stdout, /NAME\s+KEY\s+STATUS/);
  t.match(table.stdout, new RegExp(`ci\\s+${secret.slice(0, 8)}…\\s+active\\s+workflows\\s+operator\\s+30/min\\s+-\\s+-\\s+0\\s+Never`), 'no quota, no group: "-"');

  const badLimit = await run(['keys', 'update', ...c, 'ci', '--rate-limit', '500']);
  t.equal(badLimit.code, 1);
  t.match(badLimit.stderr, /^keygate: --rate-limit must be a whole number of requests per minute from 1 to 100\n$/, 'the error names the flag');
  const several = await run(['keys', 'create', ...c, '--name', 'x', '--rate-limit', '0', '--surfaces', 'web', '--grant', 'all:viewer', '--attribution', 'user_owned']);
  t.equal(several.code, 1);
  t.same(
    several.stderr.trim().split('\n'),
    [
      'keygate: --grant (grant 1): "all" is reserved: use workspaceAccess {"all": true} for every workspace',
      'keygate: --surfaces: "web" is not one of rest_api, mcp, a2a',
      'keygate: --rate-limit must be a whole number of requests per minute from 1 to 100',
      'keygate: --owner-user-id is required for a user_owned key',
    ],
    'every problem at once, each at the flag that set it',
  );
  const badScope = await run(['keys', 'create', ...c, '--name', 'x', '--scopes', 'everything']);
  t.equal(badScope.code, 1);
  t.match(badScope.stderr, /--scopes: "everything" is not one of agents, workflows/);
  const dup = await run(['keys', 'create', ...c, '--name', 'ci']);
  t.equal(dup.code, 1);
  t.match(dup.stderr, /already exists/);

  const off = await run(['keys', 'deactivate', ...c, 'ci']);
  t.match(off.stdout, /"ci" is now inactive/);
  const show = await run(['keys', 'show', ...c, 'ci', '--json']);
  t.equal(JSON.parse(show.stdout).apiKey.status, 'inactive');
  t.notOk(show.stdout.includes(secret));

  const regen = await run(['keys', 'regenerate', ...c, apiKey.id, '--json']);
  const fresh = JSON.parse(regen.stdout).key;
  t.match(fresh, /^kg_/);
  t.not(fresh, secret);

  const del = await run(['keys', 'delete', ...c, 'ci']);
  t.equal(del.code, 0, del.stderr);
  const missing = await run(['keys', 'show', ...c, 'ci']);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /no API key with id or name "ci"/);
});

t.test('a key changed by the CLI is seen by a running gateway on its next request', async (t) => {
  const dir = t.testdir();
  const s = await startStack(dir);
  t.teardown(() => s.close());
  const cfg = join(dir, 'gateway.yaml');
  const env = { DAGU_URL: s.dagu.url, DAGEN_URL: s.dagen.url, DAGU_TOKEN: 'x' };
  const created = await run(['keys', 'create', '-c', cfg, '--name', 'cross', '--role', 'viewer', '--json'], env);
  t.equal(created.code, 0, created.stderr);
  const secret = JSON.parse(created.stdout).key;
  const call = () => request(`${s.url}/api/v1/dags`, { headers: { 'x-api-key': secret } }).then(async (r) => ({ status: r.statusCode, body: await r.body.text() }));
  t.equal((await call()).status, 200, 'key created by another process works');
  t.equal((await call()).status, 200, 'and is served from the cache');
  const off = await run(['keys', 'deactivate', '-c', cfg, 'cross'], env);
  t.equal(off.code, 0, off.stderr);
  const denied = await call();
  t.equal(denied.status, 403, 'deactivation by the CLI applies to the very next request');
  t.match(denied.body, /key_inactive/);
});

t.test('serve: SIGTERM drains, flushes usage and exits 0', async (t) => {
  const dir = t.testdir();
  const echo = await startEchoUpstream({ name: 'up' });
  t.teardown(() => echo.close());
  const cfg = join(dir, 'gw.yaml');
  writeFileSync(
    cfg,
    `listen: { host: 127.0.0.1, port: 0 }\nadmin: { port: 0 }\nstore: { keys: "sqlite:./k.db" }\nupstreams: [{ name: up, api_base_url: "${echo.url}" }]\nroutes: [{ path: "/**", upstream: up }]\n`,
  );
  const created = await run(['keys', 'create', '-c', cfg, '--name', 'svc', '--json']);
  const secret = JSON.parse(created.stdout).key;
  const gw = spawnKeygate(t, ['serve', '-c', cfg], { cwd: ROOT });
  const url = (await gw.waitFor(/"url":"(http:\/\/[^"]+)"/))?.[1];
  t.ok(url, `started: ${gw.output()}`);
  for (let i = 0; i < 5; i++) {
    const r = await request(`${url}/x`, { headers: { 'x-api-key': secret } });
    await r.body.dump();
    t.equal(r.statusCode, 200);
  }
  gw.child.kill('SIGTERM');
  t.equal(await gw.exited, 0, 'exit status 0');
  t.match(gw.output(), /shutting down/);
  t.notOk(gw.output().includes(secret), 'the secret is not in the log');
  const shown = JSON.parse((await run(['keys', 'show', '-c', cfg, 'svc', '--json'])).stdout).apiKey;
  t.equal(shown.requestCount, 5, 'usage flushed before exit');
});

t.test('demo: echo upstreams behind the example config answer through the gateway', async (t) => {
  const dir = t.testdir();
  const cfg = join(dir, 'demo.yaml');
  // the example includes config/routes/*.yaml relative to itself: point the copy at the originals
  const example = readFileSync(join(ROOT, 'gateway.example.yaml'), 'utf8').replaceAll('include: config/routes/', `include: ${join(ROOT, 'config/routes')}/`);
  writeFileSync(cfg, example.replace('port: ${KEYGATE_PORT:-8080}', 'port: 0').replace('port: ${KEYGATE_ADMIN_PORT:-8081}', 'port: 0'));
  const demo = spawnKeygate(t, ['demo', '-c', cfg], { cwd: ROOT });
  t.teardown(() => {
    demo.child.kill('SIGTERM');
    return demo.exited;
  });
  const url = (await demo.waitFor(/gateway on (http:\/\/\S+);/))?.[1];
  t.ok(url, `the demo started: ${demo.output()}`);
  const secret = JSON.parse((await run(['keys', 'create', '-c', cfg, '--name', 'demo', '--scopes', 'workflows', '--role', 'operator', '--json'])).stdout).key;
  const noKey = await request(`${url}/api/v1/dags`);
  t.equal(noKey.statusCode, 401);
  await noKey.body.dump();
  const ok = await request(`${url}/api/v1/dags`, { headers: { 'x-api-key': secret } });
  t.equal(ok.statusCode, 200);
  const echoed = (await ok.body.json()) as { upstream: string; path: string; headers: Record<string, string> };
  t.equal(echoed.upstream, 'dagu');
  t.equal(echoed.path, '/api/v1/dags');
  t.equal(echoed.headers['x-request-source'], 'external_api');
  const chat = await request(`${url}/api/v1/agent/chat`, { method: 'POST', headers: { 'x-api-key': secret } });
  t.equal(chat.statusCode, 403, 'workflows-only key refused on agent chat');
  await chat.body.dump();
});

t.test('keys regenerate --grace-seconds: the old key works through a running gateway until the grace ends; the CLI is audited', async (t) => {
  const dir = t.testdir();
  const token = 'cli-test-admin-token-0123456789';
  const s = await startStack(dir, { adminToken: token });
  t.teardown(() => s.close());
  const cfg = join(dir, 'gateway.yaml');
  const env = { DAGU_URL: s.dagu.url, DAGEN_URL: s.dagen.url, DAGU_TOKEN: 'x' };
  const call = (secret: string) => request(`${s.url}/api/v1/dags`, { headers: { 'x-api-key': secret } }).then(async (r) => (await r.body.dump(), r.statusCode));
  const created = await run(['keys', 'create', '-c', cfg, '--name', 'rotate', '--json'], env);
  t.equal(created.code, 0, created.stderr);
  const old: string = JSON.parse(created.stdout).key;
  t.equal(await call(old), 200);

  for (const bad of ['86401', '-1', 'soon']) {
    const r = await run(['keys', 'regenerate', '-c', cfg, 'rotate', `--grace-seconds=${bad}`], env);
    t.equal(r.code, 1, `--grace-seconds ${bad}: exit 1`);
    t.match(r.stderr, /--grace-seconds must be a whole number of seconds from 0 to 86400/);
  }
  t.equal(await call(old), 200, 'a refused regenerate changed nothing');

  const regen = await run(['keys', 'regenerate', '-c', cfg, 'rotate', '--grace-seconds', '2', '--json'], env);
  t.equal(regen.code, 0, regen.stderr);
  const { key: fresh, previousValidUntil } = JSON.parse(regen.stdout);
  const until = Date.parse(previousValidUntil);
  t.ok(until > Date.now() && until - Date.now() <= 2000, `previousValidUntil within 2 s (${previousValidUntil})`);
  t.equal(await call(old), 200, 'the old key works during the grace, in a gateway that had it cached');
  t.equal(await call(fresh), 200, 'the new one works at once');
  await sleep(until - Date.now() + 200);
  t.equal(await call(old), 401, 'the old key stops by itself');
  t.equal(await call(fresh), 200);

  const human = await run(['keys', 'regenerate', '-c', cfg, 'rotate', '--grace-seconds', '60'], env);
  t.match(human.stdout, /The old key keeps working until \d{4}-\d\d-\d\dT[\d:.]+Z, then stops by itself\./);
  const newest = /\n {2}(dg_\S+)\n/.exec(human.stdout)![1]!;
  const now = await run(['keys', 'regenerate', '-c', cfg, 'rotate'], env);
  t.match(now.stdout, /The old key stopped working\./);
  t.equal(await call(newest), 401, 'without --grace-seconds the replaced key stops at once');

  const res = await request(`${s.gateway.adminUrl}/api/audit`, { headers: { authorization: `Bearer ${token}` } });
  const text = await res.body.text();
  const records = JSON.parse(text).records as { action: string; actor: string; remote_address: string | null; details: Record<string, unknown> }[];
  t.same(records.map((r) => r.action), ['regenerate', 'regenerate', 'regenerate', 'create'], 'the CLI changes are in the audit trail, refused ones are not');
  for (const r of records) t.match(r, { actor: /^cli(:|$)/, remote_address: null });
  t.match(records[2]!.details, { graceSeconds: 2 });
  for (const secret of [old, fresh, newest]) t.notOk(text.includes(secret), 'no secret in the audit records');
});

t.test('keys usage: the history the gateway wrote, per day and per hour, as a table and as JSON', async (t) => {
  const dir = t.testdir();
  const s = await startStack(dir);
  t.teardown(() => s.close());
  const k = await s.key({ name: 'charted', role: 'viewer', rateLimit: 2 });
  const statuses: number[] = [];
  for (const path of ['/api/v1/dags', '/api/v1/dags', '/api/v1/dags', '/api/v1/admin']) {
    const r = await request(s.url + path, { headers: { 'x-api-key': k.secret } });
    await r.body.dump();
    statuses.push(r.statusCode);
  }
  t.same(statuses, [200, 200, 429, 403], 'two allowed, one over the limit, one not allowed (role admin)');
  await s.gateway.flushUsage();
  const env = { DAGU_URL: s.dagu.url, DAGEN_URL: s.dagen.url, DAGU_TOKEN: 'x' };
  const cfg = join(dir, 'gateway.yaml');
  const table = await run(['keys', 'usage', 'charted', '-c', cfg, '--days', '3'], env);
  t.equal(table.code, 0, table.stderr);
  const today = new Date().toISOString().slice(0, 10);
  t.match(table.stdout, /DAY \(UTC\)\s+ALLOWED\s+RATE LIMITED\s+FORBIDDEN/, 'a table with the split');
  t.match(table.stdout, new RegExp(`${today}\\s+2\\s+1\\s+1`), "today's row");
  t.equal(table.stdout.trim().split('\n').length, 2 + 3 + 1, 'heading, header, three days, total');
  const json = await run(['keys', 'usage', k.id, '-c', cfg, '--days', '1', '--bucket', 'hour', '--json'], env);
  t.equal(json.code, 0, json.stderr);
  const body = JSON.parse(json.stdout);
  t.match(body, { keyId: k.id, keyName: 'charted', bucket: 'hour', totals: { allowed: 2, rateLimited: 1, forbidden: 1 } }, 'JSON: the Dagu-shaped usage');
  t.equal(body.points.length, 24, '24 hours');
});

t.test('groups usage: what the keys of a group did while they belonged to it, as a table and as JSON', async (t) => {
  const dir = t.testdir();
  const s = await startStack(dir);
  t.teardown(() => s.close());
  await s.gateway.keys.createGroup({ name: 'ci-tenant' }, 'test');
  await s.gateway.keys.createGroup({ name: 'other' }, 'test');
  const a = await s.key({ name: 'runner', role: 'viewer', rateLimit: 2, group: 'ci-tenant' });
  const b = await s.key({ name: 'bot', role: 'viewer', rateLimit: 600, group: 'ci-tenant' });
  const statuses: number[] = [];
  for (const [secret, path] of [[a.secret, '/api/v1/dags'], [a.secret, '/api/v1/dags'], [a.secret, '/api/v1/dags'], [b.secret, '/api/v1/admin'], [b.secret, '/api/v1/dags']] as const) {
    const r = await request(s.url + path, { headers: { 'x-api-key': secret } });
    await r.body.dump();
    statuses.push(r.statusCode);
  }
  t.same(statuses, [200, 200, 429, 403, 200]);
  await s.gateway.flushUsage();
  // the bot moves on and the runner is deleted: the group keeps what they did
  await s.gateway.keys.update('bot', { group: 'other' }, 'test');
  await s.gateway.keys.delete('runner', 'test');
  const env = { DAGU_URL: s.dagu.url, DAGEN_URL: s.dagen.url, DAGU_TOKEN: 'x' };
  const cfg = join(dir, 'gateway.yaml');
  const table = await run(['groups', 'usage', 'ci-tenant', '-c', cfg, '--days', '2'], env);
  t.equal(table.code, 0, table.stderr);
  t.match(table.stdout, /^Requests with the keys of group "ci-tenant" per day/, 'says whose');
  t.match(table.stdout, new RegExp(`${new Date().toISOString().slice(0, 10)}\\s+3\\s+1\\s+1\\s+0`), "today's row: 3 allowed, 1 rate limited, 1 forbidden");
  t.equal(table.stdout.trim().split('\n').length, 2 + 2 + 1, 'heading, header, two days, total');
  const json = await run(['groups', 'usage', 'other', '-c', cfg, '--bucket', 'hour', '--days', '1', '--json'], env);
  t.equal(json.code, 0, json.stderr);
  t.match(JSON.parse(json.stdout), { groupName: 'other', bucket: 'hour', totals: { allowed: 0, rateLimited: 0, forbidden: 0, quotaExceeded: 0 } }, 'JSON: the Dagu-shaped group usage; nothing before the move counts for the new group');
  const unknown = await run(['groups', 'usage', 'ghost', '-c', cfg], env);
  t.equal(unknown.code, 1, 'an unknown group');
  t.match(unknown.stderr, /no group named "ghost"/);
});

t.test('every command has its own --help; flags are checked per command', async (t) => {
  const { COMMANDS } = await import('../src/cli-args.js');
  for (const spec of COMMANDS) {
    const r = await run([...spec.name.split(' '), '--help']);
    t.equal(r.code, 0, `${spec.name} --help`);
    t.match(r.stdout, new RegExp(`^keygate ${spec.name}: `), `${spec.name}: its own help`);
    for (const f of spec.flags) t.match(r.stdout, `--${f}`, `${spec.name} --help lists --${f}`);
    t.match(r.stdout, /Examples?:\n {2}keygate /, `${spec.name}: an example`);
    if (spec.name === 'keys usage') t.same((await run(['help', 'keys', 'usage'])).stdout, r.stdout, 'keygate help keys usage prints the same');
  }
  const cases: [string[], RegExp][] = [
    [['keys', 'create', '--name', 'x', '--rate-limt', '5'], /unknown flag --rate-limt for keygate keys create; did you mean --rate-limit\?/],
    [['keys', 'list', '--jsn'], /unknown flag --jsn for keygate keys list; did you mean --json\?/],
    [['keys', 'regenerate', 'ci', '--grace', '5'], /unknown flag --grace for keygate keys regenerate; did you mean --grace-seconds\?/],
    [['keys', 'create', '--name', 'x', '--grace-seconds', '5'], /--grace-seconds does not apply to keygate keys create \(it is a flag of keys regenerate\)/],
    [['keys', 'show', 'ci', '--rate-limit', '5'], /--rate-limit does not apply to keygate keys show \(it is a flag of keys create, keys update, groups create, groups update\)/],
    [['check', '--json'], /--json does not apply to keygate check/],
    [['keys', 'create', '--name'], /--name argument missing/],
    [['keys', 'show', 'a', 'b'], /unexpected argument "b" for keygate keys show \(it takes ID\|NAME\)/],
    [['keys', 'frob'], /unknown keys command "frob": create, list, export, import, show, update, quota, activate, deactivate, regenerate, usage, delete/],
  ];
  for (const [args, message] of cases) {
    const r = await run(args);
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, message, args.join(' '));
  }
  const hint = await run(['keys', 'create', '--nme', 'x']);
  t.match(hint.stderr, /Run "keygate keys create --help" for usage\./, "the hint points at the command's help");
});

t.test('one JSON shape for a key: the CLI prints what the Dagu-shaped admin API returns', async (t) => {
  const dir = t.testdir();
  const token = 'cli-json-admin-token-0123456789';
  const s = await startStack(dir, { adminToken: token });
  t.teardown(() => s.close());
  const env = { DAGU_URL: s.dagu.url, DAGEN_URL: s.dagen.url, DAGU_TOKEN: 'x' };
  const c = ['-c', join(dir, 'gateway.yaml')];
  const created = await run(['keys', 'create', ...c, '--name', 'shape', '--grant', 'ops:developer', '--surfaces', 'mcp', '--attribution', 'user_owned', '--owner-user-id', 'u-1', '--json'], env);
  t.equal(created.code, 0, created.stderr);
  const { apiKey } = JSON.parse(created.stdout);
  const api = async () => ((await (await request(`${s.gateway.adminUrl}/api/v1/api-keys/${apiKey.id}`, { headers: { authorization: `Bearer ${token}` } })).body.json()) as { apiKey: Record<string, unknown> }).apiKey;
  t.same(apiKey, await api(), 'keys create --json = GET /api/v1/api-keys/{id}');
  for (const cmd of [['show', 'shape'], ['update', 'shape', '--description', 'd'], ['deactivate', 'shape'], ['activate', 'shape']]) {
    const r = await run(['keys', ...cmd, ...c, '--json'], env);
    t.same(JSON.parse(r.stdout).apiKey, await api(), `keys ${cmd[0]} --json: the same shape`);
  }
  const list = JSON.parse((await run(['keys', 'list', ...c, '--json'], env)).stdout);
  t.same(list.apiKeys[0], await api(), 'keys list --json: the same shape');
  t.same(Object.keys(JSON.parse((await run(['keys', 'regenerate', ...c, 'shape', '--json'], env)).stdout).apiKey), Object.keys(await api()), 'keys regenerate --json too');
});

t.test('nearest flag: typos and prefixes, nothing for a far-off word', async (t) => {
  const { nearest } = await import('../src/cli-args.js');
  const flags = ['name', 'rate-limit', 'grace-seconds', 'json', 'expires-at', 'service-account-name'];
  t.equal(nearest('rate-limt', flags), 'rate-limit');
  t.equal(nearest('ratelimit', flags), 'rate-limit');
  t.equal(nearest('grace', flags), 'grace-seconds');
  t.equal(nearest('expires', flags), 'expires-at');
  t.equal(nearest('nmae', flags), 'name');
  t.equal(nearest('frobnicate', flags), undefined);
});
