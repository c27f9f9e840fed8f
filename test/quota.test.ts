// Quotas (usage credits): the refill arithmetic with a fake clock, the SQLite counter against the
// reference rule, the key service's validation, and the gateway's answers over HTTP.

import t from 'tap';
import { request } from 'undici';
import WebSocket from 'ws';
import type { KeysConfig } from '../src/config/types.js';
import { ValidationError } from '../src/errors.js';
import { consume, nextRefillMs, periodIndex, periodStartMs, refill, statusOf, tickOf, type PeriodicQuota, type QuotaState, type QuotaTick } from '../src/keys/quota.js';
import { KeyService } from '../src/keys/service.js';
import { SqliteKeyStore } from '../src/keys/sqlite-store.js';
import { QuotaGate } from '../src/limits/quota.js';
import { RATE_LIMITED } from '../src/jsonrpc/policy.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig } from '../src/config/load.js';
import { ROUTES, adminClient, startStack } from './helpers.js';
import { matchesReference } from './quota-reference.js';

const ms = (iso: string) => Date.parse(iso);
const iso = (n: number | null) => (n === null ? null : new Date(n).toISOString());
const q = (period: PeriodicQuota['period'], start: string | null = null, refillMode: PeriodicQuota['refill'] = 'reset', limit = 100): PeriodicQuota => ({ limit, period, refill: refillMode, start });

t.test('periods on UTC calendar boundaries: day 00:00, week Monday 00:00, month the 1st', async (t) => {
  const day = q('day');
  t.equal(iso(nextRefillMs(day, ms('2031-03-10T12:34:56Z'))), '2031-03-11T00:00:00.000Z');
  t.equal(periodIndex(day, ms('2031-03-10T23:59:59.999Z')) + 1, periodIndex(day, ms('2031-03-11T00:00:00Z')), 'a new day at 00:00 UTC');
  t.equal(periodIndex(day, ms('2031-03-11T00:00:00Z')), periodIndex(day, ms('2031-03-11T23:59:59.999Z')));

  const week = q('week');
  // 2024-01-01 was a Monday
  t.equal(iso(nextRefillMs(week, ms('2024-01-03T10:00:00Z'))), '2024-01-08T00:00:00.000Z', 'Wednesday → next Monday');
  t.equal(iso(nextRefillMs(week, ms('2024-01-07T23:59:59.999Z'))), '2024-01-08T00:00:00.000Z', 'Sunday night → Monday');
  t.equal(iso(nextRefillMs(week, ms('2024-01-08T00:00:00Z'))), '2024-01-15T00:00:00.000Z', 'on Monday 00:00 the week has begun');
  t.equal(periodIndex(week, ms('2023-12-31T23:59:59Z')) + 1, periodIndex(week, ms('2024-01-01T00:00:00Z')));
  t.equal(iso(periodStartMs(week, periodIndex(week, ms('1969-12-31T12:00:00Z')))), '1969-12-29T00:00:00.000Z', 'before the epoch too');

  const month = q('month');
  t.equal(iso(nextRefillMs(month, ms('2024-02-15T08:00:00Z'))), '2024-03-01T00:00:00.000Z');
  t.equal(iso(nextRefillMs(month, ms('2024-12-31T23:59:59Z'))), '2025-01-01T00:00:00.000Z', 'December → January of the next year');
  t.equal(iso(nextRefillMs(month, ms('2024-03-01T00:00:00Z'))), '2024-04-01T00:00:00.000Z');
  t.equal(periodIndex(month, ms('2025-01-01T00:00:00Z')) - periodIndex(month, ms('2024-01-31T00:00:00Z')), 12);
});

t.test('periods anchored at start: its time of day, weekday, day of month (clamped at month ends)', async (t) => {
  const daily = q('day', '2024-01-01T06:00:00.000Z');
  t.equal(iso(nextRefillMs(daily, ms('2024-01-05T05:00:00Z'))), '2024-01-05T06:00:00.000Z');
  t.equal(iso(nextRefillMs(daily, ms('2024-01-05T06:00:00Z'))), '2024-01-06T06:00:00.000Z');
  t.equal(iso(nextRefillMs(daily, ms('2023-12-20T07:00:00Z'))), '2023-12-21T06:00:00.000Z', 'before the start, the same boundaries');

  const weekly = q('week', '2024-01-04T00:00:00.000Z'); // a Thursday
  t.equal(iso(nextRefillMs(weekly, ms('2024-01-08T00:00:00Z'))), '2024-01-11T00:00:00.000Z', 'Thursday to Thursday');

  const monthly = q('month', '2024-01-31T09:30:00.000Z');
  t.equal(iso(nextRefillMs(monthly, ms('2024-02-10T00:00:00Z'))), '2024-02-29T09:30:00.000Z', 'the 31st in a leap February is the 29th');
  t.equal(iso(nextRefillMs(monthly, ms('2024-02-29T09:29:59Z'))), '2024-02-29T09:30:00.000Z');
  t.equal(iso(nextRefillMs(monthly, ms('2024-02-29T09:30:00Z'))), '2024-03-31T09:30:00.000Z', 'and back to the 31st in March (not the 29th)');
  t.equal(iso(nextRefillMs(monthly, ms('2024-04-02T00:00:00Z'))), '2024-04-30T09:30:00.000Z', 'April has 30 days');
  t.equal(iso(nextRefillMs(q('month', '2023-01-31T00:00:00.000Z'), ms('2023-02-01T00:00:00Z'))), '2023-02-28T00:00:00.000Z', 'non-leap February');
  t.equal(iso(nextRefillMs(q('month', '2024-03-15T00:00:00.000Z'), ms('2023-11-20T00:00:00Z'))), '2023-12-15T00:00:00.000Z', 'before the start');
  // each boundary is a period of its own: consecutive indexes, no gaps, no repeats over two years
  let last = periodIndex(monthly, ms('2024-01-31T09:30:00Z'));
  for (let i = 1; i <= 24; i++) {
    const b = periodStartMs(monthly, last + 1);
    t.equal(periodIndex(monthly, b - 1), last, `just before boundary ${i}`);
    t.equal(periodIndex(monthly, b), last + 1, `at boundary ${i} (${iso(b)})`);
    last++;
  }
});

t.test('the refill rule: reset, add (per period elapsed), a clock set back, a counter never used', async (t) => {
  const state: QuotaState = { balance: 3, period: 10 };
  const tick = (period: number, add: boolean): QuotaTick => ({ period, limit: 100, add });
  t.same(refill(undefined, tick(13, false)), { balance: 100, period: 13 }, 'never used: full');
  t.same(refill(state, tick(10, false)), state, 'the same period: unchanged');
  t.same(refill(state, tick(13, false)), { balance: 100, period: 13 }, 'reset: back to the limit');
  t.same(refill(state, tick(13, true)), { balance: 303, period: 13 }, 'add: the limit per period elapsed');
  t.same(refill(state, tick(9, true)), state, 'an earlier period (clock set back): unchanged');
  t.same(consume({ balance: 0, period: 10 }, tick(10, true)), { next: { balance: 0, period: 10 }, count: { allowed: false, remaining: 0 } }, 'refused: nothing taken');
  t.same(consume({ balance: 0, period: 10 }, tick(11, true)), { next: { balance: 99, period: 11 }, count: { allowed: true, remaining: 99 } });
  t.same(tickOf({ remaining: 7 }, Date.now()), { period: 0, limit: 7, add: false }, 'a one-time quota never leaves period 0');
});

t.test('the SQLite counter applies the same rule as the reference, atomically', async (t) => {
  const store = new SqliteKeyStore(':memory:');
  t.teardown(() => store.close());
  await matchesReference(t, store);
});

const CONFIG: KeysConfig = { prefix: 'dg_', rate_limit: { default: 60, min: 1, max: 600 } };

async function fieldOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ValidationError) return err.field;
    throw err;
  }
  throw new Error('no ValidationError');
}

t.test('the key service: validation names the field, a fake clock refills, a changed quota starts afresh, top-ups are audited', async (t) => {
  const clock = { now: ms('2031-05-30T22:00:00Z') };
  const store = new SqliteKeyStore(':memory:');
  t.teardown(() => store.close());
  const svc = new KeyService(store, CONFIG, () => clock.now, { store });
  const bad: [unknown, string][] = [
    [{ limit: 0, period: 'day' }, 'quota.limit'],
    [{ limit: 5 }, 'quota.period'],
    [{ period: 'day' }, 'quota.limit'],
    [{ limit: 5, period: 'year' }, 'quota.period'],
    [{ limit: 5, period: 'day', refill: 'double' }, 'quota.refill'],
    [{ limit: 5, period: 'day', start: '2031-02-30' }, 'quota.start'],
    [{ limit: 5, period: 'day', start: '2031-02-03T10:00:00' }, 'quota.start'],
    [{ limit: '5x', period: 'day' }, 'quota.limit'],
    [{ remaining: -1 }, 'quota.remaining'],
    [{ remaining: 5, period: 'day' }, 'quota.period'],
    [{ remaining: 5, limit: 5 }, 'quota.limit'],
    [{ credits: 5 }, 'quota.credits'],
    [[5], 'quota'],
    [5, 'quota'],
  ];
  for (const [quota, field] of bad) t.equal(await fieldOf(svc.create({ name: `bad-${field}`, quota }, 'test')), field, `${JSON.stringify(quota)} → ${field}`);
  try {
    await svc.create({ name: 'many', quota: { limit: 0, period: 'year', refill: 'x', start: 'soon' } }, 'test');
    t.fail('refused');
  } catch (err) {
    t.same((err as ValidationError).errors.map((e) => e.field), ['quota.limit', 'quota.period', 'quota.refill', 'quota.start'], "every problem of the quota at once, like the key's other fields");
  }
  const { key } = await svc.create({ name: 'daily', quota: { limit: '2', period: 'day', start: '2031-01-01' } }, 'test');
  t.same(key.quota, { limit: 2, period: 'day', refill: 'reset', start: '2031-01-01T00:00:00.000Z' }, 'strings of digits (CLI) accepted, refill defaults to reset');
  t.equal(await fieldOf(svc.update(key.id, { quota: { limit: 2, period: 'fortnight' } }, 'test')), 'quota.period', 'update: the same rules');

  const gate = new QuotaGate(store, () => clock.now);
  const take = () => gate.check(key.id, key.quota!);
  const first = take();
  t.notOk(first instanceof Promise, 'SQLite: no promise on the request path');
  t.match(first, { allowed: true, remaining: 1, resetSeconds: 7200 });
  t.match(take(), { allowed: true, remaining: 0 });
  t.match(take(), { allowed: false, remaining: 0, resetSeconds: 7200 });
  t.same(await svc.quotaStatus(key), { remaining: 0, nextRefillAt: '2031-05-31T00:00:00.000Z' });
  clock.now = ms('2031-05-31T00:00:00Z');
  t.same(await svc.quotaStatus(key), { remaining: 2, nextRefillAt: '2031-06-01T00:00:00.000Z' }, 'refilled on read at the boundary, no timer');
  t.match(take(), { allowed: true, remaining: 1, resetSeconds: 86400 });

  const { key: carry } = await svc.create({ name: 'carry', quota: { limit: 10, period: 'week', refill: 'add' } }, 'test');
  const g = () => gate.check(carry.id, carry.quota!) as { remaining: number };
  t.equal(g().remaining, 9);
  clock.now += 3 * 7 * 86_400_000;
  t.equal(g().remaining, 38, 'add: 9 + 3 weeks × 10 - 1');

  const topped = await svc.setQuotaRemaining('carry', { remaining: 500 }, { id: 'admin-token', remoteAddress: '10.0.0.1' });
  t.equal(topped.status.remaining, 500);
  t.equal(g().remaining, 499, 'the top-up is what is left now');
  const audit = await svc.auditTrail({ limit: 1 });
  t.match(audit[0], { action: 'quota', key_name: 'carry', actor: 'admin-token', details: { remaining: { from: 38, to: 500 } } });
  t.equal(await fieldOf(svc.setQuotaRemaining('carry', { remaining: 1, reset: true }, 'x')), 'remaining', 'remaining or reset, not both');
  t.equal(await fieldOf(svc.setQuotaRemaining('carry', { remaining: 'lots' }, 'x')), 'remaining');
  await svc.setQuotaRemaining('carry', { reset: true }, 'x');
  t.equal(g().remaining, 9, 'reset: full again');

  await svc.update('carry', { quota: { limit: 10, period: 'week', refill: 'add' } }, 'x');
  t.equal(g().remaining, 8, 'an update that does not change the quota keeps the counter');
  const changed = await svc.update('carry', { quota: { remaining: 3 } }, 'x');
  t.same(changed.quota, { remaining: 3 });
  t.same(await svc.quotaStatus(changed), { remaining: 3, nextRefillAt: null }, 'a changed quota starts afresh; one-time: no refill');
  const none = await svc.update('carry', { quota: null }, 'x');
  t.equal(none.quota, null);
  t.equal(await svc.quotaStatus(none), null);
  t.equal(await fieldOf(svc.setQuotaRemaining('carry', { remaining: 1 }, 'x')), 'quota', 'no quota to top up');
  await svc.delete('daily', 'x');
  t.equal(await store.quotaState(key.id), undefined, 'a deleted key takes its counter along');
  t.same(statusOf({ remaining: 4 }, { balance: 1, period: 0 }, clock.now), { remaining: 1, nextRefillAt: null });
});

t.test('over HTTP: quota headers, 429 quota_exceeded with Retry-After, nothing forwarded or consumed when refused', async (t) => {
  const routes = ROUTES.replace('  - { path: /mcp, upstream: dagu, surface: mcp }', '  - { path: /mcp, methods: [POST], upstream: dagu, surface: mcp, jsonrpc: { tools: { dagu_read: viewer } } }');
  const s = await startStack(t.testdir(), { routes });
  t.teardown(() => s.close());
  const get = async (secret: string) => {
    const r = await request(`${s.url}/api/v1/dags`, { headers: { 'x-api-key': secret } });
    return { status: r.statusCode, headers: r.headers, body: await r.body.text() };
  };

  // one-time credits: 3, then 429 without Retry-After (no refill comes)
  const trial = await s.key({ name: 'trial', quota: { remaining: 3 }, rateLimit: 600 });
  const before = s.dagu.received.length;
  const seen = [];
  for (let i = 0; i < 5; i++) seen.push(await get(trial.secret));
  t.same(seen.map((r) => r.status), [200, 200, 200, 429, 429]);
  t.equal(s.dagu.received.length - before, 3, 'only the 3 credited requests reached the upstream');
  t.same(seen.map((r) => r.headers['x-quota-remaining']), ['2', '1', '0', '0', '0']);
  for (const r of seen) {
    t.equal(r.headers['x-quota-period'], 'none');
    t.equal(r.headers['x-quota-limit'], undefined);
    t.equal(r.headers['x-quota-reset'], undefined);
    t.equal(r.headers['x-ratelimit-limit'], '600', 'the per-minute headers stay as they are');
    t.equal(r.headers['ratelimit-policy'], '"per-key";q=600;w=60');
  }
  const refused = seen[3]!;
  t.match(JSON.parse(refused.body), { code: 'quota_exceeded', message: /do not refill \(no Retry-After\)/ });
  t.equal(refused.headers['retry-after'], undefined, 'no Retry-After: no refill will come');

  // a monthly quota: Retry-After is the time to the 1st, 00:00 UTC
  const monthly = await s.key({ name: 'monthly', quota: { limit: 1, period: 'month' }, rateLimit: 600 });
  const ok = await get(monthly.secret);
  t.equal(ok.status, 200);
  t.same([ok.headers['x-quota-limit'], ok.headers['x-quota-period'], ok.headers['x-quota-remaining']], ['1', 'month', '0']);
  const over = await get(monthly.secret);
  const now = Date.now();
  t.equal(over.status, 429);
  const d = new Date(now);
  const expected = Math.ceil((Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) - now) / 1000);
  const retry = Number(over.headers['retry-after']);
  t.ok(Math.abs(retry - expected) <= 5, `Retry-After ${retry} s ≈ ${expected} s to the 1st`);
  t.equal(over.headers['x-quota-reset'], String(retry));
  t.match(JSON.parse(over.body), { code: 'quota_exceeded', message: /quota of 1 requests per month exhausted; it refills in \d+ s/ });

  // a request refused by the per-minute limit takes no credit
  const both = await s.key({ name: 'both', quota: { remaining: 10 }, rateLimit: 2 });
  const statuses = [];
  for (let i = 0; i < 4; i++) statuses.push((await get(both.secret)).status);
  t.same(statuses, [200, 200, 429, 429]);
  t.same(await s.gateway.keys.quotaStatus(await s.gateway.keys.get(both.id)), { remaining: 8, nextRefillAt: null }, 'only the 2 forwarded requests took credits');

  // JSON-RPC routes answer in JSON-RPC, with the call's id
  const mcp = await s.key({ name: 'mcp', quota: { remaining: 0 }, rateLimit: 600 });
  const rpc = await request(`${s.url}/mcp`, {
    method: 'POST',
    headers: { 'x-api-key': mcp.secret, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 42, method: 'tools/list' }),
  });
  const rpcBody = (await rpc.body.json()) as { id: number; error: { code: number; message: string } };
  t.equal(rpc.statusCode, 429);
  t.equal(rpcBody.id, 42);
  t.match(rpcBody.error, { code: RATE_LIMITED, message: /quota exhausted/ });
  t.equal(rpc.headers['x-quota-remaining'], '0');

  const lines = s.logs.filter((l) => l.includes('"decision":"quota_exceeded"'));
  t.ok(lines.length >= 4, `access log decision quota_exceeded (${lines.length} lines)`);
  await s.gateway.flushUsage();
  const history = await s.gateway.keys.usage('trial', {});
  t.same(history.totals, { allowed: 3, limited: 0, forbidden: 0, quota: 2 }, 'usage history: quota refusals in their own column');
  const bothHistory = await s.gateway.keys.usage('both', {});
  t.same(bothHistory.totals, { allowed: 2, limited: 2, forbidden: 0, quota: 0 }, 'rate-limit refusals in theirs');
  const metrics = await request(`${s.gateway.adminUrl}/metrics`);
  const text = await metrics.body.text();
  t.match(text, /keygate_requests_total\{[^}]*decision="quota_exceeded"[^}]*\} \d+/, 'metric label');
});

t.test('admin APIs: quota in each shape, its state in key details, top-up and reset (audited), errors name the field', async (t) => {
  const token = 'admin-token-for-quota-tests-0123456789';
  const s = await startStack(t.testdir(), { adminToken: token });
  t.teardown(() => s.close());
  const admin = adminClient(s, token);
  const created = await admin('POST', '/api/keys', { name: 'tenant', scopes: ['workflows'], quota: { limit: 5, period: 'month', refill: 'add', start: '2031-01-15' } });
  t.equal(created.status, 201);
  t.same(created.json.quota, { limit: 5, period: 'month', refill: 'add', start: '2031-01-15T00:00:00.000Z' }, 'Dagen: quota');
  t.equal(created.json.quota_remaining, 5, 'Dagen: quota_remaining');
  t.match(created.json.quota_next_refill_at, /^\d{4}-\d{2}-15T00:00:00\.000Z$/, 'Dagen: quota_next_refill_at on the 15th');
  for (let i = 0; i < 2; i++) {
    const r = await request(`${s.url}/api/v1/t/x`, { headers: { 'x-api-key': created.json.key } });
    await r.body.dump();
    t.equal(r.statusCode, 200);
  }
  const details = await admin('GET', `/api/v1/api-keys/${created.json.id}`);
  t.match(details.json.apiKey, { quota: { limit: 5, period: 'month', refill: 'add' }, quotaRemaining: 3, quotaNextRefillAt: created.json.quota_next_refill_at }, 'Dagu details: what is left now');
  const listed = await admin('GET', '/api/keys');
  t.equal(listed.json.find((k: { name: string }) => k.name === 'tenant').quota_remaining, 3, 'Dagen list: what is left now');
  const daguList = await admin('GET', '/api/v1/api-keys');
  t.equal(daguList.json.apiKeys.find((k: { name: string }) => k.name === 'tenant').quotaRemaining, 3, 'Dagu list too');

  const topped = await admin('POST', `/api/keys/${created.json.id}/quota`, { remaining: 100 });
  t.equal(topped.status, 200);
  t.equal(topped.json.quota_remaining, 100);
  const reset = await admin('POST', `/api/v1/api-keys/tenant/quota`, { reset: true });
  t.equal(reset.json.apiKey.quotaRemaining, 5, 'reset: full again');
  const audit = await admin('GET', `/api/audit?key_id=${created.json.id}`);
  t.same(audit.json.records.filter((r: { action: string }) => r.action === 'quota').map((r: { details: unknown }) => r.details), [{ remaining: { from: 100, to: 5 }, reset: true }, { remaining: { from: 3, to: 100 } }], 'both audited, newest first');

  const bad = await admin('POST', '/api/v1/api-keys', { name: 'x', role: 'viewer', allowedSurfaces: ['rest_api'], attributionClass: 'service_account', quota: { limit: 5, period: 'fortnight' } });
  t.equal(bad.status, 400);
  t.match(bad.json, { code: 'bad_request', field: 'quota.period', message: /^quota\.period: must be one of day, week, month/ });
  const badDagen = await admin('PUT', `/api/keys/${created.json.id}`, { quota: { remaining: 'many' } });
  t.match(badDagen.json, { field: 'quota.remaining' });
  const badTopUp = await admin('POST', `/api/keys/${created.json.id}/quota`, { remaining: -5 });
  t.match(badTopUp.json, { field: 'remaining' });
  const removed = await admin('PATCH', `/api/v1/api-keys/${created.json.id}`, { quota: null });
  t.same([removed.json.apiKey.quota, removed.json.apiKey.quotaRemaining, removed.json.apiKey.quotaNextRefillAt], [null, null, null], 'quota: null removes it');
  const noQuota = await admin('POST', `/api/keys/${created.json.id}/quota`, { remaining: 5 });
  t.match(noQuota, { status: 400, json: { field: 'quota' } });
});

t.test('keys declared in the config carry a quota (the same rules, errors at their path); they can be topped up', async (t) => {
  const secret = 'declared-quota-secret-0123456789';
  const yaml = (quota: string) => `keys:\n  declared:\n    - name: declared-trial\n      secret: \${DECLARED_SECRET}\n      quota: ${quota}\n`;
  const s = await startStack(t.testdir(), { yaml: yaml('{ limit: 2, period: day }'), env: { DECLARED_SECRET: secret } });
  t.teardown(() => s.close());
  const status = async () => {
    const r = await request(`${s.url}/api/v1/dags`, { headers: { 'x-api-key': secret } });
    await r.body.dump();
    return r.statusCode;
  };
  t.same([await status(), await status(), await status()], [200, 200, 429]);
  const key = await s.gateway.keys.get('declared-trial');
  t.same(key.quota, { limit: 2, period: 'day', refill: 'reset', start: null });
  await t.rejects(s.gateway.keys.update('declared-trial', { quota: null }, 'x'), { code: 'conflict' }, 'the quota itself is changed in the file');
  await s.gateway.keys.setQuotaRemaining('declared-trial', { remaining: 1 }, 'x');
  t.same([await status(), await status()], [200, 429], 'a top-up works for a declared key');

  // a bad quota in the file: the schema (unknown period) or the key service's rules at the key's path
  const dir = t.testdir();
  const file = (quota: string) => {
    const f = join(dir, `gw-${Math.random().toString(36).slice(2)}.yaml`);
    writeFileSync(f, `store: { keys: "sqlite::memory:" }\n${yaml(quota)}upstreams: [{ name: up, api_base_url: "http://127.0.0.1:1" }]\nroutes: [{ path: "/**", upstream: up }]\n`);
    return f;
  };
  t.throws(() => loadConfig(file('{ limit: 2, period: fortnight }'), { DECLARED_SECRET: secret }), /quota\/period|quota\.period/, 'the schema refuses a period it does not know');
  const config = loadConfig(file('{ remaining: 5, period: day }'), { DECLARED_SECRET: secret });
  const store = new SqliteKeyStore(':memory:');
  t.teardown(() => store.close());
  await t.rejects(new KeyService(store, config.keys).syncDeclared(), { message: /keys\.declared\[0\]\.quota\.period: a one-time quota \(remaining\) has no limit, period/ }, "the key service's rules, named at the declared key's path");
});

t.test('a key file from before quotas gains the quota columns when opened', async (t) => {
  const file = join(t.testdir(), 'old.db');
  const Database = (await import('better-sqlite3')).default;
  const db = new Database(file);
  db.exec(`CREATE TABLE usage_hourly (key_id TEXT NOT NULL, hour TEXT NOT NULL, allowed INTEGER NOT NULL DEFAULT 0,
    limited INTEGER NOT NULL DEFAULT 0, forbidden INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (key_id, hour)) WITHOUT ROWID`);
  db.prepare("INSERT INTO usage_hourly VALUES ('k1', '2031-01-01T10:00:00.000Z', 1, 2, 3)").run();
  db.close();
  const store = new SqliteKeyStore(file);
  t.teardown(() => store.close());
  const H = ms('2031-01-01T10:00:00Z');
  await store.addUsage(new Map([['k1', { count: 0, lastUsedAt: '', hours: [{ hourMs: H, allowed: 0, limited: 0, forbidden: 0, quota: 4 }] }]]), 'batch-1');
  t.same(await store.usageHistory('k1', H, H + 3_600_000), [{ hour: '2031-01-01T10:00:00.000Z', allowed: 1, limited: 2, forbidden: 3, quota: 4 }], 'old rows read 0, new counts add');
  const { svc } = { svc: new KeyService(store, CONFIG) };
  const { key } = await svc.create({ name: 'q', quota: { remaining: 1 } }, 'x');
  t.same((await store.get(key.id))?.quota, { remaining: 1 }, 'the quota column on api_keys');
});

t.test('forward-auth: the proxy\'s key check takes the same credits and refuses with the same 429', async (t) => {
  const secret = 'forward-auth-shared-secret-0123456789';
  const s = await startStack(t.testdir(), { yaml: `forward_auth: { secret: "${secret}" }` });
  t.teardown(() => s.close());
  const k = await s.key({ name: 'proxied', quota: { limit: 2, period: 'week' }, rateLimit: 600 });
  const ask = async () => {
    const r = await request(`${s.url}/_keygate/auth`, { headers: { 'x-original-uri': '/api/v1/dags', 'x-api-key': k.secret, 'x-keygate-forward-secret': secret } });
    await r.body.dump();
    return { status: r.statusCode, remaining: r.headers['x-quota-remaining'], keygateStatus: r.headers['x-keygate-status'], retry: r.headers['retry-after'] };
  };
  const answers = [await ask(), await ask(), await ask()];
  t.same(answers.map((a) => a.status), [200, 200, 429]);
  t.same(answers.map((a) => a.remaining), ['1', '0', '0'], 'X-Quota-Remaining on the answers the proxy copies');
  t.equal(answers[2]!.keygateStatus, '429');
  t.ok(Number(answers[2]!.retry) > 0, 'Retry-After: seconds to Monday 00:00 UTC');
  t.equal(s.dagu.received.length, 0, 'forward-auth forwards nothing itself');
  t.same(await s.gateway.keys.quotaStatus(await s.gateway.keys.get(k.id)), { remaining: 0, nextRefillAt: new Date(nextRefillMs({ limit: 2, period: 'week', refill: 'reset', start: null }, Date.now())!).toISOString() });
});

t.test('WebSocket upgrades take a credit too, and are refused with the 429 and its headers once none is left', async (t) => {
  const s = await startStack(t.testdir());
  t.teardown(() => s.close());
  const k = await s.key({ name: 'sockets', quota: { remaining: 1 }, rateLimit: 600 });
  const open = () =>
    new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
      const ws = new WebSocket(`${s.url.replace('http', 'ws')}/api/v1/t/socket`, { headers: { 'x-api-key': k.secret } });
      ws.once('open', () => {
        ws.close();
        resolve({ status: 101, headers: {}, body: '' });
      });
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      });
      ws.once('error', reject);
    });
  t.equal((await open()).status, 101, 'the credit opens the socket');
  const refused = await open();
  t.equal(refused.status, 429);
  t.match(JSON.parse(refused.body), { code: 'quota_exceeded' });
  t.equal(refused.headers['x-quota-remaining'], '0');
  t.equal(refused.headers['x-quota-period'], 'none');
});
