// A million keys: nothing at start, reload or on a request lists every key; listings are pages.
// (How fast a million keys start and serve is measured by `npm run bench`, not here.)

import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { AdminAuth } from '../src/admin/auth.js';
import { gatewayInfo } from '../src/admin/page/info.js';
import type { KeysConfig } from '../src/config/types.js';
import { KeyService } from '../src/keys/service.js';
import { SqliteKeyStore } from '../src/keys/sqlite-store.js';
import { BIN, CHILD_ENV } from './binary.js';
import { storedKey } from './factories.js';
import { startStack } from './helpers.js';

const CONFIG: KeysConfig = { prefix: 'dg_', rate_limit: { default: 60, min: 1, max: 600 } };

/** A SQLite store whose list() fails the test: the code under test must page or count instead. */
function noListing(t: Test): SqliteKeyStore {
  const store = new SqliteKeyStore(':memory:');
  t.teardown(() => store.close());
  store.list = async () => {
    t.fail('every key was listed');
    return [];
  };
  return store;
}

t.test('declared-key sync, admin authentication without a token and /api/info never list every key', async (t) => {
  const store = noListing(t);
  for (let i = 0; i < 50; i++) await store.insert(storedKey({ id: `api-${i}`, name: `api-${i}`, digest: i.toString(16).padStart(64, '0'), managedBy: 'api' }));
  const declared: KeysConfig['declared'] = [{ name: 'yaml-a', secret: 'kg-declared-secret-0123456789' }, { name: 'yaml-b', secret: 'kg-declared-secret-abcdefghijk' }];
  const svc = new KeyService(store, { ...CONFIG, declared }, Date.now, { store });
  t.same(await svc.syncDeclared(), { created: 2, updated: 0, deleted: 0, groups: { created: 0, updated: 0, deleted: 0 } });
  svc.setConfig({ ...CONFIG, declared: [declared[0]!] });
  t.same(await svc.syncDeclared(), { created: 0, updated: 0, deleted: 1, groups: { created: 0, updated: 0, deleted: 0 } }, 'a reload removes the undeclared one');
  t.equal(await store.count(), 51, 'the API keys are untouched');

  const auth = new AdminAuth(undefined, svc);
  const refused = await auth.authenticate({ authorization: 'Bearer wrong-credential' });
  t.match(refused, { ok: false, status: 401, message: /no credential configured/ }, 'still says how to set one up');
  t.equal((await gatewayInfo(svc, undefined)).key_count, 51, '/api/info counts');
});

t.test('both admin list endpoints page: limit, cursor, default 100, bad input 400', async (t) => {
  const s = await startStack(t.testdir(), { adminToken: 'admin-token-for-paging' });
  t.teardown(() => s.close());
  for (let i = 0; i < 105; i++) await s.key({ name: `k${String(i).padStart(3, '0')}` });
  const admin = s.gateway.adminUrl!;
  const get = async (path: string) => {
    const r = await request(admin + path, { headers: { authorization: 'Bearer admin-token-for-paging' } });
    return { status: r.statusCode, headers: r.headers, json: (await r.body.json()) as any }; // eslint-disable-line @typescript-eslint/no-explicit-any
  };
  const first = await get('/api/v1/api-keys');
  t.equal(first.json.apiKeys.length, 100, 'Dagu shape: 100 by default');
  t.type(first.json.nextCursor, 'string');
  const rest = await get(`/api/v1/api-keys?cursor=${encodeURIComponent(first.json.nextCursor)}`);
  t.equal(rest.json.apiKeys.length, 5);
  t.notOk('nextCursor' in rest.json, 'the last page has no nextCursor');
  const names = [...first.json.apiKeys, ...rest.json.apiKeys].map((k: { name: string }) => k.name);
  t.equal(new Set(names).size, 105, 'every key once');

  const seen: string[] = [];
  let path: string | undefined = '/api/keys?limit=40';
  while (path !== undefined) {
    const page = await get(path);
    t.equal(page.status, 200);
    t.ok(page.json.length <= 40, 'Dagen shape: a bare list of at most limit');
    seen.push(...page.json.map((k: { name: string }) => k.name));
    const link = page.headers['link'] as string | undefined;
    path = link === undefined ? undefined : /^<([^>]+)>; rel="next"$/.exec(link)?.[1];
    if (link !== undefined) t.equal(new URL(path!, admin).searchParams.get('cursor'), page.headers['x-next-cursor']);
  }
  t.same(seen, names, 'the same keys in the same order');

  for (const bad of ['/api/keys?limit=0', '/api/keys?limit=1001', '/api/keys?limit=x', '/api/v1/api-keys?cursor=nonsense']) {
    const r = await get(bad);
    t.equal(r.status, 400, bad);
    t.equal(r.json.code, 'bad_request');
  }
});

t.test('both admin list endpoints filter on the server (q, status) across pages; /api/keys/counts counts every key', async (t) => {
  const s = await startStack(t.testdir(), { adminToken: 'admin-token-for-paging' });
  t.teardown(() => s.close());
  for (let i = 0; i < 130; i++) await s.key({ name: i % 10 === 0 ? `Nightly-ETL-${i}` : `svc-${i}` });
  for (const i of [10, 20, 33]) await s.gateway.keys.setActive(i % 10 === 0 ? `Nightly-ETL-${i}` : `svc-${i}`, false, 'test');
  const admin = s.gateway.adminUrl!;
  const get = async (path: string) => {
    const r = await request(admin + path, { headers: { authorization: 'Bearer admin-token-for-paging' } });
    return { status: r.statusCode, headers: r.headers, json: (await r.body.json()) as any }; // eslint-disable-line @typescript-eslint/no-explicit-any
  };
  // Dagu shape, 5 a page: every match, across pages
  const names: string[] = [];
  let cursor = '';
  do {
    const page = await get(`/api/v1/api-keys?q=etl&limit=5${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    t.equal(page.status, 200);
    names.push(...page.json.apiKeys.map((k: { name: string }) => k.name));
    cursor = page.json.nextCursor ?? '';
  } while (cursor);
  t.same(names, Array.from({ length: 13 }, (_, i) => `Nightly-ETL-${i * 10}`), 'q: name contains, any case, every page');
  const dagen = await get('/api/keys?q=ETL&status=inactive');
  t.same(dagen.json.map((k: { name: string }) => k.name), ['Nightly-ETL-10', 'Nightly-ETL-20'], 'Dagen shape: q and status together');
  const inactive = await get('/api/v1/api-keys?status=inactive');
  t.same(inactive.json.apiKeys.map((k: { name: string }) => k.name), ['Nightly-ETL-10', 'Nightly-ETL-20', 'svc-33']);
  const prefix = (await s.gateway.keys.get('svc-77')).prefix;
  t.same((await get(`/api/v1/api-keys?q=${encodeURIComponent(prefix)}`)).json.apiKeys.map((k: { name: string }) => k.name), ['svc-77'], 'q: a key prefix');
  t.same((await get('/api/keys/counts')).json, { total: 130, active: 127, inactive: 3, expired: 0 }, 'counts of every key');
  t.same((await get('/api/keys/counts?q=etl')).json, { total: 13, active: 11, inactive: 2, expired: 0 }, 'counts of the matches');
  for (const [bad, field] of [
    [`/api/v1/api-keys?q=${'x'.repeat(101)}`, 'q'],
    ['/api/keys?status=gone', 'status'],
    ['/api/keys/counts?q=a&q=b', 'q'],
    ['/api/v1/api-keys?status=Active', 'status'],
  ] as const) {
    const r = await get(bad);
    t.equal(r.status, 400, bad);
    t.match(r.json, { code: 'bad_request', field }, `${bad}: names ${field}`);
  }
});

t.test('keys list pages (--limit, --cursor, --all) and writes JSON a key at a time', async (t) => {
  const dir = t.testdir();
  const cfg = join(dir, 'gw.yaml');
  writeFileSync(cfg, 'store: { keys: "sqlite:./k.db" }\n');
  const run = (args: string[]) =>
    new Promise<{ code: number; stdout: string }>((resolve) =>
      execFile(process.execPath, [BIN, ...args, '-c', cfg], { env: CHILD_ENV, timeout: 60_000 }, (err, stdout) => resolve({ code: err ? 1 : 0, stdout })),
    );
  for (const name of ['a', 'b', 'c']) t.equal((await run(['keys', 'create', '--name', name])).code, 0);
  const first = JSON.parse((await run(['keys', 'list', '--limit', '2', '--json'])).stdout);
  t.same(first.apiKeys.map((k: { name: string }) => k.name), ['a', 'b']);
  t.type(first.nextCursor, 'string');
  const rest = JSON.parse((await run(['keys', 'list', '--limit', '2', '--cursor', first.nextCursor, '--json'])).stdout);
  t.same(rest.apiKeys.map((k: { name: string }) => k.name), ['c']);
  t.notOk('nextCursor' in rest);
  const all = await run(['keys', 'list', '--limit', '1', '--all', '--json']);
  t.same(JSON.parse(all.stdout).apiKeys.map((k: { name: string }) => k.name), ['a', 'b', 'c'], '--all follows every page');
  t.equal(all.stdout.trim().split('\n').length, 5, 'one line per key between the brackets');
  const table = await run(['keys', 'list', '--limit', '2']);
  t.match(table.stdout, /More keys follow: keygate keys list --cursor \S+/);
  t.equal((await run(['keys', 'create', '--name', 'Nightly ETL'])).code, 0);
  t.equal((await run(['keys', 'create', '--name', 'etl-2'])).code, 0);
  const found = JSON.parse((await run(['keys', 'list', '--search', 'ETL', '--json'])).stdout);
  t.same(found.apiKeys.map((k: { name: string }) => k.name), ['Nightly ETL', 'etl-2'], '--search: the same filter as the admin API');
  const paged = await run(['keys', 'list', '--search', 'Nightly ETL', '--status', 'active', '--limit', '1']);
  t.notMatch(paged.stdout, /More keys follow/, 'one match, no next page');
  const more = await run(['keys', 'list', '--search', 'e', '--limit', '1']);
  t.match(more.stdout, /More keys follow: keygate keys list --search e --cursor \S+/, 'the next command keeps the filter');
  t.match((await run(['keys', 'list', '--search', 'zzz'])).stdout, /No key matches --search zzz\./);
  const bad = await run(['keys', 'list', '--status', 'gone']);
  t.equal(bad.code, 1);
});
