// Chromium for the key page's tests (page, page-quota, page-groups): Debian's /usr/bin/chromium driven
// by playwright-core, its flags for this closed network, where screenshots go, and why the browser
// tests are skipped when either is missing.

import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
export const SHOTS = fileURLToPath(new URL('../.tap/screenshots/page/', import.meta.url));
/** the probe's flags for Chromium on this closed network; launch() gives a fresh profile each time */
export const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

async function loadPlaywright(): Promise<typeof import('playwright-core') | string> {
  if (!existsSync(CHROMIUM)) return `Chromium not found at ${CHROMIUM} (install Debian's chromium: apt-get install -y chromium; .ci/run does)`;
  try {
    return await import('playwright-core');
  } catch (err) {
    return `playwright-core cannot be loaded (${(err as Error).message}); run npm install`;
  }
}

/** playwright-core, or why the browser tests are skipped */
export const pw = await loadPlaywright();
/** a tap `skip` value: false, or the reason */
export const skip = typeof pw === 'string' ? pw : false;

/**
 * Clicks a view's tab and waits until that view has loaded. The audit and groups views re-load their
 * rows on every visit and mark themselves `aria-busy` meanwhile; reading rows before that would read
 * the previous visit's, about to be replaced (a detached row has no computed style at all).
 */
export async function openView(page: import('playwright-core').Page, tab: 'Keys' | 'Groups' | 'Audit log'): Promise<void> {
  await page.getByRole('tab', { name: tab }).click();
  const id = tab === 'Audit log' ? 'audit' : tab.toLowerCase();
  await page.locator(`#${id}:not([hidden]):not([aria-busy="true"])`).waitFor({ state: 'attached' });
}
