// The usage spool: batches the key store did not accept by shutdown, kept in a local file (mode
// 0600; key ids and counts, nothing secret) and replayed, with their ids, at the next start.
// The file is removed once its batches are in the store.

import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type { UsageDelta, UsageHour } from '../keys/store.js';
import type { UsageBatch } from './counter.js';

interface SpoolLine {
  id: string;
  counts: Record<string, UsageDelta>;
}

/** Write the batches (replacing an older spool: its batches were loaded at start and are among them). */
export function writeSpool(file: string, batches: readonly UsageBatch[]): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const text = batches.map((b) => JSON.stringify({ id: b.id, counts: Object.fromEntries(b.counts) } satisfies SpoolLine)).join('\n') + '\n';
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, file);
}

/** The spooled batches; none when there is no file. A damaged line is skipped and reported. */
export function readSpool(file: string): { batches: UsageBatch[]; requests: number; damaged: number } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { batches: [], requests: 0, damaged: 0 };
    throw err;
  }
  const batches: UsageBatch[] = [];
  let requests = 0;
  let damaged = 0;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      const parsed = JSON.parse(line) as SpoolLine;
      if (typeof parsed.id !== 'string' || typeof parsed.counts !== 'object' || parsed.counts === null) throw new Error('shape');
      const counts = new Map<string, UsageDelta>();
      for (const [id, d] of Object.entries(parsed.counts)) {
        if (!count(d.count) || typeof d.lastUsedAt !== 'string' || !(d.hours === undefined || Array.isArray(d.hours))) throw new Error('shape');
        const hours: UsageHour[] = (d.hours ?? []).map((h) => {
          // quota: absent in a spool written before quotas
          if (!count(h.hourMs) || !count(h.allowed) || !count(h.limited) || !count(h.forbidden) || !(h.quota === undefined || count(h.quota))) throw new Error('shape');
          // group: absent in a spool written before groups, and for keys without one
          if (!(h.group === undefined || (typeof h.group === 'string' && h.group !== ''))) throw new Error('shape');
          const hour: UsageHour = { hourMs: h.hourMs, allowed: h.allowed, limited: h.limited, forbidden: h.forbidden, quota: h.quota ?? 0 };
          if (h.group !== undefined) hour.group = h.group;
          return hour;
        });
        counts.set(id, { count: d.count, lastUsedAt: d.lastUsedAt, hours });
        requests += d.count;
      }
      batches.push({ id: parsed.id, counts });
    } catch {
      damaged++;
    }
  }
  return { batches, requests, damaged };
}

function count(v: unknown): v is number {
  return Number.isInteger(v) && (v as number) >= 0;
}

export function removeSpool(file: string): void {
  rmSync(file, { force: true });
}
