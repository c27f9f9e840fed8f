// Keygate in front of the real Dagu 1.30.2 binary (npm package @dagu-org/dagu-linux-x64, an exact
// devDependency; `npm ci` installs it). Three Dagu processes on loopback, each with its own
// DAGU_HOME and ports: B (auth on) behind Keygate with config/routes/dagu-1.30.yaml, A (auth on)
// whose remote node is Keygate in front of B, and C (auth off) for the version check. Skipped, with
// the reason, only when the binary cannot run here.

import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { loadConfig } from '../src/config/load.js';
import { KeygateError } from '../src/errors.js';
import { Gateway } from '../src/server.js';
import { BIN, CHILD_ENV } from './binary.js';
import { freePort } from './ports.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MAP_130 = join(ROOT, 'config/routes/dagu-1.30.yaml');
const MAP_2X = join(ROOT, 'config/routes/dagu.yaml');
const PASSWORD = 'keygate-test-admin-password';

/** The binary, or why it cannot be used here. */
function findDagu(): { bin: string } | { skip: string } {
  let bin: string;
  try {
    bin = join(dirname(createRequire(import.meta.url).resolve('@dagu-org/dagu-linux-x64/package.json')), 'bin/dagu');
  } catch {
    return { skip: 'real-Dagu tests skipped: @dagu-org/dagu-linux-x64 is not installed (npm ci installs it; Linux x64 only)' };
  }
  try {
    // `dagu version` prints to stderr
    const r = spawnSync(bin, ['version'], { encoding: 'utf8', timeout: 30_000 });
    if (r.error) throw r.error;
    const v = `${r.stdout}${r.stderr}`.trim();
    if (!v.includes('1.30.2')) return { skip: `real-Dagu tests skipped: ${bin} says "${v}", not 1.30.2` };
  } catch (err) {
    return { skip: `real-Dagu tests skipped: ${bin} cannot run here (${(err as Error).message.split('\n')[0]})` };
  }
  return { bin };
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

async function call(url: string, opts: { method?: string; headers?: Record<string, string>; body?: unknown } = {}): Promise<Reply> {
  const headers = { ...opts.headers };
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const r = await request(url, { method: (opts.method ?? 'GET') as 'GET', headers, body: opts.body === undefined ? null : JSON.stringify(opts.body) });
  const body = Buffer.from(await r.body.arrayBuffer());
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    json = undefined;
  }
  return { status: r.statusCode, headers: r.headers, body, json };
}

interface Dagu {
  url: string;
  api: string;
  /** Dagu's own admin API key (auth on only) */
  key: string;
  output(): string;
  /** a request straight to this Dagu with its admin key */
  direct(path: string, opts?: { method?: string; body?: unknown; headers?: Record<string, string> }): Promise<Reply>;
}

async function startDagu(t: Test, bin: string, dir: string, name: string, opts: { auth: boolean; remoteNodes?: string }): Promise<Dagu> {
  const home = join(dir, name);
  mkdirSync(home, { recursive: true });
  const [port, coord] = [await freePort(), await freePort()];
  const config = join(home, 'config.yaml');
  writeFileSync(
    config,
    `host: 127.0.0.1
port: ${port}
skipExamples: true
${opts.auth ? `auth:\n  mode: builtin\n  builtin:\n    admin: { username: admin, password: "${PASSWORD}" }\n    token: { secret: "keygate-test-jwt-secret-${name}-0123456789", ttl: 1h }\n` : ''}${opts.remoteNodes ?? ''}`,
  );
  const child = spawn(bin, ['start-all', '-c', config, '--host', '127.0.0.1', '--port', String(port), '-P', String(coord)], {
    env: { ...process.env, DAGU_HOME: home },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = once(child, 'exit');
  t.teardown(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  });
  const url = `http://127.0.0.1:${port}`;
  const api = `${url}/api/v2`;
  const until = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`dagu ${name} exited: ${out}`);
    const ok = await call(`${api}/health`).then((r) => r.status === 200, () => false);
    if (ok) break;
    if (Date.now() > until) throw new Error(`dagu ${name} did not answer within 60 s: ${out}`);
    await new Promise((r) => setTimeout(r, 150));
  }
  let key = '';
  if (opts.auth) {
    const login = await call(`${api}/auth/login`, { method: 'POST', body: { username: 'admin', password: PASSWORD } });
    if (login.status !== 200) throw new Error(`login on ${name}: ${login.status} ${login.body}`);
    const created = await call(`${api}/api-keys`, { method: 'POST', headers: { authorization: `Bearer ${login.json.token}` }, body: { name: 'keygate', description: 'the gateway', role: 'admin' } });
    if (created.status !== 201) throw new Error(`api key on ${name}: ${created.status} ${created.body}`);
    key = created.json.key;
  }
  const direct = (path: string, o: { method?: string; body?: unknown; headers?: Record<string, string> } = {}) =>
    call(`${api}${path}`, { ...o, headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...o.headers } });
  return { url, api, key, output: () => out, direct };
}

function captureLogger(lines: string[]) {
  return pino({ level: 'info' }, new Writable({ write: (c: Buffer, _e, cb) => (lines.push(...c.toString().split('\n').filter(Boolean)), cb()) }));
}

/** Poll a run's details through `get` until its status is one of `want`. */
async function waitForRun(get: () => Promise<Reply>, want: string[], ms = 60_000): Promise<string> {
  const until = Date.now() + ms;
  let last = '';
  for (;;) {
    const r = await get();
    last = r.json?.dagRunDetails?.statusLabel ?? `${r.status}`;
    if (want.includes(last)) return last;
    if (Date.now() > until) throw new Error(`run still ${last} after ${ms} ms`);
    await new Promise((res) => setTimeout(res, 250));
  }
}

const found = findDagu();

t.test('Keygate in front of the real Dagu 1.30.2', { skip: 'skip' in found ? found.skip : false, timeout: 170_000 }, async (t) => {
  const bin = (found as { bin: string }).bin;
  const began = Date.now();
  const dir = t.testdir();
  const [b, c] = await Promise.all([startDagu(t, bin, dir, 'b', { auth: true }), startDagu(t, bin, dir, 'c', { auth: false })]);
  t.comment(`Dagu B and C up after ${Date.now() - began} ms`);

  // Keygate in front of B: the 1.30 map, CORS on, a second copy of the map on host bad.localhost
  // with a wrong credential, and B as a remote node for ?remoteNode=.
  const file = join(dir, 'gateway.yaml');
  writeFileSync(
    file,
    `listen: { host: 127.0.0.1, port: 0 }
admin: { host: 127.0.0.1, port: 0 }
store: { keys: "sqlite::memory:" }
cors: { allowed_origins: ["https://app.example"] }
upstreams:
  - { name: dagu, api_base_url: "${b.api}", auth_type: token, auth_token: "\${B_KEY}" }
  - { name: dagu-bad, api_base_url: "${b.api}", auth_type: token, auth_token: "not-the-dagu-key" }
remote_nodes:
  - { name: b-relay, api_base_url: "${b.api}", auth_type: token, auth_token: "\${B_KEY}" }
routes:
  - { include: ${MAP_130}, set: { host: bad.localhost, upstream: dagu-bad } }
  - include: ${MAP_130}
`,
  );
  const lines: string[] = [];
  const gw = await Gateway.start({ config: loadConfig(file, { B_KEY: b.key }), port: 0, adminPort: 0, logger: captureLogger(lines) });
  t.teardown(() => gw.close(1000));
  t.match(lines.join('\n'), /upstream \\"dagu\\" is Dagu 1\.30\.2 \(requires >=1\.30\.0 <2\.0\.0\)/, 'the version check at start found Dagu 1.30.2');
  const keys: Record<string, string> = {};
  for (const role of ['viewer', 'operator', 'developer', 'admin'] as const) keys[role] = (await gw.keys.create({ name: `ci-${role}`, role }, 'test')).secret;
  const kg = (role: string | undefined, path: string, o: { method?: string; body?: unknown; headers?: Record<string, string> } = {}) =>
    call(`${gw.url}/api/v2${path}`, { ...o, headers: { ...(role ? { 'x-api-key': keys[role]! } : {}), ...o.headers } });
  const runsOf = async (dag: string) => ((await b.direct(`/dags/${dag}/dag-runs`)).json?.dagRuns ?? []) as { dagRunId: string }[];

  await t.test('a CI script through Keygate: list, upload, start, poll, read the log, stop', async (t) => {
    const list = await kg('viewer', '/dags');
    t.equal(list.status, 200, 'viewer lists DAGs');
    t.ok(Array.isArray(list.json?.dags), 'Dagu’s answer');
    const spec = 'steps:\n  - name: hello\n    command: echo hello-from-keygate\n';
    for (const role of ['viewer', 'operator']) {
      t.match(await kg(role, '/dags', { method: 'POST', body: { name: 'ci-hello', spec } }), { status: 403, json: { code: 'forbidden' } }, `${role} cannot upload`);
    }
    t.equal((await b.direct('/dags/ci-hello/spec')).status === 200, false, 'Dagu has no such DAG');
    t.match(await kg('developer', '/dags', { method: 'POST', body: { name: 'ci-hello', spec } }), { status: 201, json: { name: 'ci-hello' } }, 'developer uploads (Dagu 1.30’s manager)');
    t.match((await b.direct('/dags/ci-hello/spec')).json, { spec: /hello-from-keygate/ }, 'Dagu has it');

    t.match(await kg('viewer', '/dags/ci-hello/start', { method: 'POST', body: {} }), { status: 403 }, 'viewer cannot start');
    t.equal((await runsOf('ci-hello')).length, 0, 'Dagu ran nothing');
    const started = await kg('operator', '/dags/ci-hello/start', { method: 'POST', body: {} });
    t.equal(started.status, 200, 'operator starts');
    const id: string = started.json.dagRunId;
    t.equal(await waitForRun(() => kg('viewer', `/dag-runs/ci-hello/${id}`), ['succeeded', 'failed']), 'succeeded', 'polled through Keygate until it finished');
    t.match(await kg('viewer', `/dag-runs/ci-hello/${id}/steps/hello/log?stream=stdout`), { status: 200, json: { content: 'hello-from-keygate' } }, 'step log');
    t.same((await runsOf('ci-hello')).map((r) => r.dagRunId), [id], 'Dagu ran it exactly once');

    const sleeper = 'steps:\n  - name: wait\n    command: sleep 120\n';
    t.equal((await kg('developer', '/dags', { method: 'POST', body: { name: 'ci-sleep', spec: sleeper } })).status, 201);
    const long = await kg('operator', '/dags/ci-sleep/start', { method: 'POST', body: {} });
    const longId: string = long.json.dagRunId;
    t.equal(await waitForRun(() => kg('viewer', `/dag-runs/ci-sleep/${longId}`), ['running']), 'running');
    t.match(await kg('viewer', `/dag-runs/ci-sleep/${longId}/stop`, { method: 'POST' }), { status: 403 }, 'viewer cannot stop');
    t.equal((await b.direct(`/dag-runs/ci-sleep/${longId}`)).json.dagRunDetails.statusLabel, 'running', 'still running on Dagu');
    t.equal((await kg('operator', `/dag-runs/ci-sleep/${longId}/stop`, { method: 'POST' })).status, 200, 'operator stops');
    const end = await waitForRun(() => b.direct(`/dag-runs/ci-sleep/${longId}`), ['aborted', 'cancelled', 'failed', 'succeeded']);
    t.equal(end, 'aborted', 'Dagu says it was stopped');

    t.equal((await kg('admin', '/api-keys')).status, 200, "admin reads Dagu's API keys");
    t.match(await kg('developer', '/api-keys'), { status: 403 }, 'developer does not');
  });

  await t.test('auth/me from the key, login not routed, a wrong upstream credential, CORS', async (t) => {
    t.match(await kg('viewer', '/auth/me'), { status: 200, json: { user: { username: 'ci-viewer', role: 'viewer', workspaceAccess: { all: true } } } }, "the caller, not the gateway's Dagu identity");
    t.match(await kg('developer', '/auth/me'), { status: 200, json: { user: { username: 'ci-developer', role: 'manager' } } }, "in Dagu 1.30's role names");
    t.match((await b.direct('/auth/me')).json, { user: { role: 'admin' } }, 'what Dagu would have said');
    const creds = { username: 'admin', password: PASSWORD };
    t.match(await kg(undefined, '/auth/login', { method: 'POST', body: creds }), { status: 404, json: { code: 'not_found', message: /not routed/ } }, 'login is not routed');
    t.equal((await b.direct('/auth/login', { method: 'POST', body: creds, headers: { authorization: '' } })).status, 200, 'Dagu itself would have handed out a JWT');

    const bad = await kg('viewer', '/dags', { headers: { host: 'bad.localhost' } });
    t.match(bad, { status: 502, json: { code: 'upstream_credential_rejected', message: /upstream "dagu-bad" refused the gateway's own credential \(401\)/ } });
    t.match(lines.filter((l) => l.includes('refused the gateway')).map((l) => JSON.parse(l)), [{ level: 40, upstream: 'dagu-bad' }], 'one warning naming the upstream');
    const metrics = (await call(`${gw.adminUrl}/metrics`)).body.toString();
    t.match(metrics, /keygate_upstream_credential_rejections_total\{upstream="dagu-bad",kind="upstream"\} 1/);

    const pre = await kg(undefined, '/dags', { method: 'OPTIONS', headers: { origin: 'https://app.example', 'access-control-request-method': 'GET', 'access-control-request-headers': 'x-api-key' } });
    t.equal(pre.status, 204, 'preflight answered by Keygate, no key');
    t.equal(pre.headers['access-control-allow-origin'], 'https://app.example');
    const direct = await b.direct('/dags?perPage=1', { headers: { origin: 'https://app.example' } });
    t.equal(direct.headers['access-control-allow-origin'], '*', 'Dagu alone lets any origin read');
    const actual = await kg('viewer', '/dags?perPage=1', { headers: { origin: 'https://app.example' } });
    t.equal(actual.status, 200);
    t.equal(actual.headers['access-control-allow-origin'], 'https://app.example', "Keygate's policy replaces Dagu's *");
    const evil = await kg('viewer', '/dags?perPage=1', { headers: { origin: 'https://evil.example' } });
    t.equal(evil.headers['access-control-allow-origin'], undefined, 'another origin gets no CORS header');
  });

  await t.test("Keygate's own ?remoteNode= relay to Dagu B: a 21 MB log and a gzip answer byte-identical", async (t) => {
    const spec = 'steps:\n  - name: big\n    command: sh -c "yes keygate-relays-twenty-one-megabytes-of-log-0123456789abcdefghij | head -c 22020096"\n';
    t.equal((await kg('developer', '/dags', { method: 'POST', body: { name: 'ci-big', spec } })).status, 201);
    const id: string = (await kg('operator', '/dags/ci-big/start?remoteNode=b-relay', { method: 'POST', body: {} })).json.dagRunId;
    t.equal(await waitForRun(() => kg('viewer', `/dag-runs/ci-big/${id}?remoteNode=b-relay`), ['succeeded', 'failed']), 'succeeded');
    const path = `/dag-runs/ci-big/${id}/steps/big/log?stream=stdout&limit=400000`;
    const plain = await kg('viewer', `${path}&remoteNode=b-relay`);
    const plainDirect = await b.direct(path);
    t.ok(plain.body.length > 21_000_000, `${plain.body.length} bytes`);
    t.ok(plain.body.equals(plainDirect.body), 'identical to what Dagu B serves');
    const gz = await kg('viewer', `${path}&remoteNode=b-relay`, { headers: { 'accept-encoding': 'gzip' } });
    const gzDirect = await b.direct(path, { headers: { 'accept-encoding': 'gzip' } });
    t.equal(gz.headers['content-encoding'], 'gzip');
    t.ok(gz.body.equals(gzDirect.body), `the gzip answer byte-identical (${gz.body.length} bytes)`);
  });

  await t.test('Dagu A → Keygate → Dagu B: A’s remote nodes are Keygate with Keygate keys', async (t) => {
    const nodes = `remoteNodes:
  - { name: b, apiBaseURL: "${gw.url}/api/v2", isAuthToken: true, authToken: "${keys.operator}" }
  - { name: b-viewer, apiBaseURL: "${gw.url}/api/v2", isAuthToken: true, authToken: "${keys.viewer}" }
`;
    const a = await startDagu(t, bin, dir, 'a', { auth: true, remoteNodes: nodes });
    const listed = await a.direct('/dags?remoteNode=b');
    t.equal(listed.status, 200);
    t.ok((listed.json.dags as { dag: { name: string } }[]).some((d) => d.dag.name === 'ci-hello'), "A lists B's DAGs");
    t.notOk(((await a.direct('/dags')).json.dags ?? []).some((d: { dag: { name: string } }) => d.dag.name === 'ci-hello'), 'A itself has no such DAG');
    const before = (await runsOf('ci-hello')).length;
    const started = await a.direct('/dags/ci-hello/start?remoteNode=b', { method: 'POST', body: {} });
    t.equal(started.status, 200, 'A starts on B through Keygate (operator key)');
    const id: string = started.json.dagRunId;
    t.equal(await waitForRun(() => b.direct(`/dag-runs/ci-hello/${id}`), ['succeeded', 'failed']), 'succeeded', 'it ran on B');
    const refused = await a.direct('/dags/ci-hello/start?remoteNode=b-viewer', { method: 'POST', body: {} });
    t.equal(refused.status, 403, "a viewer key on A's remote node cannot start on B (Keygate's 403, relayed by A)");
    t.equal((await runsOf('ci-hello')).length, before + 1, 'B ran only the operator’s');
    const secrets = Object.values(keys);
    for (const [name, log] of [['Dagu A', a.output()], ['Dagu B', b.output()], ['Keygate', lines.join('\n')]] as const) {
      t.notOk(secrets.some((s) => log.includes(s)), `no Keygate key in ${name}'s log (${log.length} bytes)`);
    }
  });

  await t.test('the version check: the 2.x map in front of an auth-less Dagu 1.30.2 is refused', async (t) => {
    // without auth, C serves a legacy API under /api/v1 where POST /api/v1/dags/validate (viewer in
    // the 2.x map) would act on the DAG named "validate"
    const legacy = await call(`${c.api.replace('/api/v2', '/api/v1')}/dags`);
    t.match(legacy.json, { DAGs: null }, 'the legacy /api/v1 is live on C');
    const cfg = join(dir, 'wrong-map.yaml');
    writeFileSync(
      cfg,
      `listen: { host: 127.0.0.1, port: 0 }
admin: { enabled: false }
store: { keys: "sqlite::memory:" }
upstreams:
  - { name: dagu, api_base_url: "${c.url}/api/v1" }
  - { name: dagu-mcp, api_base_url: "${c.url}/mcp" }
routes:
  - include: ${MAP_2X}
`,
    );
    const err = await Gateway.start({ config: loadConfig(cfg, {}), port: 0, logger: captureLogger([]) }).then(
      (g) => (void g.close(0), undefined),
      (e: unknown) => e,
    );
    t.ok(err instanceof KeygateError && err.code === 'upstream_version_mismatch', 'start refused');
    t.match((err as Error).message, /upstream "dagu" is Dagu 1\.30\.2, but its routes \(.*dagu\.yaml\) require Dagu >=2\.0\.0: use config\/routes\/dagu-1\.30\.yaml with api_base_url http:\/\/127\.0\.0\.1:\d+\/api\/v2/);
    const probe = await new Promise<{ code: number; out: string }>((resolve) => {
      const child = spawn(process.execPath, [BIN, 'check', '-c', cfg, '--probe'], { env: CHILD_ENV });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      child.on('exit', (code) => resolve({ code: code ?? -1, out }));
    });
    t.equal(probe.code, 1, 'keygate check --probe exits 1');
    t.match(probe.out, /version:\s+MISMATCH: upstream "dagu" is Dagu 1\.30\.2/, `names the version: ${probe.out}`);
    t.notOk(readFileSync(join(dir, 'c', 'config.yaml'), 'utf8').includes('auth'), 'C really runs without auth');
  });

  t.comment(`real-Dagu tests took ${((Date.now() - began) / 1000).toFixed(1)} s`);
});
