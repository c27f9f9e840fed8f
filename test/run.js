#!/usr/bin/env node
// Runs the tap suite and prints one line per test file as it finishes ("[12/96] ✔ test/x.test.ts
// 49 passed (14.5 s)"), the same on a terminal and in a CI log, where a live display would only print
// at the end. Then it reads the raw TAP that tap saves per test file (.tap/test-results) and ends with
// the failures, one a line, and the one line CI reads: "N passed, N failed, N skipped".
//
// Counted: every assertion (a leaf test point) by its result; a subtest that failed without a failing
// assertion of its own (a timeout, a thrown error, a wrong plan) counts as one failure; a test file
// that printed no TAP or ended badly, or tap exiting non-zero with nothing failed, counts as one too.
// `npm test -- --reporter=X` hands the output to tap's own reporter X instead.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, relative } from 'node:path';
import { Parser } from 'tap-parser';

const RESULTS = '.tap/test-results';
const tapBin = createRequire(import.meta.url).resolve('tap/package.json').replace(/package\.json$/, 'dist/esm/run.mjs');
const args = process.argv.slice(2);
const ownReporter = args.some((a) => a.startsWith('--reporter') || a.startsWith('-R'));
// Stale results of a test file that is gone (or was not run this time) must not be counted.
rmSync(RESULTS, { recursive: true, force: true });
const env = process.stdout.isTTY ? process.env : { ...process.env, CI: process.env.CI || 'true' };
const child = spawn(process.execPath, [tapBin, ...(ownReporter ? [] : ['--reporter=tap']), ...args], {
  stdio: ['ignore', ownReporter ? 'inherit' : 'pipe', 'inherit'],
  env,
});
if (!ownReporter) progress(child.stdout);

/** One line per finished test file, read from tap's own TAP stream (files are its top-level points). */
function progress(stream) {
  const top = new Parser();
  let planned = '?';
  let done = 0;
  top.on('plan', (p) => (planned = String(p.end)));
  top.on('assert', (a) => {
    done++;
    const file = a.name;
    const tally = { pass: 0, fail: 0, skip: 0 };
    const fails = [];
    const saved = join(RESULTS, `${file}.tap`);
    if (existsSync(saved)) count(file, readFileSync(saved, 'utf8'), tally, fails);
    const secs = a.time ? ` (${(a.time / 1000).toFixed(1)} s)` : '';
    const what = `${tally.pass} passed${tally.fail ? `, ${tally.fail} failed` : ''}${tally.skip ? `, ${tally.skip} skipped` : ''}`;
    console.log(`[${done}/${planned}] ${a.ok && !tally.fail ? '✔' : '✖'} ${file}  ${what}${secs}`);
    for (const f of fails.slice(0, 5)) console.log(`      ✖ ${f}`);
    if (fails.length > 5) console.log(`      … and ${fails.length - 5} more (listed at the end)`);
  });
  stream.pipe(top);
}

child.on('close', (code, signal) => {
  const totals = { pass: 0, fail: 0, skip: 0 };
  const failures = [];
  const files = existsSync(RESULTS) ? walk(RESULTS).filter((f) => f.endsWith('.tap')) : [];
  for (const file of files.sort()) count(relative(RESULTS, file).replace(/\.tap$/, ''), readFileSync(file, 'utf8'), totals, failures);
  if (files.length === 0) failures.push(`no test results in ${RESULTS} (tap exited ${code ?? signal})`);
  if (code !== 0 && failures.length === 0) failures.push(`tap exited ${code ?? signal} with no failed test`);
  console.log('');
  if (failures.length) {
    console.log(`Failures (${failures.length}):`);
    for (const f of failures) console.log(`  ✖ ${f}`);
  }
  // failures beyond the counted ones are the runner's own (no results, tap's exit status)
  console.log(`${totals.pass} passed, ${Math.max(totals.fail, failures.length)} failed, ${totals.skip} skipped`);
  process.exit(code === 0 && failures.length === 0 ? 0 : code || 1);
});

function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(dir, e.name)) : [join(dir, e.name)]));
}

/** Count one file's TAP into `totals`; each failure's "file > subtest > assertion" into `failures`. */
function count(file, tap, totals, failures) {
  const before = totals.fail;
  const parser = new Parser();
  watch(parser, [file]);
  let final;
  parser.on('complete', (r) => (final = r));
  parser.end(tap);
  if (final && !final.ok && totals.fail === before) {
    totals.fail++;
    failures.push(`${file}: ${final.bailout ? `bailed out: ${final.bailout}` : 'ended without passing (plan or exit)'}`);
  }

  function watch(p, path) {
    let sub; // the subtest whose summary point comes next, and how many failures were counted inside it
    p.on('child', (c) => {
      sub = { failsBefore: totals.fail };
      watch(c, [...path, c.name.replace(/^Subtest: /, '')]);
    });
    p.on('assert', (a) => {
      const isSummary = sub !== undefined;
      const failsInside = isSummary ? totals.fail - sub.failsBefore : 0;
      sub = undefined;
      const name = [...path, a.name || `#${a.id}`].join(' > ');
      if (a.skip || a.todo) {
        if (!isSummary) totals.skip++;
      } else if (a.ok) {
        if (!isSummary) totals.pass++;
      } else if ((!isSummary || failsInside === 0) && !failures.some((f) => f === name || f.startsWith(`${name} > `))) {
        // (tap reports a timed-out subtest again when it finally ends: one failure, not two)
        totals.fail++;
        failures.push(name);
      }
    });
  }
}
