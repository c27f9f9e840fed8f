// Key groups on the key page, in a real Chromium (playwright-core, Debian's /usr/bin/chromium): the
// keys table shows each key's group and the details what its keys share; the key dialog picks a
// group, judged by the key service's dry run (a group deleted meanwhile is a problem at the Group
// field); the Groups view lists groups with their shared rate limit, quota left and next refill,
// member count and usage, and creates, edits and deletes them through the admin API. Screenshots
// go to .tap/screenshots/page/ (groups-after-*.png: the key list and the details of a key with a
// quota and a group, for the before/after note). Skipped, with the reason, without Chromium.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { request } from 'undici';
import type { Page } from 'playwright-core';
import { ARGS, CHROMIUM, SHOTS, openView, pw, skip } from './browser.js';
import { startStack } from './helpers.js';
import { keyListAndDetails } from './page-shots.js';

const TOKEN = 'page-groups-admin-token-0123456789ab';
type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
declare const document: Json;

if (skip) t.comment(`SKIP browser tests: ${skip}`);

/** Page errors and console errors, except the answers the page expects: a dry run's 400, a refused delete's 409. */
function watch(page: Page): string[] {
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const status = /status of (\d+)/.exec(msg.text())?.[1];
    const url = msg.location().url;
    if ((status === '400' || status === '409') && /[?&]dryRun=true/.test(url)) return;
    if (status === '409' && /\/api\/v1\/api-key-groups\/ci-tenant$/.test(url)) return;
    problems.push(`console: ${msg.text()}`);
  });
  return problems;
}

t.test('key groups on the key page', { skip }, async (t) => {
  if (typeof pw === 'string') return;
  const s = await startStack(t.testdir(), { adminToken: TOKEN });
  t.teardown(() => s.close());
  const svc = s.gateway.keys;
  await svc.createGroup({ name: 'ci-tenant', description: 'CI runners and their MCP bot', rateLimit: 600, quota: { limit: 1000, period: 'month' } }, 'test');
  await svc.createGroup({ name: 'mcp-tenant' }, 'test');
  const runner = await s.key({ name: 'ci-runner', role: 'viewer', rateLimit: 600, quota: { limit: 5, period: 'day' }, group: 'ci-tenant' });
  const bot = await s.key({ name: 'mcp-bot', role: 'viewer', rateLimit: 600, group: 'ci-tenant' });
  await s.key({ name: 'loose', role: 'viewer', rateLimit: 600 });
  const get = async (secret: string, path = '/api/v1/dags') => {
    const r = await request(s.url + path, { headers: { 'x-api-key': secret } });
    await r.body.dump();
    return r.statusCode;
  };
  t.same([await get(runner.secret), await get(runner.secret), await get(bot.secret), await get(bot.secret, '/api/v1/admin')], [200, 200, 200, 403]);
  await s.gateway.flushUsage();

  mkdirSync(SHOTS, { recursive: true });
  const browser = await pw.chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  t.teardown(() => browser.close().catch(() => {}));
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: 'en-US', timezoneId: 'UTC' });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const problems = watch(page);
  await page.goto(`${s.gateway.adminUrl}/api-keys`);
  await page.getByLabel('Admin token or admin API key').fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();

  // --- the keys table: each key's group; the details: what the group's keys share
  const groupCell = (name: string) => page.locator('#keys-body tr', { has: page.locator('th', { hasText: name }) }).locator('td.key-group');
  await groupCell('ci-runner').waitFor();
  t.equal(await groupCell('ci-runner').textContent(), 'ci-tenant', 'the Group column names the group');
  t.equal(await groupCell('mcp-bot').textContent(), 'ci-tenant');
  t.equal(await groupCell('loose').textContent(), '—', 'a key without a group');
  await keyListAndDetails(page, SHOTS, 'groups-after', 'ci-runner');
  await page.getByRole('button', { name: 'Details of key ci-runner' }).click();
  await page.waitForFunction(() => document.getElementById('details-title')?.textContent === 'ci-runner');
  const detail = (label: string) =>
    page.evaluate((l: string) => [...document.querySelectorAll('#details-fields dt')].find((d: Json) => d.textContent === l)?.nextElementSibling?.textContent as string, label);
  const nextMonth = new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth() + 1, 1)).toLocaleString('en-US', { timeZone: 'UTC' });
  t.equal(await detail('Group'), `ci-tenant: 600/min shared; quota 997 of 1,000 left this month; back to 1,000 on ${nextMonth} (2 keys)`, "the group's shared limit, what is left of its quota (3 requests of its keys) and the refill");
  t.match(await detail('Quota'), /^3 of 5 left this day/, "the key's own quota beside it");
  await page.locator('#details-close').click();

  // --- the key dialog picks a group; the service's dry run judges it
  await page.getByRole('button', { name: 'Edit key loose' }).click();
  const edit = page.getByRole('dialog', { name: 'Edit API Key' });
  await edit.waitFor();
  const groupSelect = edit.getByLabel('Group', { exact: true });
  await page.waitForFunction(() => document.getElementById('create-group').options.length === 3);
  t.same(await groupSelect.locator('option').allTextContents(), ['No group', 'ci-tenant', 'mcp-tenant'], 'every group, or none');
  t.equal(await groupSelect.inputValue(), '', 'filled from the key: none');
  await groupSelect.selectOption('mcp-tenant');
  await svc.deleteGroup('mcp-tenant', 'test'); // behind the page's back
  await edit.getByLabel('Description').fill('moved by the page');
  await page.waitForFunction(() => document.getElementById('create-form').dataset.pending === undefined);
  t.match(await page.locator('#create-group-error').textContent(), /no group named "mcp-tenant"/, "the key service's own problem, at the Group field");
  t.ok(await edit.getByRole('button', { name: 'Save' }).isDisabled(), 'Save waits for a group that exists');
  await page.locator('#create-group').scrollIntoViewIfNeeded();
  await page.screenshot({ path: join(SHOTS, 'groups-edit-dialog-unknown-group.png') });
  await groupSelect.selectOption('ci-tenant');
  await page.waitForFunction(() => document.getElementById('create-form').dataset.pending === undefined);
  t.equal(await page.locator('#create-group-error').textContent(), '');
  await page.screenshot({ path: join(SHOTS, 'groups-edit-dialog.png') });
  await edit.getByRole('button', { name: 'Save' }).click();
  await page.locator('#snackbar', { hasText: 'saved' }).waitFor();
  t.equal((await svc.get('loose')).group, 'ci-tenant', 'saved through PATCH');
  await page.waitForFunction(() => [...document.querySelectorAll('#keys-body td.key-group')].filter((td: Json) => td.textContent === 'ci-tenant').length === 3);

  // --- the Groups view
  await openView(page, 'Groups');
  const groupRow = (name: string) => page.locator('#groups-body tr', { has: page.locator('th', { hasText: name }) });
  await groupRow('ci-tenant').waitFor();
  const cells = await groupRow('ci-tenant').locator('td').allTextContents();
  t.same(cells.slice(0, 4), ['600/min', `997 of 1,000 left this month; back to 1,000 on ${nextMonth}`, '3 keys', '3 allowed · 1 refused'], 'shared rate limit, quota left and next refill, members, 30 days of usage');
  t.match(await groupRow('ci-tenant').locator('th').textContent(), /CI runners and their MCP bot/, 'the description');

  // create: the service's rules at their fields, then a group with a one-time quota
  await page.getByRole('button', { name: '+ Create group' }).click();
  const dialog = page.getByRole('dialog', { name: 'Create group' });
  const settled = () => page.waitForFunction(() => document.getElementById('group-form').dataset.pending === undefined);
  await dialog.getByLabel('Name').fill('ci-tenant');
  await dialog.getByLabel('Shared rate limit (requests per minute)').fill('0');
  await settled();
  t.match(await page.locator('#group-name-error').textContent(), /already exists/, 'a taken name, from the dry run');
  t.match(await page.locator('#group-rate-error').textContent(), /./, 'a rate limit of 0: the service says why');
  t.ok(await dialog.getByRole('button', { name: 'Create' }).isDisabled());
  await dialog.getByLabel('Name').fill('trial');
  await dialog.getByLabel('Shared rate limit (requests per minute)').fill('30');
  await dialog.getByLabel('Usage credits').selectOption('once');
  await dialog.getByLabel('Credits', { exact: true }).fill('100');
  await settled();
  await page.screenshot({ path: join(SHOTS, 'groups-create-dialog.png') });
  await dialog.getByRole('button', { name: 'Create' }).click();
  await page.locator('#snackbar', { hasText: 'Group "trial" created' }).waitFor();
  t.match(await svc.getGroup('trial'), { name: 'trial', rateLimit: 30, quota: { remaining: 100 } }, 'created through the admin API');
  await groupRow('trial').waitFor();
  t.same((await groupRow('trial').locator('td').allTextContents()).slice(0, 4), ['30/min', '100 left (one-time credits, no refill)', '0 keys', '0 allowed · 0 refused']);
  await page.locator('#snackbar').evaluate((el: Json) => (el.hidden = true));
  await page.screenshot({ path: join(SHOTS, 'groups-view.png'), fullPage: true });

  // edit: no rate limit, a periodic quota
  await page.getByRole('button', { name: 'Edit group trial' }).click();
  const editGroup = page.getByRole('dialog', { name: 'Edit group trial' });
  await editGroup.waitFor();
  t.ok(await editGroup.getByLabel('Name').isDisabled(), 'a name is an identity: it cannot change');
  t.equal(await editGroup.getByLabel('Shared rate limit (requests per minute)').inputValue(), '30', 'filled from the group');
  await editGroup.getByLabel('Shared rate limit (requests per minute)').fill('');
  await editGroup.getByLabel('Usage credits').selectOption('periodic');
  await editGroup.getByLabel('Requests per period').fill('500');
  await editGroup.getByLabel('Period (UTC)').selectOption('day');
  await page.waitForFunction(() => document.getElementById('group-form').dataset.pending === undefined);
  await editGroup.getByRole('button', { name: 'Save' }).click();
  await page.locator('#snackbar', { hasText: 'Group "trial" saved' }).waitFor();
  t.match(await svc.getGroup('trial'), { rateLimit: null, quota: { limit: 500, period: 'day', refill: 'reset' } }, 'saved through PATCH');

  // delete: refused while keys belong to it (the service's words), done when none do
  await page.getByRole('button', { name: 'Delete group ci-tenant' }).click();
  await page.getByRole('dialog', { name: 'Delete group "ci-tenant"?' }).getByRole('button', { name: 'Delete' }).click();
  await page.locator('#snackbar', { hasText: 'still has 3 keys' }).waitFor();
  t.ok(await svc.getGroup('ci-tenant'), 'a group with keys stays');
  await page.getByRole('button', { name: 'Delete group trial' }).click();
  await page.getByRole('dialog', { name: 'Delete group "trial"?' }).getByRole('button', { name: 'Delete' }).click();
  await page.locator('#snackbar', { hasText: 'Group "trial" deleted' }).waitFor();
  await groupRow('trial').waitFor({ state: 'detached' });
  t.equal((await svc.listGroups()).length, 1, 'gone');

  // the group changes in the audit log, each in a line
  await openView(page, 'Audit log');
  const auditRow = (action: string) => page.locator('#audit-body tr', { has: page.locator('td', { hasText: 'trial' }) }).filter({ has: page.locator('td', { hasText: new RegExp(`^${action.replace('.', '\\.')}$`) }) });
  await auditRow('group.create').waitFor();
  t.equal(await auditRow('group.create').locator('td').nth(4).textContent(), 'rate limit 30/min, quota {"remaining":100}', 'a group made: its limits');
  t.equal(await auditRow('group.update').locator('td').nth(4).textContent(), 'rateLimit: 30 → null; quota: {"remaining":100} → {"limit":500,"period":"day","refill":"reset","start":null}', 'a group changed: what changed');
  t.equal(await auditRow('group.delete').count(), 1);
  await openView(page, 'Groups');

  // the group's details: what its keys share and their usage
  await page.getByRole('button', { name: 'Details of group ci-tenant' }).click();
  await page.waitForFunction(() => document.querySelectorAll('#group-usage-chart svg').length === 1);
  t.match(await page.locator('#group-usage-legend').textContent(), /3 allowed.*0 rate limited.*1 forbidden/, "the usage of the group's keys");
  await page.screenshot({ path: join(SHOTS, 'groups-details.png') });
  await page.locator('#group-details-close').click();

  // the member count shows the group's keys in the keys view
  await page.getByRole('button', { name: 'Show the 3 keys of group ci-tenant' }).click();
  await page.locator('#keys-group-filter', { hasText: 'Only the keys of group "ci-tenant".' }).waitFor();
  await page.waitForFunction(() => document.querySelectorAll('#keys-body tr').length === 3);
  t.same((await page.locator('#keys-body .key-name').allTextContents()).sort(), ['ci-runner', 'loose', 'mcp-bot'], 'the keys of the group');
  await svc.create({ name: 'outsider', rateLimit: 600 }, 'test');
  await page.getByRole('button', { name: 'Show every group' }).click();
  await page.waitForFunction(() => document.querySelectorAll('#keys-body tr').length === 4);
  t.pass('every key again');

  // 390 px: the groups table as cards, nothing wider than the screen
  await page.setViewportSize({ width: 390, height: 844 });
  await openView(page, 'Groups');
  await groupRow('ci-tenant').waitFor();
  const o = await page.evaluate(() => ({ doc: document.documentElement.scrollWidth, vw: document.documentElement.clientWidth }));
  t.ok(o.doc <= o.vw, `groups at 390 px: page ${o.doc} px wide in ${o.vw} px`);
  await page.screenshot({ path: join(SHOTS, 'narrow-390-groups.png'), fullPage: true });
  t.same(problems, [], 'no page errors');
});
