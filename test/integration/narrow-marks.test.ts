/**
 * Known-bad marks are exactly as narrow as Discord's answer (src/discord/marks.ts): a 404 on one message of a
 * webhook leaves the webhook alone, a 403 on one member leaves the guild's other members alone, a 403 Missing
 * Access closes the channel for that token, and a 401 without a token closes only that route to anonymous callers.
 * Each case in memory and with Redis; every count is what the fake Discord received.
 */
import { afterEach, describe, expect, inject, it } from 'vitest';
import { expectGenerated } from '../helpers/assertions.js';
import { BOT_A, BOT_B, type CallResult, startEnv, type TestEnv } from '../helpers/env.js';

const id = (i: number) => String(310000000000000000n + BigInt(i));
let prefixSeq = 0;

function expectFromDiscord(res: CallResult, status: number): void {
  expect(res.status).toBe(status);
  expect(res.headers['x-proxy-generated']).toBeUndefined();
}

const modes = [
  { name: 'in memory', env: (): Record<string, string> => ({}) },
  {
    name: 'with Redis',
    env: (): Record<string, string> => ({
      REDIS_URL: inject('redisUrl'),
      REDIS_KEY_PREFIX: `marks${process.pid}-${prefixSeq++}:`,
    }),
  },
];

describe.each(modes)('known-bad marks as narrow as the answer, $name', (mode) => {
  let env: TestEnv | undefined;
  afterEach(async () => {
    await env?.close();
    env = undefined;
  });

  it('keeps a live webhook working after a 404 on one of its messages (Unknown Message)', async () => {
    env = await startEnv({}, { env: mode.env() });
    const e = env;
    const hook = `/api/v10/webhooks/${id(1)}/tokenOfALiveWebhook_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa`;
    const sent = (method: string) =>
      e.fake.received.filter((r) => r.method === method && r.path.startsWith(hook));
    e.fake.deleteMessage(id(2));

    const missing = await e.call('PATCH', `${hook}/messages/${id(2)}`, {
      auth: null,
      body: '{"content":"x"}',
    });
    expectFromDiscord(missing, 404);
    expect(missing.json()).toMatchObject({ code: 10008 });
    for (let i = 0; i < 3; i++) {
      expectFromDiscord(await e.call('POST', hook, { auth: null, body: '{"content":"hi"}' }), 204);
    }
    // The message is still unknown: Discord answers again, the proxy does not guess.
    expectFromDiscord(await e.call('PATCH', `${hook}/messages/${id(2)}`, { auth: null, body: '{}' }), 404);
    expect(sent('POST')).toHaveLength(3);
    expect(sent('PATCH')).toHaveLength(2);

    // Unknown Webhook does mark the webhook.
    e.fake.deleteWebhook(id(1));
    expectFromDiscord(await e.call('POST', hook, { auth: null, body: '{}' }), 404);
    const again = await e.call('POST', hook, { auth: null, body: '{}' });
    expectGenerated(again, 404);
    expect(again.json()).toEqual({ message: 'Unknown Webhook', code: 10015 });
    expect(sent('POST')).toHaveLength(4);
  });

  it('backs off a 403 Missing Permissions on one member only: the other bans go to Discord', async () => {
    env = await startEnv({}, { env: mode.env() });
    const e = env;
    const ban = (user: number) => `/api/v10/guilds/${id(10)}/bans/${id(100 + user)}`;
    const sentTo = (path: string) => e.fake.received.filter((r) => r.path === path).length;
    e.fake.forbid('PUT', ban(0));

    expectFromDiscord(await e.call('PUT', ban(0), { body: '{}' }), 403);
    const repeat = await e.call('PUT', ban(0), { body: '{}' });
    expectGenerated(repeat, 403);
    expect(repeat.json()).toEqual({ message: 'Missing Permissions', code: 50013 });
    const others = await Promise.all(
      [1, 2, 3, 4, 5, 6, 7, 8].map((user) => e.call('PUT', ban(user), { body: '{}' })),
    );
    for (const res of others) expectFromDiscord(res, 204);
    expect(sentTo(ban(0))).toBe(1);
    for (let user = 1; user <= 8; user++) expect(sentTo(ban(user))).toBe(1);
    expect(e.fake.stats().byStatus['429'] ?? 0).toBe(0);
  });

  it('closes a whole channel for one token on 403 Missing Access, and repeats that code', async () => {
    env = await startEnv({}, { env: mode.env() });
    const e = env;
    const channel = `/api/v10/channels/${id(20)}`;
    const sentTo = (prefix: string, auth = BOT_A) =>
      e.fake.received.filter((r) => r.path.startsWith(prefix) && r.identity === auth).length;
    e.fake.forbid('*', channel, 50001);

    expectFromDiscord(await e.call('GET', `${channel}/messages`), 403);
    for (const [method, path] of [
      ['GET', `${channel}/messages`],
      ['POST', `${channel}/messages`],
      ['GET', channel],
    ] as const) {
      const res = await e.call(method, path, method === 'POST' ? { body: '{}' } : {});
      expectGenerated(res, 403);
      expect(res.json()).toEqual({ message: 'Missing Access', code: 50001 });
    }
    expect(sentTo(channel)).toBe(1);
    // Another channel, and another token on this channel, still ask Discord.
    expectFromDiscord(await e.call('GET', `/api/v10/channels/${id(21)}/messages`), 200);
    expectFromDiscord(await e.call('GET', `${channel}/messages`, { auth: BOT_B }), 403);
    expect(sentTo(channel, BOT_B)).toBe(1);
  });

  it('repeats a closed DM (50007) for that DM channel only', async () => {
    env = await startEnv({}, { env: mode.env() });
    const e = env;
    const dm = `/api/v10/channels/${id(30)}/messages`;
    e.fake.forbid('POST', dm, 50007);
    expectFromDiscord(await e.call('POST', dm, { body: '{}' }), 403);
    const repeat = await e.call('POST', dm, { body: '{}' });
    expectGenerated(repeat, 403);
    expect(repeat.json()).toEqual({ message: 'Cannot send messages to this user', code: 50007 });
    expectFromDiscord(await e.call('POST', `/api/v10/channels/${id(31)}/messages`, { body: '{}' }), 200);
    expect(e.fake.received.filter((r) => r.path === dm)).toHaveLength(1);
  });

  it('learns from the first 401 that a route needs a token, and leaves other anonymous routes alone', async () => {
    env = await startEnv({ requireAuth: true }, { env: mode.env() });
    const e = env;
    const channel = (i: number) => `/api/v10/channels/${id(40 + i)}`;
    const hook = `/api/v10/webhooks/${id(50)}/tokenOfAnotherWebhook_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb`;
    const anonymousTo = (prefix: string) =>
      e.fake.received.filter((r) => r.path.startsWith(prefix) && r.identity.startsWith('ip:')).length;

    expectFromDiscord(await e.call('GET', channel(0), { auth: null }), 401);
    for (let i = 0; i < 3; i++) {
      const res = await e.call('GET', channel(i), { auth: null });
      expectGenerated(res, 401);
      expect(res.json()).toEqual({ message: '401: Unauthorized', code: 0 });
    }
    expect(anonymousTo('/api/v10/channels/')).toBe(1);
    // Webhook calls carry no token and still reach Discord; the same route with a token too.
    expectFromDiscord(await e.call('POST', hook, { auth: null, body: '{}' }), 204);
    expectFromDiscord(await e.call('GET', channel(0)), 200);
    expect(anonymousTo(hook)).toBe(1);
  });
});
