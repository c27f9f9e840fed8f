// The log destination (src/log-file.ts): every line arrives once and in order while writes are in
// flight, flush() waits for them, logrotate's move + reopen loses nothing, a broken destination
// costs lines but never the process, and lines pending at exit are written before it ends.

import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { LogFile } from '../src/log-file.js';

const flushed = (f: LogFile) => new Promise<void>((resolve) => f.flush(() => resolve()));

t.test('lines written in bursts arrive once, in order, UTF-8 intact', async (t) => {
  const file = join(t.testdir(), 'a.log');
  const f = new LogFile(file);
  const lines: string[] = [];
  for (let turn = 0; turn < 50; turn++) {
    // several lines per turn, most while the previous write is still in flight
    for (let i = 0; i < 40; i++) {
      const line = `{"n":${turn * 40 + i},"ua":"naïve—ü 🚀 ${'x'.repeat(i * 7)}"}\n`;
      lines.push(line);
      f.write(line);
    }
    await new Promise((r) => setImmediate(r));
  }
  await flushed(f);
  t.equal(readFileSync(file, 'utf8'), lines.join(''), `${lines.length} lines, byte for byte`);
  f.end();
});

t.test('a quiet log writes a line at once; lines within 10 ms of the last write go together; flush() does not wait', async (t) => {
  const file = join(t.testdir(), 'gap.log');
  const f = new LogFile(file);
  const state = f as unknown as { inFlight: unknown; gap: unknown; lastWriteAt: number };
  f.write('one\n');
  t.not(state.inFlight, undefined, 'the first line is being written at once');
  await flushed(f);
  state.lastWriteAt = performance.now(); // as if that write had just begun (a slow machine may take 10 ms to get here)
  f.write('two\n');
  f.write('three\n');
  t.equal(state.inFlight, undefined, 'right after a write, the next lines wait…');
  t.not(state.gap, undefined, '…for the 10 ms since it began');
  let text = '';
  for (let i = 0; i < 400 && text !== 'one\ntwo\nthree\n'; i++) {
    await new Promise((r) => setTimeout(r, 5));
    text = readFileSync(file, 'utf8');
  }
  t.equal(text, 'one\ntwo\nthree\n', 'then written together');
  f.write('four\n');
  await flushed(f);
  t.equal(readFileSync(file, 'utf8'), 'one\ntwo\nthree\nfour\n', 'flush() writes what waits without waiting for the gap');
  f.end();
});

t.test('logrotate: move the file away, reopen, and the next lines go to a new file; none lost', async (t) => {
  const dir = t.testdir();
  const file = join(dir, 'access.log');
  const f = new LogFile(file);
  const all: string[] = [];
  for (let i = 0; i < 2000; i++) {
    const line = `line ${i}\n`;
    all.push(line);
    f.write(line);
    if (i === 1000) {
      renameSync(file, join(dir, 'access.log.1'));
      f.reopen(); // a write is in flight now: it ends in the old file, the rest goes to the new one
    }
    if (i % 100 === 0) await new Promise((r) => setImmediate(r));
  }
  await flushed(f);
  const old = readFileSync(join(dir, 'access.log.1'), 'utf8');
  const fresh = readFileSync(file, 'utf8');
  t.ok(fresh.length > 0, 'the new file has lines');
  t.equal(old + fresh, all.join(''), 'old file then new file: every line once, in order');
  f.end();
});

t.test('a destination that fails (disk full) costs its lines, not the process; later writes go on', { skip: existsSync('/dev/full') ? false : 'no /dev/full here' }, async (t) => {
  const f = new LogFile('/dev/full');
  const told: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string) => (told.push(String(chunk)), true)) as typeof process.stderr.write;
  try {
    for (let i = 0; i < 100; i++) f.write(`line ${i}\n`);
    await flushed(f);
    f.write('more\n');
    await flushed(f);
  } finally {
    process.stderr.write = write;
  }
  t.equal(told.length, 1, 'told once on stderr, not per line');
  t.match(told[0], /log lines could not be written to \/dev\/full \(.*ENOSPC/);
  f.end();
});

t.test('lines pending when the process exits are written before it ends', async (t) => {
  const file = join(t.testdir(), 'exit.log');
  const dist = new URL('../src/log-file.ts', import.meta.url).pathname;
  const script = `
    const { LogFile } = await import(${JSON.stringify(dist)});
    const f = new LogFile(${JSON.stringify(file)});
    for (let i = 0; i < 5000; i++) f.write('line ' + i + '\\n');
    process.exit(0);
  `;
  const r = spawnSync(process.execPath, [...process.execArgv, '--input-type=module', '-e', script], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
  t.equal(new Set(lines).size, 5000, 'all 5000 lines, each once');
});

t.test('stdout as a non-blocking pipe whose reader is slow: every line arrives (EAGAIN is waited out)', async (t) => {
  const dist = new URL('../src/log-file.ts', import.meta.url).pathname;
  const script = `
    process.stdout.write(''); // node now holds fd 1 as a non-blocking pipe: a full pipe answers EAGAIN
    const { LogFile } = await import(${JSON.stringify(dist)});
    const f = new LogFile(1);
    for (let i = 0; i < 20000; i++) f.write('stdout line ' + i + ' ' + 'y'.repeat(100) + '\\n');
    f.flush(() => process.exit(0));
  `;
  const child = spawn(process.execPath, [...process.execArgv, '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pause(); // nobody reads for a while: the pipe fills
  await new Promise((r) => setTimeout(r, 700));
  const chunks: Buffer[] = [];
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d));
  child.stdout.on('data', (d: Buffer) => chunks.push(d));
  child.stdout.resume();
  const [code] = (await once(child, 'close')) as [number];
  t.equal(code, 0, err);
  const lines = Buffer.concat(chunks).toString('utf8').split('\n').filter(Boolean);
  t.equal(lines.length, 20000, 'every line');
  t.equal(lines[19999], `stdout line 19999 ${'y'.repeat(100)}`, 'the last one whole');
});
