// The access log: one line per finished request, built as one string (no object, no serializer)
// and written with the other lines of the same event-loop turn in one write. The line has the
// shape of the gateway's other log lines (log.ts), so one parser reads both:
//
// {"level":"info","time":"2026-12-01T22:00:00.000Z","service":"keygate","pid":4242,
//  "request_id":"…","remote_address":"127.0.0.1","forwarded_for":"…","method":"GET","host":"gw.example",
//  "path":"/api/v1/dags","route":"GET /api/v1/dags","key_id":"…","key_prefix":"dg_7Qx2a","status":200,
//  "decision":"allowed","code":"…","upstream":"dagu","bytes_in":12,"bytes_out":431,"user_agent":"curl/8.5.0",
//  "latency_ms":1.25,"upstream_ms":0.81,"msg":"request"}  (a forward-auth answer: "via":"forward_auth", no upstream)
//
// Absent values are left out. Never a header other than those named, never the query string.

import type { LogStream } from './log.js';

export interface AccessEntry {
  request_id: string | undefined;
  remote_address: string;
  forwarded_for: string | undefined;
  method: string | undefined;
  host: string | undefined;
  path: string | undefined;
  route: string | undefined;
  key_id: string | undefined;
  key_prefix: string | undefined;
  status: number;
  decision: string;
  code: string | undefined;
  upstream: string | undefined;
  bytes_in: number | undefined;
  bytes_out: number | undefined;
  user_agent: string | undefined;
  latency_ms: number;
  upstream_ms: number | undefined;
  /** 'forward_auth': a proxy's ask (forward_auth), answered, not forwarded */
  via: 'forward_auth' | undefined;
}

/** The pieces of a line, joined once: labels and values side by side, '' where a field is absent. */
const FIELDS = [
  'request_id', 'remote_address', 'forwarded_for', 'method', 'host', 'path', 'route', 'key_id', 'key_prefix', 'status',
  'decision', 'code', 'upstream', 'bytes_in', 'bytes_out', 'user_agent', 'latency_ms', 'upstream_ms', 'via',
] as const;
const LABELS = FIELDS.map((name) => `,"${name}":`);
const END = ',"msg":"request"}\n';

export class AccessLog {
  private pending = '';
  private scheduled = false;
  private readonly bindings: string;
  private lastMs = -1;
  /** `{"level":"info","time":"…","service":"keygate","pid":…` of the last millisecond a line was written in */
  private head = '';
  /** scratch for one line: [head, label, value, label, value…, END], joined into one flat string */
  private readonly parts: string[] = ['', ...FIELDS.flatMap(() => ['', '']), END];
  private readonly flushNow = (): void => this.flush();

  constructor(
    private readonly out: LogStream,
    pid = process.pid,
  ) {
    this.bindings = `,"service":"keygate","pid":${pid}`;
  }

  write(e: AccessEntry): void {
    const ms = Date.now();
    if (ms !== this.lastMs) {
      this.lastMs = ms;
      this.head = `{"level":"info","time":"${new Date(ms).toISOString()}"${this.bindings}`;
    }
    // One flat string per line (no chain of small concatenations for the GC to copy), the same
    // bytes as JSON.stringify of the entry in this order with its absent fields left out.
    const p = this.parts;
    p[0] = this.head;
    str(p, 0, e.request_id);
    str(p, 1, e.remote_address);
    str(p, 2, e.forwarded_for);
    str(p, 3, e.method);
    str(p, 4, e.host);
    str(p, 5, e.path);
    str(p, 6, e.route);
    str(p, 7, e.key_id);
    str(p, 8, e.key_prefix);
    num(p, 9, e.status);
    str(p, 10, e.decision);
    str(p, 11, e.code);
    str(p, 12, e.upstream);
    num(p, 13, e.bytes_in);
    num(p, 14, e.bytes_out);
    str(p, 15, e.user_agent);
    num(p, 16, e.latency_ms);
    num(p, 17, e.upstream_ms);
    str(p, 18, e.via);
    this.pending += p.join('');
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flushNow);
    }
  }

  /** Write what this turn collected (also at shutdown, before the stream is flushed). */
  flush(): void {
    this.scheduled = false;
    if (this.pending === '') return;
    const lines = this.pending;
    this.pending = '';
    this.out.write(lines);
  }
}

function str(p: string[], field: number, v: string | undefined): void {
  const at = 1 + 2 * field;
  if (v === undefined) p[at] = p[at + 1] = '';
  else {
    p[at] = LABELS[field]!;
    p[at + 1] = JSON.stringify(v);
  }
}

function num(p: string[], field: number, v: number | undefined): void {
  const at = 1 + 2 * field;
  if (v === undefined) p[at] = p[at + 1] = '';
  else {
    p[at] = LABELS[field]!;
    p[at + 1] = String(v);
  }
}
