// The key page shows a key's quota and what is left now (details), and audit lines of top-ups, in a
// real Chromium (playwright-core, Debian's /usr/bin/chromium); skipped with the reason without them.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { ARGS, CHROMIUM, SHOTS, pw, skip } from './browser.js';
import { startStack } from './helpers.js';

const TOKEN = 'page-quota-admin-token-0123456789abc';
type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
declare const document: Json;

if (skip) t.comment(`SKIP browser tests: ${skip}`);

t.test('key details: the quota, what is left and the next refill; a one-time quota; the top-up in the audit trail', { skip }, async (t) => {
  if (typeof pw === 'string') return;
  const s = await startStack(t.testdir(), { adminToken: TOKEN });
  t.teardown(() => s.close());
  const daily = await s.key({ name: 'daily-tenant', quota: { limit: 5, period: 'day' }, rateLimit: 600 });
  await s.key({ name: 'trial-user', quota: { remaining: 7 }, rateLimit: 600 });
  for (let i = 0; i < 2; i++) {
    const r = await request(`${s.url}/api/v1/dags`, { headers: { 'x-api-key': daily.secret } });
    await r.body.dump();
  }
  await s.gateway.keys.setQuotaRemaining('trial-user', { remaining: 4 }, { id: 'admin-token', remoteAddress: null });

  const browser = await pw.chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  t.teardown(() => browser.close().catch(() => {}));
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: 'en-US', timezoneId: 'UTC' });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const errors: string[] = [];
  page.on('pageerror', (err) => errors.push(err.message));
  await page.goto(`${s.gateway.adminUrl}/api-keys`);
  await page.getByLabel('Admin token or admin API key').fill(TOKEN);
  await page.getByRole('button', { name: 'Sign in' }).click();

  const quotaRow = async (name: string) => {
    await page.getByRole('button', { name: `Details of key ${name}` }).click();
    await page.waitForFunction((n: string) => document.getElementById('details-title')?.textContent === n && document.getElementById('details-fields')?.textContent?.includes('Quota'), name);
    return page.evaluate(() => {
      const dts = [...document.querySelectorAll('#details-fields dt')];
      const dt = dts.find((d: Json) => d.textContent === 'Quota');
      return dt?.nextElementSibling?.textContent as string;
    });
  };
  const next = new Date(Math.floor(Date.now() / 86_400_000 + 1) * 86_400_000).toLocaleString('en-US', { timeZone: 'UTC' });
  t.equal(await quotaRow('daily-tenant'), `3 of 5 left this day; back to 5 on ${next}`, 'periodic: what is left, the refill and when');
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, 'key-details-quota.png') });
  await page.getByRole('button', { name: 'Close' }).first().click();
  t.equal(await quotaRow('trial-user'), '4 left (one-time credits, no refill)', 'one-time credits');
  await page.locator('#details-audit li', { hasText: 'quota' }).waitFor();
  t.match(await page.locator('#details-audit').textContent(), /quota by admin-token.*credits left 7 → 4/, 'the top-up in the audit trail');

  // the create/edit dialog sets a quota; the service's rules, at the Quota field
  await page.getByRole('button', { name: 'Close' }).first().click();
  await page.getByRole('button', { name: 'Create API Key' }).click();
  const dialog = page.getByRole('dialog', { name: 'Create API Key' });
  const settled = () => page.waitForFunction(() => document.getElementById('create-form').dataset.pending === undefined);
  await dialog.getByLabel('Name').first().fill('metered-from-page');
  await dialog.getByLabel('Workflows').check();
  await dialog.getByLabel('Usage credits').selectOption('periodic');
  await dialog.getByLabel('Requests per period').fill('0');
  await settled();
  t.ok(await dialog.getByRole('button', { name: 'Create' }).isDisabled(), 'a limit of 0: Create disabled');
  t.match(await page.locator('#create-quota-error').textContent(), /must be a whole number of requests from 1 to/, "the key service's message at the Quota field");
  await dialog.getByLabel('Requests per period').fill('1000');
  await dialog.getByLabel('Period (UTC)').selectOption('week');
  await dialog.getByLabel('Refill').selectOption('add');
  await settled();
  await page.screenshot({ path: join(SHOTS, 'create-dialog-quota.png') });
  await dialog.getByRole('button', { name: 'Create' }).click();
  await page.getByRole('dialog', { name: 'Copy your API key' }).waitFor();
  t.same((await s.gateway.keys.get('metered-from-page')).quota, { limit: 1000, period: 'week', refill: 'add', start: null }, 'created with the quota');
  await page.getByRole('dialog', { name: 'Copy your API key' }).getByRole('button', { name: 'Done' }).click();

  // edit: a one-time quota, then none
  await page.getByRole('button', { name: 'Details of key metered-from-page' }).click();
  await page.waitForFunction(() => document.getElementById('details-title')?.textContent === 'metered-from-page');
  await page.locator('#details-edit').click();
  const edit = page.getByRole('dialog', { name: 'Edit API Key' });
  await edit.waitFor();
  t.equal(await edit.getByLabel('Usage credits').inputValue(), 'periodic', 'the edit dialog is filled from the key');
  t.equal(await edit.getByLabel('Requests per period').inputValue(), '1000');
  await edit.getByLabel('Usage credits').selectOption('once');
  await edit.getByLabel('Credits', { exact: true }).fill('25');
  await settled();
  await edit.getByRole('button', { name: 'Save' }).click();
  await page.locator('#snackbar', { hasText: 'saved' }).waitFor();
  t.same((await s.gateway.keys.get('metered-from-page')).quota, { remaining: 25 }, 'saved through PATCH');
  await page.waitForFunction(() => document.getElementById('details-fields')?.textContent?.includes('25 left (one-time credits, no refill)'));
  t.pass('the details show the new quota');
  t.same(errors, [], 'no page errors');
});
