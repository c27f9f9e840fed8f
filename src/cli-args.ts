// The `keygate` command line: which flags each command takes, its help, and the parse that
// refuses an unknown flag (suggesting the nearest) or a flag the command does not take. Pure:
// no I/O, so every rule is unit-testable.

import { parseArgs, type ParseArgsConfig } from 'node:util';

export const OPTIONS = {
  config: { type: 'string', short: 'c' },
  json: { type: 'boolean' },
  probe: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
  host: { type: 'string' },
  port: { type: 'string' },
  name: { type: 'string' },
  description: { type: 'string' },
  scopes: { type: 'string' },
  role: { type: 'string' },
  workspace: { type: 'string' },
  grant: { type: 'string', multiple: true },
  'all-workspaces': { type: 'boolean' },
  surfaces: { type: 'string' },
  'rate-limit': { type: 'string' },
  'quota-limit': { type: 'string' },
  'quota-period': { type: 'string' },
  'quota-refill': { type: 'string' },
  'quota-start': { type: 'string' },
  'quota-remaining': { type: 'string' },
  'no-quota': { type: 'boolean' },
  group: { type: 'string' },
  'no-group': { type: 'boolean' },
  'no-rate-limit': { type: 'boolean' },
  remaining: { type: 'string' },
  reset: { type: 'boolean' },
  'expires-at': { type: 'string' },
  attribution: { type: 'string' },
  'service-account-name': { type: 'string' },
  'owner-user-id': { type: 'string' },
  'grace-seconds': { type: 'string' },
  limit: { type: 'string' },
  cursor: { type: 'string' },
  search: { type: 'string' },
  status: { type: 'string' },
  all: { type: 'boolean' },
  output: { type: 'string', short: 'o' },
  audit: { type: 'boolean' },
  'dry-run': { type: 'boolean' },
  days: { type: 'string' },
  bucket: { type: 'string' },
} satisfies ParseArgsConfig['options'];

export type Flag = keyof typeof OPTIONS;
export type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values'];

/** What each flag means, with its value's placeholder. */
const FLAG_HELP: Record<Flag, [value: string, text: string]> = {
  config: ['FILE', 'configuration (default ./gateway.yaml, else ./gateway.example.yaml)'],
  json: ['', 'print JSON (a key in the Dagu-shaped admin API\'s camelCase fields)'],
  probe: ['', "also ask each Dagu upstream its version and check it against the routes' requires (exit 1 on a mismatch)"],
  help: ['', "print this command's help"],
  version: ['', 'print the version'],
  host: ['HOST', 'the Host header the request would carry'],
  port: ['N', 'public listener port (overrides listen.port)'],
  name: ['NAME', 'unique name, 1-100 characters'],
  description: ['TEXT', 'what the key is for, at most 500 characters'],
  scopes: ['LIST', 'agents,workflows (Dagen scopes; default both)'],
  role: ['ROLE', 'viewer, operator, developer, manager or admin (default viewer)'],
  workspace: ['ID', "Dagen: the one workspace the key is bound to ('' to unbind on update)"],
  grant: ['WS:ROLE', 'Dagu: access to one workspace with a role (repeat; top-level role must be viewer)'],
  'all-workspaces': ['', 'Dagu: the role applies in every workspace (removes grants)'],
  surfaces: ['LIST', 'rest_api,mcp,a2a: where the key is accepted (default all)'],
  'rate-limit': ['N', 'requests per minute, within keys.rate_limit (default its default)'],
  'quota-limit': ['N', 'quota: N requests per --quota-period (429 quota_exceeded beyond)'],
  'quota-period': ['P', 'quota period: day (00:00 UTC), week (Monday) or month (the 1st), or from --quota-start'],
  'quota-refill': ['MODE', 'reset (back to the limit each period, default) or add (the limit added per period)'],
  'quota-start': ['DATE', 'YYYY-MM-DD or ISO 8601 with an offset: periods repeat from it instead of the calendar'],
  'quota-remaining': ['N', 'one-time quota: N requests in all, never refilled (a trial key)'],
  'no-quota': ['', 'remove the quota (update)'],
  group: ['NAME', 'the key group (keygate groups create) whose rate limit and quota the key shares, on top of its own'],
  'no-group': ['', 'take the key out of its group (update)'],
  'no-rate-limit': ['', "remove the group's rate limit (groups update)"],
  remaining: ['N', 'credits left now (a top-up; the next refill still comes on time)'],
  reset: ['', 'the quota counter starts full again'],
  'expires-at': ['DATE', "YYYY-MM-DD (00:00 UTC) or ISO 8601 with an offset; '' = never (update)"],
  attribution: ['CLASS', 'service_account (default) or user_owned'],
  'service-account-name': ['NAME', 'service-account name (default the key name)'],
  'owner-user-id': ['ID', 'owning user, for --attribution user_owned'],
  'grace-seconds': ['N', 'the old key keeps working N seconds (0-86400, default 0)'],
  limit: ['N', 'keys per page (default 100)'],
  cursor: ['C', 'the page after this cursor (printed with the previous page)'],
  search: ['TEXT', 'only keys whose name or key prefix contains TEXT (case-insensitive)'],
  status: ['STATUS', 'only active, inactive or expired keys'],
  all: ['', 'every page in turn'],
  output: ['FILE', 'write to FILE (written aside, then renamed into place) instead of stdout'],
  audit: ['', 'also the audit records'],
  'dry-run': ['', 'say what would change, change nothing'],
  days: ['N', 'how many days back (default 7)'],
  bucket: ['day|hour', 'one row per day (default) or per hour'],
};

export interface CommandSpec {
  /** e.g. "keys create" */
  name: string;
  /** positional arguments, e.g. "ID|NAME" */
  args: string;
  summary: string;
  flags: readonly Flag[];
  examples: readonly string[];
  /** what a flag means for this command when it differs from FLAG_HELP */
  flagHelp?: Partial<Record<Flag, string>>;
}

/** The group commands' flags that mean something else than for a key. */
const GROUP_FLAG_HELP: Partial<Record<Flag, string>> = {
  name: "unique name, 1-100 characters: the group's identity (it cannot change)",
  description: 'what the group is for, at most 500 characters',
  'rate-limit': "requests per minute shared by all the group's keys, on top of each key's own (default none)",
  json: "print JSON (a group in the Dagu-shaped admin API's camelCase fields)",
};

const KEY_FIELDS: readonly Flag[] = [
  'name', 'description', 'scopes', 'role', 'workspace', 'grant', 'surfaces', 'rate-limit', 'quota-limit', 'quota-period', 'quota-refill', 'quota-start', 'quota-remaining',
  'expires-at', 'attribution', 'service-account-name', 'owner-user-id', 'group',
];

const GROUP_FIELDS: readonly Flag[] = ['name', 'description', 'rate-limit', 'quota-limit', 'quota-period', 'quota-refill', 'quota-start', 'quota-remaining'];

export const COMMANDS: readonly CommandSpec[] = [
  { name: 'serve', args: '', summary: 'run the gateway (SIGHUP reloads the file, SIGTERM drains and stops)', flags: ['config', 'port'], examples: ['keygate serve -c gateway.yaml'] },
  { name: 'check', args: '', summary: 'validate a config and print a summary (exit 1 on errors)', flags: ['config', 'probe'], examples: ['keygate check -c gateway.yaml'] },
  {
    name: 'routes explain',
    args: 'METHOD PATH',
    summary: 'show which route a request matches, what it requires and where it goes',
    flags: ['config', 'host', 'json'],
    examples: ['keygate routes explain POST /api/v1/dags/deploy/start'],
  },
  {
    name: 'keys create',
    args: '',
    summary: 'create a key; its secret is printed once',
    flags: ['config', ...KEY_FIELDS, 'json'],
    examples: [
      'keygate keys create --name ci --scopes workflows --role operator --rate-limit 120',
      'keygate keys create --name team-a --role viewer --grant team-a:developer',
      'keygate keys create --name tenant-a --quota-limit 50000 --quota-period month',
      'keygate keys create --name trial --quota-remaining 100',
    ],
  },
  {
    name: 'keys list',
    args: '',
    summary: 'list the keys, 100 a page by default (never a secret)',
    flags: ['config', 'workspace', 'search', 'status', 'group', 'limit', 'cursor', 'all', 'json'],
    examples: ['keygate keys list --json', 'keygate keys list --all', 'keygate keys list --search etl --status active'],
  },
  {
    name: 'keys export',
    args: '',
    summary: 'every key as JSON Lines (digests, never secrets)',
    flags: ['config', 'output', 'audit'],
    examples: ['keygate keys export --output keys.jsonl --audit'],
  },
  {
    name: 'keys import',
    args: 'EXPORT.jsonl',
    summary: 'create/update/skip by key id; safe to run twice',
    flags: ['config', 'dry-run', 'json'],
    examples: ['keygate keys import keys.jsonl --dry-run'],
  },
  {
    name: 'backup',
    args: 'BACKUP.db',
    summary: 'consistent copy of a SQLite key store, also while serving',
    flags: ['config'],
    examples: ['keygate backup /var/backups/keygate.db'],
  },
  { name: 'keys show', args: 'ID|NAME', summary: "one key's settings, status and usage", flags: ['config', 'json'], examples: ['keygate keys show ci'] },
  {
    name: 'keys update',
    args: 'ID|NAME',
    summary: 'change the flags given; the others stay',
    flags: ['config', ...KEY_FIELDS, 'no-quota', 'no-group', 'all-workspaces', 'json'],
    examples: ['keygate keys update ci --role developer --expires-at 2027-06-30', 'keygate keys update tenant-a --quota-limit 100000'],
  },
  {
    name: 'keys quota',
    args: 'ID|NAME',
    summary: "show a key's quota now; --remaining N tops it up, --reset makes it full again (audited)",
    flags: ['config', 'remaining', 'reset', 'json'],
    examples: ['keygate keys quota tenant-a', 'keygate keys quota tenant-a --remaining 5000', 'keygate keys quota trial --reset'],
  },
  { name: 'keys activate', args: 'ID|NAME', summary: 'accept the key again', flags: ['config', 'json'], examples: ['keygate keys activate ci'] },
  { name: 'keys deactivate', args: 'ID|NAME', summary: 'refuse the key from the next request on (403 key_inactive)', flags: ['config', 'json'], examples: ['keygate keys deactivate ci'] },
  {
    name: 'keys regenerate',
    args: 'ID|NAME',
    summary: 'a new secret, printed once; the old one stops at once or after --grace-seconds',
    flags: ['config', 'grace-seconds', 'json'],
    examples: ['keygate keys regenerate ci --grace-seconds 3600'],
  },
  {
    name: 'keys usage',
    args: 'ID|NAME',
    summary: 'requests per day (or hour): allowed, rate limited, forbidden, over quota',
    flags: ['config', 'days', 'bucket', 'json'],
    examples: ['keygate keys usage ci --days 7'],
  },
  { name: 'keys delete', args: 'ID|NAME', summary: 'delete the key: every consumer loses access', flags: ['config', 'json'], examples: ['keygate keys delete ci'] },
  {
    name: 'groups create',
    args: '',
    summary: "create a key group: a rate limit (--rate-limit, per minute) and a quota shared by its keys, on top of each key's own",
    flags: ['config', ...GROUP_FIELDS, 'json'],
    flagHelp: GROUP_FLAG_HELP,
    examples: ['keygate groups create --name ci-tenant --rate-limit 600 --quota-limit 50000 --quota-period month', 'keygate keys create --name ci --group ci-tenant'],
  },
  { name: 'groups list', args: '', summary: 'list the key groups with their limits, quota left and member count', flags: ['config', 'json'], examples: ['keygate groups list'], flagHelp: GROUP_FLAG_HELP },
  { name: 'groups show', args: 'NAME', summary: "one group's limits, quota now and member count", flags: ['config', 'json'], examples: ['keygate groups show ci-tenant'], flagHelp: GROUP_FLAG_HELP },
  {
    name: 'groups update',
    args: 'NAME',
    summary: 'change the flags given; the others stay (the name cannot change)',
    flags: ['config', 'description', 'rate-limit', 'no-rate-limit', 'quota-limit', 'quota-period', 'quota-refill', 'quota-start', 'quota-remaining', 'no-quota', 'json'],
    flagHelp: GROUP_FLAG_HELP,
    examples: ['keygate groups update ci-tenant --rate-limit 1200', 'keygate groups update ci-tenant --no-quota'],
  },
  {
    name: 'groups quota',
    args: 'NAME',
    summary: "show a group's quota now; --remaining N tops it up, --reset makes it full again (audited)",
    flags: ['config', 'remaining', 'reset', 'json'],
    examples: ['keygate groups quota ci-tenant --remaining 5000'],
  },
  {
    name: 'groups usage',
    args: 'NAME',
    summary: "requests per day (or hour) of the group's keys while they belonged to it: allowed, rate limited, forbidden, over quota",
    flags: ['config', 'days', 'bucket', 'json'],
    examples: ['keygate groups usage ci-tenant --days 7'],
  },
  { name: 'groups delete', args: 'NAME', summary: 'delete a group (refused while keys belong to it: keygate keys update KEY --no-group)', flags: ['config', 'json'], examples: ['keygate groups delete ci-tenant'] },
  { name: 'demo', args: '', summary: 'run the gateway with a built-in echo server as every upstream', flags: ['config', 'port'], examples: ['keygate demo'] },
];

/** Flags every command takes. */
const GLOBAL: readonly Flag[] = ['help', 'version'];

export class UsageError extends Error {
  /** the command whose help to point at, when known */
  constructor(message: string, readonly command?: CommandSpec) {
    super(message);
  }
}

/** Edit distance, for "did you mean". */
export function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

/** The candidate nearest to `word` (at most a third of its length away), or undefined. */
export function nearest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = c.startsWith(word) || word.startsWith(c) ? 1 : distance(word, c);
    if (d < bestD) {
      best = c;
      bestD = d;
    }
  }
  return bestD <= Math.max(2, Math.ceil(word.length / 3)) ? best : undefined;
}

/** The command named by the leading positionals, and the positionals after it. */
export function findCommand(positionals: readonly string[]): { spec: CommandSpec | undefined; rest: string[] } {
  for (const n of [2, 1]) {
    const name = positionals.slice(0, n).join(' ');
    const spec = COMMANDS.find((c) => c.name === name);
    if (spec) return { spec, rest: positionals.slice(n) };
  }
  return { spec: undefined, rest: positionals.slice(1) };
}

const flagName = (f: Flag): string => `--${f}`;

export interface Parsed {
  spec: CommandSpec | undefined;
  values: Values;
  /** positionals after the command name */
  args: string[];
  /** the positionals as given (for "unknown command") */
  positionals: string[];
}

/**
 * Parses argv for the command it names: an unknown flag is an error suggesting the nearest of the
 * command's flags; a flag another command takes is an error saying which; a missing value names
 * the flag. `--help` is always accepted.
 */
export function parseCommandLine(argv: readonly string[]): Parsed {
  // a first, lenient pass finds the command and every flag as written
  const loose = parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: false, tokens: true });
  const { spec } = findCommand(loose.positionals);
  const allowed: readonly Flag[] = spec ? [...spec.flags, ...GLOBAL] : (Object.keys(OPTIONS) as Flag[]);
  const where = spec ? `keygate ${spec.name}` : 'keygate';
  for (const tok of loose.tokens ?? []) {
    if (tok.kind !== 'option') continue;
    const name = tok.name as Flag;
    if (!Object.hasOwn(OPTIONS, name)) {
      const guess = nearest(tok.name, allowed);
      throw new UsageError(`unknown flag ${tok.rawName} for ${where}${guess ? `; did you mean --${guess}?` : ''}`, spec);
    }
    if (!allowed.includes(name)) {
      const takers = COMMANDS.filter((c) => c.flags.includes(name)).map((c) => c.name);
      throw new UsageError(`${flagName(name)} does not apply to ${where}${takers.length ? ` (it is a flag of ${takers.join(', ')})` : ''}`, spec);
    }
  }
  const options = Object.fromEntries(allowed.map((f) => [f, OPTIONS[f]]));
  let strict;
  try {
    strict = parseArgs({ args: [...argv], options, allowPositionals: true, strict: true });
  } catch (err) {
    // node's messages name the flag: "Option '--name <value>' argument missing"
    throw new UsageError(`${(err as Error).message.replace(/^Option '([^' ]+)[^']*'/, '$1')}`, spec);
  }
  const positionals = strict.positionals;
  return { spec, values: strict.values as Values, args: findCommand(positionals).rest, positionals };
}

/** `keygate <command> --help`. */
export function commandHelp(spec: CommandSpec): string {
  const flags = [...spec.flags.filter((f) => f !== 'config'), 'config' as const, 'help' as const];
  const left = (f: Flag) => `${f === 'config' ? '-c, ' : '    '}${flagName(f)}${FLAG_HELP[f][0] ? ` ${FLAG_HELP[f][0]}` : ''}`;
  const width = Math.max(...flags.map((f) => left(f).length)) + 2;
  return [
    `keygate ${spec.name}: ${spec.summary}`,
    '',
    `Usage: keygate ${spec.name}${spec.args ? ` ${spec.args}` : ''} [flags]`,
    '',
    'Flags:',
    ...flags.map((f) => `  ${left(f).padEnd(width)}${spec.flagHelp?.[f] ?? FLAG_HELP[f][1]}`),
    '',
    spec.examples.length > 1 ? 'Examples:' : 'Example:',
    ...spec.examples.map((e) => `  ${e}`),
    '',
  ].join('\n');
}

/** Key-service field → the flag that sets it, so an error names what the person typed. */
const FIELD_FLAGS: Readonly<Record<string, Flag>> = {
  name: 'name',
  description: 'description',
  scopes: 'scopes',
  role: 'role',
  workspace: 'workspace',
  workspaceAccess: 'grant',
  surfaces: 'surfaces',
  rateLimit: 'rate-limit',
  'quota.limit': 'quota-limit',
  'quota.period': 'quota-period',
  'quota.refill': 'quota-refill',
  'quota.start': 'quota-start',
  'quota.remaining': 'quota-remaining',
  quota: 'quota-limit',
  remaining: 'remaining',
  reset: 'reset',
  expiresAt: 'expires-at',
  attributionClass: 'attribution',
  serviceAccountName: 'service-account-name',
  ownerUserId: 'owner-user-id',
  group: 'group',
  graceSeconds: 'grace-seconds',
  days: 'days',
  bucket: 'bucket',
  q: 'search',
  status: 'status',
  limit: 'limit',
  cursor: 'cursor',
};

/** "--rate-limit must be …" for a key-service error about rateLimit; undefined when no flag sets the field. */
export function flagMessage(field: string, reason: string): string | undefined {
  const base = /^[A-Za-z]+/.exec(field)?.[0] ?? field;
  const flag = FIELD_FLAGS[field] ?? FIELD_FLAGS[base];
  if (flag === undefined) return undefined;
  const detail = field.startsWith('workspaceAccess.grants[') ? ` (${field.replace(/^workspaceAccess\.grants\[(\d+)\].*$/, (_, i: string) => `grant ${Number(i) + 1}`)})` : '';
  return `${flagName(flag)}${detail}${/^(must|is|cannot|needs) /.test(reason) ? ' ' : ': '}${reason}`;
}
