/**
 * Held requests wait in process: per queue only the head asks Redis, so the command rate stays proportional to
 * the buckets in use, not to the requests held on them.
 */
import { Redis } from 'ioredis';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { BOT_A } from '../helpers/env.js';
import { type FakeProcess, startFakeProcess } from '../helpers/fake-process.js';
import { type ProxyProcess, startProxyProcess } from '../helpers/proxy-process.js';

const HELD = 5000;

async function commandCalls(redis: Redis): Promise<number> {
  const info = await redis.info('commandstats');
  let calls = 0;
  for (const match of info.matchAll(/calls=(\d+)/g)) calls += Number(match[1]);
  return calls;
}

describe(`${HELD} requests held on one bucket across 3 replicas`, () => {
  let fake: FakeProcess;
  let replicas: ProxyProcess[];
  let redis: Redis;
  const agent = new Agent({ connections: 2000, pipelining: 0, keepAliveTimeout: 30_000 });

  beforeAll(async () => {
    fake = await startFakeProcess(['--latency', 'none']);
    await fake.policy({ method: 'POST', template: '/channels/{id}/messages', limit: 1, windowMs: 4000 });
    const env = {
      UPSTREAM_URL: fake.url,
      REDIS_URL: inject('redisUrl'),
      REDIS_KEY_PREFIX: 'held:',
      MAX_HOLD_MS: '60000',
    };
    replicas = await Promise.all([0, 1, 2].map(() => startProxyProcess(env)));
    redis = new Redis(inject('redisUrl'));
  });
  afterAll(async () => {
    await Promise.all(replicas.map((r) => r.kill()));
    await agent.destroy();
    redis.disconnect();
    await fake.stop();
  });

  it('costs Redis a few commands per second, not thousands', async () => {
    const path = '/api/v10/channels/400000000000000001/messages';
    const responses = Array.from({ length: HELD }, (_, i) =>
      request(`${replicas[i % 3]!.url}${path}`, {
        method: 'POST',
        headers: { authorization: BOT_A, 'content-type': 'application/json' },
        body: '{}',
        dispatcher: agent,
      }).then(
        async (res) => {
          await res.body.dump();
          return res.statusCode;
        },
        () => 0,
      ),
    );
    // Wait until (nearly) all are held by the replicas.
    const deadline = performance.now() + 20_000;
    let held = 0;
    while (performance.now() < deadline) {
      const counts = await Promise.all(replicas.map((r) => r.metric('discord_proxy_held_requests')));
      held = counts.reduce<number>((sum, n) => sum + (n ?? 0), 0);
      if (held >= HELD - 10) break;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(held).toBeGreaterThanOrEqual(HELD - 10);

    const before = await commandCalls(redis);
    const started = performance.now();
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const seconds = (performance.now() - started) / 1000;
    // Our own INFO calls are counted too: 2 of them.
    const perSecond = (await commandCalls(redis)) - before - 2;
    const rate = perSecond / seconds;
    process.stdout.write(
      `redis commands/s with ${held} held on 1 bucket over 3 replicas: ${rate.toFixed(1)}\n`,
    );
    // commandstats also counts the commands inside each script. Three queue heads ask about once per 4 s window,
    // and each replica polls the Cloudflare pause twice a second: tens per second, where polling per held
    // request would be thousands.
    expect(rate).toBeLessThan(60);

    const stats = await fake.stats();
    expect(stats.rateLimited.user + stats.rateLimited.global).toBe(0);
    // Ending the replicas answers everything still held; nothing is left hanging.
    await Promise.all(replicas.map((r) => r.kill()));
    const statuses = await Promise.all(responses);
    expect(statuses.filter((s) => s === 0)).toHaveLength(0);
  });
});
