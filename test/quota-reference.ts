// One check for both stores' quota counters: every combination of stored state, period, refill
// mode and limit, consumed through the store, must give what the reference rule (quota.ts) gives.

import type { Test } from 'tap';
import { consume, type QuotaState } from '../src/keys/quota.js';
import type { QuotaCounters } from '../src/keys/store.js';

export async function matchesReference(t: Test, store: QuotaCounters): Promise<void> {
  const states: (QuotaState | undefined)[] = [undefined, { balance: 0, period: 5 }, { balance: 1, period: 5 }, { balance: 7, period: 5 }, { balance: -2, period: 5 }];
  let n = 0;
  for (const s of states) {
    for (const period of [4, 5, 6, 9]) {
      for (const add of [false, true]) {
        for (const limit of [0, 1, 10]) {
          const owner = `o${n++}`;
          const tick = { period, limit, add };
          await store.setQuotaState(owner, s);
          const got = await store.consumeQuota(owner, tick);
          const want = consume(s, tick);
          t.same(got, want.count, `${JSON.stringify(s)} ${JSON.stringify(tick)}`);
          t.same(await store.quotaState(owner), want.next, 'stored state');
        }
      }
    }
  }
}
