// Key groups across instances, with the real binary: two `keygate serve` processes sharing one
// SQLite file, then two sharing one redis-server (keys and rate limits), three keys of one group
// under load from both: exactly the group's budget reaches the recording upstream; a key's own
// limit still applies; refused requests consume nothing; a group changed through one instance (or
// the CLI) is applied by the other at once. Groups are made with the CLI and the admin API.

import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { startEchoUpstream, type EchoUpstream } from '../src/demo/echo-upstream.js';
import { runKeygate, spawnKeygate } from './binary.js';
import { skipWithoutRedis, startRedis } from './redis.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
if (!existsSync(join(ROOT, 'dist/cli.js'))) t.fail('dist/ is missing: run "npm run build"');

const TOKEN = 'group-admin-token-0123456789';

const run = runKeygate;

function workDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-groups-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function config(dir: string, keys: string, rateLimits: string, upstream: string): string {
  const file = join(dir, 'gw.yaml');
  writeFileSync(
    file,
    `listen: { host: 127.0.0.1, port: 0 }\nadmin: { port: 0, token: ${TOKEN} }\nstore: { keys: "${keys}", rate_limits: "${rateLimits}" }\n` +
      `upstreams: [{ name: up, api_base_url: "${upstream}" }]\nroutes: [{ path: "/**", upstream: up }]\n`,
  );
  return file;
}

interface Instance {
  url: string;
  admin: string;
}

/** Start one `keygate serve`; resolves with its public and admin URLs. */
async function serve(t: Test, cfg: string, dir: string): Promise<Instance> {
  const gw = spawnKeygate(t, ['serve', '-c', cfg], { cwd: dir });
  const started = await gw.waitFor(/"url":"(http:\/\/[^"]+)","admin_url":"(http:\/\/[^"]+)"/);
  const [url, admin] = [started?.[1], started?.[2]];
  if (!url || !admin) throw new Error(`gateway did not start: ${gw.output()}`);
  t.teardown(async () => {
    gw.child.kill('SIGTERM');
    await gw.exited;
  });
  return { url, admin };
}

async function call(url: string, secret: string, path = '/metered'): Promise<{ status: number; code?: string; message?: string }> {
  const r = await request(`${url}${path}`, { headers: { 'x-api-key': secret } });
  const text = await r.body.text();
  if (r.statusCode === 200) return { status: 200 };
  const body = JSON.parse(text) as { code: string; message: string };
  return { status: r.statusCode, code: body.code, message: body.message };
}

async function adminCall(base: string, method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, any> }> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await request(`${base}${path}`, {
    method: method as 'GET',
    headers: { authorization: `Bearer ${TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: r.statusCode, json: (r.statusCode === 204 ? undefined : await r.body.json()) as Record<string, any> }; // eslint-disable-line @typescript-eslint/no-explicit-any
}

const forwarded = (echo: EchoUpstream) => echo.received.filter((r) => r.url === '/metered').length;

/** 60 requests at once, spread over both instances and the three keys; exactly `budget` forwarded. */
async function exactlyBudget(t: Test, echo: EchoUpstream, urls: string[], secrets: string[], budget: number, group: string): Promise<void> {
  const before = forwarded(echo);
  const results = await Promise.all(Array.from({ length: 60 }, (_, i) => call(urls[i % urls.length]!, secrets[i % secrets.length]!)));
  const allowed = results.filter((r) => r.status === 200).length;
  t.equal(allowed, budget, `exactly ${budget} of 60 allowed across both instances and three keys`);
  t.equal(forwarded(echo) - before, budget, `the recording upstream saw exactly ${budget}`);
  const refused = results.filter((r) => r.status !== 200);
  t.ok(refused.every((r) => r.status === 429 && r.code === 'quota_exceeded' && r.message!.startsWith(`group "${group}"`)), "every other one: 429 quota_exceeded naming the group's budget");
}

t.test('two processes on one SQLite file: a group quota shared by three keys is exact; refusals consume nothing; a change is seen by both', async (t) => {
  const dir = workDir(t);
  const echo = await startEchoUpstream({ name: 'up' });
  t.teardown(() => echo.close());
  const cfg = config(dir, 'sqlite:./keys.db', 'memory', echo.url);
  const c = ['-c', cfg];

  const made = await run(['groups', 'create', ...c, '--name', 'tenant', '--quota-remaining', '10', '--json'], dir);
  t.equal(made.code, 0, made.stderr);
  t.match(JSON.parse(made.stdout), { group: { name: 'tenant', quota: { remaining: 10 }, keys: 0, quotaStatus: { remaining: 10 } } });
  const secrets: string[] = [];
  for (const name of ['ci', 'mcp', 'dev']) {
    const k = await run(['keys', 'create', ...c, '--name', name, '--group', 'tenant', '--rate-limit', '600', '--json'], dir);
    t.equal(k.code, 0, k.stderr);
    secrets.push((JSON.parse(k.stdout) as { key: string }).key);
  }
  const list = await run(['keys', 'list', ...c, '--group', 'tenant'], dir);
  t.match(list.stdout, /NAME.*QUOTA\s+GROUP\s+REQUESTS/, 'keys list: a GROUP column');
  t.equal(list.stdout.split('\n').filter((l) => /\s+tenant\s+/.test(l)).length, 3, 'keys list --group: the three keys');

  const [a, b] = [await serve(t, cfg, dir), await serve(t, cfg, dir)];
  await exactlyBudget(t, echo, [a.url, b.url], secrets, 10, 'tenant');
  t.match((await run(['groups', 'list', ...c], dir)).stdout, /tenant\s+-\s+0 one-time\s+3\s+api/, 'groups list: nothing left, three keys');

  // a key with its own quota, in the used-up group: its refusals take nothing from it
  const own = await run(['keys', 'create', ...c, '--name', 'own', '--group', 'tenant', '--rate-limit', '600', '--quota-remaining', '5', '--json'], dir);
  const ownSecret = (JSON.parse(own.stdout) as { key: string }).key;
  for (let i = 0; i < 3; i++) t.equal((await call(i % 2 ? b.url : a.url, ownSecret)).status, 429);
  t.equal(JSON.parse((await run(['keys', 'show', ...c, 'own', '--json'], dir)).stdout).apiKey.quotaRemaining, 5, "the group's refusals left the key's own quota whole");

  // a change made with the CLI is applied by both running instances at their next request
  const changed = await run(['groups', 'update', ...c, 'tenant', '--no-quota', '--rate-limit', '1'], dir);
  t.equal(changed.code, 0, changed.stderr);
  const onA = [await call(a.url, secrets[0]!), await call(a.url, secrets[1]!)];
  const onB = [await call(b.url, secrets[2]!), await call(b.url, ownSecret)];
  t.same(onA.map((r) => r.status), [200, 429], 'instance A: no quota any more, the new group rate limit of 1 (per instance with memory counters)');
  t.same(onB.map((r) => r.status), [200, 429], 'instance B too');
  t.match(onB[1]!.message, /^group "tenant": 1 requests per minute shared by its keys exceeded/);
  t.equal(JSON.parse((await run(['keys', 'show', ...c, 'own', '--json'], dir)).stdout).apiKey.quotaRemaining, 5, "own's request refused by the group's window took none of its credits");

  // through the admin API of A: the group's quota topped up; B spends it
  const topUp = await adminCall(a.admin, 'PATCH', '/api/v1/api-key-groups/tenant', { rateLimit: null, quota: { remaining: 2 } });
  t.equal(topUp.status, 200);
  t.same([(await call(b.url, secrets[0]!)).status, (await call(b.url, secrets[1]!)).status, (await call(b.url, secrets[2]!)).status], [200, 200, 429], 'B applies the quota set through A');
  const gone = await run(['groups', 'delete', ...c, 'tenant'], dir);
  t.equal(gone.code, 1);
  t.match(gone.stderr, /still has 4 keys/, 'a group with keys is not deleted');
});

t.test('two processes on one redis-server: the group rate limit and quota are exact across them; a change through one reaches the other', { skip: skipWithoutRedis }, async (t) => {
  const redis = await startRedis();
  t.teardown(() => redis.stop());
  const dir = workDir(t);
  const echo = await startEchoUpstream({ name: 'up' });
  t.teardown(() => echo.close());
  const cfg = config(dir, `${redis.url}/0`, `${redis.url}/1`, echo.url);
  const [a, b] = [await serve(t, cfg, dir), await serve(t, cfg, dir)];

  const created = await adminCall(a.admin, 'POST', '/api/groups', { name: 'tenant', rate_limit: 7 });
  t.equal(created.status, 201);
  const secrets: string[] = [];
  for (const name of ['ci', 'mcp', 'dev']) {
    const k = await adminCall(b.admin, 'POST', '/api/keys', { name, scopes: ['workflows'], rate_limit: name === 'dev' ? 2 : 600, group: 'tenant' });
    t.equal(k.json.group, 'tenant');
    secrets.push(k.json.key as string);
  }
  // one at a time, alternating instances and keys: the shared window of 7 binds across all of them
  const before = forwarded(echo);
  const answers = [];
  for (let i = 0; i < 20; i++) answers.push(await call(i % 2 ? b.url : a.url, secrets[i % 3]!));
  const allowed = answers.filter((r) => r.status === 200).length;
  t.equal(allowed, 7, 'exactly the group rate limit of 7 per minute across two instances and three keys');
  t.equal(forwarded(echo) - before, 7, 'the recording upstream saw exactly 7');
  const devAllowed = answers.filter((r, i) => i % 3 === 2 && r.status === 200).length;
  t.ok(devAllowed <= 2, `the key with its own limit of 2 got at most 2 (${devAllowed})`);
  t.ok(answers.some((r) => r.status === 429 && /^group "tenant": 7 requests per minute/.test(r.message!)), "refusals name the group's window");

  // a change through B's admin API reaches A: the rate limit lifted, a shared quota of 10 set
  const patched = await adminCall(b.admin, 'PATCH', '/api/groups/tenant', { rate_limit: null, quota: { remaining: 10 } });
  t.equal(patched.status, 200);
  // `dev` keeps its own limit of 2 per minute (already used): concurrent load on the other two keys
  await exactlyBudget(t, echo, [a.url, b.url], [secrets[0]!, secrets[1]!], 10, 'tenant');
  const status = await adminCall(a.admin, 'GET', '/api/v1/api-key-groups/tenant');
  t.match(status.json.group, { keys: 3, quotaStatus: { remaining: 0 }, rateLimit: null });
});

t.test('workers: 2: the group window is kept by the primary for both workers; a group refusal gives the key window back over IPC', async (t) => {
  const dir = workDir(t);
  const echo = await startEchoUpstream({ name: 'up' });
  t.teardown(() => echo.close());
  const cfg = join(dir, 'gw.yaml');
  writeFileSync(cfg, `workers: 2\nlisten: { host: 127.0.0.1, port: 0 }\nadmin: { port: 0 }\nstore: { keys: "sqlite:./k.db" }\nupstreams: [{ name: up, api_base_url: "${echo.url}" }]\nroutes: [{ path: "/**", upstream: up }]\n`);
  const c = ['-c', cfg];
  t.equal((await run(['groups', 'create', ...c, '--name', 'tenant', '--rate-limit', '2'], dir)).code, 0);
  const a = JSON.parse((await run(['keys', 'create', ...c, '--name', 'a', '--group', 'tenant', '--rate-limit', '3', '--json'], dir)).stdout).key as string;
  const b = JSON.parse((await run(['keys', 'create', ...c, '--name', 'b', '--group', 'tenant', '--rate-limit', '600', '--json'], dir)).stdout).key as string;
  const gw = spawnKeygate(t, ['serve', '-c', cfg], { cwd: dir });
  t.teardown(async () => {
    gw.child.kill('SIGTERM');
    await gw.exited;
  });
  t.ok(await gw.waitFor(/"msg":"keygate listening"/, 2), 'two workers listening');
  const url = gw.lines().find((l) => l.msg === 'keygate listening')!.url as string;
  // a new connection each time, so the primary hands them to both workers
  const ask = async (secret: string) => {
    const r = await request(`${url}/metered`, { headers: { 'x-api-key': secret, connection: 'close' } });
    await r.body.dump();
    return r.statusCode;
  };
  const first = [];
  for (let i = 0; i < 5; i++) first.push(await ask(a));
  t.same(first, [200, 200, 429, 429, 429], "the group's 2 per minute across both workers");
  t.equal(await ask(b), 429, 'and for its other key');
  t.equal((await run(['groups', 'update', ...c, 'tenant', '--no-rate-limit'], dir)).code, 0);
  const after = [await ask(a), await ask(a)];
  t.same(after, [200, 429], "a's own window of 3 counted only its 2 allowed requests: the 3 group refusals were given back");
  t.equal(await ask(b), 200, 'b is free once the group limit is lifted');
});
