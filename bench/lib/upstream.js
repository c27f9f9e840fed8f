// The bench's upstream. By default nginx (one worker) answers every request with the same small
// JSON, as a Dagu API answer would, whatever the proxy in front sent it: so every phase gets the
// same bytes back and the upstream's CPU is not the proxies' (the issue's own set-up: "nginx
// upstream answering a small JSON"). A request with `?bench_echo=1` is passed on to the echo
// upstream (src/demo/echo-upstream.ts), which answers with what it received: the correctness
// checks read that. Without nginx (or with BENCH_UPSTREAM=echo) the echo upstream answers
// everything, in the bench process, as before.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { NGINX_BIN, startNginx } from './nginx.js';
import { procCpu } from './util.js';

/** The fixed answer: 343 bytes, the shape of a DAG's details from Dagu's API. */
export const FIXED_BODY = JSON.stringify({
  dag: { name: 'bench', group: 'bench', description: 'a fixed answer for the proxy bench', schedule: [{ expression: '0 * * * *' }], params: [], defaultParams: '', tags: ['bench'] },
  latestDAGRun: { dagRunId: '019299a4-7c1e-7d3a-9f1b-3a2e4c5d6e7f', status: 4, statusLabel: 'succeeded', startedAt: '2026-12-02T07:00:00Z', finishedAt: '2026-12-02T07:00:01Z' },
  suspended: false,
});

/**
 * Start the upstream: { url, kind: 'nginx' | 'echo', echoUrl, pid (nginx's master), cpu(): {user, system} | null, describe, close() }.
 * `echo` is the started echo upstream (always there: the checks and the revocation part use it).
 */
export async function startBenchUpstream(tmp, echo, choice = process.env.BENCH_UPSTREAM ?? 'nginx') {
  if (choice === 'echo' || !NGINX_BIN) {
    const why = choice === 'echo' ? 'BENCH_UPSTREAM=echo' : 'nginx is not installed';
    return { url: echo.url, kind: 'echo', echoUrl: echo.url, pid: undefined, cpu: () => null, describe: `echo upstream in the bench process pid ${process.pid} (${why})`, close: async () => {} };
  }
  const echoHost = new URL(echo.url).host;
  const body = FIXED_BODY.replace(/\\/g, '\\\\').replace(/'/g, "\\'");
  const nginx = await startNginx(path.join(tmp, 'nginx-upstream'), (listen) => `
    upstream echo { server ${echoHost}; keepalive 32; }
    server {
        listen ${listen};
        default_type application/json;
        location / {
            if ($arg_bench_echo = "") {
                return 200 '${body}';
            }
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://echo;
        }
    }
`);
  let worker = null; // found on first use: the master may fork it after it listens
  return {
    url: nginx.url,
    kind: 'nginx',
    echoUrl: echo.url,
    /** nginx's master */
    pid: nginx.pid,
    /** the nginx worker's CPU (the master does nothing per request) */
    cpu: () => procCpu((worker ??= workerPid(nginx.pid))),
    describe: `nginx upstream pid ${nginx.pid} (one worker; a fixed ${Buffer.byteLength(FIXED_BODY)}-byte JSON; ?bench_echo=1 → echo upstream in the bench process)`,
    close: () => nginx.stop(),
  };
}

/** The one worker of an nginx master, from /proc. */
function workerPid(master) {
  try {
    const children = readFileSync(`/proc/${master}/task/${master}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    return children[0] ?? null;
  } catch {
    return null;
  }
}
