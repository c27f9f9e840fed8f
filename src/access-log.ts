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

const str = (name: string, v: string | undefined): string => (v === undefined ? '' : `,"${name}":${JSON.stringify(v)}`);
const num = (name: string, v: number | undefined): string => (v === undefined ? '' : `,"${name}":${v}`);

export class AccessLog {
  private pending = '';
  private scheduled = false;
  private readonly bindings: string;
  private lastMs = -1;
  private lastIso = '';
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
      this.lastIso = new Date(ms).toISOString();
    }
    this.pending +=
      `{"level":"info","time":"${this.lastIso}"${this.bindings}` +
      str('request_id', e.request_id) +
      str('remote_address', e.remote_address) +
      str('forwarded_for', e.forwarded_for) +
      str('method', e.method) +
      str('host', e.host) +
      str('path', e.path) +
      str('route', e.route) +
      str('key_id', e.key_id) +
      str('key_prefix', e.key_prefix) +
      num('status', e.status) +
      str('decision', e.decision) +
      str('code', e.code) +
      str('upstream', e.upstream) +
      num('bytes_in', e.bytes_in) +
      num('bytes_out', e.bytes_out) +
      str('user_agent', e.user_agent) +
      num('latency_ms', e.latency_ms) +
      num('upstream_ms', e.upstream_ms) +
      str('via', e.via) +
      ',"msg":"request"}\n';
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
