// The `keygate` command. Every key command goes through the same KeyService the admin APIs use.

import cluster from 'node:cluster';
import { once } from 'node:events';
import { createReadStream, createWriteStream, existsSync, renameSync, rmSync, watchFile as fsWatchFile, type WriteStream } from 'node:fs';
import { dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { userInfo } from 'node:os';
import { loadConfig, resolveConfigPath } from './config/load.js';
import type { GatewayConfig } from './config/types.js';
import { ConfigError, KeygateError, ValidationError, formatConfigIssue } from './errors.js';
import { keyStatus, type ApiKey } from './keys/model.js';
import { isPeriodic, type Quota, type QuotaStatus } from './keys/quota.js';
import { openKeyStore } from './keys/open.js';
import { KeyService, serviceConfig, type GroupInput, type GroupStatus, type KeyInput } from './keys/service.js';
import { daguGroup } from './admin/groups-api.js';
import { daguKey } from './admin/dagu-api.js';
import { SqliteKeyStore, verifyBackup } from './keys/sqlite-store.js';
import type { AuditStore, KeyStore } from './keys/store.js';
import { exportLines, importLines } from './keys/transfer.js';
import { daguGroupUsage, daguUsage } from './admin/usage-api.js';
import type { UsageQuery, UsageSeries } from './keys/usage-history.js';
import { COMMANDS, UsageError, commandHelp, flagMessage, parseCommandLine, type CommandSpec, type Values } from './cli-args.js';
import { normaliseTarget } from './routes/path.js';
import { RouteTable } from './routes/table.js';
import { Gateway } from './server.js';
import { isLoginPath } from './admission.js';
import { clusterMetricsSource, reportListening, runPrimary, workerCount } from './cluster.js';
import { createLogger, reopenLogFile } from './log.js';
import { VERSION } from './version.js';

const HELP = `keygate: an API-key gateway in front of Dagu and Dagen servers

Usage: keygate <command> [options]

Commands:
  serve     -c FILE                      run the gateway
  check     -c FILE [--probe]            validate a config and print a summary (exit 1 on errors);
                                         --probe also asks each Dagu upstream its version
                                         (exit 1 when a route map is for another Dagu)
  routes explain -c FILE METHOD PATH [--host H] [--json]
                                         show which route a request matches and where it goes
  keys create -c FILE --name NAME [--description TEXT] [--scopes agents,workflows]
              [--role viewer|operator|developer|manager|admin] [--workspace ID]
              [--grant WORKSPACE:ROLE ...] [--surfaces rest_api,mcp,a2a] [--rate-limit N]
              [--expires-at YYYY-MM-DD] [--attribution service_account|user_owned]
              [--service-account-name NAME] [--owner-user-id ID]
              [--quota-limit N --quota-period day|week|month [--quota-refill reset|add]
               [--quota-start DATE] | --quota-remaining N] [--json]
  keys list   -c FILE [--workspace ID] [--search TEXT] [--status active|inactive|expired]
              [--group NAME] [--limit N] [--cursor C | --all] [--json]
                                         100 keys a page by default; --all streams every page
  keys export -c FILE [--output FILE] [--audit]
                                         every key as JSON Lines (digests, never secrets)
  keys import -c FILE EXPORT.jsonl [--dry-run]
                                         create/update/skip by key id; safe to run twice
  backup    -c FILE BACKUP.db            consistent copy of a SQLite key store, also while serving
  keys show   -c FILE ID|NAME [--json]
  keys update -c FILE ID|NAME [same flags as create] [--all-workspaces] [--no-quota] [--no-group]
  keys quota  -c FILE ID|NAME [--remaining N | --reset] [--json]
                                         a key's quota now; top it up or make it full again
  keys activate|deactivate|regenerate|delete -c FILE ID|NAME [--json]
  keys regenerate -c FILE ID|NAME [--grace-seconds N]
                                         the old key keeps working N seconds (0-86400, default 0)
  keys usage  -c FILE ID|NAME [--days N] [--bucket day|hour] [--json]
                                         requests per day (or hour): allowed, rate limited, forbidden, over quota
  groups create -c FILE --name NAME [--description TEXT] [--rate-limit N] [--quota-* flags] [--json]
                                         a rate limit and quota shared by the group's keys
                                         (keys create/update --group NAME), on top of each key's own
  groups list|show NAME|update NAME|quota NAME|delete NAME -c FILE [--json]
  demo      [-c FILE] [--port N]         run the gateway with a built-in echo server as every upstream

  -c, --config FILE   configuration (default ./gateway.yaml, else ./gateway.example.yaml)
  -V, --version       print the version
  keygate <command> --help (or keygate help <command>) prints a command's flags and an example.

Examples:
  keygate demo                                   # try it: echo servers stand in for Dagu and Dagen
  keygate check -c gateway.yaml
  keygate serve -c gateway.yaml                  # kill -HUP <pid> reloads the file, SIGTERM drains and stops
  keygate routes explain POST /api/v1/dags/deploy/start
  keygate keys create --name ci --scopes workflows --role operator --rate-limit 120
  keygate keys create --name team-a --role viewer --grant team-a:developer
  keygate keys list --json
  keygate keys show ci
  keygate keys update ci --role developer --expires-at 2027-06-30
  keygate keys deactivate ci                     # refused from the next request on (403 key_inactive)
  keygate keys regenerate ci --grace-seconds 3600
  keygate keys create --name tenant-a --quota-limit 50000 --quota-period month
  keygate keys quota tenant-a --remaining 5000   # a top-up (audited)
  keygate keys usage ci --days 7                 # requests per day: allowed, rate limited, forbidden, over quota
  keygate groups create --name ci-tenant --rate-limit 600 --quota-limit 50000 --quota-period month
  keygate keys update ci --group ci-tenant       # ci now also counts against ci-tenant's budget
  keygate keys delete ci
  curl -H "X-API-Key: dg_…" http://127.0.0.1:8080/api/v1/dags
`;

function out(s: string): void {
  process.stdout.write(s.endsWith('\n') ? s : s + '\n');
}

function load(values: Values): GatewayConfig {
  return loadConfig(resolveConfigPath(values.config));
}

function actor(): string {
  try {
    return `cli:${userInfo().username}`;
  } catch {
    return 'cli';
  }
}

/** Flags → key service input; only the flags given, so update changes only those. */
function keyInput(v: Values): KeyInput {
  const input: KeyInput = {};
  if (v.name !== undefined) input.name = v.name;
  if (v.description !== undefined) input.description = v.description;
  if (v.scopes !== undefined) input.scopes = v.scopes;
  if (v.role !== undefined) input.role = v.role;
  if (v.workspace !== undefined) input.workspace = v.workspace;
  if (v.surfaces !== undefined) input.surfaces = v.surfaces;
  if (v['rate-limit'] !== undefined) input.rateLimit = v['rate-limit'];
  const quota = quotaInput(v);
  if (quota !== undefined) input.quota = quota;
  if (v['expires-at'] !== undefined) input.expiresAt = v['expires-at'];
  if (v.attribution !== undefined) input.attributionClass = v.attribution;
  if (v['service-account-name'] !== undefined) input.serviceAccountName = v['service-account-name'];
  if (v['owner-user-id'] !== undefined) input.ownerUserId = v['owner-user-id'];
  if (v['no-group']) {
    if (v.group !== undefined) throw new UsageError('--no-group takes the key out of its group: give it without --group');
    input.group = null;
  } else if (v.group !== undefined) input.group = v.group;
  if (v.grant !== undefined) {
    input.workspaceAccess = {
      all: false,
      grants: v.grant.map((g) => {
        const i = g.lastIndexOf(':');
        if (i <= 0) throw new UsageError(`--grant "${g}": expected WORKSPACE:ROLE, e.g. ops:developer`);
        return { workspace: g.slice(0, i), role: g.slice(i + 1) };
      }),
    };
  } else if (v['all-workspaces']) {
    input.workspaceAccess = { all: true, grants: [] };
  }
  return input;
}

/** The --quota-* flags given, as the key service's quota input (it checks them); null = --no-quota. */
function quotaInput(v: Values): Record<string, string> | null | undefined {
  const periodic = { limit: v['quota-limit'], period: v['quota-period'], refill: v['quota-refill'], start: v['quota-start'] };
  const given = Object.fromEntries(Object.entries(periodic).filter(([, x]) => x !== undefined)) as Record<string, string>;
  if (v['no-quota']) {
    if (Object.keys(given).length > 0 || v['quota-remaining'] !== undefined) throw new UsageError('--no-quota removes the quota: give it without the --quota-* flags');
    return null;
  }
  if (v['quota-remaining'] !== undefined) given['remaining'] = v['quota-remaining'];
  return Object.keys(given).length === 0 ? undefined : given;
}

/** A quota in a few words: "50000/month (reset)", "100 one-time"; with what is left when known. */
function describeQuota(q: Quota | null, status: QuotaStatus | null): string {
  if (q === null) return 'none';
  const spec = isPeriodic(q) ? `${q.limit}/${q.period} (${q.refill}${q.start ? `, periods from ${q.start}` : ''})` : `${q.remaining} one-time (no refill)`;
  if (status === null) return spec;
  return `${spec}; ${status.remaining} left${status.nextRefillAt ? `, refills ${status.nextRefillAt}` : ''}`;
}

/** The quota column of `keys list`: "left/limit per period", "left one-time", "-". */
function quotaCell(q: Quota | null, status: QuotaStatus | null): string {
  if (q === null || status === null) return '-';
  return isPeriodic(q) ? `${status.remaining}/${q.limit} ${q.period}` : `${status.remaining} one-time`;
}

function ago(iso: string | null, nowMs: number): string {
  if (iso === null) return 'Never';
  const s = Math.max(0, Math.round((nowMs - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

/** Columns padded to their widest cell; the columns in `right` (numbers) aligned right. */
function table(rows: string[][], right: readonly number[] = []): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (right.includes(c) ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join('  ').trimEnd()).join('\n');
}

function describeKey(k: ApiKey, nowMs: number, quota: QuotaStatus | null = null): string {
  const ws = k.workspace ?? (k.workspaceAccess.all ? 'all' : k.workspaceAccess.grants.map((g) => `${g.workspace}:${g.role}`).join(', '));
  return [
    `id:           ${k.id}`,
    `name:         ${k.name}`,
    `description:  ${k.description}`,
    `key:          ${k.prefix}… (the full key is shown only when created or regenerated)`,
    `status:       ${keyStatus(k, nowMs)}`,
    `scopes:       ${k.scopes.join(', ')}`,
    `role:         ${k.role}`,
    `workspace:    ${ws}`,
    `surfaces:     ${k.surfaces?.join(', ') ?? 'all'}`,
    `attribution:  ${k.attributionClass}${k.attributionClass === 'user_owned' ? ` (${k.ownerUserId})` : ` (${k.serviceAccountName})`}`,
    `rate limit:   ${k.rateLimit}/min`,
    `group:        ${k.group ?? 'none'}`,
    `quota:        ${describeQuota(k.quota, quota)}`,
    `expires:      ${k.expiresAt ?? 'never'}`,
    `requests:     ${k.requestCount}`,
    `last used:    ${ago(k.lastUsedAt, nowMs)}`,
    `created:      ${k.createdAt} by ${k.createdBy ?? '-'}`,
    `updated:      ${k.updatedAt} by ${k.updatedBy ?? '-'}`,
  ].join('\n');
}

/** Write to stdout, waiting when the pipe is full (a million keys must not pile up in memory). */
async function write(s: string): Promise<void> {
  if (!process.stdout.write(s)) await once(process.stdout, 'drain');
}

function keyRow(k: ApiKey, now: number, quota: QuotaStatus | null): string[] {
  return [k.name, `${k.prefix}…`, keyStatus(k, now), k.scopes.join(','), k.role, `${k.rateLimit}/min`, quotaCell(k.quota, quota), k.group ?? '-', String(k.requestCount), ago(k.lastUsedAt, now), k.expiresAt?.slice(0, 10) ?? 'never', k.id];
}

/** A word as a POSIX shell reads it back (quoted when it holds anything but safe characters). */
function shellWord(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * A page of keys (--limit, --cursor), or with --all every page in turn; JSON is written a key at a
 * time, never built as one string.
 */
async function listCommand(service: KeyService, v: Values, now: number): Promise<number> {
  if (v.all && v.cursor !== undefined) throw new UsageError('--all and --cursor do not go together');
  let cursor: string | undefined = v.cursor;
  // a cursor continues the listing it came from: the next command repeats its filters
  const filter = [v.workspace !== undefined ? ` --workspace ${shellWord(v.workspace)}` : '', v.search ? ` --search ${shellWord(v.search)}` : '', v.status ? ` --status ${v.status}` : '', v.group ? ` --group ${shellWord(v.group)}` : ''].join('');
  let first = true;
  let shown = 0;
  if (v.json) await write('{"apiKeys":[');
  for (;;) {
    const page = await service.page({ limit: v.limit, cursor, workspace: v.workspace, q: v.search, status: v.status, group: v.group });
    const quotas = await service.quotaStatuses(page.keys);
    if (v.json) {
      for (const [i, k] of page.keys.entries()) {
        await write(`${first ? '\n' : ',\n'}${JSON.stringify(daguKey(k, now, quotas[i]))}`);
        first = false;
      }
    } else if (page.keys.length > 0) {
      const rows = page.keys.map((k, i) => keyRow(k, now, quotas[i]!));
      await write(table(first ? [['NAME', 'KEY', 'STATUS', 'SCOPES', 'ROLE', 'LIMIT', 'QUOTA', 'GROUP', 'REQUESTS', 'LAST USED', 'EXPIRES', 'ID'], ...rows] : rows) + '\n');
      first = false;
    }
    shown += page.keys.length;
    if (page.next === null || !v.all) {
      if (v.json) await write(`\n]${page.next === null ? '' : `,"nextCursor":${JSON.stringify(page.next)}`}}\n`);
      else if (shown === 0 && filter !== '') out(`No key matches${filter}.`);
      else if (shown === 0) out('No API keys yet. Create one: keygate keys create --name NAME --scopes workflows');
      else if (page.next !== null) out(`More keys follow: keygate keys list${filter} --cursor ${page.next}   (or --all)`);
      return 0;
    }
    cursor = page.next;
  }
}

/** keys export: JSON Lines to --output (written aside, then renamed into place) or stdout. */
async function exportCommand(store: KeyStore & AuditStore, v: Values): Promise<number> {
  const file = v.output;
  const tmp = file === undefined ? undefined : `${file}.tmp-${process.pid}`;
  const sink = tmp === undefined ? process.stdout : createWriteStream(tmp, { flags: 'wx', mode: 0o600 });
  let keys = 0;
  let groups = 0;
  let audit = 0;
  try {
    for await (const line of exportLines(store, { audit: v.audit === true })) {
      if (line.startsWith('{"type":"key"')) keys++;
      else if (line.startsWith('{"type":"group"')) groups++;
      else audit++;
      if (!sink.write(line + '\n')) await once(sink, 'drain');
    }
    if (tmp !== undefined) {
      await new Promise<void>((resolve, reject) => (sink as WriteStream).end((err?: Error | null) => (err ? reject(err) : resolve())));
      renameSync(tmp, file!);
    }
  } catch (err) {
    if (tmp !== undefined) {
      (sink as WriteStream).destroy();
      rmSync(tmp, { force: true });
    }
    throw err;
  }
  process.stderr.write(`exported ${groups > 0 ? `${groups} group(s) and ` : ''}${keys} key(s)${v.audit ? ` and ${audit} audit record(s)` : ''}${file === undefined ? '' : ` to ${file}`}\n`);
  return 0;
}

async function importCommand(store: KeyStore & AuditStore, file: string, v: Values): Promise<number> {
  let input;
  try {
    input = createReadStream(file, 'utf8');
    await once(input, 'open');
  } catch (err) {
    throw new KeygateError('import_unreadable', 400, `cannot read ${file}: ${(err as Error).message}`);
  }
  const report = await importLines(store, createInterface({ input, crlfDelay: Infinity }), { dryRun: v['dry-run'] === true });
  const what = v['dry-run'] ? 'would be' : '';
  const summary = `${v['dry-run'] ? 'dry run: ' : ''}${report.created} created, ${report.updated} updated, ${report.skipped} skipped${what ? ' (nothing was changed)' : ''}` +
    (report.groups.created + report.groups.updated + report.groups.skipped > 0 ? `; groups: ${report.groups.created} created, ${report.groups.updated} updated, ${report.groups.skipped} skipped` : '') +
    (report.audit.created + report.audit.skipped > 0 ? `; audit records: ${report.audit.created} added, ${report.audit.skipped} already there` : '') +
    (report.errors.length > 0 ? `; ${report.errors.length} line(s) refused` : '');
  if (v.json) out(JSON.stringify({ dryRun: v['dry-run'] === true, ...report }, null, 2));
  else {
    for (const e of report.errors) process.stderr.write(`keygate: ${file}: ${e}\n`);
    out(summary);
  }
  return report.errors.length > 0 ? 1 : 0;
}

/** backup: SQLite's online backup API into a new file, checked, then renamed into place. */
async function backupCommand(args: string[], v: Values): Promise<number> {
  const dest = args[0];
  if (!dest) throw new UsageError('backup needs the file to write, e.g. keygate backup /var/backups/keygate-$(date +%F).db');
  const config = load(v);
  if (!config.store.keys.startsWith('sqlite:') || config.store.keys === 'sqlite::memory:') {
    throw new UsageError(`backup copies a SQLite key store; store.keys is ${config.store.keys.replace(/\/\/[^@/]*@/, '//***@')}: use "keygate keys export --output FILE" (and Redis' own persistence)`);
  }
  if (existsSync(dest)) throw new KeygateError('backup_exists', 409, `${dest} exists; choose a new file (a backup never overwrites one)`);
  const store = new SqliteKeyStore(config.store.keys.slice('sqlite:'.length), { mustExist: true });
  const tmp = `${dest}.tmp-${process.pid}`;
  try {
    await store.backup(tmp);
    const keys = verifyBackup(tmp);
    renameSync(tmp, dest);
    out(`backed up ${keys} key(s) from ${store.file} to ${dest}`);
    return 0;
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  } finally {
    await store.close();
  }
}

async function keysCommand(sub: string | undefined, args: string[], v: Values): Promise<number> {
  const config = load(v);
  const store = openKeyStore(config.store.keys, { redis: config.store.redis });
  if (store instanceof SqliteKeyStore && store.created) process.stderr.write(`keygate: note: ${store.file} did not exist; created a new, empty key store\n`);
  // the same audit trail as the admin API (GET /api/audit lists CLI changes too)
  const service = new KeyService(store, serviceConfig(config), Date.now, { store });
  const now = Date.now();
  const target = (): string => {
    if (!args[0]) throw new UsageError(`keys ${sub} needs a key id or name`);
    return args[0];
  };
  try {
    switch (sub) {
      case 'create': {
        const { key, secret } = await service.create(keyInput(v), actor());
        if (v.json) out(JSON.stringify({ apiKey: daguKey(key, now, await service.quotaStatus(key)), key: secret }, null, 2));
        else out(`Created API key "${key.name}" (id ${key.id}).\n\n  ${secret}\n\nCopy it now: this is the only time the full key is shown.\nUse it as:  X-API-Key: ${secret.slice(0, 8)}…   or   Authorization: Bearer ${secret.slice(0, 8)}…`);
        return 0;
      }
      case 'list':
        return await listCommand(service, v, now);
      case 'export':
        return await exportCommand(store, v);
      case 'import':
        return await importCommand(store, target(), v);
      case 'show': {
        const key = await service.get(target());
        const quota = await service.quotaStatus(key);
        out(v.json ? JSON.stringify({ apiKey: daguKey(key, now, quota) }, null, 2) : describeKey(key, now, quota));
        return 0;
      }
      case 'update': {
        const input = keyInput(v);
        // --quota-limit alone (or --quota-period…) changes that part of a periodic quota; the rest stays
        if (input.quota && typeof input.quota === 'object' && !('remaining' in input.quota)) {
          const current = (await service.get(target())).quota;
          if (current !== null && isPeriodic(current)) input.quota = { ...current, ...input.quota };
        }
        const key = await service.update(target(), input, actor());
        const quota = await service.quotaStatus(key);
        out(v.json ? JSON.stringify({ apiKey: daguKey(key, now, quota) }, null, 2) : `Updated "${key.name}".\n${describeKey(key, now, quota)}`);
        return 0;
      }
      case 'quota': {
        if (v.remaining === undefined && !v.reset) {
          const key = await service.get(target());
          const quota = await service.quotaStatus(key);
          out(v.json ? JSON.stringify({ apiKey: daguKey(key, now, quota) }, null, 2) : `quota of "${key.name}": ${describeQuota(key.quota, quota)}`);
          return 0;
        }
        const { key, status } = await service.setQuotaRemaining(target(), { remaining: v.remaining, ...(v.reset ? { reset: true } : {}) }, actor());
        out(v.json ? JSON.stringify({ apiKey: daguKey(key, now, status) }, null, 2) : `quota of "${key.name}": ${describeQuota(key.quota, status)}`);
        return 0;
      }
      case 'activate':
      case 'deactivate': {
        const key = await service.setActive(target(), sub === 'activate', actor());
        out(v.json ? JSON.stringify({ apiKey: daguKey(key, now) }, null, 2) : `"${key.name}" is now ${keyStatus(key, now)}.`);
        return 0;
      }
      case 'regenerate': {
        const grace = v['grace-seconds'] !== undefined ? { graceSeconds: v['grace-seconds'] } : {};
        const { key, secret, previousValidUntil } = await service.regenerate(target(), actor(), grace);
        const old = previousValidUntil ? `The old key keeps working until ${previousValidUntil}, then stops by itself.` : 'The old key stopped working.';
        if (v.json) out(JSON.stringify({ apiKey: daguKey(key, now), key: secret, previousValidUntil }, null, 2));
        else out(`Regenerated "${key.name}". ${old}\n\n  ${secret}\n\nCopy it now: this is the only time the full key is shown.`);
        return 0;
      }
      case 'usage': {
        const series = await service.usage(target(), usageQuery(v));
        out(v.json ? JSON.stringify(daguUsage(series), null, 2) : usageTable(series, `Requests with "${series.key.name}"`));
        return 0;
      }
      case 'delete': {
        const key = await service.delete(target(), actor());
        out(v.json ? JSON.stringify({ apiKey: daguKey(key, now), deleted: key.id }, null, 2) : `Deleted "${key.name}" (id ${key.id}). Every consumer of this key has lost access.`);
        return 0;
      }
      default:
        throw new UsageError(`unknown keys command "${sub ?? ''}": create, list, show, update, activate, deactivate, regenerate, quota, usage, delete, export, import`);
    }
  } finally {
    await service.store.close();
  }
}

/** --days (default 7) and --bucket (default day) of `keys usage` and `groups usage`. */
function usageQuery(v: Values): UsageQuery {
  return { days: v.days ?? '7', bucket: v.bucket ?? 'day' };
}

/** A usage series as a table: one row per bucket with the split, then the totals. */
function usageTable(series: UsageSeries, what: string): string {
  const label = (iso: string) => (series.bucket === 'day' ? iso.slice(0, 10) : `${iso.slice(0, 10)} ${iso.slice(11, 16)}`);
  const rows = [[series.bucket === 'day' ? 'DAY (UTC)' : 'HOUR (UTC)', 'ALLOWED', 'RATE LIMITED', 'FORBIDDEN', 'OVER QUOTA']];
  for (const p of series.points) rows.push([label(p.start), String(p.allowed), String(p.limited), String(p.forbidden), String(p.quota)]);
  rows.push(['total', String(series.totals.allowed), String(series.totals.limited), String(series.totals.forbidden), String(series.totals.quota)]);
  return `${what} per ${series.bucket}, ${label(series.from)} to ${label(series.points.at(-1)!.start)} (UTC)\n${table(rows, [1, 2, 3, 4])}`;
}

/** A group in a few lines (groups show, create, update). */
function describeGroup(g: GroupStatus): string {
  return [
    `name:         ${g.name}`,
    `description:  ${g.description}`,
    `rate limit:   ${g.rateLimit === null ? 'none' : `${g.rateLimit}/min shared by its keys`}`,
    `quota:        ${describeQuota(g.quota, g.quotaStatus)}`,
    `keys:         ${g.keys}`,
    `managed by:   ${g.managedBy}`,
    `created:      ${g.createdAt} by ${g.createdBy ?? '-'}`,
    `updated:      ${g.updatedAt} by ${g.updatedBy ?? '-'}`,
  ].join('\n');
}

/** Flags → group input; only the flags given. */
function groupInput(v: Values): GroupInput {
  const input: GroupInput = {};
  if (v.name !== undefined) input.name = v.name;
  if (v.description !== undefined) input.description = v.description;
  if (v['no-rate-limit']) {
    if (v['rate-limit'] !== undefined) throw new UsageError('--no-rate-limit removes the group\'s rate limit: give it without --rate-limit');
    input.rateLimit = null;
  } else if (v['rate-limit'] !== undefined) input.rateLimit = v['rate-limit'];
  const quota = quotaInput(v);
  if (quota !== undefined) input.quota = quota;
  return input;
}

async function groupsCommand(sub: string, args: string[], v: Values): Promise<number> {
  const config = load(v);
  const store = openKeyStore(config.store.keys, { redis: config.store.redis });
  const service = new KeyService(store, serviceConfig(config), Date.now, { store });
  const target = (): string => {
    if (!args[0]) throw new UsageError(`groups ${sub} needs a group name`);
    return args[0];
  };
  const show = async (g: GroupStatus, text: string) => out(v.json ? JSON.stringify({ group: daguGroup(g) }, null, 2) : text);
  try {
    switch (sub) {
      case 'create': {
        const g = await service.groupStatus(await service.createGroup(groupInput(v), actor()));
        await show(g, `Created group "${g.name}".\n${describeGroup(g)}\nAdd keys to it: keygate keys update KEY --group ${shellWord(g.name)}`);
        return 0;
      }
      case 'list': {
        const groups = await service.listGroups();
        if (v.json) out(JSON.stringify({ groups: groups.map(daguGroup) }, null, 2));
        else if (groups.length === 0) out('No key groups yet. Create one: keygate groups create --name NAME --rate-limit 600');
        else {
          const rows = groups.map((g) => [g.name, g.rateLimit === null ? '-' : `${g.rateLimit}/min`, quotaCell(g.quota, g.quotaStatus), String(g.keys), g.managedBy, g.description]);
          out(table([['NAME', 'LIMIT', 'QUOTA', 'KEYS', 'MANAGED BY', 'DESCRIPTION'], ...rows], [3]));
        }
        return 0;
      }
      case 'show': {
        const g = await service.groupStatus(target());
        await show(g, describeGroup(g));
        return 0;
      }
      case 'update': {
        const input = groupInput(v);
        // --quota-limit alone (or --quota-period…) changes that part of a periodic quota; the rest stays
        if (input.quota && typeof input.quota === 'object' && !('remaining' in input.quota)) {
          const current = (await service.getGroup(target())).quota;
          if (current !== null && isPeriodic(current)) input.quota = { ...current, ...input.quota };
        }
        const g = await service.groupStatus(await service.updateGroup(target(), input, actor()));
        await show(g, `Updated group "${g.name}".\n${describeGroup(g)}`);
        return 0;
      }
      case 'quota': {
        if (v.remaining !== undefined || v.reset) await service.setGroupQuotaRemaining(target(), { remaining: v.remaining, ...(v.reset ? { reset: true } : {}) }, actor());
        const g = await service.groupStatus(target());
        await show(g, `quota of group "${g.name}": ${describeQuota(g.quota, g.quotaStatus)}`);
        return 0;
      }
      case 'usage': {
        const series = await service.groupUsage(target(), usageQuery(v));
        out(v.json ? JSON.stringify(daguGroupUsage(series), null, 2) : usageTable(series, `Requests with the keys of group "${series.group.name}"`));
        return 0;
      }
      case 'delete': {
        const g = await service.deleteGroup(target(), actor());
        out(v.json ? JSON.stringify({ deleted: g.name }, null, 2) : `Deleted group "${g.name}".`);
        return 0;
      }
      default:
        throw new UsageError(`unknown groups command "${sub}": create, list, show, update, quota, usage, delete`);
    }
  } finally {
    await service.store.close();
  }
}

/** What `check` says of the key store: how many keys it holds, or that serve would create it empty. */
async function describeStore(spec: string, config: GatewayConfig): Promise<string> {
  if (spec.startsWith('sqlite:') && spec !== 'sqlite::memory:') {
    const file = spec.slice('sqlite:'.length);
    if (!existsSync(file)) {
      // throws when the directory does not exist either: a typo is an error, not a new store
      if (!existsSync(dirname(file))) new SqliteKeyStore(file, { mustExist: true });
      return `${spec} (does not exist yet: serve creates it, empty)`;
    }
  } else if (spec === 'sqlite::memory:') return `${spec} (in memory: empty at every start)`;
  const store = openKeyStore(spec, { redis: config.store.redis });
  const shown = spec.replace(/\/\/[^@/]*@/, '//***@');
  try {
    try {
      await store.ready?.(3000);
    } catch (err) {
      return `${shown} (not reachable now: ${(err as Error).message})`;
    }
    return `${shown} (${await store.count()} keys)`;
  } finally {
    await store.close();
  }
}

async function checkCommand(v: Values): Promise<number> {
  const config = load(v);
  let storeLine: string;
  let storeOk = true;
  try {
    storeLine = await describeStore(config.store.keys, config);
  } catch (err) {
    storeOk = false;
    storeLine = `ERROR: ${(err as Error).message}`;
  }
  const table = RouteTable.compile(config);
  const bySurface = new Map<string, number>();
  let open = 0;
  for (const r of config.routes) {
    bySurface.set(r.surface, (bySurface.get(r.surface) ?? 0) + 1);
    if (r.auth === 'none') open++;
  }
  const lines = [
    `${config.file}: OK`,
    `  listen:       ${config.listen.host}:${config.listen.port}${config.listen.tls ? ` (HTTPS, certificate ${config.listen.tls.cert_file})` : ''}`,
    `  admin:        ${config.admin.enabled ? `${config.admin.host}:${config.admin.port} (${config.admin.token ? 'token set' : 'no token: admin keys only'})` : 'disabled'}`,
    `  key store:    ${storeLine}`,
    `  rate limits:  ${config.store.rate_limits}`,
    `  keys:         prefix ${config.keys.prefix}, rate limit ${config.keys.rate_limit.default}/min (${config.keys.rate_limit.min}–${config.keys.rate_limit.max})${config.keys.max_keys ? `, at most ${config.keys.max_keys} keys` : ''}${config.keys.declared ? `, ${config.keys.declared.length} declared` : ''}`,
    ...(config.groups?.declared ? [`  key groups:   ${config.groups.declared.length} declared (${config.groups.declared.map((g) => g.name).join(', ')})`] : []),
    `  upstreams:    ${config.upstreams.map((u) => `${u.name} → ${u.api_base_url} (auth ${u.auth_type})`).join('; ') || 'none'}`,
    `  remote nodes: ${config.remote_nodes.map((u) => u.name).join(', ') || 'none'}`,
    `  routes:       ${table.routes.length} (${[...bySurface].map(([s, n]) => `${n} ${s}`).join(', ')}; ${open} without auth)`,
  ];
  const fa = config.forward_auth;
  if (fa !== undefined) {
    const who = [fa.secret !== undefined ? `shared secret in ${fa.secret_header}` : '', fa.allow_from ? `from ${fa.allow_from.join(', ')}` : ''].filter(Boolean).join(', ');
    lines.push(`  forward-auth: ${fa.path} (${fa.proxy === 'auto' ? 'any one proxy form' : `${fa.proxy} form only`}; ${who})`);
  }
  for (const w of config.warnings) lines.push(`  warning: ${formatConfigIssue(w)}`);
  out(lines.join('\n'));
  if (!storeOk) return 1;
  return v.probe ? probeVersions(config) : 0;
}

/** `check --probe`: the version check the gateway makes at start, printed (exit 1 on a mismatch). */
async function probeVersions(config: GatewayConfig): Promise<number> {
  const { Upstreams } = await import('./proxy/upstream.js');
  const { VersionGate } = await import('./upstream-version/gate.js');
  const upstreams = new Upstreams(config.upstreams);
  const remoteNodes = new Upstreams(config.remote_nodes);
  try {
    const gate = new VersionGate(config, { upstream: (n) => upstreams.get(n), remoteNode: (n) => remoteNodes.get(n) });
    if (gate.empty) {
      out('  versions:     no route declares requires: nothing to probe');
      return 0;
    }
    const findings = await gate.probeAll();
    for (const f of findings) out(`  version:      ${f.status === 'ok' ? 'OK' : f.status === 'mismatch' ? 'MISMATCH' : 'warning'}: ${f.message}`);
    return findings.some((f) => f.status === 'mismatch') ? 1 : 0;
  } finally {
    await Promise.all([upstreams.close(), remoteNodes.close()]);
  }
}

function explainCommand(args: string[], v: Values): number {
  const [method, path] = args;
  if (!method || !path) throw new UsageError('routes explain needs METHOD and PATH, e.g. routes explain GET /api/v1/dags');
  const config = load(v);
  const table = RouteTable.compile(config);
  const m = method.toUpperCase();
  const target = normaliseTarget(path);
  if (!target.ok) {
    out(v.json ? JSON.stringify({ matched: false, status: 400, reason: target.message }) : `refused with 400: ${target.message}`);
    return 1;
  }
  const match = table.match(m, v.host, target.path);
  if (!match) {
    out(v.json ? JSON.stringify({ matched: false, status: 404, path: target.path }) : `no route: ${m} ${target.path} gets 404 and reaches no upstream`);
    return 1;
  }
  if (!match.route.config.expose_login && isLoginPath(target.path)) {
    const reason = `a login path: not routed without expose_login: true (route ${match.route.config.name} matched)`;
    out(v.json ? JSON.stringify({ matched: false, status: 404, path: target.path, reason }) : `no route: ${m} ${target.path} gets 404 (${reason})`);
    return 1;
  }
  const r = match.route.config;
  const upstreamUrl = match.route.origin + RouteTable.upstreamPath(match.route, target.path) + (target.query ? `?${target.query}` : '');
  const ws = r.workspace === undefined ? 'none' : r.workspace.from === 'key' ? "the key's workspace" : `${r.workspace.from} "${r.workspace.name}"`;
  const result = {
    matched: true,
    route: r.name,
    source: r.source,
    index: r.index,
    normalised_path: target.path,
    params: match.params ?? {},
    auth: r.auth,
    surface: r.surface,
    scopes: r.scopes,
    role: r.role ?? null,
    workspace: r.workspace ?? null,
    remote_node: r.remote_node,
    query_token: r.query_token,
    jsonrpc: r.jsonrpc ?? null,
    requires: r.requires ?? null,
    answer: r.answer ?? null,
    cors: r.cors ?? null,
    upstream: r.upstream,
    upstream_url: upstreamUrl,
  };
  if (v.json) out(JSON.stringify(result, null, 2));
  else {
    out(
      [
        `${m} ${target.path}${v.host ? ` (host ${v.host})` : ''}`,
        `  route:      #${r.index} ${r.name}  (${r.source})`,
        `  auth:       ${r.auth === 'none' ? 'none (no key needed)' : 'API key required'}`,
        ...(r.auth === 'none' ? [] : [`  surface:    ${r.surface}`, `  scopes:     ${r.scopes.join(', ') || 'any'}`, `  min role:   ${r.role ?? 'any'}`, `  workspace:  ${ws}`]),
        ...(r.remote_node ? ['  remote:     ?remoteNode=<name> goes to that remote node'] : []),
        ...(r.query_token ? ['  ?token=:    accepted as the key (stripped before forwarding)'] : []),
        ...(r.requires ? [`  requires:   Dagu ${r.requires.dagu} (checked against the upstream's GET …/health)`] : []),
        ...(r.answer ? [`  answer:     ${r.answer}: Keygate answers from the key, nothing is forwarded`] : []),
        ...(r.cors ? [`  cors:       origins ${r.cors.allowed_origins.join(', ')}; preflights answered by Keygate`] : []),
        ...(r.jsonrpc ? [`  jsonrpc:    methods ${JSON.stringify(r.jsonrpc.methods)}, tools ${JSON.stringify(r.jsonrpc.tools)}, other tools ${r.jsonrpc.default_tool}`] : []),
        `  params:     ${Object.entries(match.params ?? {}).map(([k, val]) => `${k}=${val}`).join(', ') || 'none'}`,
        `  upstream:   ${r.upstream} → ${upstreamUrl}`,
      ].join('\n'),
    );
  }
  return 0;
}

/**
 * Run the gateway until SIGTERM/SIGINT. `read` loads the configuration: at start, and again on
 * SIGHUP, when a valid file is made live without dropping requests and a bad one is refused
 * (the old configuration stays) with its positions in the log.
 */
async function serveCommand(v: Values, read: () => GatewayConfig, onStarted?: (gw: Gateway) => void): Promise<number> {
  const config = read();
  const port = v.port !== undefined ? Number(v.port) : undefined;
  const gw = await Gateway.start({ config, ...(port !== undefined ? { port } : {}) });
  for (const w of config.warnings) gw.logger.warn({ file: w.file, line: w.line, col: w.col, field: w.field }, w.message);
  // a worker's /metrics answers for the whole cluster, whichever worker takes the scrape
  if (cluster.isWorker) gw.metrics.scrape = clusterMetricsSource(gw.metrics.registry);
  // listen/admin_listen: the sockets really bound; url/admin_url: where a client on this host reaches them
  const bound = gw.listening;
  gw.logger.info({ version: VERSION, listen: bound.public, admin_listen: bound.admin, url: gw.url, admin_url: gw.adminUrl, config: config.file, routes: gw.routes.routes.length }, 'keygate listening');
  reportListening();
  onStarted?.(gw);
  return new Promise<number>((resolve) => {
    const stop = (signal: string) => {
      gw.logger.info({ signal }, 'shutting down: draining in-flight requests');
      // a cluster worker's channel to the primary would keep it alive once drained: let go of it
      const done = (code: number) => {
        gw.logger.info({ signal, exit_code: code }, 'keygate stopped');
        gw.logger.flush(() => {
          if (cluster.isWorker) cluster.worker?.disconnect();
          resolve(code);
        });
      };
      gw.close().then(
        () => done(0),
        () => done(1),
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    // Without a handler Node would exit on SIGHUP; here it means "reopen the log file (after
    // logrotate) and reload the configuration".
    process.on('SIGHUP', () => {
      reopenLogFile(gw.logger);
      reloadFromFile();
    });
    // With reload.watch the file's own change does the same (in a cluster, the primary watches).
    if (config.reload.watch && !cluster.isWorker) watchFile(config.file, () => process.kill(process.pid, 'SIGHUP'));
    function reloadFromFile(): void {
      let next: GatewayConfig;
      try {
        next = read();
      } catch (err) {
        gw.reloads.failed++;
        const issues = err instanceof ConfigError ? err.issues.map(formatConfigIssue) : [(err as Error).message];
        gw.logger.error({ issues, failed_reloads: gw.reloads.failed }, 'reload refused: the configuration stays as it was');
        return;
      }
      for (const w of next.warnings) gw.logger.warn({ file: w.file, line: w.line, col: w.col, field: w.field }, w.message);
      gw.reload(next).then(
        (r) => {
          gw.logger.info({ routes: gw.routes.routes.length, declared_keys: r.declaredKeys, reloads: gw.reloads.ok }, 'configuration reloaded');
          if (r.restartNeeded.length > 0) gw.logger.warn({ sections: r.restartNeeded }, 'these sections changed and take effect after a restart');
        },
        (err: unknown) => {
          const issues = err instanceof ConfigError ? err.issues.map(formatConfigIssue) : [(err as Error).message];
          gw.logger.error({ issues, failed_reloads: gw.reloads.failed }, 'reload refused: the configuration stays as it was');
        },
      );
    }
  });
}

/** Call `changed` when the file's modification time moves (polling: survives editors that replace files). */
function watchFile(file: string, changed: () => void): void {
  fsWatchFile(file, { interval: 1000, persistent: false }, (cur, prev) => {
    if (cur.mtimeMs !== prev.mtimeMs) changed();
  });
}

async function demoCommand(v: Values): Promise<number> {
  const { startEchoUpstream } = await import('./demo/echo-upstream.js');
  const config = load(v);
  const echoes = new Map<string, Awaited<ReturnType<typeof startEchoUpstream>>>();
  // each echo server reports a Dagu version its routes accept (the version check at start)
  const { forDagu130 } = await import('./answers/current-user.js');
  const daguVersion = (name: string) => (config.routes.some((r) => r.upstream === name && r.requires !== undefined && forDagu130(r)) ? '1.30.2' : '2.0.0');
  for (const u of config.upstreams) echoes.set(u.name, await startEchoUpstream({ name: u.name, daguVersion: daguVersion(u.name) }));
  // Every upstream points at its echo server, also after a reload (SIGHUP).
  const withEchoes = (c: GatewayConfig): GatewayConfig => {
    const missing = c.upstreams.filter((u) => !echoes.has(u.name)).map((u) => u.name);
    if (missing.length > 0) {
      throw new KeygateError('demo_reload', 500, `the demo has echo servers for ${[...echoes.keys()].join(', ')}: restart it to add ${missing.join(', ')}`);
    }
    return { ...c, upstreams: c.upstreams.map((u) => ({ ...u, api_base_url: echoes.get(u.name)!.url + new URL(u.api_base_url).pathname.replace(/\/$/, '') })) };
  };
  const upstreams = withEchoes(config).upstreams;
  const code = await serveCommand(v, () => withEchoes(load(v)), (gw) => {
    process.stderr.write(
      [
        '',
        `keygate demo: gateway on ${gw.url}; every upstream is a built-in echo server:`,
        ...upstreams.map((u) => `  ${u.name} → ${u.api_base_url}`),
        '',
        'Try it (in another terminal):',
        `  ./bin/keygate keys create --name demo --scopes workflows --role operator   # or: keygate … when installed`,
        `  curl -i ${gw.url}/api/v1/dags                          # 401: no key`,
        `  curl -i -H "X-API-Key: <key>" ${gw.url}/api/v1/dags    # 200: echoed by the upstream`,
        `  curl -i -H "X-API-Key: <key>" -X POST ${gw.url}/api/v1/agent/chat   # 403: no agents scope`,
        ...(gw.adminUrl ? [`  curl -s -H "Authorization: Bearer $KEYGATE_ADMIN_TOKEN" ${gw.adminUrl}/api/v1/api-keys   # admin API`] : []),
        '',
      ].join('\n'),
    );
  });
  await Promise.all([...echoes.values()].map((e) => e.close()));
  return code;
}

/** How many positional arguments a command takes ("ID|NAME" is one, "METHOD PATH" two). */
function arity(spec: CommandSpec): number {
  return spec.args === '' ? 0 : spec.args.split(' ').length;
}

export async function main(argv: string[]): Promise<number> {
  let parsed;
  const usageHint = (spec?: CommandSpec) => `Run "keygate ${spec ? `${spec.name} ` : ''}--help" for usage.`;
  try {
    parsed = parseCommandLine(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`keygate: ${err.message}\n${usageHint(err.command)}\n`);
    return 2;
  }
  const { spec, values: v, args, positionals } = parsed;
  const [command] = positionals;
  if (v.version || command === 'version') {
    out(`keygate ${VERSION} (node ${process.version})`);
    return 0;
  }
  if (command === 'help') {
    const topic = COMMANDS.find((c) => c.name === positionals.slice(1).join(' '));
    out(topic ? commandHelp(topic) : HELP);
    return 0;
  }
  if (v.help || command === undefined) {
    out(spec ? commandHelp(spec) : HELP);
    return 0;
  }
  try {
    if (spec === undefined) {
      if (command === 'keys') throw new UsageError(`unknown keys command "${positionals[1] ?? ''}": ${COMMANDS.filter((c) => c.name.startsWith('keys ')).map((c) => c.name.slice(5)).join(', ')}`);
      if (command === 'routes') throw new UsageError('usage: keygate routes explain -c FILE METHOD PATH [--host H]');
      throw new UsageError(`unknown command "${command}"`);
    }
    const extra = args.slice(arity(spec));
    if (extra.length > 0) throw new UsageError(`unexpected argument "${extra[0]}" for keygate ${spec.name}${spec.args ? ` (it takes ${spec.args})` : ''}`);
    switch (spec.name) {
      case 'serve': {
        const config = load(v);
        const n = workerCount(config.workers);
        // the primary only supervises; each forked worker runs this same command as a worker
        if (n > 1 && cluster.isPrimary) {
          if (config.reload.watch) watchFile(config.file, () => process.kill(process.pid, 'SIGHUP'));
          return await runPrimary(n, createLogger(config.log));
        }
        return await serveCommand(v, () => load(v));
      }
      case 'check':
        return await checkCommand(v);
      case 'routes explain':
        return explainCommand(args, v);
      case 'backup':
        return await backupCommand(args, v);
      case 'demo':
        return await demoCommand(v);
      default:
        if (spec.name.startsWith('groups ')) return await groupsCommand(spec.name.slice('groups '.length), args, v);
        return await keysCommand(spec.name.slice('keys '.length), args, v);
    }
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`keygate: configuration has ${err.issues.length} error(s):\n${err.issues.map((i) => '  ' + formatConfigIssue(i)).join('\n')}\n`);
      return 1;
    }
    if (err instanceof UsageError) {
      process.stderr.write(`keygate: ${err.message}\n${usageHint(spec)}\n`);
      return 2;
    }
    if (err instanceof ValidationError && (spec?.name.startsWith('keys ') || spec?.name.startsWith('groups '))) {
      // name the flag the person typed, not the key service's field; every problem, one a line
      for (const e of err.errors) process.stderr.write(`keygate: ${flagMessage(e.field, e.reason) ?? `${e.field}: ${e.reason}`}\n`);
      return 1;
    }
    if (err instanceof KeygateError) {
      process.stderr.write(`keygate: ${err.message}\n`);
      return 1;
    }
    // a failure of the system around the gateway (a file, a socket, a database): one line, no stack
    const sys = err as Error & { code?: unknown; syscall?: unknown };
    if (err instanceof Error && (typeof sys.syscall === 'string' || (typeof sys.code === 'string' && /^(E[A-Z]+|SQLITE_\w+)$/.test(sys.code)))) {
      process.stderr.write(`keygate: ${err.message}${typeof sys.code === 'string' && !err.message.includes(sys.code) ? ` (${sys.code})` : ''}\n`);
      return 1;
    }
    throw err;
  }
}
