// What ships runs: the npm package (npm pack's file list) and the Dockerfile's runtime stage (its
// COPY lines), each laid out in a fresh directory and started for real — without npm install or a
// Docker engine: node_modules is linked from this checkout (the same dependencies both would get).

import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { request } from 'undici';
import { CHILD_ENV, spawnKeygate } from './binary.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** Start `app/bin/keygate.js serve` on a small config in `data`; the key page, readyz and check must work. */
async function serveFrom(t: Test, app: string, data: string): Promise<void> {
  const bin = join(app, 'bin/keygate.js');
  const help = execFileSync(process.execPath, [bin, '--help'], { env: CHILD_ENV, encoding: 'utf8' });
  t.match(help, /Usage: keygate <command>/, '--help');
  const example = execFileSync(process.execPath, [bin, 'check', '-c', join(app, 'gateway.example.yaml')], { env: CHILD_ENV, encoding: 'utf8' });
  t.match(example, /OK/, 'the shipped example config checks (its route maps are there)');
  mkdirSync(data, { recursive: true });
  const cfg = join(data, 'gateway.yaml');
  writeFileSync(cfg, 'listen: { host: 127.0.0.1, port: 0 }\nadmin: { port: 0 }\nstore: { keys: "sqlite:./k.db" }\nupstreams: [{ name: up, api_base_url: "http://127.0.0.1:1" }]\nroutes: [{ path: /x, upstream: up }]\n');
  const gw = spawnKeygate(t, ['serve', '-c', cfg], { cwd: data, bin });
  const started = await gw.waitFor(/"url":"(http:\/\/[^"]+)","admin_url":"(http:\/\/[^"]+)"/);
  t.ok(started, `started: ${gw.output()}`);
  if (!started) return;
  const [, url, admin] = started;
  const get = async (u: string) => {
    const r = await request(u);
    return { status: r.statusCode, type: String(r.headers['content-type']), body: await r.body.text() };
  };
  t.match(await get(`${url}/_keygate/readyz`), { status: 200 }, 'ready');
  const page = await get(`${admin}/api-keys`);
  t.match(page, { status: 200, type: /text\/html/ }, 'the key page');
  const script = /src="([^"]+\.js)"/.exec(page.body)?.[1];
  t.ok(script, 'which loads a script');
  if (script) t.match(await get(new URL(script, `${admin}/api-keys`).href), { status: 200, type: /javascript/ }, `and ${script} is there`);
  gw.child.kill('SIGTERM');
  t.equal(await gw.exited, 0, 'stops cleanly');
}

t.test('the npm package: what npm pack ships is enough to run', async (t) => {
  const dir = t.testdir();
  const [packed] = JSON.parse(execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', dir], { cwd: ROOT, encoding: 'utf8', env: CHILD_ENV })) as [{ filename: string; files: { path: string }[] }];
  const files = packed.files.map((f) => f.path);
  t.ok(files.includes('dist/cli.js'), 'the compiled code is in the package');
  t.notOk(files.some((f) => f.startsWith('test/') || f.startsWith('.tap/') || f.startsWith('data/')), 'no tests, test fixtures or data');
  execFileSync('tar', ['-xzf', join(dir, packed.filename), '-C', dir]);
  const app = join(dir, 'package');
  symlinkSync(join(ROOT, 'node_modules'), join(app, 'node_modules'));
  await serveFrom(t, app, join(dir, 'data'));
});

t.test("the Dockerfile's runtime stage: its COPY lines bring everything serving needs", async (t) => {
  const lines = readFileSync(join(ROOT, 'Dockerfile'), 'utf8').split('\n');
  const runStage = lines.slice(lines.map((l) => l.startsWith('FROM ')).lastIndexOf(true));
  t.ok(runStage.some((l) => /^WORKDIR \/app$/.test(l)), 'the runtime stage works in /app');
  const dir = t.testdir();
  const root = join(dir, 'root'); // the image's / (WORKDIR /app)
  const app = join(root, 'app');
  mkdirSync(app, { recursive: true });
  for (const line of runStage) {
    const m = /^COPY (--from=build )?(\S+(?: \S+)*) (\S+)$/.exec(line);
    if (!m) continue;
    const [, fromBuild, sources, dest] = m;
    for (const src of sources!.split(' ')) {
      // the build stage's /app is this checkout after npm ci + build (node_modules linked, not copied)
      const from = join(ROOT, fromBuild ? src.replace(/^\/app\//, '') : src);
      const base = dest!.startsWith('/') ? root : app;
      const to = dest!.endsWith('/') ? join(base, dest!, src.split('/').pop()!) : join(base, dest!);
      t.ok(existsSync(from), `${line}: ${src} exists`);
      mkdirSync(dirname(to), { recursive: true });
      if (src.endsWith('node_modules')) symlinkSync(from, to);
      else cpSync(from, to, { recursive: true });
    }
  }
  await serveFrom(t, app, join(dir, 'data'));

  // the image as it starts: its CMD on the config it ships, its ENV, the volume, its HEALTHCHECK
  const volume = /^VOLUME \["([^"]+)"\]$/m.exec(runStage.join('\n'))![1]!;
  mkdirSync(join(root, volume), { recursive: true, mode: 0o700 });
  const mapped = (v: string) => v.replace(/\/(var|etc)\//g, `${root}/$1/`);
  const imageEnv = Object.fromEntries(runStage.flatMap((l) => /^ENV (\w+)=(\S+)$/.exec(l)?.slice(1, 3) ?? []).reduce<string[][]>((acc, v, i) => (i % 2 ? acc[acc.length - 1]!.push(mapped(v)) : acc.push([v]), acc), []));
  t.match(imageEnv.KEYGATE_STORE_KEYS, new RegExp(`^sqlite:${root}${volume}/`), 'the image points the key store into the volume');
  const cmd = JSON.parse(/^CMD (\[.*\])$/m.exec(runStage.join('\n'))![1]!) as string[];
  const user = /^USER (\S+)$/m.exec(runStage.join('\n'))?.[1];
  t.ok(user && user !== 'root' && user !== '0', `runs as a non-root user (${user})`);
  const env = { ...imageEnv, KEYGATE_PORT: '0', KEYGATE_ADMIN_PORT: '0', KEYGATE_ADMIN_TOKEN: 'admin-token-for-the-image-test' }; // free ports here
  const gw = spawnKeygate(t, cmd.map(mapped), { bin: join(app, 'bin/keygate.js'), cwd: app, env });
  const started = await gw.waitFor(/"url":"http:\/\/[^"]+:(\d+)"/);
  t.ok(started, `the image's CMD serves its default config: ${gw.output()}`);
  if (!started) return;
  t.equal((statSync(join(root, volume, 'keygate.db')).mode & 0o777).toString(8), '600', 'the key database is in the volume, private');
  const check = JSON.parse(/^HEALTHCHECK .* CMD (\[.*\])$/m.exec(runStage.join('\n'))![1]!) as string[];
  t.equal(check[0], 'node');
  const probe = (port: string) => spawnSync(process.execPath, check.slice(1), { env: { ...CHILD_ENV, ...imageEnv, KEYGATE_PORT: port }, encoding: 'utf8' }).status;
  t.equal(probe(started[1]!), 0, 'HEALTHCHECK passes: /_keygate/readyz on the port the gateway listens on');
  gw.child.kill('SIGTERM');
  t.equal(await gw.exited, 0);
  t.equal(probe(started[1]!), 1, 'and fails once it is gone');
});

t.test('one Node.js version for the image, and it is a line CI tests and README states', async (t) => {
  const docker = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
  const arg = /^ARG NODE_VERSION=(\d+)$/m.exec(docker);
  t.ok(arg, 'ARG NODE_VERSION=<major> before the stages');
  const froms = docker.split('\n').filter((l) => l.startsWith('FROM '));
  t.ok(froms.length >= 2 && froms.every((l) => l.startsWith('FROM node:${NODE_VERSION}-')), 'every stage starts from node:${NODE_VERSION}');
  t.notMatch(docker.replace(/^ARG NODE_VERSION=\d+$/m, ''), /node:\d/, 'no other version written anywhere');
  const ci = readFileSync(join(ROOT, '.ci/run'), 'utf8');
  const lines = /KEYGATE_CI_NODE_LINES-([\d ]+)\}/.exec(ci)?.[1]?.split(' ') ?? [];
  t.ok(lines.includes(arg?.[1] ?? '-'), `CI tests Node ${arg?.[1]} (extra lines: ${lines.join(', ')})`);
  t.match(readFileSync(join(ROOT, 'README.md'), 'utf8'), new RegExp(`Supported Node\\.js lines: 20, 24 and ${arg?.[1]}`), 'README states the supported lines');
});
