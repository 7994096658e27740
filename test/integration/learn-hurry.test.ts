/**
 * Which answers the proxy lets the store take its time with (LearnInput.unhurried, src/learn.ts): only those of an
 * identity none of whose requests is held here. A Redis store sends such answers together, up to
 * REDIS_LEARN_LINGER_MS later (test/contract/redis-store.test.ts, "lingering learns"); answers someone here waits
 * for must not linger.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryStore } from '../../src/limiter/memory.js';
import type { LearnInput } from '../../src/limiter/types.js';
import { startEnv, type TestEnv } from '../helpers/env.js';

const channel = (n: number) => String(240000000000000000n + BigInt(n));

describe('answers nobody here waits for', () => {
  let env: TestEnv;
  const learned: LearnInput[] = [];

  beforeAll(async () => {
    env = await startEnv(
      // Answers take 50 ms: requests sent together all reach the proxy before the first answer is back.
      {
        latency: { kind: 'fixed', ms: 50 },
        policies: [{ method: 'POST', template: '/channels/{id}/messages', limit: 1, windowMs: 300 }],
      },
      {
        store: (config) => {
          const store = new MemoryStore({
            resetMarginMs: config.resetMarginMs,
            globalWindowMarginMs: config.globalWindowMarginMs,
            probeTimeoutMs: 5000,
          });
          const learn = store.learn.bind(store);
          store.learn = (input) => {
            learned.push(input);
            return learn(input);
          };
          return store;
        },
      },
    );
  });
  afterAll(async () => env.close());

  it('marks the answer of a lone request unhurried', async () => {
    learned.length = 0;
    const res = await env.call('GET', `/api/v10/channels/${channel(1)}/messages`);
    expect(res.status).toBe(200);
    expect(learned.map((l) => l.unhurried)).toEqual([true]);
  });

  it('marks answers hurried while requests of the same token are held, and the last one unhurried', async () => {
    learned.length = 0;
    const path = `/api/v10/channels/${channel(2)}/messages`;
    // One place per 300 ms: the second and third wait for the first's answer, then for the next windows.
    const results = await Promise.all(
      [1, 2, 3].map((n) => env.call('POST', path, { body: JSON.stringify({ content: `m${n}` }) })),
    );
    expect(results.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(env.fake.stats().rateLimited.user).toBe(0);
    expect(learned.map((l) => l.unhurried)).toEqual([false, false, true]);
  });
});
