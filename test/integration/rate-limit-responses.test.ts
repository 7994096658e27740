/**
 * Every kind of 429 (docs/discord-ratelimits.md §1.5), forced at the fake Discord, and what the proxy does
 * about it: asserted on what the fake received afterwards and when.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { BOT_A, BOT_B, clientFor, startEnv, type TestEnv } from '../helpers/env.js';

const id = (i: number) => String(100000000000000000n + BigInt(i));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const until = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > until) throw new Error('condition not met in time');
    await sleep(5);
  }
}

interface DiscordError {
  message: string;
  code: number;
  retry_after?: number;
  global?: boolean;
}

describe('429 handling', () => {
  let env: TestEnv | undefined;
  let direct: ReturnType<typeof clientFor> | undefined;
  afterEach(async () => {
    await env?.close();
    await direct?.client.close();
    env = direct = undefined;
  });

  it('retries a route 429 for the client after the reset, with the 429s bounded by the slots it believed in', async () => {
    env = await startEnv({
      policies: [{ method: 'GET', template: '/channels/{id}', limit: 5, windowMs: 2000 }],
    });
    const e = env;
    direct = clientFor(e.fake.url);
    const path = `/api/v10/channels/${id(1)}`;
    expect((await e.call('GET', path)).status).toBe(200); // the proxy now believes 4 are left
    // Someone else with the same token (a process not behind the proxy) uses those 4 slots.
    for (let i = 0; i < 4; i++) expect((await direct.call('GET', `${path}?direct=1`)).status).toBe(200);

    const results = await Promise.all(Array.from({ length: 5 }, () => e.call('GET', path)));
    expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    for (const r of results) expect(r.headers['x-proxy-generated']).toBeUndefined();

    const stats = e.fake.stats();
    // At most the 4 slots the proxy believed in ran into the 429; the fifth request was held.
    expect(stats.rateLimited.user).toBeGreaterThanOrEqual(1);
    expect(stats.rateLimited.user).toBeLessThanOrEqual(4);
    const windowStart = e.fake.received[0]!.at;
    const limited = e.fake.received.filter((r) => r.status === 429);
    const ok = e.fake.received.filter((r) => r.status === 200 && r.query === '');
    // 1 first request + 5 that finally succeeded; every success after a 429 arrived after the fake's reset.
    expect(ok).toHaveLength(6);
    const lastLimited = Math.max(...limited.map((r) => r.at));
    for (const r of ok.filter((x) => x.at > lastLimited))
      expect(r.at).toBeGreaterThanOrEqual(windowStart + 2000);
    expect(e.fake.stats().total).toBe(1 + 4 + stats.rateLimited.user + 5);
  });

  it('pauses only the identity behind a global 429 until its retry_after has passed', async () => {
    // A 100 ms answer time makes the moment the proxy can know of the 429 clear-cut at the fake.
    env = await startEnv(
      { globalLimit: 5, latency: { kind: 'fixed', ms: 100 } },
      { env: { GLOBAL_RATE_LIMIT: '50' } },
    );
    const e = env;
    const wave = Promise.all(
      Array.from({ length: 10 }, (_, i) => e.call('GET', `/api/v10/channels/${id(100 + i)}`)),
    );
    await waitFor(() => e.fake.received.some((r) => r.status === 429));
    const first429 = e.fake.received.find((r) => r.status === 429)!;
    // Once the 429 is back at the proxy, another token must still get through at once.
    await waitFor(() => performance.now() > first429.at + 150);
    const other: number[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await e.call('GET', `/api/v10/channels/${id(200 + i)}`, { auth: BOT_B });
      expect(res.status).toBe(200);
      other.push(e.fake.received.filter((r) => r.identity === BOT_B).at(-1)!.at);
    }
    const results = await wave;
    expect(results.every((r) => r.status === 200)).toBe(true);

    const mine = e.fake.received.filter((r) => r.identity === BOT_A);
    const accepted = mine.filter((r) => r.status === 200).map((r) => r.at);
    const limited = mine.filter((r) => r.status === 429);
    expect(limited.length).toBeGreaterThanOrEqual(1);
    // Every global 429 must be honoured: once it is back at the proxy (100 ms after it arrived, plus a few ms for
    // requests already on their way), nothing of BOT_A may arrive before the fake's window has room again. The
    // fake's window is sliding (5 per 1000 ms): room again is 1000 ms after the oldest of the last 5 accepted.
    // After a pause the proxy resumes at its own configured 50/s, which this fake deliberately undercuts, so a
    // resumed request may meet another global 429; that one must be honoured in the same way.
    for (const g of limited) {
      const window = accepted.filter((at) => at < g.at).slice(-5);
      const retryAt = window[0]! + 1000;
      for (const r of mine) {
        if (r.at <= g.at + 105) continue;
        const label = `BOT_A request at +${(r.at - g.at).toFixed(1)} ms after a 429 whose window reopened at +${(retryAt - g.at).toFixed(1)} ms`;
        expect(r.at >= retryAt, label).toBe(true);
      }
    }
    const firstRetryAt = accepted[0]! + 1000;
    expect(mine.some((r) => r.at >= firstRetryAt)).toBe(true);
    // BOT_B flowed while BOT_A was paused, and never met a 429.
    for (const at of other) expect(at).toBeLessThan(firstRetryAt);
    expect(e.fake.received.filter((r) => r.identity === BOT_B && r.status !== 200)).toHaveLength(0);
    // Every request got through within its bounded number of tries.
    expect(accepted).toHaveLength(10);
  });

  it('delays only the bucket behind a shared-scope 429, which the fake does not count as invalid', async () => {
    env = await startEnv({
      policies: [
        {
          method: 'POST',
          template: '/guilds/{guild_id}/emojis',
          shared: { name: 'guild-emoji', limit: 2, windowMs: 1500, key: 'major' },
        },
      ],
    });
    const e = env;
    direct = clientFor(e.fake.url);
    const emoji = (guild: string) => `/api/v10/guilds/${guild}/emojis`;
    const body = '{"name":"blob","image":"data:image/png;base64,AAAA"}';
    // Another bot edits the guild's emoji directly: the per-guild shared limit is used up for 1.5 s.
    for (let i = 0; i < 2; i++) {
      expect((await direct.call('POST', emoji(id(1)), { auth: BOT_B, body })).status).toBe(200);
    }
    const sharedReset = e.fake.received[0]!.at + 1500;

    const held = Promise.all([
      e.call('POST', emoji(id(1)), { body }),
      e.call('POST', emoji(id(1)), { body }),
    ]);
    await waitFor(() => e.fake.received.some((r) => r.status === 429));
    // Same route on another guild, and another route on the same guild: neither waits.
    const otherGuild = await e.call('POST', emoji(id(2)), { body });
    const sameGuild = await e.call('GET', `/api/v10/guilds/${id(1)}`);
    expect(otherGuild.status).toBe(200);
    expect(sameGuild.status).toBe(200);

    const results = await held;
    expect(results.map((r) => r.status)).toEqual([200, 200]);
    const stats = e.fake.stats();
    expect(stats.rateLimited.shared).toBe(1);
    expect(stats.rateLimited.user + stats.rateLimited.sublimit + stats.rateLimited.global).toBe(0);
    expect(stats.invalid).toBe(0);
    const limitedAt = e.fake.received.find((r) => r.status === 429)!.at;
    const retried = e.fake.received.filter(
      (r) => r.identity === BOT_A && r.path === emoji(id(1)) && r.at > limitedAt,
    );
    expect(retried).toHaveLength(2);
    for (const r of retried) expect(r.at).toBeGreaterThanOrEqual(sharedReset);
    // Neither of the others waited for the shared block: both reached the fake before the held requests went again.
    const others = e.fake.received.filter(
      (r) => r.identity === BOT_A && (r.path === emoji(id(2)) || r.path === `/api/v10/guilds/${id(1)}`),
    );
    expect(others).toHaveLength(2);
    for (const r of others) expect(r.at).toBeLessThan(retried[0]!.at);
  });

  it('delays only requests that match a sublimit: renames wait, other edits of the channel go at once', async () => {
    env = await startEnv();
    const e = env;
    const channel = `/api/v10/channels/${id(7)}`;
    expect((await e.call('PATCH', channel, { body: '{"name":"one"}' })).status).toBe(200);
    expect((await e.call('PATCH', channel, { body: '{"name":"two"}' })).status).toBe(200);
    // The third hits the hidden 2 per 10 minutes: Discord's 429 (remaining > 0) comes back as it is.
    const third = await e.call('PATCH', channel, { body: '{"topic":"three"}' });
    expect(third.status).toBe(429);
    expect(third.headers['x-proxy-generated']).toBeUndefined();
    expect(Number(third.headers['x-ratelimit-remaining'])).toBeGreaterThan(0);
    expect((third.json() as DiscordError).retry_after).toBeGreaterThan(500);
    expect(e.fake.stats().rateLimited.sublimit).toBe(1);
    const seen = e.fake.received.length;

    // The sublimit's wait is minutes: had any of these waited behind it, the proxy would have answered 429 after
    // MAX_HOLD_MS instead. Statuses and counts at the fake say they went at once, whatever the machine's load.
    const edit = await e.call('PATCH', channel, { body: '{"nsfw":true,"rate_limit_per_user":5}' });
    const read = await e.call('GET', channel);
    const elsewhere = await e.call('PATCH', `/api/v10/channels/${id(8)}`, { body: '{"name":"other"}' });
    expect([edit.status, read.status, elsewhere.status]).toEqual([200, 200, 200]);
    expect(e.fake.received.length).toBe(seen + 3);

    // A fourth rename never reaches the fake: the proxy answers with the sublimit's wait.
    const fourth = await e.call('PATCH', channel, { body: '{"name":"four"}' });
    expect(fourth.status).toBe(429);
    // Refused at once, not after a hold: the wait is longer than MAX_HOLD_MS, known before holding.
    expect(Number(fourth.headers['x-proxy-hold-ms'])).toBeLessThan(1000);
    expect(fourth.headers['x-proxy-generated']).toBe('true');
    expect(Number(fourth.headers['retry-after'])).toBeGreaterThan(500);
    expect((fourth.json() as DiscordError).retry_after).toBeGreaterThan(500);
    expect(e.fake.received.length).toBe(seen + 3);
    expect(e.fake.stats().rateLimited.sublimit).toBe(1);
  });

  describe.each([
    { name: 'Form A without Retry-After', form: 'A', retryAfter: 'absent', pauseMs: 1500 },
    { name: 'Form B (HTML, error code 1015)', form: 'B', retryAfter: 'absent', pauseMs: 1500 },
    { name: 'Form A with Retry-After: 2', form: 'A', retryAfter: 2, pauseMs: 2000 },
  ] as const)('a Cloudflare ban, $name', ({ form, retryAfter, pauseMs }) => {
    it('stops all upstream traffic for the cool-down with proxy-generated 429s, then resumes', async () => {
      env = await startEnv({ invalidBan: { form, retryAfter } }, { env: { CLOUDFLARE_COOLDOWN_MS: '1500' } });
      const e = env;
      const message = `/api/v10/channels/${id(1)}/messages`;
      expect((await e.call('POST', message, { body: '{"content":"before"}' })).status).toBe(200);
      e.fake.banNow(1000);

      const bannedAt = performance.now();
      const first = await e.call('POST', message, { body: '{"content":"banned"}' });
      expect(first.status).toBe(429);
      expect(first.headers['x-proxy-generated']).toBe('true');
      const firstBody = first.json() as DiscordError;
      expect(firstBody.retry_after).toBeGreaterThan((pauseMs - 200) / 1000);
      expect(firstBody.retry_after).toBeLessThanOrEqual(pauseMs / 1000);
      expect(Number(first.headers['retry-after'])).toBe(Math.ceil(pauseMs / 1000));
      expect(e.fake.stats().rateLimited.cloudflare).toBe(1);
      const seen = e.fake.received.length;

      // Everyone, on every route, exempt interactions included: nothing leaves the proxy.
      const token = `aW50ZXJhY3Rpb246${'z'.repeat(60)}`;
      const during = await Promise.all([
        e.call('GET', `/api/v10/channels/${id(2)}`),
        e.call('GET', '/api/v10/users/@me', { auth: BOT_B }),
        e.call('POST', `/api/v10/webhooks/${id(3)}/${'t'.repeat(68)}`, {
          auth: null,
          body: '{"content":"w"}',
        }),
        e.call('POST', `/api/v10/interactions/${id(4)}/${token}/callback`, {
          auth: null,
          body: '{"type":1}',
        }),
      ]);
      for (const res of during) {
        expect(res.status).toBe(429);
        expect(res.headers['x-proxy-generated']).toBe('true');
        expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(1);
        const body = res.json() as DiscordError;
        expect(body.retry_after).toBeGreaterThan(0);
        expect(body.retry_after).toBeLessThanOrEqual(pauseMs / 1000);
        expect(typeof body.code).toBe('number');
      }
      expect(e.fake.received.length).toBe(seen);

      // Still paused shortly before the cool-down ends.
      await waitFor(() => performance.now() > bannedAt + pauseMs - 300);
      expect((await e.call('GET', `/api/v10/channels/${id(5)}`)).status).toBe(429);
      expect(e.fake.received.length).toBe(seen);

      await waitFor(() => performance.now() > bannedAt + pauseMs + 50);
      const after = await e.call('POST', message, { body: '{"content":"after"}' });
      expect(after.status).toBe(200);
      expect(e.fake.received.length).toBe(seen + 1);
      // Nothing arrived at the fake between the ban page and the end of the cool-down.
      const banPage = e.fake.received[seen - 1]!;
      expect(e.fake.received[seen]!.at - banPage.at).toBeGreaterThanOrEqual(pauseMs - 50);
    });
  });
});
