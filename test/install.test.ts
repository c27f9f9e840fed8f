// Installing Keygate on a host as README's "systemd" section says: its commands, run as written on a
// clean copy of the checkout (paths under a temporary directory; no sudo, no system user, no
// systemctl), then the unit's own ExecStartPre/ExecStart lines from the installed copy. Also: the
// key store's files are private, and the unit's sandbox rating.

import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { request } from 'undici';
import { SqliteKeyStore } from '../src/keys/sqlite-store.js';
import { CHILD_ENV, spawnKeygate } from './binary.js';

// npm ci, a TypeScript build and npm prune under a loaded machine: more than .taprc's 180 s per file
t.setTimeout(900_000);

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const mode = (f: string) => (statSync(f).mode & 0o777).toString(8);
const SYSTEMD_ANALYZE = spawnSync('sh', ['-c', 'command -v systemd-analyze'], { encoding: 'utf8' }).stdout.trim();

t.test('the SQLite key store is created 0600, its -wal and -shm too', async (t) => {
  const old = process.umask(0o022); // the usual umask, which alone would leave the files world-readable
  t.teardown(() => void process.umask(old));
  const dir = t.testdir();
  const file = join(dir, 'keygate.db');
  const store = new SqliteKeyStore(file);
  await store.addUsage(new Map(), 'mode-test'); // a write: WAL and shared-memory files exist now
  for (const f of [file, `${file}-wal`, `${file}-shm`]) t.equal(mode(f), '600', basename(f));
  await store.close();
});

/** The first ```sh block after `marker` in README.md, one command a line. */
function readmeCommands(marker: string): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const at = readme.indexOf(marker);
  const block = /```sh\n([\s\S]*?)```/.exec(readme.slice(at))![1]!;
  return block.split('\n').filter((l) => l.trim() !== '');
}

t.test("README's systemd install, as written: npm ci, prune, config, check; then the unit's commands serve", { timeout: 900_000 }, async (t) => {
  // outside the checkout (t.testdir() is inside it, and the checkout is copied)
  const tmp = mkdtempSync(join(tmpdir(), 'keygate-install-'));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
  // where the commands' absolute paths go
  const paths: Array<[string, string]> = [
    ['/opt/keygate', join(tmp, 'opt/keygate')],
    ['/etc/keygate', join(tmp, 'etc/keygate')],
    ['/var/lib/keygate', join(tmp, 'var/lib/keygate')],
    ['/etc/systemd/system', join(tmp, 'etc/systemd/system')],
  ];
  const local = (s: string) => paths.reduce((acc, [from, to]) => acc.replaceAll(from, to), s);
  mkdirSync(join(tmp, 'opt'));
  mkdirSync(join(tmp, 'etc/systemd/system'), { recursive: true });
  mkdirSync(join(tmp, 'var/lib'), { recursive: true });
  // a clean checkout: the project's files, no node_modules, build output or test results
  const checkout = join(tmp, 'checkout');
  const skip = new Set(['node_modules', 'dist', '.tap', 'data', '.git', 'coverage', 'gateway.yaml']);
  cpSync(ROOT, checkout, { recursive: true, filter: (src) => src === ROOT || !skip.has(src.slice(ROOT.length).split('/')[0]!) });

  const commands = readmeCommands('**systemd.**');
  t.match(commands.join('\n'), /npm ci[^\n]*\n[^\n]*npm prune --omit=dev/, 'the install builds, then drops the dev dependencies');
  const script = commands
    .flatMap((line) => line.split(' && ')) // one step at a time, so a skipped step is only that step
    .filter((step) => !/\b(useradd|systemctl)\b/.test(step)) // no system user or service manager here
    .map((step) =>
      local(step)
        .replace(/^sudo -u keygate /, '')
        .replace(/^sudo /, '')
        .replace(/\| sudo /g, '| ')
        .replace(/ -o keygate| -g keygate/g, ''),
    );
  t.ok(script.length >= 10, `${script.length} steps run`);
  // better-sqlite3: the addon this checkout compiled, as a local prebuilt binary, so npm ci need not compile it again
  const prebuilds = join(tmp, 'prebuilds');
  mkdirSync(prebuilds);
  const bsq = join(ROOT, 'node_modules/better-sqlite3');
  const { version } = JSON.parse(readFileSync(join(bsq, 'package.json'), 'utf8')) as { version: string };
  execFileSync('tar', ['-czf', join(prebuilds, `better-sqlite3-v${version}-node-v${process.versions.modules}-${process.platform}-${process.arch}.tar.gz`), '-C', bsq, 'build/Release/better_sqlite3.node']);
  const env = { ...CHILD_ENV, npm_config_better_sqlite3_local_prebuilds: prebuilds, npm_config_prefer_offline: 'true', npm_config_update_notifier: 'false' };
  const run = spawnSync('bash', ['-euxo', 'pipefail', '-c', script.join('\n')], { cwd: checkout, env, encoding: 'utf8', maxBuffer: 64 << 20 });
  t.equal(run.status, 0, `the README's commands ran (exit ${run.status})\n${run.stderr.slice(-4000)}`);
  if (run.status !== 0) return;

  const app = join(tmp, 'opt/keygate');
  t.ok(existsSync(join(app, 'dist/cli.js')), 'dist/ was built');
  t.notOk(existsSync(join(app, 'node_modules/typescript')), 'and the dev dependencies are gone');
  t.match(run.stdout, /OK/, '`keygate check` passed on the copied example config (its route maps found in the package)');
  t.equal(mode(join(tmp, 'etc/keygate/keygate.env')), '600', 'the environment file is private');
  t.equal(mode(join(tmp, 'var/lib/keygate')), '700', 'and so is the data directory');

  // npm's prepare without the dev dependencies: fine with the compiled dist/, a clear message without
  const prep = spawnSync(process.execPath, [join(app, 'scripts/prepare.mjs')], { encoding: 'utf8', env: CHILD_ENV });
  t.equal(prep.status, 0, `prepare after the prune: ${prep.stdout}${prep.stderr}`);
  rmSync(join(app, 'dist/cli.js'));
  const noDist = spawnSync(process.execPath, [join(app, 'scripts/prepare.mjs')], { encoding: 'utf8', env: CHILD_ENV });
  t.equal(noDist.status, 1, 'without dist/ and TypeScript, prepare fails …');
  t.match(noDist.stderr, /run `npm ci` \(with dev dependencies\) to build, then `npm prune --omit=dev`/, '… saying what to do (not "tsc: not found")');
  execFileSync('cp', [join(ROOT, 'dist/cli.js'), join(app, 'dist/cli.js')]);

  // the unit's commands, with its working directory and environment file
  const unit = readFileSync(join(tmp, 'etc/systemd/system/keygate.service'), 'utf8');
  const setting = (name: string) => local(new RegExp(`^${name}=(.*)$`, 'm').exec(unit)![1]!);
  const envFile = setting('EnvironmentFile').replace(/^-/, '');
  // what README says to add next; free ports for this test
  writeFileSync(envFile, `${readFileSync(envFile, 'utf8')}KEYGATE_PORT=0\nKEYGATE_ADMIN_PORT=0\nDAGU_URL=http://127.0.0.1:1\n`);
  const unitEnv = Object.fromEntries(
    readFileSync(envFile, 'utf8')
      .split('\n')
      .filter((l) => /^[A-Z_]+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
  t.match(unitEnv['KEYGATE_ADMIN_TOKEN'], /^[0-9a-f]{64}$/, 'the admin token README generated');
  const [pre0, pre1, preBin, ...preArgs] = setting('ExecStartPre').split(' ');
  t.same([pre0, pre1], ['/usr/bin/env', 'node']);
  const check = spawnSync(process.execPath, [preBin!, ...preArgs], { cwd: setting('WorkingDirectory'), env: { ...CHILD_ENV, ...unitEnv }, encoding: 'utf8' });
  t.equal(check.status, 0, `ExecStartPre: ${check.stdout}${check.stderr}`);
  const [, , bin, ...args] = setting('ExecStart').split(' ');
  const gw = spawnKeygate(t, args, { bin: bin!, cwd: setting('WorkingDirectory'), env: unitEnv });
  const started = await gw.waitFor(/"url":"(http:\/\/[^"]+)"/);
  t.ok(started, `ExecStart serves: ${gw.output()}`);
  if (started) {
    const r = await request(`${started[1]!.replace('0.0.0.0', '127.0.0.1')}/_keygate/readyz`);
    t.equal(r.statusCode, 200, 'ready: the key store opened');
    await r.body.dump();
    const db = join(tmp, 'var/lib/keygate/keygate.db');
    t.equal(mode(db), '600', 'the key database is private to the service user');
    gw.child.kill('SIGTERM');
    t.equal(await gw.exited, 0, 'and stops cleanly on SIGTERM');
  }
});

t.test('the unit is sandboxed: systemd-analyze security rates it 2.0 or less, "OK"', { skip: SYSTEMD_ANALYZE ? false : 'systemd-analyze is not installed: the unit is not rated here' }, async (t) => {
  const rating = spawnSync(SYSTEMD_ANALYZE, ['security', '--offline=yes', join(ROOT, 'deploy/keygate.service')], { encoding: 'utf8' });
  const overall = /Overall exposure level for keygate\.service: ([0-9.]+) (\w+)/.exec(rating.stdout + rating.stderr);
  t.ok(overall, `systemd-analyze security rated the unit: ${rating.stdout.slice(-300)}${rating.stderr}`);
  if (overall) {
    t.ok(Number(overall[1]) <= 2.0, `exposure ${overall[1]} ≤ 2.0`);
    t.equal(overall[2], 'OK');
  }
});

t.test('README runs the CLI from the checkout, never with a bare `npx keygate`', async (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const blocks = [...readme.matchAll(/```(?:sh|bash)?\n([\s\S]*?)```/g)].map((m) => m[1]!).join('\n');
  t.notMatch(blocks, /\bnpx keygate\b/, 'no command runs `npx keygate` (it could fetch a stranger\'s package)');
  t.match(blocks, /\.\/bin\/keygate /, 'commands use ./bin/keygate');
  const v = spawnSync(join(ROOT, 'bin/keygate'), ['--version'], { encoding: 'utf8', env: CHILD_ENV });
  t.match(v.stdout, /^keygate \d+\.\d+\.\d+/, './bin/keygate runs');
});
