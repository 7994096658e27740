/**
 * Discord far away (docs/discord-ratelimits.md §6): requests reach the fake after a transit and are decided on
 * arrival, answers come back after their own delay and out of order. Each test is named after what broke before
 * the limiter counted requests in flight, and runs against the in-process store and against Redis.
 */
import { afterEach, describe, expect, inject, it } from 'vitest';
import { far, fixed } from '../fake-discord/profiles.js';
import type { FakeDiscordOptions } from '../fake-discord/server.js';
import { startEnv, type TestEnv } from '../helpers/env.js';

const DISCORD_EPOCH = 1_420_070_400_000n;
/** A snowflake whose timestamp is `ageMs` ago: message deletes are bucketed by the message's age. */
function snowflake(ageMs: number, seq: number): string {
  return (((BigInt(Date.now() - ageMs) - DISCORD_EPOCH) << 22n) + BigInt(seq)).toString();
}
const CHANNEL = '300000000000000001';

const MODES = [
  { name: 'in process', env: {} },
  { name: 'Redis', env: () => ({ REDIS_URL: inject('redisUrl'), REDIS_KEY_PREFIX: `far${Math.random()}:` }) },
] as const;

describe.each(MODES)('far from Discord ($name)', (mode) => {
  let env: TestEnv | undefined;
  afterEach(async () => {
    await env?.close();
    env = undefined;
  });

  async function start(fake: FakeDiscordOptions, extra: Record<string, string> = {}): Promise<TestEnv> {
    const modeEnv = typeof mode.env === 'function' ? mode.env() : mode.env;
    env = await startEnv(fake, { env: { ...modeEnv, ...extra } });
    return env;
  }

  it('keeps a short window moving when answers say it ends in a few ms (short windows stall)', async () => {
    // Reactions: 1 per 250 ms; every answer takes 230 ms, so it says the window ends in ~20 ms.
    const e = await start(fixed(0, 230));
    const message = snowflake(3_600_000, 1);
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        e.call('PUT', `/api/v10/channels/${CHANNEL}/messages/${message}/reactions/%F0%9F%91%8D${i}/@me`),
      ),
    );
    // Stalled, each reaction after the first waited 5 s for a window it would never learn; 12 of them ran past
    // the hold time and got the proxy's 429.
    expect(results.map((r) => r.status)).toEqual(Array(12).fill(204));
    expect(e.fake.stats().rateLimited.user).toBe(0);
    expect(e.fake.received).toHaveLength(12);
  });

  it('never lets two windows overlap in flight on a hot bucket, with transit and answers out of order', async () => {
    const e = await start({
      ...far,
      policies: [{ method: 'POST', template: '/channels/{id}/messages', limit: 5, windowMs: 1000 }],
    });
    const results = await Promise.all(
      Array.from({ length: 25 }, (_, i) =>
        e.call('POST', `/api/v10/channels/${CHANNEL}/messages`, {
          body: JSON.stringify({ content: `${i}` }),
        }),
      ),
    );
    expect(results.filter((r) => r.status !== 200)).toEqual([]);
    expect(e.fake.stats().rateLimited).toMatchObject({ user: 0, global: 0 });
    expect(e.fake.received).toHaveLength(25);
  });

  it('keeps the strict global window with inbound jitter (jitter against the global window)', async () => {
    const e = await start({ ...far, globalMode: 'sliding' });
    // 120 calls on 120 channels: no bucket holds them back, only the token's 50 per second.
    const results = await Promise.all(
      Array.from({ length: 120 }, (_, i) =>
        e.call('GET', `/api/v10/channels/${(300000000000000100n + BigInt(i)).toString()}`),
      ),
    );
    expect(results.filter((r) => r.status !== 200)).toEqual([]);
    expect(e.fake.stats().rateLimited.global).toBe(0);
    expect(e.fake.stats().busiestWindow()).toBeLessThanOrEqual(50);
  });

  it('does not re-map a route from a 404 that carries another hash (two hashes on one route key)', async () => {
    const e = await start({});
    const age = 3_600_000; // between 10 s and 14 days: the 3 per second delete bucket
    const gone = snowflake(age, 999);
    e.fake.deleteMessage(gone);
    const del = (id: string) => e.call('DELETE', `/api/v10/channels/${CHANNEL}/messages/${id}`);
    expect((await del(snowflake(age, 1))).status).toBe(204);
    // 404 Unknown Message, counted in (and labelled with) the 5 per second bucket.
    expect((await del(gone)).status).toBe(404);
    const results = await Promise.all(Array.from({ length: 9 }, (_, i) => del(snowflake(age, 10 + i))));
    expect(results.map((r) => r.status)).toEqual(Array(9).fill(204));
    // Followed to the 404's bucket, the deletes were counted against 5 per second and drew 429s.
    expect(e.fake.stats().rateLimited.user).toBe(0);
  });

  it('holds a route whose 429 carries no rate-limit headers (a 429 without rate-limit headers is forgotten)', async () => {
    const e = await start({
      policies: [
        {
          method: 'POST',
          template: '/guilds/{id}/emojis',
          limit: 1,
          windowMs: 1000,
          headers: false,
          // The header says less than the body's retry_after (discord-api-docs #7394).
          shortRetryAfter: 0,
        },
      ],
    });
    const path = '/api/v10/guilds/400000000000000001/emojis';
    expect((await e.call('POST', path, { body: '{"name":"a"}' })).status).toBe(200);
    const results = await Promise.all(
      ['b', 'c', 'd'].map((name) => e.call('POST', path, { body: JSON.stringify({ name }) })),
    );
    expect(results.map((r) => r.status)).toEqual([200, 200, 200]);
    // Forgotten, each 429 was retried at once: 3 calls drew a dozen 429s in a few ms and ended in 429s. Now the
    // burst that found the limit draws its 429s, then the route goes one at a time: at most one 429 per wait.
    expect(e.fake.stats().rateLimited.user).toBeLessThanOrEqual(6);
    expect(e.fake.received).toHaveLength(4 + e.fake.stats().rateLimited.user);
  });
});
