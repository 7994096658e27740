/**
 * What the fake Discord saw while many workers pushed through the proxy: every assertion is about 429s the
 * fake counted or windows it measured, never about what the proxy says of itself.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BEARER, BOT_A, BOT_B, clientFor, runWorkers, startEnv, type TestEnv } from '../helpers/env.js';
import { type FakeProcess, startFakeProcess } from '../helpers/fake-process.js';
import { type RunningProxy, startProxy } from '../helpers/proxy.js';

const channel = (i: number) => String(100000000000000000n + BigInt(i));
const snowflakeNow = () => String((BigInt(Date.now() - 1420070400000 - 60_000) << 22n) + 1n);

describe('limits at the fake Discord', () => {
  let env: TestEnv | undefined;
  afterEach(async () => {
    await env?.close();
    env = undefined;
  });

  it('shares one reaction bucket per channel across emoji, users and verbs', async () => {
    env = await startEnv();
    const e = env;
    const message = snowflakeNow();
    const paths = [
      `/reactions/%F0%9F%91%8D/@me`,
      `/reactions/custom:123456789012345678/@me`,
      `/reactions/%F0%9F%91%8D/333333333333333333`,
      `/reactions/%E2%9D%A4/@me`,
    ];
    await runWorkers(12, 2000, async (worker, i) => {
      const suffix = paths[(worker + i) % paths.length]!;
      const method = suffix.endsWith('@me') ? 'PUT' : 'DELETE';
      const res = await e.call(method, `/api/v10/channels/${channel(1)}/messages/${message}${suffix}`);
      expect(res.status).toBeLessThan(300);
    });
    const stats = e.fake.stats();
    expect(stats.rateLimited.user + stats.rateLimited.shared).toBe(0);
    expect(stats.total).toBeGreaterThanOrEqual(5);
  });

  it('sends one probe to an unknown bucket while 20 concurrent first requests wait for its headers', async () => {
    env = await startEnv({
      latency: { kind: 'fixed', ms: 50 },
      policies: [{ method: 'GET', template: '/channels/{id}', limit: 5, windowMs: 1000 }],
    });
    const e = env;
    const results = await Promise.all(
      Array.from({ length: 20 }, () => e.call('GET', `/api/v10/channels/${channel(5)}`)),
    );
    expect(results.every((r) => r.status === 200)).toBe(true);
    const stats = e.fake.stats();
    expect(stats.rateLimited.user).toBe(0);
    const arrivals = e.fake.received.map((r) => r.at).sort((a, b) => a - b);
    // The first request went alone: the second arrived only after the first's 50 ms answer.
    expect(arrivals[1]! - arrivals[0]!).toBeGreaterThanOrEqual(45);
  });
});

// The global window is measured where Discord measures it: at arrival, in another process.
describe('global limit at a fake Discord in its own process', () => {
  let fake: FakeProcess;
  let proxy: RunningProxy;
  let client: ReturnType<typeof clientFor>;
  beforeAll(async () => {
    fake = await startFakeProcess(['--latency', 'fixed:20']);
    proxy = await startProxy(fake.url);
    client = clientFor(proxy.url);
  });
  afterAll(async () => {
    await proxy?.close();
    await client?.client.close();
    await fake?.stop();
  });

  it('keeps every 1000 ms window of one token within the global limit across 200 channels', async () => {
    await fake.control('reset');
    const statuses = new Map<number, number>();
    await runWorkers(60, 4000, async (worker, i) => {
      const res = await client.call('POST', `/api/v10/channels/${channel((worker * 7 + i) % 200)}/messages`, {
        body: '{"content":"g"}',
      });
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    });
    const stats = await fake.stats();
    expect(stats.rateLimited.global + stats.rateLimited.user).toBe(0);
    expect(stats.busiestWindow).toBeLessThanOrEqual(50);
    // Saturated, not starved: the window was actually filled.
    expect(stats.busiestWindow).toBeGreaterThanOrEqual(45);
    expect([...statuses.keys()]).toEqual([200]);
  });

  it('keeps two bot tokens and a bearer token on separate global limits', async () => {
    await fake.control('reset');
    await fake.policy({ method: 'GET', template: '/channels/{id}/messages', limit: 1000, windowMs: 1000 });
    const tokens = [BOT_A, BOT_B, BEARER];
    await runWorkers(60, 3000, async (worker, i) => {
      const res = await client.call('GET', `/api/v10/channels/${channel((worker + i) % 50)}/messages`, {
        auth: tokens[worker % 3]!,
      });
      expect(res.status).toBe(200);
    });
    const stats = await fake.stats();
    expect(stats.rateLimited.global).toBe(0);
    for (const token of tokens) {
      expect(stats.busiest[token]).toBeLessThanOrEqual(50);
      expect(stats.busiest[token]).toBeGreaterThanOrEqual(40);
    }
  });
  it('keeps one token spelt two ways ("Bot x", "bot  x") on one global limit', async () => {
    await fake.control('reset');
    await fake.policy({ method: 'GET', template: '/channels/{id}/messages', limit: 1000, windowMs: 1000 });
    const spellings = [BOT_A, ` ${BOT_A.replace('Bot ', 'bot  ')}`];
    await runWorkers(40, 2500, async (worker, i) => {
      const res = await client.call('GET', `/api/v10/channels/${channel((worker + i) % 50)}/messages`, {
        auth: spellings[worker % 2]!,
      });
      expect(res.status).toBe(200);
    });
    const stats = await fake.stats();
    // The fake, like Discord, counts both spellings as one token.
    expect(stats.rateLimited.global).toBe(0);
    expect(stats.busiest[BOT_A]).toBeLessThanOrEqual(50);
    expect(stats.busiest[BOT_A]).toBeGreaterThanOrEqual(40);
  });

  it('does not hold interaction callbacks behind a saturated global window', async () => {
    await fake.control('reset');
    const saturate = runWorkers(80, 2500, async (worker, i) => {
      await client.call('POST', `/api/v10/channels/${channel((worker * 13 + i) % 200)}/messages`, {
        body: '{}',
      });
    });
    await new Promise((resolve) => setTimeout(resolve, 1200));
    const timings: number[] = [];
    for (let i = 0; i < 5; i++) {
      const started = performance.now();
      const token = `aW50ZXJhY3Rpb246${'x'.repeat(60)}${i}`;
      // Sent with the saturated bot's own token: exempt traffic is not bound by its global window.
      const res = await client.call('POST', `/api/v10/interactions/${channel(900 + i)}/${token}/callback`, {
        body: '{"type":4,"data":{"content":"pong"}}',
      });
      timings.push(performance.now() - started);
      expect(res.status).toBeLessThan(300);
    }
    await saturate;
    // Bot messages waited in the global queue for seconds; callbacks went straight through.
    expect(Math.max(...timings)).toBeLessThan(250);
    expect((await fake.stats()).rateLimited.global).toBe(0);
  });
});
