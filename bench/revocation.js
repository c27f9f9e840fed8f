// Revocation delay across two gateway instances (used by bench/proxy.js, not run on its own).
//
// Instance A changes a key through its own KeyService (KeyService.setActive, in A's process);
// instance B is polled with requests using that key until one reflects the change (403 after a
// deactivation, 200 after an activation). Both are gateway child processes sharing one key store.
//
// A sample is the time from the bench sending the toggle to A (over A's IPC channel) until the
// first response from B that shows the new state: it includes the IPC hop to A, A's setActive
// (store write, publish, audit record) and however long B takes to notice. The resolution is one
// poll: B is asked again about every `pollMs` (never more than one request in flight), so a
// sample overstates the true delay by up to one poll interval plus one request.

import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';

/** untimed requests through B and changes through A before measuring */
export const WARM_REQUESTS = 200;
export const WARM_CHANGES = 10;

/**
 * @param {object} o
 * @param {{ call(op: string, args?: unknown): Promise<any> }} o.a  the instance that makes the change
 * @param {{ url: string }} o.b  the instance that is polled
 * @param {string} o.keyId
 * @param {string} o.secret
 * @param {string} o.target  path of a route the key may use (GET)
 * @param {number} o.toggles  how many changes (deactivate, activate, deactivate, …)
 * @param {number} [o.pollMs]  poll B about this often (ms)
 * @param {number} [o.boundMs]  give up on one change after this long (ms)
 */
export async function measureRevocation({ a, b, keyId, secret, target, toggles, pollMs = 1, boundMs = 1000 }) {
  // One kept-alive connection to B: a poll is one request, not a TCP handshake.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const poll = () =>
    new Promise((resolve, reject) => {
      const req = http.get(b.url + target, { agent, headers: { 'x-api-key': secret }, timeout: 2_000 }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`poll of ${b.url} timed out`)));
      req.on('error', reject);
    });

  const samples = [];
  const rtts = [];
  const steadyRtts = [];
  let pollCount = 0;
  let pollSpanMs = 0;
  const unexpected = {};

  /** One change through A, B polled until it shows it; null ms = not within boundMs. */
  const change = async (active, record) => {
    const want = active ? 200 : 403;
    const old = active ? 403 : 200;
    const t0 = performance.now();
    const done = a.call('setActive', { id: keyId, active });
    let seenMs = null;
    let polls = 0;
    for (;;) {
      const sent = performance.now();
      const status = await poll();
      const got = performance.now();
      polls++;
      if (record) rtts.push(got - sent);
      if (status === want) {
        seenMs = got - t0;
        break;
      }
      if (status !== old && record) unexpected[status] = (unexpected[status] ?? 0) + 1;
      if (got - t0 >= boundMs) break;
      const wait = sent + pollMs - performance.now();
      if (wait > 0) await sleep(wait); // timers fire after >= 1 ms: polls are ~1 ms apart, or one request apart if slower
    }
    const { ms: setActiveMs } = await done; // never start the next change before A finished this one
    if (record) {
      pollCount += polls;
      pollSpanMs += performance.now() - t0;
      samples.push({ change: active ? 'activate' : 'deactivate', ms: seenMs, setActiveMs, polls });
    }
  };

  try {
    const warm = await poll(); // B looks the key up and caches it
    if (warm !== 200) throw new Error(`warming B: the fresh key got ${warm} (want 200)`);
    // Untimed warm-up, so that neither process is measured cold (JIT, first Redis/SQLite statements):
    // requests through B, then changes through A (an even number: the key ends active, cached in B).
    for (let i = 0; i < WARM_REQUESTS; i++) {
      const sent = performance.now();
      const st = await poll();
      steadyRtts.push(performance.now() - sent);
      if (st !== 200) throw new Error(`warming B: request ${i} got ${st} (want 200)`);
    }
    for (let i = 0; i < WARM_CHANGES; i++) await change(i % 2 === 1, false);
    if ((await poll()) !== 200) throw new Error('after the warm-up changes the key is not active on B');

    for (let i = 0; i < toggles; i++) await change(i % 2 === 1, true); // first deactivate, then activate, alternately
  } finally {
    agent.destroy();
  }

  const seen = samples.filter((s) => s.ms !== null).map((s) => s.ms);
  const timeouts = samples.length - seen.length;
  // a change never seen within the bound counts as the bound (the stats are then lower bounds)
  const all = [...seen, ...Array(timeouts).fill(boundMs)];
  const by = (change) => samples.filter((s) => s.change === change && s.ms !== null).map((s) => s.ms);
  return {
    toggles: samples.length,
    timeouts,
    median: pct(all, 50),
    p90: pct(all, 90),
    max: all.length ? Math.max(...all) : null,
    min: all.length ? Math.min(...all) : null,
    deactivateMedian: pct(by('deactivate'), 50),
    activateMedian: pct(by('activate'), 50),
    setActiveMedian: pct(samples.map((s) => s.setActiveMs), 50),
    setActiveMax: samples.length ? Math.max(...samples.map((s) => s.setActiveMs)) : null,
    pollRttMedian: pct(rtts, 50),
    steadyRttMedian: pct(steadyRtts.slice(WARM_REQUESTS / 2), 50), // the second half: warm
    pollIntervalMean: pollCount ? pollSpanMs / pollCount : null,
    pollsPerChangeMedian: pct(samples.map((s) => s.polls), 50),
    unexpected,
  };
}

/** nearest-rank percentile; null for no data */
function pct(xs, p) {
  if (xs.length === 0) return null;
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.max(0, Math.ceil((p / 100) * s.length) - 1)];
}
