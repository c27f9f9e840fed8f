#!/usr/bin/env node
// Runs the tap suite and ends with the one line CI reads: "N passed, N failed, N skipped".
// tap's own summary ("# { total, pass, fail, skip }") is parsed from its output.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';

const tapBin = createRequire(import.meta.url).resolve('tap/package.json').replace(/package\.json$/, 'dist/esm/run.mjs');
const child = spawn(process.execPath, [tapBin, ...process.argv.slice(2)], { stdio: ['ignore', 'pipe', 'inherit'] });
let tail = '';
child.stdout.on('data', (chunk) => {
  process.stdout.write(chunk);
  tail = (tail + chunk.toString('utf8')).slice(-4096);
});
child.on('close', (code) => {
  const m = /# \{ total: (\d+)(?:, pass: (\d+))?(?:, fail: (\d+))?(?:, todo: \d+)?(?:, skip: (\d+))?/.exec(tail);
  if (!m) {
    console.log(`\ntap printed no summary (exit ${code})`);
    console.log('0 passed, 1 failed');
    process.exit(code || 1);
  }
  const [pass, fail, skip] = [m[2], m[3], m[4]].map((v) => Number(v ?? 0));
  const failed = fail + (code !== 0 && fail === 0 ? 1 : 0);
  console.log(`\n${pass} passed, ${failed} failed, ${skip} skipped`);
  process.exit(code ?? 1);
});
