// What Prometheus reads: the /metrics exposition of a real gateway passes `promtool check
// metrics`, and the shipped alert rules load and fire as intended (`promtool test rules`).
// promtool comes with Debian's prometheus package; without it these checks are skipped, saying so.

import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { request } from 'undici';
import { startStack } from './helpers.js';

const PROMTOOL = spawnSync('sh', ['-c', 'command -v promtool'], { encoding: 'utf8' }).stdout.trim();
const skip = PROMTOOL ? false : 'promtool is not installed (apt-get install prometheus); the alert rules and the exposition format are not checked here';
const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** prom-client's own default gauges end in _total; promtool's lint names them, nothing else may show. */
const PROM_CLIENT_DEFAULTS = /^keygate_nodejs_active_(handles|requests|resources)_total non-counter metrics should not have "_total" suffix$/;

t.test('promtool check metrics: the exposition of a gateway with traffic and per-key series', { skip }, async (t) => {
  const s = await startStack(t.testdir(), { yaml: 'metrics: { per_key: true }\n' });
  t.teardown(() => s.close());
  const k = await s.key({ name: 'prom', role: 'viewer' });
  for (const headers of [{ 'x-api-key': k.secret }, {}, { 'x-api-key': 'dg_unknown' }]) {
    const r = await request(`${s.url}/api/v1/dags`, { headers });
    await r.body.dump();
  }
  const text = await (await request(`${s.gateway.adminUrl!}/metrics`)).body.text();
  const out = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' });
  const problems = (out.stdout + out.stderr).split('\n').map((l) => l.trim()).filter((l) => l && !PROM_CLIENT_DEFAULTS.test(l));
  t.same(problems, [], 'no format or naming problem in keygate_* metrics');
  t.match(text, /keygate_key_requests_total\{key_id="[^"]+",decision="allowed"\} 1/, 'with per-key series in it');
});

t.test('promtool: the alert rules load, and fire on the series Keygate exports', { skip }, async (t) => {
  const check = spawnSync(PROMTOOL, ['check', 'rules', 'deploy/prometheus/keygate-alerts.yml'], { cwd: ROOT, encoding: 'utf8' });
  t.equal(check.status, 0, check.stdout + check.stderr);
  t.match(check.stdout, /SUCCESS: 9 rules found/);
  const unit = spawnSync(PROMTOOL, ['test', 'rules', 'alerts.test.yml'], { cwd: `${ROOT}test/fixtures/prometheus`, encoding: 'utf8' });
  t.equal(unit.status, 0, unit.stdout + unit.stderr);
});
