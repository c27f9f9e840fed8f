// The real `keygate` binary as a child process, for the tests that need signals, workers or the
// CLI beside a running gateway: one way to start it, read its log and wait for a line.

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Test } from 'tap';

export const BIN = fileURLToPath(new URL('../bin/keygate.js', import.meta.url));
/** NODE_OPTIONS would carry tap's TypeScript and coverage loaders into the child; it runs the compiled dist/ */
export const CHILD_ENV = { ...process.env, NODE_OPTIONS: '' };

/** One CLI command run to its end in `cwd` (a 60 s hang guard): exit code and output. */
export function runKeygate(args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd, env: CHILD_ENV, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

export interface RunningKeygate {
  readonly child: ChildProcess;
  /** the exit code (null after a signal) */
  readonly exited: Promise<number | null>;
  /** stdout and stderr so far, interleaved as they arrived */
  output(): string;
  /** the JSON log lines so far (other lines as `{ raw }`) */
  lines(): Array<Record<string, any>>; // eslint-disable-line @typescript-eslint/no-explicit-any
  /**
   * Wait until `re` has matched `count` times (default 1) in the output; resolves with the last
   * match, or undefined if the process exits or `ms` (default 20 s) pass first.
   */
  waitFor(re: RegExp, count?: number, ms?: number): Promise<RegExpExecArray | undefined>;
}

/** Start `keygate ...args` (`bin`: another copy of bin/keygate.js); killed (SIGKILL) at the test's end if still running. */
export function spawnKeygate(t: Test, args: string[], opts: { cwd?: string; env?: Record<string, string>; bin?: string; uid?: number; gid?: number } = {}): RunningKeygate {
  const ids = opts.uid === undefined ? {} : { uid: opts.uid, gid: opts.gid ?? opts.uid };
  // as another user, without the test runner's coverage hooks (they write under .tap/ as that user)
  const [cmd, pre] = opts.uid === undefined ? [process.execPath, []] : ['/usr/bin/env', ['-u', 'NODE_OPTIONS', process.execPath]];
  const child = spawn(cmd, [...pre, opts.bin ?? BIN, ...args], { ...(opts.cwd ? { cwd: opts.cwd } : {}), ...ids, env: { ...CHILD_ENV, ...opts.env } });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  let done = false;
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      done = true;
      resolve(code);
    }),
  );
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const matches = (re: RegExp) => [...out.matchAll(new RegExp(re.source, re.flags.includes('g') ? re.flags : re.flags + 'g'))];
  return {
    child,
    exited,
    output: () => out,
    lines: () =>
      out
        .split('\n')
        .filter(Boolean)
        .map((l) => {
          try {
            return JSON.parse(l);
          } catch {
            return { raw: l };
          }
        }),
    async waitFor(re, count = 1, ms = 20_000) {
      const until = Date.now() + ms;
      for (;;) {
        const m = matches(re);
        if (m.length >= count) return m[count - 1] as RegExpExecArray;
        if (done || Date.now() > until) return undefined;
        await new Promise((r) => setTimeout(r, 25));
      }
    },
  };
}
