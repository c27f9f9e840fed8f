// The key page's screenshot step for the lead's before/after note: the keys table, then the details
// drawer of one key. Kept apart so the same step can run against an older build of the page (the
// "before" of a change), which knows nothing of the tests written since.

import { join } from 'node:path';
import type { Page } from 'playwright-core';

type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any
declare const document: Json;

/** Saves `<prefix>-keys-table.png` (full page) and `<prefix>-key-details.png` (the drawer of `key`). */
export async function keyListAndDetails(page: Page, dir: string, prefix: string, key: string): Promise<void> {
  await page.locator('#keys-body tr', { hasText: key }).waitFor();
  await page.screenshot({ path: join(dir, `${prefix}-keys-table.png`), fullPage: true });
  await page.getByRole('button', { name: `Details of key ${key}` }).click();
  await page.waitForFunction((n: string) => document.getElementById('details-title')?.textContent === n && document.querySelectorAll('#usage-chart svg').length === 1, key);
  await page.screenshot({ path: join(dir, `${prefix}-key-details.png`) });
  await page.locator('#details-close').click();
}
