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

/**
 * A string as JSON.stringify writes it: most values (ids, paths, names) need no escaping, and for
 * those quoting is a concatenation; any quote, backslash, control character or surrogate goes
 * through JSON.stringify itself, so the bytes are always JSON.stringify's.
 */
const NEEDS_ESCAPING = /["\\\u0000-\u001f\ud800-\udfff]/;
function quote(v: string): string {
  return NEEDS_ESCAPING.test(v) ? JSON.stringify(v) : `"${v}"`;
}

export class AccessLog {
  private pending = '';
  private scheduled = false;
  private readonly bindings: string;
  private lastMs = -1;
  /** `{"level":"info","time":"…","service":"keygate","pid":…` of the last millisecond a line was written in */
  private head = '';
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
    // The same bytes as JSON.stringify of the entry in this order, absent fields left out.
    let line = this.head;
    if (e.request_id !== undefined) line += ',"request_id":' + quote(e.request_id);
    line += ',"remote_address":' + quote(e.remote_address);
    if (e.forwarded_for !== undefined) line += ',"forwarded_for":' + quote(e.forwarded_for);
    if (e.method !== undefined) line += ',"method":' + quote(e.method);
    if (e.host !== undefined) line += ',"host":' + quote(e.host);
    if (e.path !== undefined) line += ',"path":' + quote(e.path);
    if (e.route !== undefined) line += ',"route":' + quote(e.route);
    if (e.key_id !== undefined) line += ',"key_id":' + quote(e.key_id);
    if (e.key_prefix !== undefined) line += ',"key_prefix":' + quote(e.key_prefix);
    line += ',"status":' + e.status + ',"decision":' + quote(e.decision);
    if (e.code !== undefined) line += ',"code":' + quote(e.code);
    if (e.upstream !== undefined) line += ',"upstream":' + quote(e.upstream);
    if (e.bytes_in !== undefined) line += ',"bytes_in":' + e.bytes_in;
    if (e.bytes_out !== undefined) line += ',"bytes_out":' + e.bytes_out;
    if (e.user_agent !== undefined) line += ',"user_agent":' + quote(e.user_agent);
    line += ',"latency_ms":' + e.latency_ms;
    if (e.upstream_ms !== undefined) line += ',"upstream_ms":' + e.upstream_ms;
    if (e.via !== undefined) line += ',"via":' + quote(e.via);
    this.pending += line + ',"msg":"request"}\n';
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
