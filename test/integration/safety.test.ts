/**
 * The proxy keeps a fleet from earning a Cloudflare ban (docs/discord-ratelimits.md §4) and refuses to be
 * anyone's relay: requests known to fail are answered by the proxy itself (each mark scoped narrowly and
 * expiring), the invalid-request budget stops everything before Discord's line, access can require a shared
 * secret, and the number of held requests is capped. Every assertion counts what the fake Discord really
 * received.
 */
import { request } from 'undici';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { expectGenerated } from '../helpers/assertions.js';
import { BOT_A, BOT_B, type CallResult, clientFor, startEnv, type TestEnv } from '../helpers/env.js';
import { type RunningProxy, startProxy } from '../helpers/proxy.js';

const id = (i: number) => String(300000000000000000n + BigInt(i));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let prefixSeq = 0;

function expectFromDiscord(res: CallResult, status: number): void {
  expect(res.status).toBe(status);
  expect(res.headers['x-proxy-generated']).toBeUndefined();
}

async function metric(adminUrl: string, name: string, labels = ''): Promise<number | undefined> {
  const res = await request(`${adminUrl}/metrics`);
  const text = await res.body.text();
  const prefix = labels === '' ? `${name} ` : `${name}{${labels}} `;
  const line = text.split('\n').find((l) => l.startsWith(prefix));
  return line === undefined ? undefined : Number(line.slice(prefix.length));
}

async function waitFor(check: () => boolean, ms = 2000): Promise<void> {
  const until = performance.now() + ms;
  while (!check() && performance.now() < until) await sleep(5);
}

describe('known-bad requests', () => {
  let env: TestEnv | undefined;
  const extra: { proxy: RunningProxy; client: ReturnType<typeof clientFor> }[] = [];
  afterEach(async () => {
    for (const e of extra.splice(0)) {
      await e.proxy.close();
      await e.client.client.close();
    }
    await env?.close();
    env = undefined;
  });

  it('answers for a revoked token itself until the mark expires, without touching other tokens', async () => {
    env = await startEnv({}, { env: { REVOKED_TOKEN_TTL_MS: '1500' } });
    const e = env;
    const sentBy = (auth: string) => e.fake.received.filter((r) => r.identity === auth).length;
    e.fake.revokeToken(BOT_A);

    const first = await e.call('GET', '/api/v10/users/@me');
    const revokedAt = performance.now();
    expectFromDiscord(first, 401);
    expect(first.json()).toEqual({ message: '401: Unauthorized', code: 0 });

    // Any route, any channel: the token itself is known to be revoked.
    for (const path of [
      '/api/v10/users/@me',
      `/api/v10/channels/${id(1)}/messages`,
      `/api/v10/guilds/${id(2)}`,
    ]) {
      const res = await e.call('GET', path);
      expectGenerated(res, 401);
      expect(res.json()).toEqual({ message: '401: Unauthorized', code: 0 });
    }
    expectGenerated(await e.call('POST', `/api/v10/channels/${id(1)}/messages`, { body: '{}' }), 401);
    expect(sentBy(BOT_A)).toBe(1);
    expect(await metric(e.proxy.adminUrl, 'discord_proxy_short_circuit_total', 'reason="revoked"')).toBe(4);

    // Another bot behind the same proxy is not affected.
    expectFromDiscord(await e.call('GET', '/api/v10/users/@me', { auth: BOT_B }), 200);
    expect(sentBy(BOT_B)).toBe(1);

    // Not permanent: once the mark expires the next request goes to Discord again (which still says 401).
    await sleep(Math.max(0, revokedAt + 1550 - performance.now()));
    expectFromDiscord(await e.call('GET', '/api/v10/users/@me'), 401);
    expect(sentBy(BOT_A)).toBe(2);
    // …and is marked again.
    expectGenerated(await e.call('GET', '/api/v10/users/@me'), 401);
    expect(sentBy(BOT_A)).toBe(2);
  });

  it('shares a revocation between two proxies on one Redis, and lets it expire there too', async () => {
    env = await startEnv(
      {},
      {
        env: {
          REDIS_URL: inject('redisUrl'),
          REDIS_KEY_PREFIX: `safety${process.pid}-${prefixSeq++}:`,
          REVOKED_TOKEN_TTL_MS: '1500',
        },
      },
    );
    const e = env;
    const proxy = await startProxy(e.fake.url, { env: sharedEnv(e) });
    const other = { proxy, client: clientFor(proxy.url) };
    extra.push(other);
    const sentBy = (auth: string) => e.fake.received.filter((r) => r.identity === auth).length;
    e.fake.revokeToken(BOT_A);

    expectFromDiscord(await e.call('GET', '/api/v10/users/@me'), 401);
    const revokedAt = performance.now();
    // The other replica never sent anything for this token, and still knows.
    const res = await other.client.call('GET', `/api/v10/channels/${id(3)}`);
    expectGenerated(res, 401);
    expect(res.json()).toEqual({ message: '401: Unauthorized', code: 0 });
    expectGenerated(await e.call('GET', `/api/v10/channels/${id(3)}`), 401);
    expect(sentBy(BOT_A)).toBe(1);
    expectFromDiscord(await other.client.call('GET', `/api/v10/channels/${id(3)}`, { auth: BOT_B }), 200);

    await sleep(Math.max(0, revokedAt + 1600 - performance.now()));
    expectFromDiscord(await other.client.call('GET', '/api/v10/users/@me'), 401);
    expect(sentBy(BOT_A)).toBe(2);
    expectGenerated(await e.call('GET', '/api/v10/users/@me'), 401);
    expect(sentBy(BOT_A)).toBe(2);
  });

  it('answers 404 for a deleted webhook itself, for that webhook only, until the mark expires', async () => {
    env = await startEnv({}, { env: { WEBHOOK_GONE_TTL_MS: '1000' } });
    const e = env;
    const gone = `/api/v10/webhooks/${id(10)}/tokenOfTheDeletedWebhook_aaaaaaaaaaaaaaaaaaaaaaaaaaaa`;
    const alive = `/api/v10/webhooks/${id(11)}/tokenOfTheLiveWebhook_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb`;
    const sentTo = (path: string) => e.fake.received.filter((r) => r.path.startsWith(path)).length;
    e.fake.deleteWebhook(id(10));
    const body = '{"content":"hello"}';

    const first = await e.call('POST', gone, { auth: null, body });
    const deletedAt = performance.now();
    expectFromDiscord(first, 404);
    expect(first.json()).toMatchObject({ message: 'Unknown Webhook', code: 10015 });

    for (const path of [gone, `${gone}?wait=true`, `${gone}/messages/${id(12)}`]) {
      const method = path.includes('/messages/') ? 'GET' : 'POST';
      const res = await e.call(method, path, { auth: null, ...(method === 'POST' ? { body } : {}) });
      expectGenerated(res, 404);
      expect(res.json()).toEqual({ message: 'Unknown Webhook', code: 10015 });
    }
    expect(sentTo(gone)).toBe(1);
    expect(await metric(e.proxy.adminUrl, 'discord_proxy_short_circuit_total', 'reason="gone"')).toBe(3);

    // Another webhook still works, and a 404 does not count as invalid (Discord does not count it either).
    expectFromDiscord(await e.call('POST', alive, { auth: null, body }), 204);
    expect(sentTo(alive)).toBe(1);
    expect(await metric(e.proxy.adminUrl, 'discord_proxy_invalid_requests_window')).toBe(0);

    await sleep(Math.max(0, deletedAt + 1050 - performance.now()));
    expectFromDiscord(await e.call('POST', gone, { auth: null, body }), 404);
    expect(sentTo(gone)).toBe(2);
  });

  it('backs off a 403 only on that route and channel, for that token, until it expires', async () => {
    env = await startEnv({}, { env: { FORBIDDEN_BACKOFF_MS: '1000' } });
    const e = env;
    const messages = (channel: string) => `/api/v10/channels/${channel}/messages`;
    const sent = (method: string, path: string, auth = BOT_A) =>
      e.fake.received.filter((r) => r.method === method && r.path === path && r.identity === auth).length;
    e.fake.forbid('POST', messages(id(20)));
    const body = '{"content":"hi"}';

    const first = await e.call('POST', messages(id(20)), { body });
    const forbiddenAt = performance.now();
    expectFromDiscord(first, 403);
    const again = await e.call('POST', messages(id(20)), { body });
    expectGenerated(again, 403);
    expect(again.json()).toEqual({ message: 'Missing Permissions', code: 50013 });
    expect(sent('POST', messages(id(20)))).toBe(1);

    // Same route on another channel, another route on the same channel, another token: all go to Discord.
    expectFromDiscord(await e.call('POST', messages(id(21)), { body }), 200);
    expectFromDiscord(await e.call('GET', messages(id(20))), 200);
    expectFromDiscord(await e.call('POST', messages(id(20)), { auth: BOT_B, body }), 403);
    expect(sent('POST', messages(id(21)))).toBe(1);
    expect(sent('GET', messages(id(20)))).toBe(1);
    expect(sent('POST', messages(id(20)), BOT_B)).toBe(1);
    expect(await metric(e.proxy.adminUrl, 'discord_proxy_short_circuit_total', 'reason="forbidden"')).toBe(1);

    await sleep(Math.max(0, forbiddenAt + 1050 - performance.now()));
    expectFromDiscord(await e.call('POST', messages(id(20)), { body }), 403);
    expect(sent('POST', messages(id(20)))).toBe(2);
  });
});

function sharedEnv(e: TestEnv): Record<string, string> {
  const c = e.proxy.config;
  return {
    REDIS_URL: c.redisUrl ?? '',
    REDIS_KEY_PREFIX: c.redisKeyPrefix,
    REVOKED_TOKEN_TTL_MS: String(c.revokedTokenTtlMs),
  };
}

/**
 * What the design guarantees: every attempt checks the budget right before it leaves (after any hold), and the
 * count holds every invalid answer already received (in one process it is updated before the next request can be
 * checked). So the invalid requests that reach Discord are at most budget - 1 plus the requests already on their
 * way upstream when the count reached the budget; one at a time, exactly the budget.
 */
describe('the invalid-request budget', () => {
  let env: TestEnv | undefined;
  afterEach(async () => {
    await env?.close();
    env = undefined;
  });

  it('refuses everything with its own 429 once the budget is used, and never sends more than it allows', async () => {
    const budget = 5;
    env = await startEnv(
      {},
      { env: { INVALID_REQUEST_BUDGET: String(budget), INVALID_BUDGET_SOFT_PERCENT: '100' } },
    );
    const e = env;
    e.fake.forbid('GET', '/channels/');
    expect(await metric(e.proxy.adminUrl, 'discord_proxy_invalid_request_budget')).toBe(budget);

    // Each 403 is on a channel of its own, so no known-bad mark stops it: only the budget can.
    const statuses: number[] = [];
    let refused: CallResult | undefined;
    for (let i = 0; i < 3 * budget && refused === undefined; i++) {
      const res = await e.call('GET', `/api/v10/channels/${id(100 + i)}`);
      statuses.push(res.status);
      if (res.headers['x-proxy-generated'] === 'true') refused = res;
    }
    expect(refused).toBeDefined();
    const body = expectGenerated(refused!, 429);
    expect(body.code).toBe(990008);
    expect(Number(refused!.headers['retry-after'])).toBeGreaterThan(0);
    expect(body.retry_after).toBeGreaterThan(0);
    // One request at a time: every answer is counted before the next request is checked, so the budget is met
    // exactly and not one request more reaches Discord.
    expect(statuses).toEqual([...Array(budget).fill(403), 429]);
    expect(e.fake.stats().invalid).toBe(budget);

    // Now everything is refused: other routes, other tokens, requests that would have succeeded.
    for (const [path, auth] of [
      ['/api/v10/users/@me', BOT_A],
      ['/api/v10/users/@me', BOT_B],
      [`/api/v10/guilds/${id(1)}`, BOT_B],
    ] as const) {
      expect(expectGenerated(await e.call('GET', path, { auth }), 429).code).toBe(990008);
    }
    expect(e.fake.received).toHaveLength(budget);
    expect(e.fake.stats().invalid).toBe(budget);
    expect(await metric(e.proxy.adminUrl, 'discord_proxy_invalid_requests_window')).toBeGreaterThanOrEqual(
      budget,
    );
    expect(
      await metric(e.proxy.adminUrl, 'discord_proxy_generated_responses_total', 'reason="invalid_budget"'),
    ).toBe(4);
    // The replica says so to its load balancer and to Prometheus.
    const ready = await request(`${e.proxy.adminUrl}/readyz`);
    expect(ready.statusCode).toBe(503);
    expect(await ready.body.text()).toContain('invalid-request budget');
  });

  it('checks the budget again when a held request is released, not only when it arrived', async () => {
    // One request per second: each held request is released after the previous answer was counted.
    const budget = 2;
    env = await startEnv(
      {},
      {
        env: {
          INVALID_REQUEST_BUDGET: String(budget),
          INVALID_BUDGET_SOFT_PERCENT: '100',
          GLOBAL_RATE_LIMIT: '1',
        },
      },
    );
    const e = env;
    e.fake.forbid('GET', '/channels/');
    // All four arrive while the budget is untouched; three of them wait for the global limit.
    const results = await Promise.all(
      [0, 1, 2, 3].map((i) => e.call('GET', `/api/v10/channels/${id(200 + i)}`)),
    );
    expect(
      results.filter((r) => r.status === 403 && r.headers['x-proxy-generated'] === undefined),
    ).toHaveLength(budget);
    for (const res of results.filter((r) => r.status === 429))
      expect(expectGenerated(res, 429).code).toBe(990008);
    expect(results.filter((r) => r.status === 429)).toHaveLength(4 - budget);
    expect(e.fake.received).toHaveLength(budget);
    expect(e.fake.stats().invalid).toBe(budget);
  });

  it('bounds a burst in flight by the budget plus the requests that were already on their way', async () => {
    const budget = 5;
    const burst = 10;
    env = await startEnv(
      {},
      { env: { INVALID_REQUEST_BUDGET: String(budget), INVALID_BUDGET_SOFT_PERCENT: '100' } },
    );
    const e = env;
    e.fake.forbid('GET', '/channels/');
    for (let i = 0; i < budget - 2; i++) await e.call('GET', `/api/v10/channels/${id(300 + i)}`);
    expect(e.fake.stats().invalid).toBe(budget - 2);
    // Ten at once while the budget still has room for two: the proxy cannot know how they will end, so all of
    // them go. This is the design's limit: at most budget - 1 + (requests already sent when the budget fills).
    const results = await Promise.all(
      Array.from({ length: burst }, (_, i) => e.call('GET', `/api/v10/channels/${id(400 + i)}`)),
    );
    expect(results.every((r) => r.status === 403 || r.status === 429)).toBe(true);
    for (const res of results.filter((r) => r.status === 429))
      expect(expectGenerated(res, 429).code).toBe(990008);
    expect(e.fake.stats().invalid).toBeGreaterThanOrEqual(budget);
    expect(e.fake.stats().invalid).toBeLessThanOrEqual(budget - 1 + burst);
    // From here on nothing more goes out.
    const after = await e.call('GET', `/api/v10/channels/${id(500)}`);
    expect(expectGenerated(after, 429).code).toBe(990008);
    expect(e.fake.received).toHaveLength(budget - 2 + results.filter((r) => r.status === 403).length);
  });

  it('keeps serving a clean token past the soft line while a broken worker spends the budget with junk tokens', async () => {
    const budget = 20;
    env = await startEnv({}, { env: { INVALID_REQUEST_BUDGET: String(budget) } });
    const e = env;
    for (let i = 0; i < 3; i++)
      expectFromDiscord(await e.call('GET', `/api/v10/channels/${id(700 + i)}`), 200);
    // Every junk token is a new identity with its own 401.
    const junk = Array.from({ length: 40 }, (_, i) => `Bot junk.token.${i}`);
    for (const token of junk) e.fake.revokeToken(token);
    const junkResults = [];
    for (const token of junk) junkResults.push(await e.call('GET', '/api/v10/users/@me', { auth: token }));
    // Up to the soft line (half the budget) they reach Discord; then the proxy refuses them itself.
    expect(e.fake.stats().invalid).toBe(budget / 2);
    expect(junkResults.filter((r) => r.status === 401)).toHaveLength(budget / 2);
    for (const res of junkResults.slice(budget / 2)) expect(expectGenerated(res, 429).code).toBe(990008);
    // The clean token is still served, and the budget is still half free.
    for (let i = 0; i < 10; i++)
      expectFromDiscord(await e.call('GET', `/api/v10/channels/${id(710 + i)}`), 200);
    expect(e.fake.stats().invalid).toBe(budget / 2);
    expect(await metric(e.proxy.adminUrl, 'discord_proxy_budget_refusals_total', 'standing="unproven"')).toBe(
      30,
    );
    expect(await metric(e.proxy.adminUrl, 'discord_proxy_invalid_answers_total', 'standing="unproven"')).toBe(
      budget / 2,
    );
  });

  it('shares what a success proves between replicas on one Redis, past the soft line', async () => {
    const budget = 10;
    env = await startEnv(
      {},
      {
        env: {
          REDIS_URL: inject('redisUrl'),
          REDIS_KEY_PREFIX: `budget${process.pid}-${prefixSeq++}:`,
          INVALID_REQUEST_BUDGET: String(budget),
        },
      },
    );
    const e = env;
    const other = await startProxy(e.fake.url, {
      env: { ...sharedEnv(e), INVALID_REQUEST_BUDGET: String(budget) },
    });
    const otherClient = clientFor(other.url);
    try {
      expectFromDiscord(await e.call('GET', `/api/v10/channels/${id(800)}`), 200);
      const junk = Array.from({ length: budget / 2 }, (_, i) => `Bot shared.junk.${i}`);
      for (const token of junk) e.fake.revokeToken(token);
      for (const token of junk)
        expectFromDiscord(await e.call('GET', '/api/v10/users/@me', { auth: token }), 401);
      // The other replica never saw BOT_A succeed: Redis tells it. A junk token it never saw is refused.
      // Its budget refresh (every 5 s) reads the shared count.
      const until = performance.now() + 12_000;
      while (
        (await metric(other.adminUrl, 'discord_proxy_invalid_requests_window')) !== budget / 2 &&
        performance.now() < until
      ) {
        await sleep(100);
      }
      expectFromDiscord(await otherClient.call('GET', `/api/v10/channels/${id(801)}`), 200);
      const fresh = await otherClient.call('GET', '/api/v10/users/@me', { auth: 'Bot never.seen.before' });
      expect(expectGenerated(fresh, 429).code).toBe(990008);
      expect(e.fake.stats().invalid).toBe(budget / 2);
    } finally {
      await other.close();
      await otherClient.client.close();
    }
  }, 20_000);

  it('counts a user-scope 429 and then refuses the retry it would have made', async () => {
    env = await startEnv(
      { policies: [{ method: 'GET', template: '/channels/{id}', limit: 1, windowMs: 1000 }] },
      { env: { INVALID_REQUEST_BUDGET: '1' } },
    );
    const e = env;
    const path = `/api/v10/channels/${id(650)}`;
    // The same token used straight against Discord: the proxy cannot know the bucket is spent.
    const direct = clientFor(e.fake.url);
    try {
      expect((await direct.call('GET', path)).status).toBe(200);
    } finally {
      await direct.client.close();
    }
    const res = await e.call('GET', path);
    expect(expectGenerated(res, 429).code).toBe(990008);
    expect(e.fake.stats().rateLimited.user).toBe(1);
    expect(e.fake.stats().invalid).toBe(1);
    // The 429 went in the budget; the retry after its reset never went out.
    expect(e.fake.received).toHaveLength(2);
    expect(await metric(e.proxy.adminUrl, 'discord_proxy_invalid_requests_window')).toBe(1);
  });

  it('does not count shared-scope 429s against the budget', async () => {
    env = await startEnv(
      {
        policies: [
          {
            method: 'POST',
            template: '/guilds/{guild_id}/emojis',
            shared: { name: 'guild-emoji', limit: 1, windowMs: 600, key: 'major' },
          },
        ],
      },
      { env: { INVALID_REQUEST_BUDGET: '1' } },
    );
    const e = env;
    const emoji = `/api/v10/guilds/${id(600)}/emojis`;
    const body = '{"name":"blob","image":"data:image/png;base64,AAAA"}';
    // Another bot (straight to Discord) uses the guild's shared limit up.
    const direct = clientFor(e.fake.url);
    try {
      expect((await direct.call('POST', emoji, { auth: BOT_B, body })).status).toBe(200);
    } finally {
      await direct.client.close();
    }
    // Our request meets the shared 429, waits it out and gets through.
    expectFromDiscord(await e.call('POST', emoji, { body }), 200);
    expect(e.fake.stats().rateLimited.shared).toBe(1);
    expect(e.fake.stats().invalid).toBe(0);
    expect(await metric(e.proxy.adminUrl, 'discord_proxy_invalid_requests_window')).toBe(0);
    // A budget of one would be gone had it counted; the proxy still forwards.
    expectFromDiscord(await e.call('GET', '/api/v10/users/@me'), 200);
  });
});

describe('access control', () => {
  let env: TestEnv | undefined;
  afterEach(async () => {
    await env?.close();
    env = undefined;
  });

  it('requires Proxy-Authorization when PROXY_AUTH_TOKEN is set, and never forwards it', async () => {
    const secret = 'proxy-shared-secret-0123456789';
    env = await startEnv({}, { env: { PROXY_AUTH_TOKEN: secret } });
    const e = env;
    for (const headers of [
      {},
      { 'proxy-authorization': 'wrong' },
      { 'proxy-authorization': `${secret}x` },
      { 'proxy-authorization': '' },
      { authorization: secret },
    ]) {
      const res = await e.call('GET', '/api/v10/users/@me', {
        headers,
        auth: headers.authorization ?? BOT_A,
      });
      expectGenerated(res, 401);
      expect(res.json()).toMatchObject({ code: 0, message: expect.stringMatching(/Proxy-Authorization/) });
    }
    expect(e.fake.received).toHaveLength(0);

    for (const value of [secret, `Bearer ${secret}`]) {
      const res = await e.call('GET', '/api/v10/users/@me', { headers: { 'proxy-authorization': value } });
      expectFromDiscord(res, 200);
    }
    expect(e.fake.received).toHaveLength(2);
    for (const r of e.fake.received) {
      const names = r.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
      expect(names).not.toContain('proxy-authorization');
      expect(r.rawHeaders.join('\n')).not.toContain(secret);
      // The bot's own token still goes through.
      expect(r.identity).toBe(BOT_A);
    }
  });
});

describe('held-request caps', () => {
  let env: TestEnv | undefined;
  afterEach(async () => {
    await env?.close();
    env = undefined;
  });

  it('answers a fast 503 beyond MAX_HELD_PER_IDENTITY and MAX_HELD_REQUESTS, and other identities still get held', async () => {
    env = await startEnv(
      { policies: [{ method: 'GET', template: '/channels/{id}', limit: 1, windowMs: 1500 }] },
      { env: { MAX_HELD_PER_IDENTITY: '4', MAX_HELD_REQUESTS: '6' } },
    );
    const e = env;
    const path = `/api/v10/channels/${id(700)}`;
    expectFromDiscord(await e.call('GET', path), 200);
    const windowAt = performance.now();
    expectFromDiscord(await e.call('GET', path, { auth: BOT_B }), 200);

    const controller = new AbortController();
    let answered = 0;
    const hold = (auth: string) =>
      request(`${e.proxy.url}${path}`, {
        headers: { authorization: auth },
        signal: controller.signal,
        dispatcher: e.client,
      }).then(
        async (res) => {
          await res.body.dump();
          answered += 1;
          return res.statusCode;
        },
        () => 0,
      );
    const heldA = Array.from({ length: 4 }, () => hold(BOT_A));
    await waitFor(() => e.proxy.app.scheduler.held === 4);
    expect(e.proxy.app.scheduler.held).toBe(4);

    // The fifth for BOT_A is refused at once.
    let started = performance.now();
    const over = await e.call('GET', path);
    expect(performance.now() - started).toBeLessThan(200);
    const body = expectGenerated(over, 503);
    expect(body.code).toBe(990007);
    expect(Number(over.headers['retry-after'])).toBeGreaterThan(0);

    // BOT_B is still held (and would be served), up to the total cap.
    const heldB = Array.from({ length: 2 }, () => hold(BOT_B));
    await waitFor(() => e.proxy.app.scheduler.held === 6);
    expect(e.proxy.app.scheduler.held).toBe(6);
    started = performance.now();
    const full = await e.call('GET', path, { auth: BOT_B });
    expect(performance.now() - started).toBeLessThan(200);
    expect(expectGenerated(full, 503).code).toBe(990007);
    expect(performance.now() - windowAt).toBeLessThan(1400);
    expect(e.fake.received).toHaveLength(2);
    expect(await metric(e.proxy.adminUrl, 'discord_proxy_held_requests')).toBe(6);

    // Held requests go at the reset as usual; the rest are released when their clients leave.
    await waitFor(() => answered === 2, 2500);
    expect(e.fake.received).toHaveLength(4);
    controller.abort();
    const statuses = await Promise.all([...heldA, ...heldB]);
    expect(statuses.filter((s) => s === 200)).toHaveLength(2);
    await waitFor(() => e.proxy.app.scheduler.held === 0);
    expect(e.proxy.app.scheduler.held).toBe(0);
    expect(await metric(e.proxy.adminUrl, 'discord_proxy_held_requests')).toBe(0);
    expect(e.fake.stats().rateLimited.user).toBe(0);
  });
});
