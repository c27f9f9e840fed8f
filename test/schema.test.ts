// config/gateway.schema.json as an editor uses it: the YAML file parsed as YAML 1.2 (numbers are
// numbers, `${VAR}` a string), validated against the schema file as it is — no type coercion, no
// defaults, no ${VAR} expansion (yaml-language-server's `# yaml-language-server: $schema=…`).
// Every configuration the project ships must pass; the loader, which expands ${VAR} first, checks
// the same values without the ${VAR} alternatives (strictSchema).

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import t from 'tap';
import { parse, parseAllDocuments } from 'yaml';
import { loadConfig, strictSchema } from '../src/config/load.js';
// @ts-expect-error plain ESM script without types
import { addEnvAlternatives } from '../scripts/schema-env.mjs';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SCHEMA_TEXT = readFileSync(join(ROOT, 'config/gateway.schema.json'), 'utf8');
const schema = JSON.parse(SCHEMA_TEXT) as Record<string, unknown>;
type Doc = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** An editor's view: ajv, draft-07, every error, the schema untouched. */
const editor = new Ajv({ allErrors: true, allowUnionTypes: true }).compile(schema);
const problems = (doc: unknown): string[] => (editor(doc) ? [] : (editor.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message}`));

t.test('every configuration the project ships validates against the schema as an editor validates it', async (t) => {
  const example = parse(readFileSync(join(ROOT, 'gateway.example.yaml'), 'utf8')) as Doc;
  t.equal(example.listen.port, '${KEYGATE_PORT:-8080}', 'the example does use a reference where an integer goes');
  t.same(problems(example), [], 'gateway.example.yaml');

  const manifest = parseAllDocuments(readFileSync(join(ROOT, 'deploy/kubernetes/keygate.yaml'), 'utf8')).map((d) => d.toJS() as Doc);
  const configMaps = manifest.filter((d) => d?.kind === 'ConfigMap' && d.data?.['gateway.yaml']);
  t.ok(configMaps.length >= 1, 'the Kubernetes manifest carries a config');
  for (const cm of configMaps) t.same(problems(parse(cm.data['gateway.yaml'])), [], `deploy/kubernetes/keygate.yaml: ConfigMap ${cm.metadata.name}`);

  const maps = readdirSync(join(ROOT, 'config/routes')).filter((f) => /\.ya?ml$/.test(f)).map((f) => `config/routes/${f}`);
  t.ok(maps.length >= 3, `the route maps: ${maps.join(', ')}`);
  for (const map of maps) {
    const file = parse(readFileSync(join(ROOT, map), 'utf8')) as Doc;
    const routes = (Array.isArray(file) ? file : file.routes) as Doc[];
    const defaults = (Array.isArray(file) ? {} : (file.defaults ?? {})) as Doc;
    t.ok(routes.length > 0, `${map} has routes`);
    t.same(problems({ routes: routes.map((r) => ('include' in r ? r : { ...defaults, ...r })) }), [], `${map}: every route (with the file's defaults) is a valid route`);
  }
});

t.test('a ${VAR} reference is accepted wherever the loader expands one, and nothing else is loosened', async (t) => {
  t.equal(addEnvAlternatives(SCHEMA_TEXT), SCHEMA_TEXT, 'every number, boolean, enum and pattern field has its ${VAR} alternative (else: node scripts/schema-env.mjs)');
  const refs = {
    listen: { port: '${PORT}', trust_forwarded: '${TRUST:-false}', health_prefix: '${P}' },
    admin: { enabled: '${ADMIN_ON}', max_failed_auth: '${N:-10}' },
    workers: '${WORKERS:-auto}',
    store: { keys: '${KEYGATE_REDIS_URL}', rate_limits: '${RL:-memory}', rate_limits_fallback: '${FB}' },
    keys: { prefix: '${PREFIX}', rate_limit: { default: '${RATE}' } },
    upstreams: [{ name: '${UP}', api_base_url: '${DAGU_URL}/api/v1', auth_type: '${AUTH_TYPE}', timeout: '${T}' }],
    routes: [{ path: '/x', upstream: 'up', methods: '${M}', role: '${ROLE}', remote_node: '${RN}' }],
    log: { level: '${LOG_LEVEL:-info}', access_log: '${ACCESS:-true}' },
    metrics: { per_key: '${PER_KEY}', max_keys: '${MAX}' },
  };
  t.same(problems(refs), [], 'references in integer, boolean, enum and pattern fields');
  const bad = {
    listen: { port: 'eighty', trust_forwarded: 'yes' },
    store: { keys: 'mysql://db', rate_limits_fallback: 'maybe' },
    log: { level: 'loud' },
    routes: [{ path: '/x', upstream: 'up', role: 'root' }],
    metrics: { max_keys: -1 },
    bogus: 1,
  };
  const found = problems(bad).join('\n');
  for (const where of ['/listen/port', '/listen/trust_forwarded', '/store/keys', '/store/rate_limits_fallback', '/log/level', '/routes/0/role', '/metrics/max_keys', '/ must NOT have additional properties'])
    t.match(found, where, `still refused: ${where}`);
  t.notMatch(problems({ listen: { port: 'a ${literal' } }).join(), /^$/, 'an unterminated reference is no reference');

  const strict = JSON.stringify(strictSchema(schema));
  t.notMatch(strict, /env_reference/, 'the loader checks the values themselves, after expansion');
});

t.test('the loader accepts what the editor accepts: the example with its references expanded', async (t) => {
  const cfg = loadConfig(join(ROOT, 'gateway.example.yaml'), { KEYGATE_PORT: '9099' });
  t.equal(cfg.listen.port, 9099, '${KEYGATE_PORT:-8080} became the integer 9099');
  t.throws(() => loadConfig(join(ROOT, 'gateway.example.yaml'), { KEYGATE_PORT: 'eighty' }), /listen\.port: must be an integer \(got "eighty"\)/, 'and a bad value is refused with the same message as before');
});
