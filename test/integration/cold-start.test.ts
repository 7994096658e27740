/**
 * Three freshly started replicas, far from Discord, hit at once by a burst from a client without a limiter of its
 * own: on one Redis and on a Redis Cluster, Discord (the fake, in its own process) draws no 429. Cold pools open
 * their connections while the burst is admitted, and requests reach the fake out of order, hundreds of ms apart;
 * the limiter counts every admitted request in flight until its answer, whatever it waited for on the way.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { BOT_A, clientFor } from '../helpers/env.js';
import { type FakeProcess, startFakeProcess } from '../helpers/fake-process.js';
import { type ProxyProcess, startProxyProcess } from '../helpers/proxy-process.js';
import { sharedStores } from '../helpers/redis-cluster.js';

const channel = (i: number) => String(210000000000000000n + BigInt(i));
const STORES = sharedStores();

describe.each(STORES)('a cold start on $name', (store) => {
  let fake: FakeProcess | undefined;
  let replicas: ProxyProcess[] = [];
  afterAll(async () => {
    await Promise.all(replicas.map((r) => r.kill()));
    await fake?.stop();
  });

  it('answers a 150-call burst on three fresh replicas with zero 429s at Discord', async () => {
    fake = await startFakeProcess(['--profile', 'far']);
    const env = {
      ...store.env(),
      UPSTREAM_URL: fake.url,
      REDIS_KEY_PREFIX: `cold${Math.random().toString(36).slice(2)}:`,
    };
    replicas = await Promise.all([startProxyProcess(env), startProxyProcess(env), startProxyProcess(env)]);
    const clients = replicas.map((r) => clientFor(r.url));
    try {
      // Messages on 30 channels (the seeded 5 per 5 s each) plus reactions on 10 more (1 per 250 ms): the token's
      // 50 per second binds the first, the reaction buckets the second.
      const message = String((BigInt(Date.now() - 1420070400000 - 60_000) << 22n) + 7n);
      const results = await Promise.all(
        Array.from({ length: 150 }, (_, i) => {
          const { call } = clients[i % 3]!;
          return i % 5 === 4
            ? call(
                'PUT',
                `/api/v10/channels/${channel(100 + (i % 10))}/messages/${message}/reactions/%E2%9C%85/@me`,
                {
                  auth: BOT_A,
                },
              )
            : call('POST', `/api/v10/channels/${channel(i % 30)}/messages`, {
                auth: BOT_A,
                body: JSON.stringify({ content: `${i}` }),
              });
        }),
      );
      expect(results.filter((r) => r.status >= 300).map((r) => `${r.status} ${r.text}`)).toEqual([]);
      const stats = await fake.stats();
      expect(stats.rateLimited).toMatchObject({ user: 0, global: 0, sublimit: 0 });
      expect(stats.total).toBe(150);
      expect(stats.busiestWindow).toBeLessThanOrEqual(50);
    } finally {
      await Promise.all(clients.map((c) => c.client.close()));
    }
  });
});
