/**
 * A real client library pointed at the proxy, as a bot developer would do it: @discordjs/rest with its `api`
 * option set to the proxy. Hundreds of concurrent mixed calls must all succeed without a single 429 at the fake.
 */
import { REST, RESTEvents } from '@discordjs/rest';
import { Routes } from 'discord-api-types/v10';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { id, testBots } from '../helpers/client-workload.js';
import { startEnv, type TestEnv } from '../helpers/env.js';

const THUMBS_UP = encodeURIComponent('\u{1f44d}');
const CHANNELS_PER_BOT = 8;
const WEBHOOKS = 10;
const CALLBACKS = 20;

/**
 * Six bots of one platform team behind one proxy (design.md §1). Each sends 40 calls, under its 50/s global limit,
 * so every call goes in the first second and this test is about the route buckets and the wire format: a single
 * token saturating its global window is left out, see the report on admission-time global accounting.
 */
const BOTS = testBots(6, 300000000000000000n, 'djs');

describe('@discordjs/rest through the proxy', () => {
  let env: TestEnv;
  let clients: REST[] = [];
  let anonymous: REST;
  beforeAll(async () => {
    // A small fixed latency, so that concurrent calls really overlap in flight.
    env = await startEnv({ latency: { kind: 'fixed', ms: 15 } });
    const api = `${env.proxy.url}/api`;
    clients = BOTS.map((bot) => new REST({ api, version: '10', timeout: 20_000 }).setToken(bot.token));
    anonymous = new REST({ api, version: '10', timeout: 20_000 });
  });
  afterAll(async () => {
    for (const rest of [...clients, anonymous]) {
      rest?.clearHashSweeper();
      rest?.clearHandlerSweeper();
    }
    await env?.close();
  });

  it('completes 300 concurrent mixed calls with zero 429s at the fake', { timeout: 28_000 }, async () => {
    const statuses = new Map<number, number>();
    for (const rest of [...clients, anonymous]) {
      rest.on(RESTEvents.Response, (_request, response) => {
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
      });
    }
    const message = id(900_000);
    const calls: Promise<void>[] = [];
    const expected = new Map<string, number>();
    const count = (route: string) => expected.set(route, (expected.get(route) ?? 0) + 1);

    BOTS.forEach((bot, b) => {
      const rest = clients[b]!;
      for (let c = 0; c < CHANNELS_PER_BOT; c++) {
        const channel = id(b * 100 + c + 1);
        const content = `hello ${b}/${c} \u00e9\u{1f44b}`;
        calls.push(
          rest.post(Routes.channelMessages(channel), { body: { content } }).then((m) => {
            expect(m).toMatchObject({ content, channel_id: channel, author: { id: bot.botId } });
          }),
        );
        count('POST /channels/{channel_id}/messages');
        calls.push(
          rest.get(Routes.channel(channel)).then((body) => {
            expect(body).toMatchObject({ method: 'GET', path: `/api/v10/channels/${channel}` });
          }),
        );
        count('GET /channels/{channel_id}');
        // Two reactions on one channel: its reaction bucket allows 1 per 250 ms, so one of them must be held.
        for (let k = 0; k < 2; k++) {
          calls.push(rest.put(Routes.channelMessageOwnReaction(channel, message, THUMBS_UP)).then(() => {}));
          count('PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me');
        }
      }
      for (let i = 0; i < 8; i++) {
        calls.push(
          // Routes.user() is /users/@me; Routes.user('@me') would percent-encode it to /users/%40me.
          rest.get(Routes.user()).then((user) => {
            expect(user).toMatchObject({ id: bot.botId, bot: true });
          }),
        );
        count('GET /users/@me');
      }
    });
    for (let w = 0; w < WEBHOOKS; w++) {
      const webhook = id(5000 + w);
      const token = `${'w'.repeat(60)}Tok${String(w).padStart(5, '0')}`;
      for (let k = 0; k < 4; k++) {
        const wait = k % 2 === 0;
        const query = new URLSearchParams(wait ? { wait: 'true' } : {});
        const content = `hook ${w}/${k}`;
        calls.push(
          anonymous
            .post(Routes.webhook(webhook, token), { body: { content }, auth: false, query })
            .then((body) => {
              if (wait) expect(body).toMatchObject({ content, webhook_id: webhook });
            }),
        );
        count('POST /webhooks/{webhook_id}/{webhook_token}');
      }
    }
    for (let i = 0; i < CALLBACKS; i++) {
      const token = `aW50ZXJhY3Rpb246${'c'.repeat(60)}${i}`;
      calls.push(
        anonymous
          .post(Routes.interactionCallback(id(7000 + i), token), {
            body: { type: 4, data: { content: 'pong' } },
            auth: false,
          })
          .then(() => {}),
      );
      count('POST /interactions/{interaction_id}/{interaction_token}/callback');
    }
    expect(calls.length).toBe(300);

    const started = performance.now();
    const outcomes = await Promise.allSettled(calls);
    const elapsed = performance.now() - started;
    const failures = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
    expect(failures.map((f) => String(f.reason)).slice(0, 5)).toEqual([]);
    // Bounds the holds (reactions wait 250 ms per channel); not a speed measurement.
    expect(elapsed).toBeLessThan(15_000);

    const stats = env.fake.stats();
    expect(stats.rateLimited).toEqual({ user: 0, global: 0, shared: 0, sublimit: 0, cloudflare: 0 });
    expect(stats.invalid).toBe(0);
    // Each call reached Discord exactly once, on the route it was meant for.
    expect(stats.total).toBe(300);
    for (const [route, n] of expected) expect(stats.byRoute[route], route).toBe(n);
    expect(stats.busiestWindow()).toBeLessThanOrEqual(50);
    // The clients never saw a 429 either.
    expect([...statuses.keys()].every((s) => s >= 200 && s < 300)).toBe(true);

    // The wire format discord.js produced arrived as it was sent: each bot's own token, encoded emoji.
    const authorizations = new Set<string>();
    for (const r of env.fake.received) {
      const at = r.rawHeaders.findIndex((h) => h.toLowerCase() === 'authorization');
      if (at >= 0) authorizations.add(r.rawHeaders[at + 1]!);
      if (r.method === 'PUT') expect(r.path.split('/').at(-2)).toBe(THUMBS_UP);
      if (r.path.includes('/webhooks/') || r.path.includes('/interactions/')) expect(at).toBe(-1);
    }
    expect(authorizations).toEqual(new Set(BOTS.map((bot) => bot.authorization)));
    // The second reaction of a channel waited for the first one's 250 ms window.
    for (let b = 0; b < BOTS.length; b++) {
      const channel = id(b * 100 + 1);
      const [first, second] = env.fake.received.filter(
        (r) => r.method === 'PUT' && r.path.includes(`/channels/${channel}/`),
      );
      expect(second!.at - first!.at).toBeGreaterThanOrEqual(240);
    }
  });
});
