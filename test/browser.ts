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
