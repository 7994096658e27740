/**
 * Redis stopping mid-load is a normal event: the proxy keeps answering with local limits, says so in /readyz
 * and a metric, and goes back to the shared state by itself when Redis returns. Redis is really stopped and
 * restarted here, on the same port.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clientFor, runWorkers } from '../helpers/env.js';
import { type FakeProcess, startFakeProcess } from '../helpers/fake-process.js';
import { type ProxyProcess, startProxyProcess } from '../helpers/proxy-process.js';
import { type RedisProcess, startRedis } from '../helpers/redis-server.js';

const channel = (i: number) => String(300000000000000000n + BigInt(i));

async function until(check: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const started = performance.now();
  while (performance.now() - started < timeoutMs) {
    if (await check()) return performance.now() - started;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`condition not met within ${timeoutMs} ms`);
}

describe('Redis stopping and coming back', () => {
  let redis: RedisProcess;
  let fake: FakeProcess;
  let proxy: ProxyProcess;
  let client: ReturnType<typeof clientFor>;

  beforeAll(async () => {
    redis = await startRedis();
    fake = await startFakeProcess(['--latency', 'fixed:5']);
    proxy = await startProxyProcess({
      UPSTREAM_URL: fake.url,
      REDIS_URL: redis.url,
      REDIS_FALLBACK_REPLICAS: '2',
    });
    client = clientFor(proxy.url);
  });
  afterAll(async () => {
    await client?.client.close();
    await proxy?.kill();
    await fake?.stop();
    await redis?.stop();
  });

  it('keeps answering every request with local limits, reports it, and recovers within seconds', async () => {
    expect(await proxy.ready()).toBe(200);
    expect(await proxy.metric('discord_proxy_redis_up')).toBe(1);
    const statuses = new Map<number, number>();
    let slowest = 0;
    const load = runWorkers(20, 4000, async (worker, i) => {
      const started = performance.now();
      const res = await client.call('POST', `/api/v10/channels/${channel((worker * 3 + i) % 40)}/messages`, {
        body: '{}',
      });
      slowest = Math.max(slowest, performance.now() - started);
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await redis.stop();
    const failedAt = performance.now();
    await until(async () => (await proxy.ready()) === 503, 3000);
    expect(await proxy.metric('discord_proxy_redis_up')).toBe(0);
    await load;

    // Every request got Discord's answer: none hung, none was dropped, none got an error of ours.
    expect([...statuses.keys()]).toEqual([200]);
    expect(slowest).toBeLessThan(10_000);
    const stats = await fake.stats();
    expect(stats.rateLimited.user).toBe(0);
    // In local mode this replica keeps to its share (50 / 2) of the token's global limit.
    expect(stats.busiestWindow).toBeLessThanOrEqual(50);

    redis = await startRedis(redis.port);
    const recovery = await until(async () => (await proxy.ready()) === 200, 10_000);
    expect(recovery).toBeLessThan(5000);
    expect(await proxy.metric('discord_proxy_redis_up')).toBe(1);
    const res = await client.call('POST', `/api/v10/channels/${channel(99)}/messages`, { body: '{}' });
    expect(res.status).toBe(200);
    expect(performance.now() - failedAt).toBeGreaterThan(0);
    expect(await proxy.metric('discord_proxy_redis_errors_total')).toBeGreaterThan(0);
  });
});
