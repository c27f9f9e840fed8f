// The key page (issue 7) in a real browser: playwright-core driving Debian's Chromium
// (/usr/bin/chromium, installed by .ci/run). A key is created through the dialog, its one-time
// secret read from the copy-once dialog and used on the PUBLIC listener; it is deactivated (403),
// regenerated (old secret 401, new one 200) and deleted through the table. Screenshots of the
// table, the copy-once dialog and the API Management view go to .tap/screenshots/page/.
//
// Skipped, with the reason, when Chromium or playwright-core is missing.

import { execFile } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { request } from 'undici';
import type { Browser, BrowserContext, Locator, Page } from 'playwright-core';
import { CONTENT_SECURITY_POLICY } from '../src/admin/page/serve.js';
import { ARGS, CHROMIUM, SHOTS, openView, pw, skip } from './browser.js';
import { ROUTES, startStack, type Stack } from './helpers.js';

const TOKEN = 'page-admin-token-0123456789abcdefghij';
const MAX_KEYS = 4;
const DECLARED_EXPIRED = 'dg_declared-expired-partner-0123456789';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
// Browser globals, for the functions page.evaluate runs in the page (this program has no DOM types).
declare const document: Json, sessionStorage: Json, localStorage: Json, navigator: Json, getComputedStyle: Json;

if (skip) t.comment(`SKIP browser tests: ${skip}`);

/** GET on the PUBLIC listener with a key: the status. */
async function pub(s: Stack, secret: string, path = '/api/v1/dags'): Promise<number> {
  const res = await request(s.url + path, { headers: { 'x-api-key': secret } });
  await res.body.dump();
  return res.statusCode;
}

/** Where a secret shows in the page apart from the copy-once dialog: markup, form values, storage. */
async function secretShows(page: Page, secret: string) {
  return page.evaluate((s) => {
    const values = [...document.querySelectorAll('input, textarea')].map((i) => i.value);
    const stored = [sessionStorage, localStorage].flatMap((st) => Object.keys(st).map((k) => st.getItem(k) ?? ''));
    return {
      markup: document.documentElement.outerHTML.split(s).length - 1,
      text: (document.body.textContent ?? '').split(s).length - 1,
      inputs: values.some((v) => v.includes(s)),
      storage: stored.some((v) => v.includes(s)),
    };
  }, secret);
}

function watch(page: Page, origin: string) {
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    // a refused fetch (401 at sign-in) is logged by Chromium as a failed resource load; so is the
    // 400 of a dry run that found problems in the form (the page shows them at their fields); anything else is a fault
    if (msg.type() !== 'error') return;
    if (/Failed to load resource: the server responded with a status of (401|403)/.test(msg.text())) return;
    if (/Failed to load resource: the server responded with a status of (400|409)/.test(msg.text()) && /[?&]dryRun=true/.test(msg.location().url)) return;
    problems.push(`console: ${msg.text()}`);
  });
  page.on('request', (r) => {
    if (!r.url().startsWith(origin + '/') && !r.url().startsWith('data:')) problems.push(`request to another origin: ${r.url()}`);
  });
  return problems;
}

async function signIn(page: Page, credential = TOKEN): Promise<void> {
  await page.getByLabel('Admin token or admin API key').fill(credential);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

const row = (page: Page, name: string): Locator => page.locator('#keys-body tr', { has: page.locator('th', { hasText: name }) });
const cell = (r: Locator, i: number): Locator => r.locator('td').nth(i);
const dialogOpen = (page: Page, id: string) => page.evaluate((x) => document.getElementById(x).open, id);
/** The create/edit dialog's dry run of the form has answered (the page validates through the admin API). */
const settled = (page: Page) => page.waitForFunction(() => document.getElementById('create-form').dataset.pending === undefined);

async function closeOnce(what: () => Promise<void>): Promise<void> {
  try {
    await what();
  } catch {
    /* already closed */
  }
}

t.test('key page in Chromium', { skip }, async (t) => {
  if (typeof pw === 'string') return;
  mkdirSync(SHOTS, { recursive: true });
  const browser: Browser = await pw.chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
  t.teardown(() => closeOnce(() => browser.close()));
  t.comment(`Chromium ${browser.version()}, playwright-core ${createRequire(import.meta.url)('playwright-core/package.json').version}`);

  const newPage = async (origin: string): Promise<{ context: BrowserContext; page: Page; problems: string[] }> => {
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, locale: 'en-US', timezoneId: 'UTC' });
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin });
    const page = await context.newPage();
    page.setDefaultTimeout(10_000);
    return { context, page, problems: watch(page, origin) };
  };

  // ------------------------------------------------------------ the gateway's own admin listener
  t.test("the gateway's admin listener serves the page: headers, sign-in, spinner, empty state", async (t) => {
    const s = await startStack(t.testdir(), { adminToken: TOKEN });
    t.teardown(() => s.close());
    const admin = s.gateway.adminUrl!;

    for (const [path, type] of [
      ['/api-keys', /^text\/html/],
      ['/api-management', /^text\/html/],
      ['/api-keys/assets/app.js', /^text\/javascript/],
      ['/api-keys/assets/app.css', /^text\/css/],
    ] as const) {
      const res = await request(admin + path);
      const body = await res.body.text();
      t.equal(res.statusCode, 200, `${path} without a credential: 200`);
      t.match(String(res.headers['content-type']), type, `${path} content type`);
      t.equal(res.headers['content-security-policy'], CONTENT_SECURITY_POLICY, `${path} CSP`);
      t.equal(res.headers['x-content-type-options'], 'nosniff');
      t.equal(res.headers['cache-control'], 'no-store');
      if (path.endsWith('.js') || path.endsWith('.css')) continue;
      t.notMatch(body, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script');
      t.notMatch(body, /\sstyle=|<style/, 'no inline style');
      t.notMatch(body, /https?:\/\//, 'nothing from another origin');
    }
    t.match(CONTENT_SECURITY_POLICY, /default-src 'self'/);
    t.notMatch(CONTENT_SECURITY_POLICY, /unsafe-inline|unsafe-eval/);
    const head = await request(admin + '/api-keys', { method: 'HEAD' });
    t.equal(head.statusCode, 200, 'HEAD works');
    for (const [method, path] of [
      ['GET', '/api-keys/assets/nope.js'],
      ['GET', '/api-keys/assets/../../openapi.json'],
      ['GET', '/api-keys/'],
      ['POST', '/api-keys'],
      ['GET', '/api/info'],
      ['GET', '/api/keys'],
    ] as const) {
      const res = await request(admin + path, { method });
      await res.body.dump();
      t.equal(res.statusCode, 401, `${method} ${path} without a credential: 401 (only the page's own files are open)`);
    }
    const publicPage = await request(s.url + '/api-keys');
    await publicPage.body.dump();
    t.equal(publicPage.statusCode, 404, 'the public listener does not serve the page');

    const { context, page, problems } = await newPage(admin);
    t.teardown(() => closeOnce(() => context.close()));
    await page.goto(admin + '/api-keys');
    await page.getByRole('heading', { name: 'Sign in to the admin API' }).waitFor();
    t.equal(await page.getByRole('heading', { level: 1 }).textContent(), 'API Keys');

    await signIn(page, 'wrong-token');
    await page.locator('#signin-error', { hasText: 'Refused' }).waitFor();
    t.pass('a wrong credential is refused with a message');

    // hold the key list so the spinner can be seen
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    await page.route('**/api/v1/api-keys?*', async (route) => {
      await held;
      await route.continue();
    });
    await signIn(page);
    const spinner = page.getByRole('progressbar', { name: 'Loading keys' });
    await spinner.waitFor();
    const [sb, cb] = [await spinner.boundingBox(), await page.locator('#keys').boundingBox()];
    t.ok(sb && cb && Math.abs(sb.x + sb.width / 2 - (cb.x + cb.width / 2)) < 2, 'the spinner is centred in the keys card');
    release();
    await page.getByText('No API keys yet').waitFor();
    t.ok(await spinner.isHidden(), 'spinner gone');
    t.ok(await page.getByRole('button', { name: 'Create your first API key' }).isVisible(), 'empty state calls to create the first key');
    await page.screenshot({ path: join(SHOTS, 'empty-state.png') });
    t.equal(await page.getByLabel('Admin token or admin API key').inputValue(), '', 'the credential is not left in the form');
    t.equal(await page.evaluate(() => sessionStorage.getItem('keygate.admin-credential')), TOKEN, 'credential kept in session storage');
    t.equal(await page.evaluate(() => localStorage.length), 0, 'nothing in local storage');
    t.equal((await secretShows(page, TOKEN)).markup, 0, 'the token is not in the page');

    // the gateway tells its admin listener its public URL and routes: examples use them
    await page.getByText('Quick Start').click();
    t.match(await page.locator('#quickstart-examples').textContent(), new RegExp(`${s.url.replace(/[.]/g, '\\.')}/api/v1/`), "examples use the gateway's public URL");

    await page.reload();
    await page.getByText('No API keys yet').waitFor();
    t.pass('a reload stays signed in (session storage)');
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in to the admin API' }).waitFor();
    t.equal(await page.evaluate(() => sessionStorage.length), 0, 'sign out forgets the credential');
    t.same(problems, [], 'no console errors, CSP violations or requests elsewhere');
  });

  // ------------------------------------------------------------ the full flow
  t.test('create, use, deactivate, regenerate, delete through the page', async (t) => {
    const s = await startStack(t.testdir(), {
      adminToken: TOKEN,
      routes: `${ROUTES}  - { path: /a2a, methods: [POST], upstream: dagen, surface: a2a, scope: agents }\n`,
      yaml: `keys:
  max_keys: ${MAX_KEYS}
  declared:
    - name: legacy-partner
      scopes: [agents]
      expires_at: "2020-01-01"
      secret: ${DECLARED_EXPIRED}
`,
    });
    t.teardown(() => s.close());
    const base = s.gateway.adminUrl!;

    const info: Json = await (await request(base + '/api/info', { headers: { authorization: `Bearer ${TOKEN}` } })).body.json();
    t.match(info, { public_url: s.url, public_url_source: 'listen', rate_limit: { default: 60, min: 1, max: 600 }, max_keys: MAX_KEYS, key_count: 1, key_prefix: 'dg_' });
    t.ok(info.routes.some((r: Json) => r.surface === 'a2a' && r.path === '/a2a'), '/api/info lists the routes');
    t.notMatch(JSON.stringify(info), /upstream-dagu-token|127\.0\.0\.1:1\b|api_base_url/, 'no upstream address or credential in /api/info');

    await s.key({ name: 'ci-deploy', role: 'operator', scopes: ['workflows'], surfaces: ['rest_api', 'mcp'] });

    const { context, page, problems } = await newPage(base);
    t.teardown(() => closeOnce(() => context.close()));
    await page.goto(base + '/api-keys');
    await signIn(page);
    await row(page, 'ci-deploy').waitFor();

    const declared = row(page, 'legacy-partner');
    t.equal(await cell(declared, 2).textContent(), 'Expired', 'a key past its expiry shows Expired');
    t.ok(await declared.getByRole('button', { name: 'Delete key legacy-partner' }).isDisabled(), 'a key declared in the config cannot be changed here');
    const ci = row(page, 'ci-deploy');
    t.same(await cell(ci, 1).locator('.chip').allTextContents(), ['Workflows', 'role: operator', 'REST', 'MCP'], 'scopes, then role and surfaces where set');

    // --- the create dialog, by keyboard first
    await page.getByRole('button', { name: 'Create API Key' }).focus();
    await page.keyboard.press('Tab');
    await page.keyboard.press('Shift+Tab');
    t.equal(await page.evaluate(() => document.activeElement?.id), 'create-open');
    t.equal(await page.evaluate(() => getComputedStyle(document.activeElement!).outlineStyle), 'solid', 'keyboard focus is visible');
    await page.keyboard.press('Enter');
    t.ok(await dialogOpen(page, 'create-dialog'), 'Enter opens the create dialog');
    t.equal(await page.evaluate(() => document.activeElement?.id), 'create-name', 'focus goes to Name');
    await page.keyboard.press('Escape');
    t.notOk(await dialogOpen(page, 'create-dialog'), 'Escape closes it');

    await page.getByRole('button', { name: 'Create API Key' }).click();
    const dialog = page.getByRole('dialog', { name: 'Create API Key' });
    const create = dialog.getByRole('button', { name: 'Create' });
    t.equal(await dialog.getByLabel('Rate limit (requests per minute)').inputValue(), '60', 'rate limit defaults to 60');
    await settled(page);
    t.ok(await create.isDisabled(), 'Create is disabled while the form is empty');
    t.equal(await page.locator('#create-todo').textContent(), 'To create: Name, Scopes.', 'beside it, the fields still to fill in (their messages wait until they are used)');
    await page.keyboard.type('Nightly ETL');
    await settled(page);
    t.ok(await create.isDisabled(), 'still disabled without a scope');
    t.equal(await page.locator('#create-todo').textContent(), 'To create: Scopes.');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Space');
    t.ok(await dialog.getByLabel('Workflows').isChecked(), 'Workflows toggled by keyboard');
    await settled(page);
    t.ok(await create.isEnabled(), 'name + scope: enabled');
    await dialog.getByLabel('Rate limit (requests per minute)').fill('601');
    await settled(page);
    t.ok(await create.isDisabled(), 'rate limit above the range: disabled');
    t.equal(await page.locator('#create-rate-error').textContent(), 'must be a whole number of requests per minute from 1 to 600', "the key service's message");
    await page.screenshot({ path: join(SHOTS, 'create-dialog-invalid.png') });
    await dialog.getByLabel('Rate limit (requests per minute)').fill('2.5');
    await settled(page);
    t.ok(await create.isDisabled(), 'not a whole number: disabled');
    await dialog.getByLabel('Rate limit (requests per minute)').fill('30');
    const today = await page.evaluate(async () => (await import('/api-keys/assets/format.js' as string)).localDate(0));
    await dialog.getByLabel('Expiration (optional)').fill(today);
    await settled(page);
    t.ok(await create.isDisabled(), 'expiration today: disabled');
    t.match(await page.locator('#create-expires-error').textContent(), /after today/);
    await dialog.getByLabel('Expiration (optional)').fill('2099-01-31');
    await settled(page);
    t.ok(await create.isEnabled(), 'valid again');
    await page.mouse.click(8, 8);
    t.ok(await dialogOpen(page, 'create-dialog'), 'a click outside does not close the dialog');
    t.equal(await page.locator('#create-name').inputValue(), 'Nightly ETL', 'and nothing is lost');
    await create.click();

    // --- the copy-once dialog
    const secretDialog = page.getByRole('dialog', { name: 'Copy your API key' });
    await secretDialog.waitFor();
    t.notOk(await dialogOpen(page, 'create-dialog'), 'the create dialog closed');
    t.match(await page.locator('#snackbar').textContent(), /created/, 'snackbar confirms the creation');
    const secret = (await page.locator('#secret-value').textContent()) ?? '';
    t.match(secret, /^dg_[0-9A-Za-z]{43}$/, 'the full key is shown');
    t.match(await secretDialog.textContent(), /Copy this key now\. You will not be able to see it again\./, 'with the warning');
    t.equal(await page.locator('#secret-value').evaluate((el) => getComputedStyle(el).fontFamily.includes('monospace')), true, 'in monospace');
    t.equal((await secretShows(page, secret)).markup, 1, 'shown exactly once while the dialog is open');
    const copy = secretDialog.getByRole('button', { name: 'Copy key' });
    await copy.click();
    await secretDialog.getByRole('button', { name: 'Copied' }).waitFor();
    t.equal(await secretDialog.locator('#secret-copy svg').getAttribute('data-icon'), 'check', 'the icon turns into a check mark');
    t.equal(await page.evaluate(() => navigator.clipboard.readText()), secret, 'the key is on the clipboard');
    await page.screenshot({ path: join(SHOTS, 'copy-once-dialog.png') });
    // back after about 2 s (waited for, not slept for: a loaded machine delays the page's timer)
    await secretDialog.locator('#secret-copy svg[data-icon="copy"]').waitFor({ timeout: 30_000 });
    t.equal(await secretDialog.locator('#secret-copy svg').getAttribute('data-icon'), 'copy', 'and back after about 2 s');
    await page.evaluate(() => navigator.clipboard.writeText(''));

    t.equal(await pub(s, secret), 200, 'the new key gets through the PUBLIC listener');
    await secretDialog.getByRole('button', { name: 'Done' }).click();
    t.notOk(await dialogOpen(page, 'secret-dialog'), 'Done closes it');
    await page.waitForFunction(() => document.getElementById('secret-value').textContent === '');
    t.same(await secretShows(page, secret), { markup: 0, text: 0, inputs: false, storage: false }, 'the secret is gone from the page once the dialog is closed');

    // --- the row, after the usage counter has flushed the request (now, not after a guessed wait)
    await s.gateway.flushUsage();
    await page.reload();
    const mine = row(page, 'Nightly ETL');
    await mine.waitFor();
    const created: Json = (await s.gateway.keys.list()).find((k) => k.name === 'Nightly ETL');
    t.equal(await cell(mine, 0).textContent(), `${secret.slice(0, 8)}…`, 'Key: the prefix only');
    t.same(await cell(mine, 1).locator('.chip').allTextContents(), ['Workflows'], 'Scopes');
    t.match(await cell(mine, 1).locator('.chip').first().getAttribute('class'), /scope-workflows/, 'Workflows chip (purple)');
    t.equal(await cell(mine, 2).textContent(), 'Active', 'Status');
    t.equal(await cell(mine, 3).textContent(), '30/min', 'Rate limit');
    t.equal(await cell(mine, 4).textContent(), '—', 'Group: none');
    t.equal(await cell(mine, 5).textContent(), '1', 'Requests');
    t.equal(await cell(mine, 6).textContent(), 'just now', 'Last used');
    t.equal(await cell(declared, 6).textContent(), 'Never', 'Last used: Never');
    t.equal(await cell(mine, 7).textContent(), new Date(created.createdAt).toLocaleDateString('en-US', { year: 'numeric', month: 'short', day: 'numeric', timeZone: 'UTC' }), 'Created: a human date');
    const fmt = await page.evaluate(async () => {
      const f = await import('/api-keys/assets/format.js' as string);
      const ago = (ms: number) => f.relativeTime(new Date(Date.now() - ms).toISOString());
      return [ago(5 * 60_000), ago(3 * 3_600_000), ago(2 * 86_400_000), f.relativeTime(null)];
    });
    t.same(fmt, ['5m ago', '3h ago', '2d ago', 'Never'], 'relative times');
    await page.screenshot({ path: join(SHOTS, 'keys-table.png'), fullPage: true });

    // --- deactivate: 403 on the public listener; activate again
    await mine.getByRole('button', { name: 'Deactivate key Nightly ETL' }).click();
    await page.locator('#snackbar', { hasText: 'deactivated' }).waitFor();
    await mine.getByRole('button', { name: 'Activate key Nightly ETL' }).waitFor();
    t.equal(await cell(mine, 2).textContent(), 'Inactive', 'Status: Inactive');
    t.equal(await pub(s, secret), 403, 'a deactivated key is refused with 403');
    t.equal(await page.evaluate(() => document.activeElement?.getAttribute('aria-label')), 'Activate key Nightly ETL', 'focus stays on the toggle');
    await mine.getByRole('button', { name: 'Activate key Nightly ETL' }).click();
    await page.locator('#snackbar', { hasText: 'Key "Nightly ETL" activated' }).waitFor();
    await mine.getByRole('button', { name: 'Deactivate key Nightly ETL' }).waitFor();
    t.equal(await pub(s, secret), 200, 'activated again: through');

    // --- regenerate: confirm first
    await mine.getByRole('button', { name: 'Regenerate key Nightly ETL' }).click();
    const confirm = page.getByRole('dialog', { name: 'Regenerate "Nightly ETL"?' });
    await confirm.waitFor();
    t.match(await confirm.textContent(), /old secret stops working immediately/, 'the confirmation says what happens');
    await page.screenshot({ path: join(SHOTS, 'confirm-regenerate.png') });
    t.equal(await page.evaluate(() => document.activeElement?.id), 'confirm-cancel', 'Cancel has the focus');
    await confirm.getByRole('button', { name: 'Cancel' }).click();
    t.equal(await pub(s, secret), 200, 'cancelled: the secret still works');
    await mine.getByRole('button', { name: 'Regenerate key Nightly ETL' }).click();
    await confirm.getByRole('button', { name: 'Regenerate' }).click();
    await secretDialog.waitFor();
    const fresh = (await page.locator('#secret-value').textContent()) ?? '';
    t.match(fresh, /^dg_/);
    t.not(fresh, secret, 'a new secret');
    t.equal(await pub(s, secret), 401, 'the old secret is refused (401)');
    t.equal(await pub(s, fresh), 200, 'the new one works');
    await page.keyboard.press('Escape');
    t.notOk(await dialogOpen(page, 'secret-dialog'), 'Escape closes the copy-once dialog');
    await page.waitForFunction(() => document.getElementById('secret-value').textContent === ''); // the close event runs a task later
    t.same(await secretShows(page, fresh), { markup: 0, text: 0, inputs: false, storage: false }, 'the new secret is gone from the page');
    t.equal(await cell(mine, 0).textContent(), `${fresh.slice(0, 8)}…`, 'the table shows the new prefix');

    // --- API Management
    await page.goto(base + '/api-management');
    await row(page, 'Nightly ETL').waitFor();
    t.equal(await page.getByRole('heading', { level: 1 }).textContent(), 'API Management');
    t.same(await page.locator('#tabs').getByRole('tab').allTextContents(), ['REST v1', 'A2A Protocol', 'MCP'], 'tabs, MCP because an MCP route exists');
    const rest = await page.locator('#panel-rest').textContent();
    t.match(rest, `curl "${s.url}/api/v1/dags?workspace=WORKSPACE"`, 'REST: the configured route on the public URL');
    t.match(rest, 'X-API-Key: $KEYGATE_API_KEY', 'with the X-API-Key header');
    t.match(rest, `/api/v1/dags/:fileName/start`);
    t.notMatch(rest, '/api/v1/health', 'routes without a key are left out');
    await page.getByRole('tab', { name: 'REST v1' }).focus();
    await page.keyboard.press('ArrowRight');
    t.equal(await page.getByRole('tab', { name: 'A2A Protocol' }).getAttribute('aria-selected'), 'true', 'arrow keys move between tabs');
    const a2a = (await page.locator('#panel-a2a').textContent()) ?? '';
    for (const m of ['message/send', 'tasks/get', 'tasks/cancel']) t.match(a2a, new RegExp(`"method": ?"${m}"`), `A2A ${m}`);
    t.match(a2a, `curl -X POST "${s.url}/a2a"`);
    await page.screenshot({ path: join(SHOTS, 'api-management-a2a.png'), fullPage: true });
    await page.getByRole('tab', { name: 'MCP' }).click();
    t.match(await page.locator('#panel-mcp').textContent(), /"method": ?"tools\/list"/);

    // the Quick Start examples run as printed (curl from the shell), with the real key in the variable
    await page.getByText('Quick Start').click();
    await page.locator('#quickstart').screenshot({ path: join(SHOTS, 'quick-start.png') });
    const examples = await page.locator('#quickstart-examples figure').evaluateAll((figs) => figs.map((f) => [f.querySelector('figcaption')?.textContent, f.querySelector('code')?.textContent]));
    t.same(examples.map(([title]) => title), ['List DAGs', 'Agent chat', 'Start a DAG'], 'three Quick Start examples from the routes');
    await page.locator('#quickstart-examples figure').first().getByRole('button').click();
    t.equal(await page.evaluate(() => navigator.clipboard.readText()), examples[0]![1], 'an example copies as shown');
    const curlPath = ['/usr/bin/curl', '/bin/curl'].find((p) => existsSync(p));
    if (curlPath) {
      // a key that may make all three calls (agents + workflows, operator for starting a DAG)
      const runner = await s.key({ name: 'runner', role: 'operator', scopes: ['agents', 'workflows'] });
      const run = promisify(execFile);
      for (const [title, code] of examples) {
        const { stdout } = await run('sh', ['-c', `${code} -s -o /dev/null -w '%{http_code}'`], { env: { PATH: process.env['PATH'] ?? '', KEYGATE_API_KEY: runner.secret } });
        t.equal(stdout, '200', `Quick Start "${title}" runs as printed: 200`);
      }
      await s.gateway.keys.delete(runner.id, 'test');
    } else t.comment('curl not installed: Quick Start examples not run');

    // --- delete: Escape cancels, then confirm
    const again = row(page, 'Nightly ETL');
    await again.getByRole('button', { name: 'Delete key Nightly ETL' }).click();
    const del = page.getByRole('dialog', { name: 'Delete "Nightly ETL"?' });
    await del.waitFor();
    t.match(await del.textContent(), /loses access/, 'the confirmation says consumers lose access');
    await page.keyboard.press('Escape');
    t.ok(await again.isVisible(), 'Escape cancels');
    await again.getByRole('button', { name: 'Delete key Nightly ETL' }).click();
    await del.getByRole('button', { name: 'Delete' }).click();
    await page.locator('#snackbar', { hasText: 'deleted' }).waitFor();
    await again.waitFor({ state: 'detached' });
    t.equal(await pub(s, fresh), 401, 'a deleted key is refused');

    // --- the key-count limit
    await page.goto(base + '/api-keys');
    await row(page, 'ci-deploy').waitFor();
    t.ok(await page.locator('#limit-banner').isHidden(), 'no banner below the limit');
    t.ok(await page.getByRole('button', { name: 'Create API Key' }).isEnabled());
    await s.key({ name: 'filler-1', scopes: ['agents'] });
    await s.key({ name: 'filler-2', scopes: ['agents'] });
    await page.reload();
    await row(page, 'filler-2').waitFor();
    t.match(await page.locator('#limit-banner').textContent(), `${MAX_KEYS} API keys exist and the gateway allows ${MAX_KEYS} (keys.max_keys)`, 'the limit is reached: the page says so');
    t.ok(await page.getByRole('button', { name: 'Create API Key' }).isDisabled(), 'and creation is disabled');
    await page.screenshot({ path: join(SHOTS, 'limit-reached.png') });
    await row(page, 'filler-2').getByRole('button', { name: 'Delete key filler-2' }).click();
    await page.getByRole('dialog', { name: 'Delete "filler-2"?' }).getByRole('button', { name: 'Delete' }).click();
    await row(page, 'filler-2').waitFor({ state: 'detached' });
    t.ok(await page.locator('#limit-banner').isHidden(), 'below the limit again: no banner');
    t.ok(await page.getByRole('button', { name: 'Create API Key' }).isEnabled(), 'creation enabled again');

    t.same(problems, [], 'no console errors, CSP violations or requests elsewhere');
    t.comment(`screenshots: ${SHOTS}`);
  });

  // ------------------------------------------------------------ the whole key model (issue 15)
  t.test('a Dagu-style key through the dialog: grants, surfaces, attribution; details, edit, chart, grace, audit, 390 px', async (t) => {
    const s = await startStack(t.testdir(), { adminToken: TOKEN });
    t.teardown(() => s.close());
    const base = s.gateway.adminUrl!;
    const { context, page, problems } = await newPage(base);
    t.teardown(() => closeOnce(() => context.close()));
    await page.goto(base + '/api-keys');
    await signIn(page);
    await page.getByText('No API keys yet').waitFor();

    // --- create: role viewer with a grant, two surfaces, user-owned, a description
    await page.getByRole('button', { name: 'Create API Key' }).click();
    const dialog = page.getByRole('dialog', { name: 'Create API Key' });
    await page.locator('#create-name').fill('ops-deployer');
    await dialog.getByLabel('Workflows').check();
    await dialog.getByLabel('Role', { exact: true }).selectOption('operator');
    await dialog.getByLabel('Selected workspaces').check();
    t.equal(await dialog.getByLabel('Role', { exact: true }).inputValue(), 'viewer', "choosing selected workspaces applies Dagu's rule: top-level viewer");
    await dialog.getByLabel('Grant 1 workspace').fill('ops');
    await dialog.getByLabel('Grant 1 role').selectOption('developer');
    await dialog.getByLabel('A2A').uncheck();
    await dialog.getByLabel('User-owned').check();
    await settled(page);
    t.ok(await dialog.getByRole('button', { name: 'Create' }).isDisabled(), 'user-owned without an owner: disabled');
    await dialog.getByLabel('Owner user ID').fill('alice');
    await dialog.getByLabel('Description (optional)').fill('Deploys to ops');
    // the service's own rule, shown at its field as it is typed: a workspace name it refuses
    await dialog.getByRole('button', { name: '+ Add workspace' }).click();
    await dialog.getByLabel('Grant 2 workspace').fill('all');
    await page.locator('#create-grants-error', { hasText: 'reserved' }).waitFor();
    t.equal(await page.locator('#create-grants-error').textContent(), 'Grant 2 workspace: "all" is reserved: use workspaceAccess {"all": true} for every workspace', "the API's message at the grants field, naming the grant");
    t.equal(await dialog.getByLabel('Grant 2 workspace').getAttribute('aria-invalid'), 'true', 'that grant is marked invalid');
    t.ok(await dialog.getByRole('button', { name: 'Create' }).isDisabled(), 'Create waits for a valid form');
    await page.screenshot({ path: join(SHOTS, 'create-dialog-dagu.png'), fullPage: true });
    await dialog.getByRole('button', { name: 'Remove grant 2' }).click();
    await settled(page);
    await dialog.getByRole('button', { name: 'Create' }).click();
    await page.getByRole('dialog', { name: 'Copy your API key' }).waitFor();
    const secret = (await page.locator('#secret-value').textContent()) ?? '';
    await page.getByRole('button', { name: 'Done' }).click();
    const stored = await s.gateway.keys.get('ops-deployer');
    t.match(stored, {
      role: 'viewer',
      workspaceAccess: { all: false, grants: [{ workspace: 'ops', role: 'developer' }] },
      surfaces: ['rest_api', 'mcp'],
      attributionClass: 'user_owned',
      ownerUserId: 'alice',
      description: 'Deploys to ops',
      scopes: ['workflows'],
    }, 'every field as chosen in the dialog');

    // --- use it through the gateway: allowed, forbidden (no grant for team-b), rate limited later
    t.equal(await pub(s, secret, '/api/v1/dags?workspace=ops'), 200, 'its grant works on the public listener');
    t.equal(await pub(s, secret, '/api/v1/dags?workspace=ops'), 200);
    t.equal(await pub(s, secret, '/api/v1/admin'), 403, 'not an admin: 403');
    await s.gateway.flushUsage();

    // --- details: every field, the chart counts the traffic, the audit trail
    await row(page, 'ops-deployer').getByRole('button', { name: 'Details of key ops-deployer' }).click();
    const drawer = page.getByRole('dialog', { name: 'ops-deployer' });
    await drawer.waitFor();
    const fields = await drawer.locator('dl.fields').textContent();
    for (const text of ['Deploys to ops', 'ops: developer (top-level role viewer)', 'REST, MCP', 'user-owned by alice', 'Workflows'.toLowerCase(), 'by admin-token']) t.match(fields, text, `details show ${text}`);
    t.match(fields, /Requests2Last usedjust now/, 'requests and last use as they are now, not as the table loaded them');
    await drawer.locator('svg.usage-svg').waitFor();
    const bars = await drawer.locator('svg.usage-svg rect').evaluateAll((rects) => rects.map((r) => [r.getAttribute('data-kind'), Number(r.getAttribute('data-value'))]));
    t.same(bars, [['allowed', 2], ['forbidden', 1]], 'the chart draws the real traffic: 2 allowed, 1 forbidden in this hour');
    t.match(await drawer.locator('#usage-legend').textContent(), /2 allowed.*0 rate limited.*1 forbidden/);
    t.match(await drawer.locator('svg.usage-svg').getAttribute('aria-label'), /168 hours: 2 allowed, 0 rate limited, 1 forbidden/);
    await drawer.locator('#details-audit li').first().waitFor();
    t.match(await drawer.locator('#details-audit').textContent(), /create by admin-token/, 'the audit trail');
    await page.screenshot({ path: join(SHOTS, 'key-details.png') });
    await drawer.getByRole('button', { name: '30 days by day' }).click();
    await page.waitForFunction(() => document.querySelector('#usage-chart svg')?.getAttribute('aria-label')?.includes('30 days'));
    t.pass('30 days by day');

    // --- edit from the details: role (all workspaces, operator)
    await drawer.getByRole('button', { name: 'Edit' }).click();
    const edit = page.getByRole('dialog', { name: 'Edit API Key' });
    await edit.waitFor();
    t.equal(await page.locator('#create-name').inputValue(), 'ops-deployer', 'the edit dialog is filled from the key');
    t.equal(await edit.getByLabel('Grant 1 workspace').inputValue(), 'ops');
    await edit.getByLabel('All workspaces').check();
    await edit.getByLabel('Role', { exact: true }).selectOption('operator');
    // the edit is checked by a dry run of the PATCH: the service's rule at its field
    await edit.getByLabel('Rate limit (requests per minute)').fill('0');
    await settled(page);
    t.ok(await edit.getByRole('button', { name: 'Save' }).isDisabled(), 'edit: an invalid rate limit disables Save');
    t.equal(await page.locator('#create-rate-error').textContent(), 'must be a whole number of requests per minute from 1 to 600');
    await edit.getByLabel('Rate limit (requests per minute)').fill('60');
    await settled(page);
    await edit.getByRole('button', { name: 'Save' }).click();
    await page.locator('#snackbar', { hasText: 'saved' }).waitFor();
    await page.waitForFunction(() => document.querySelector('#details-fields')?.textContent?.includes('all workspaces (role operator)'));
    t.match(await s.gateway.keys.get('ops-deployer'), { role: 'operator', workspaceAccess: { all: true, grants: [] } }, 'saved through PATCH');
    t.equal(await pub(s, secret, '/api/v1/dags/x/start'.replace('/api/v1/dags/x/start', '/api/v1/dags?workspace=team-b')), 200, 'now every workspace');

    // --- regenerate with a grace period: the old key works, then stops
    await drawer.getByRole('button', { name: 'Regenerate' }).click();
    const confirm = page.getByRole('dialog', { name: 'Regenerate "ops-deployer"?' });
    await confirm.waitFor();
    // the grace period's rule is the API's: its message at the field, the dialog stays, nothing regenerated
    await confirm.getByLabel('Old key keeps working for (seconds)').fill('90000');
    await confirm.getByRole('button', { name: 'Regenerate' }).click();
    await page.locator('#confirm-grace-error', { hasText: 'must be a whole number of seconds from 0 to 86400' }).waitFor();
    t.ok(await dialogOpen(page, 'confirm-dialog'), 'a refused grace period keeps the confirmation open');
    t.equal((await s.gateway.keys.get('ops-deployer')).prefix, secret.slice(0, 8), 'and the key was not regenerated');
    await confirm.getByLabel('Old key keeps working for (seconds)').fill('3');
    await page.screenshot({ path: join(SHOTS, 'regenerate-grace.png') });
    await confirm.getByRole('button', { name: 'Regenerate' }).click();
    await page.getByRole('dialog', { name: 'Copy your API key' }).waitFor();
    const fresh = (await page.locator('#secret-value').textContent()) ?? '';
    t.match(await page.locator('#snackbar').textContent(), /old secret keeps working until/, 'the snackbar says until when');
    t.equal(await pub(s, fresh, '/api/v1/dags'), 200, 'the new key works');
    t.equal(await pub(s, secret, '/api/v1/dags'), 200, 'the old key still works during the grace');
    await page.getByRole('button', { name: 'Done' }).click();
    await sleep(3500);
    t.equal(await pub(s, secret, '/api/v1/dags'), 401, 'and stops after it');
    await page.keyboard.press('Escape');

    // --- the audit tab, filterable by key
    await s.key({ name: 'other-key', role: 'viewer' });
    await page.reload();
    await row(page, 'other-key').waitFor();
    await openView(page, 'Audit log');
    await page.locator('#audit-body tr').first().waitFor();
    const all = await page.locator('#audit-body tr td:nth-child(2)').allTextContents();
    t.ok(all.includes('other-key') && all.includes('ops-deployer'), 'all keys by default');
    const changes = (await page.locator('#audit-body').textContent()) ?? '';
    t.match(changes, /role: "viewer" → "operator"/, 'what changed, who and when');
    await page.getByLabel('Key', { exact: true }).fill('ops-deployer');
    await page.getByLabel('Key', { exact: true }).press('Enter');
    await page.waitForFunction(() => [...document.querySelectorAll('#audit-body tr td:nth-child(2)')].every((td: Json) => td.textContent === 'ops-deployer'));
    t.same(await page.locator('#audit-body tr td:nth-child(3)').allTextContents(), ['regenerate', 'update', 'create'], 'one key: its changes, newest first');
    await page.screenshot({ path: join(SHOTS, 'audit-tab.png'), fullPage: true });

    // --- 390 px: cards, nothing wider than the screen
    await page.setViewportSize({ width: 390, height: 844 });
    await openView(page, 'Keys');
    const overflow = () => page.evaluate(() => ({ doc: document.documentElement.scrollWidth, vw: document.documentElement.clientWidth }));
    let o = await overflow();
    t.ok(o.doc <= o.vw, `keys at 390 px: page ${o.doc} px wide in ${o.vw} px`);
    t.equal(await page.locator('#keys-table tbody tr').first().evaluate((tr) => getComputedStyle(tr).display), 'block', 'rows are cards');
    await page.screenshot({ path: join(SHOTS, 'narrow-390-keys.png'), fullPage: true });
    await row(page, 'ops-deployer').getByRole('button', { name: 'Details of key ops-deployer' }).click();
    await drawer.locator('svg.usage-svg').waitFor();
    o = await overflow();
    t.ok(o.doc <= o.vw, 'details at 390 px: no overflow');
    await page.screenshot({ path: join(SHOTS, 'narrow-390-details.png') });
    await page.keyboard.press('Escape');
    await page.getByRole('button', { name: 'Create API Key' }).click();
    await page.getByLabel('Selected workspaces').check();
    await settled(page);
    o = await overflow();
    t.ok(o.doc <= o.vw, `create dialog at 390 px: page ${o.doc} px wide in ${o.vw} px`);
    const box = await page.locator('#create-dialog').boundingBox();
    t.ok(box && box.x >= 0 && box.x + box.width <= 390, 'the dialog fits the screen');
    await page.locator('#create-dialog').screenshot({ path: join(SHOTS, 'narrow-390-create.png') });
    await page.keyboard.press('Escape');
    // the audit view re-loads on every visit: held, it is marked busy over the previous visit's rows
    let releaseAudit!: () => void;
    const auditHeld = new Promise<void>((r) => (releaseAudit = r));
    await page.route('**/api/audit?*', async (route) => {
      await auditHeld;
      await route.continue();
    });
    await page.getByRole('tab', { name: 'Audit log' }).click();
    t.equal(await page.locator('#audit').getAttribute('aria-busy'), 'true', 'the audit view is aria-busy while its rows load');
    releaseAudit();
    await page.locator('#audit[aria-busy="false"]').waitFor();
    await page.unroute('**/api/audit?*');
    t.pass('and not busy once they are in');
    o = await overflow();
    t.ok(o.doc <= o.vw, `audit tab at 390 px: page ${o.doc} px wide in ${o.vw} px`);
    t.equal(await page.locator('#audit-body tr').first().evaluate((tr) => getComputedStyle(tr).display), 'block', 'audit rows are cards');
    await page.screenshot({ path: join(SHOTS, 'narrow-390-audit.png'), fullPage: true });
    await page.goto(base + '/api-management');
    await row(page, 'ops-deployer').waitFor();
    o = await overflow();
    t.ok(o.doc <= o.vw, `API Management at 390 px: page ${o.doc} px wide in ${o.vw} px`);
    await page.screenshot({ path: join(SHOTS, 'narrow-390-management.png'), fullPage: true });
    // the one refused regenerate (grace 90000 s) is a 400 Chromium logs as a failed load
    t.same(problems.filter((p) => !/status of 400/.test(p)), [], 'no other console errors, CSP violations or requests elsewhere');
    t.equal(problems.length, 1, 'exactly that one 400');
  });

  // ------------------------------------------------------------ one set of rules: the key service's, every problem at its field
  t.test("validation: the key service's rules and messages, every problem at its field at once", async (t) => {
    const s = await startStack(t.testdir(), { adminToken: TOKEN });
    t.teardown(() => s.close());
    const base = s.gateway.adminUrl!;
    await s.key({ name: 'taken-name' });
    const { context, page, problems } = await newPage(base);
    t.teardown(() => closeOnce(() => context.close()));
    await page.goto(base + '/api-keys');
    await signIn(page);
    await row(page, 'taken-name').waitFor();
    await page.getByRole('button', { name: 'Create API Key' }).click();
    const dialog = page.getByRole('dialog', { name: 'Create API Key' });
    const yesterday = await page.evaluate(async () => (await import('/api-keys/assets/format.js' as string)).localDate(-1));

    // one wrong value in each field, typed as a person would; no submit
    await page.locator('#create-name').fill('taken-name');
    await dialog.getByLabel('Agents').check();
    await dialog.getByLabel('Agents').uncheck();
    await dialog.getByLabel('Rate limit (requests per minute)').fill('0');
    await dialog.getByLabel('Expiration (optional)').fill(yesterday);
    await dialog.getByLabel('Selected workspaces').check();
    await dialog.getByLabel('Grant 1 workspace').fill('all');
    await dialog.getByRole('button', { name: '+ Add workspace' }).click();
    await dialog.getByLabel('Grant 2 workspace').fill('ops');
    await dialog.getByRole('button', { name: '+ Add workspace' }).click();
    await dialog.getByLabel('Grant 3 workspace').fill('ops');
    for (const surface of ['REST API', 'MCP', 'A2A']) await dialog.getByLabel(surface).uncheck();
    await dialog.getByLabel('User-owned').check();
    await dialog.getByLabel('Owner user ID').fill(' ');
    await dialog.getByLabel('Owner user ID').blur();
    await settled(page);

    // what the key service itself says of the same input (in-process, not through the page)
    let service: { field: string; reason: string }[] = [];
    try {
      await s.gateway.keys.checkCreate({
        name: 'taken-name', scopes: [], rateLimit: 0, expiresAt: yesterday, role: 'viewer',
        workspaceAccess: { all: false, grants: [{ workspace: 'all', role: 'developer' }, { workspace: 'ops', role: 'developer' }, { workspace: 'ops', role: 'developer' }] },
        surfaces: [], attributionClass: 'user_owned', ownerUserId: '', description: '',
      });
    } catch (err) {
      service = [...(err as { errors: { field: string; reason: string }[] }).errors];
    }
    const reason = (field: string) => service.filter((e) => e.field === field).map((e) => e.reason);
    t.same(service.map((e) => e.field), ['scopes', 'workspaceAccess.grants[0].workspace', 'workspaceAccess.grants[2].workspace', 'surfaces', 'rateLimit', 'expiresAt', 'ownerUserId', 'name'], 'the service finds eight problems');
    const at = async (id: string) => (await page.locator(`#${id}`).isVisible() ? await page.locator(`#${id}`).textContent() : '(hidden)');
    t.equal(await at('create-name-error'), reason('name')[0], 'name: taken, as the service says');
    t.equal(await at('create-scopes-error'), reason('scopes')[0], 'scopes');
    t.equal(await at('create-rate-error'), reason('rateLimit')[0], 'rate limit');
    t.equal(await at('create-expires-error'), reason('expiresAt')[0], 'expiry');
    t.equal(await at('create-grants-error'), `Grant 1 workspace: ${reason('workspaceAccess.grants[0].workspace')[0]}\nGrant 3 workspace: ${reason('workspaceAccess.grants[2].workspace')[0]}`, 'grants: each grant its problem');
    t.equal(await at('create-surfaces-error'), reason('surfaces')[0], 'surfaces');
    t.equal(await at('create-owner-error'), reason('ownerUserId')[0], 'owner');
    t.equal(await page.locator('#create-form-error').textContent(), '', 'nothing left over at the form level');
    t.ok(await dialog.getByRole('button', { name: 'Create' }).isDisabled(), 'Create waits');
    const invalid = await page.locator('#create-form [aria-invalid="true"]').evaluateAll((els) => els.map((e: Json) => e.getAttribute('aria-label') ?? e.id));
    t.same(invalid.sort(), ['Grant 1 workspace', 'Grant 3 workspace', 'create-expires', 'create-name', 'create-owner', 'create-rate'].sort(), 'the invalid inputs are marked for assistive technology');
    await dialog.screenshot({ path: join(SHOTS, 'create-dialog-every-error.png') });

    // lengths too are the service's rule (the inputs set no maxlength of their own)
    await page.locator('#create-name').fill('n'.repeat(101));
    await dialog.getByLabel('Description (optional)').fill('d'.repeat(501));
    await settled(page);
    t.equal(await at('create-name-error'), 'must be at most 100 characters', 'a 101-character name: the service says so');
    t.equal(await at('create-description-error'), 'must be at most 500 characters', 'a 501-character description too');
    await dialog.getByLabel('Description (optional)').fill('');
    // each fixed in turn: its message goes, the others stay, until Create is enabled
    await page.locator('#create-name').fill('fresh-name');
    await settled(page);
    t.equal(await at('create-name-error'), '(hidden)', 'name fixed: its message is gone');
    t.equal(await at('create-rate-error'), reason('rateLimit')[0], 'the others stay');
    await dialog.getByLabel('Agents').check();
    await dialog.getByLabel('Rate limit (requests per minute)').fill('10');
    await dialog.getByLabel('Expiration (optional)').fill('');
    await dialog.getByLabel('Grant 1 workspace').fill('dev');
    await dialog.getByRole('button', { name: 'Remove grant 3' }).click();
    await dialog.getByLabel('MCP').check();
    await dialog.getByLabel('Owner user ID').fill('bob');
    await settled(page);
    t.ok(await dialog.getByRole('button', { name: 'Create' }).isEnabled(), 'every problem fixed: Create is enabled');
    await dialog.getByRole('button', { name: 'Create' }).click();
    await page.getByRole('dialog', { name: 'Copy your API key' }).waitFor();
    t.match(await s.gateway.keys.get('fresh-name'), { scopes: ['agents'], rateLimit: 10, surfaces: ['mcp'], ownerUserId: 'bob', workspaceAccess: { all: false, grants: [{ workspace: 'dev' }, { workspace: 'ops' }] } }, 'created as fixed');
    t.same(problems, [], 'no console errors');
  });

  // ------------------------------------------------------------ more keys than a page (the admin API pages at 100)
  t.test('250 keys: true counts in the header, Load more, server-side search and status filter, audit of a late key', async (t) => {
    const s = await startStack(t.testdir(), {
      adminToken: TOKEN,
      yaml: `keys:
  declared:
    - name: zz-legacy
      scopes: [agents]
      expires_at: "2020-01-01"
      secret: ${DECLARED_EXPIRED}
`,
    });
    t.teardown(() => s.close());
    const base = s.gateway.adminUrl!;
    const svc = s.gateway.keys;
    for (let i = 1; i <= 249; i++) await svc.create({ name: `svc-${String(i).padStart(3, '0')}`, scopes: ['workflows'] }, 'test');
    for (const i of ['030', '060', '090', '120', '150', '180', '210']) await svc.setActive(`svc-${i}`, false, 'test');
    const everyName = (await svc.list()).map((k) => k.name);
    t.equal(everyName.length, 250);

    const { context, page, problems } = await newPage(base);
    t.teardown(() => closeOnce(() => context.close()));
    const listCalls: URL[] = [];
    page.on('request', (r) => {
      if (r.url().includes('/api/v1/api-keys?')) listCalls.push(new URL(r.url()));
    });
    await page.goto(base + '/api-keys');
    await signIn(page);
    const rows = page.locator('#keys-body tr');
    await page.locator('#keys-more').waitFor();
    t.equal(await rows.count(), 100, 'the first page: 100 rows');
    const counts = async () => Object.fromEntries(await page.locator('#key-counts button').evaluateAll((bs) => bs.map((b: Json) => [b.textContent.replace(/^[\d,]+ /, ''), Number(b.dataset.count)])));
    t.same(await counts(), { All: 250, Active: 242, Inactive: 7, Expired: 1 }, 'the header counts every key, not the page');
    t.same(await counts(), { All: (await svc.counts()).total, Active: (await svc.counts()).active, Inactive: (await svc.counts()).inactive, Expired: (await svc.counts()).expired }, 'as the key service counts them');
    t.equal(await page.locator('#keys-shown').textContent(), 'Showing 100 of 250 keys');
    await page.screenshot({ path: join(SHOTS, 'many-keys-first-page.png') });

    await page.getByRole('button', { name: 'Load more' }).click();
    await page.waitForFunction(() => document.querySelectorAll('#keys-body tr').length === 200);
    t.equal(await page.locator('#keys-shown').textContent(), 'Showing 200 of 250 keys');
    t.equal(await page.evaluate(() => document.activeElement?.textContent), (await rows.nth(100).locator('.key-name').textContent()), 'focus moves to the first new row');
    await page.getByRole('button', { name: 'Load more' }).click();
    await page.waitForFunction(() => document.querySelectorAll('#keys-body tr').length === 250);
    t.ok(await page.locator('#keys-more').isHidden(), 'no Load more after the last page');
    t.equal(await page.locator('#keys-shown').textContent(), 'Showing 250 of 250 keys');
    const shownNames = await page.locator('#keys-body th .key-name').allTextContents();
    t.same(shownNames, everyName, 'every key is in the table, once, in the API order');

    // an action keeps what was loaded, and the counts follow
    await row(page, 'svc-249').getByRole('button', { name: 'Deactivate key svc-249' }).click();
    await row(page, 'svc-249').getByRole('button', { name: 'Activate key svc-249' }).waitFor();
    t.equal(await rows.count(), 250, 'after a change the table still shows every key it showed');
    // the header asks for the counts again after the action answered: wait for that answer (a hang guard), then compare
    const changed = { All: 250, Active: 241, Inactive: 8, Expired: 1 };
    for (let i = 0; i < 200 && JSON.stringify(await counts()) !== JSON.stringify(changed); i++) await sleep(100);
    t.same(await counts(), changed, 'counts follow the change');

    // search: asked of the server, finds keys on pages never loaded
    await page.reload();
    await page.locator('#keys-more').waitFor();
    listCalls.length = 0;
    await page.getByLabel('Search keys').fill('SVC-24');
    await page.waitForFunction(() => document.getElementById('keys-shown')?.textContent === 'Showing 10 of 10 matching keys');
    t.same(await page.locator('#keys-body th .key-name').allTextContents(), Array.from({ length: 10 }, (_, i) => `svc-24${i}`), 'the keys whose name contains the text, any case');
    t.ok(listCalls.some((u) => u.searchParams.get('q') === 'SVC-24'), 'the search went to the admin API as q');
    t.same(await counts(), { All: 250, Active: 241, Inactive: 8, Expired: 1 }, 'the header still counts every key');
    t.ok(await page.locator('#keys-more').isHidden());
    await page.screenshot({ path: join(SHOTS, 'many-keys-search.png') });
    const prefix = (await svc.get('svc-237')).prefix;
    await page.getByLabel('Search keys').fill(prefix);
    await page.waitForFunction(() => document.getElementById('keys-shown')?.textContent === 'Showing 1 of 1 matching key');
    t.same(await page.locator('#keys-body th .key-name').allTextContents(), ['svc-237'], 'a key prefix finds its key (one never loaded before)');
    // a search under way marks the keys view busy over the rows it will replace, as the audit view is
    let releaseList!: () => void;
    const listHeld = new Promise<void>((r) => (releaseList = r));
    await page.route('**/api/v1/api-keys?*', async (route) => {
      await listHeld;
      await route.continue();
    });
    await page.getByLabel('Search keys').fill('svc-24');
    await page.locator('#keys[aria-busy="true"]').waitFor({ state: 'attached' });
    t.pass('a search under way: the keys view is aria-busy');
    releaseList();
    await page.waitForFunction(() => document.getElementById('keys-shown')?.textContent === 'Showing 10 of 10 matching keys');
    await page.locator('#keys[aria-busy="false"]').waitFor({ state: 'attached' });
    await page.unroute('**/api/v1/api-keys?*');
    t.pass('and not busy once its rows are in');
    await page.getByLabel('Search keys').fill('no-such-key');
    await page.getByText('No key matches "no-such-key".').waitFor();
    t.ok(await page.locator('#keys-table-wrap').isHidden(), 'no table, a message instead');

    // status filter: the header counts are the buttons
    await page.getByRole('button', { name: 'Clear search and filter' }).click();
    await page.waitForFunction(() => document.getElementById('keys-shown')?.textContent === 'Showing 100 of 250 keys');
    await page.locator('#key-counts button', { hasText: 'Inactive' }).click();
    await page.waitForFunction(() => document.getElementById('keys-shown')?.textContent === 'Showing 8 of 8 matching keys');
    t.same(await page.locator('#keys-body td:nth-child(4)').allTextContents(), Array(8).fill('Inactive'), 'only inactive keys');
    t.equal(await page.locator('#key-counts button', { hasText: 'Inactive' }).getAttribute('aria-pressed'), 'true');
    await page.locator('#key-counts button', { hasText: 'Expired' }).click();
    await page.waitForFunction(() => document.getElementById('keys-shown')?.textContent === 'Showing 1 of 1 matching key');
    t.same(await page.locator('#keys-body th .key-name').allTextContents(), ['zz-legacy']);
    await page.getByLabel('Search keys').fill('svc');
    await page.getByText('No key matches "svc" and status expired.').waitFor();
    await page.locator('#key-counts button', { hasText: 'All' }).click();
    await page.waitForFunction(() => document.getElementById('keys-shown')?.textContent === 'Showing 100 of 249 matching keys');
    t.pass('search "svc" with every status: 249 matching, a page of them');

    // a key with more changes than a page: its details' trail goes on with Load older changes
    for (let i = 1; i <= 104; i++) await svc.update('svc-001', { rateLimit: 100 + i }, 'test');
    await page.getByLabel('Search keys').fill('svc-001');
    await page.waitForFunction(() => document.getElementById('keys-shown')?.textContent === 'Showing 1 of 1 matching key');
    await row(page, 'svc-001').getByRole('button', { name: 'Details of key svc-001' }).click();
    await page.locator('#details-audit li').nth(99).waitFor();
    t.equal(await page.locator('#details-audit li').count(), 100, "the key's 100 newest changes");
    await page.getByRole('button', { name: 'Load older changes' }).click();
    await page.waitForFunction(() => document.querySelectorAll('#details-audit li').length === 105);
    t.match(await page.locator('#details-audit li').last().textContent(), /create by test/, 'down to its creation');
    t.ok(await page.locator('#details-audit-more').isHidden(), 'then no more');
    await page.keyboard.press('Escape');
    await page.getByLabel('Search keys').fill('svc');
    await page.waitForFunction(() => document.getElementById('keys-shown')?.textContent === 'Showing 100 of 249 matching keys');

    // the audit tab: any key by name, not only the loaded ones
    await openView(page, 'Audit log');
    await page.getByLabel('Key', { exact: true }).fill('svc-249');
    await page.getByLabel('Key', { exact: true }).press('Enter');
    await page.waitForFunction(() => [...document.querySelectorAll('#audit-body tr td:nth-child(2)')].every((td: Json) => td.textContent === 'svc-249') && document.querySelectorAll('#audit-body tr').length > 0);
    t.same(await page.locator('#audit-body tr td:nth-child(3)').allTextContents(), ['deactivate', 'create'], "the key's own changes");
    await page.getByLabel('Key', { exact: true }).fill('svc-9999');
    await page.getByLabel('Key', { exact: true }).press('Enter');
    await page.getByText('No key is named "svc-9999".').waitFor();
    // every key's changes: more than a page of them, older ones by the API's cursor
    await page.getByLabel('Key', { exact: true }).fill('');
    await page.getByLabel('Key', { exact: true }).press('Enter');
    await page.waitForFunction(() => document.getElementById('audit-shown')?.textContent === 'Showing the 100 newest changes');
    const trail = await svc.auditTrail({ limit: 1000 });
    t.ok(trail.length > 250, `${trail.length} changes recorded`);
    while (await page.locator('#audit-more').isVisible()) {
      const before = await page.locator('#audit-body tr').count();
      await page.getByRole('button', { name: 'Load older' }).click();
      await page.waitForFunction((n) => document.querySelectorAll('#audit-body tr').length > n, before);
    }
    t.equal(await page.locator('#audit-shown').textContent(), `Showing the ${trail.length} newest changes (all)`);
    t.same(await page.locator('#audit-body tr td:nth-child(2)').allTextContents(), trail.map((r) => r.key_name), 'every change, newest first, down to the first key created');
    t.same(problems.filter((p) => !/status of 404/.test(p)), [], 'no console errors besides the one 404 of the unknown name');
  });

  t.test('API Management: MCP methods once with their verbs; REST grouped by resource, collapsed, searchable', async (t) => {
    const s = await startStack(t.testdir(), {
      adminToken: TOKEN,
      routes: `${ROUTES}  - { path: /mcp2, upstream: dagu, surface: mcp }\n  - { path: /mcp3, methods: [POST], upstream: dagu, surface: mcp }\n`,
    });
    t.teardown(() => s.close());
    const base = s.gateway.adminUrl!;
    const { context, page, problems } = await newPage(base);
    t.teardown(() => closeOnce(() => context.close()));
    await page.goto(base + '/api-management');
    await signIn(page);
    await page.locator('#panel-rest details.group').first().waitFor();
    const groups = await page.locator('#panel-rest details.group').evaluateAll((ds) => ds.map((d: Json) => [d.dataset.tag, d.open]));
    t.ok(groups.length >= 3, `${groups.length} groups`);
    t.ok(groups.every(([, open]) => open === false), 'every group collapsed by default');
    t.ok(groups.some(([tag]) => tag === 'dags'), 'a dags group');
    await page.getByLabel('Search REST examples').fill('start');
    const open = await page.locator('#panel-rest details.group:not([hidden])').evaluateAll((ds) => ds.map((d: Json) => [d.dataset.tag, d.open]));
    t.same(open, [['dags', true]], 'search: only the matching group, opened');
    t.match(await page.locator('#rest-search-status').textContent(), /^1 matching example$/);
    t.equal(await page.locator('#panel-rest figure:not([hidden])').count(), 1);
    await page.screenshot({ path: join(SHOTS, 'api-management-rest-search.png'), fullPage: true });
    await page.locator('#tabs').getByRole('tab', { name: 'MCP' }).click();
    const titles = await page.locator('#panel-mcp figcaption').allTextContents();
    t.same(titles, ['POST initialize', 'POST tools/list', 'POST tools/call', 'GET event stream', 'DELETE session'], 'each MCP method once, with its verb, though three MCP routes exist');
    const codes = await page.locator('#panel-mcp code').allTextContents();
    t.match(codes[3], /^curl "http:\/\/[^"]+\/mcp"/, 'GET without -X POST');
    t.match(codes[4], /^curl -X DELETE /);
    await page.screenshot({ path: join(SHOTS, 'api-management-mcp.png'), fullPage: true });
    t.same(problems, [], 'no console errors');
  });
});
