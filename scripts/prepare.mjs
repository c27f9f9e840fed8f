#!/usr/bin/env node
// npm's `prepare` (run by `npm ci` / `npm install` in the checkout): compile src/ to dist/ with
// TypeScript, a dev dependency. Under `npm ci --omit=dev` TypeScript is not installed: a dist/
// compiled before (`npm ci`, then `npm prune --omit=dev`) is used as it is; without one, say what to do.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

let tsc;
try {
  tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
} catch {
  if (existsSync(new URL('../dist/cli.js', import.meta.url))) {
    console.log('keygate: TypeScript is not installed (dev dependencies omitted); using the compiled dist/');
    process.exit(0);
  }
  console.error('keygate: dist/ is not built and TypeScript is not installed (dev dependencies omitted).');
  console.error('keygate: run `npm ci` (with dev dependencies) to build, then `npm prune --omit=dev` to drop them.');
  process.exit(1);
}
const r = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { stdio: 'inherit', cwd: new URL('..', import.meta.url) });
process.exit(r.status ?? 1);
