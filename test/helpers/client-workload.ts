/**
 * What the client-library tests have in common: bot identities with Discord-shaped tokens, and one mixed
 * workload sent through a library as a bot would send it, judged at the fake. Each test supplies a small
 * `BotCalls` adapter in its library's own calls; the plan, the counts and the assertions live here.
 */
import { expect } from 'vitest';
import type { TestEnv } from './env.js';

export const id = (i: number) => String(100000000000000000n + BigInt(i));

export interface TestBot {
  botId: string;
  token: string;
  authorization: string;
}

/** Bots whose tokens start with their id in base64, as Discord's do: the proxy and the fake tell them apart. */
export function testBots(count: number, firstId: bigint, tag: string): TestBot[] {
  return Array.from({ length: count }, (_, i) => {
    const botId = String(firstId + BigInt(i));
    const token = `${Buffer.from(botId).toString('base64')}.GxYz12.${tag}Token${String(i).repeat(30)}`;
    return { botId, token, authorization: `Bot ${token}` };
  });
}

export interface SentMessage {
  id: string;
  channelId: string;
  content: string;
  authorId: string;
}

/** One bot's client, through the library's own methods. */
export interface BotCalls {
  createMessage(channelId: string, content: string): Promise<SentMessage>;
  editMessage(channelId: string, messageId: string, content: string): Promise<SentMessage>;
  deleteMessage(channelId: string, messageId: string): Promise<void>;
  addReaction(channelId: string, messageId: string, emoji: string): Promise<void>;
  getChannel(channelId: string): Promise<void>;
  currentUser(): Promise<{ id: string; bot: boolean }>;
  /** Resolves to the created message when `wait` is set, as Discord answers 204 otherwise. */
  executeWebhook(
    webhookId: string,
    token: string,
    content: string,
    wait: boolean,
  ): Promise<SentMessage | undefined>;
  interactionCallback(interactionId: string, token: string, content: string): Promise<void>;
}

export interface MixedWorkloadOptions {
  /** The library sends the bot's Authorization on webhook executions and interaction callbacks too. */
  tokenRoutesCarryAuth: boolean;
}

const THUMBS_UP = '\u{1f44d}';
const CHANNELS_PER_BOT = 2;
/**
 * Create, edit, delete chains per channel: within the fake's message-write 5 per 5 s for each of create and
 * edit, and message-delete's 3 per s. The proxy counts create and edit together once it has learned their
 * shared X-RateLimit-Bucket hash, so the sixth of them can wait about 5 s: slower, never a 429.
 */
const CHAINS_PER_CHANNEL = 3;
/** The reaction bucket allows 1 per 250 ms per channel, so the second one must be held. */
const REACTIONS_PER_CHANNEL = 2;
const OLD_MESSAGE = id(900_000);

/** 30 calls per bot: five bots make 150. */
export const CALLS_PER_BOT =
  CHANNELS_PER_BOT * (CHAINS_PER_CHANNEL * 3 + 1 + REACTIONS_PER_CHANNEL) + 2 + 2 + 2;

const TOKEN_ROUTES = new Set([
  'POST /webhooks/{webhook_id}/{webhook_token}',
  'POST /interactions/{interaction_id}/{interaction_token}/callback',
]);

/**
 * Starts every bot's share of the workload at once (an edit and a delete follow their own create), waits for
 * all of it, then checks at the fake: every call arrived once on its route, no 429 of any kind, each bot's
 * own token on its calls, and edits and deletes aimed at the ids the creates returned.
 *
 * `workers[b]` are bot b's clients, all with its token, like the shards or processes of one bot: its calls go
 * to them in turn, so the two reactions of a channel come from two clients whose own limiters cannot know of
 * each other. Only the proxy sees both.
 */
export async function runMixedWorkload(
  env: TestEnv,
  bots: readonly TestBot[],
  workers: readonly (readonly BotCalls[])[],
  options: MixedWorkloadOptions,
): Promise<void> {
  const calls: Promise<unknown>[] = [];
  const expected = new Map<string, number>();
  const count = (route: string) => expected.set(route, (expected.get(route) ?? 0) + 1);
  const created = new Set<string>();
  const owner = new Map<string, string>();

  bots.forEach((bot, b) => {
    let turn = 0;
    const next = () => workers[b]![turn++ % workers[b]!.length]!;
    for (let c = 0; c < CHANNELS_PER_BOT; c++) {
      const channel = id(b * 100 + c + 1);
      owner.set(channel, bot.authorization);
      for (let k = 0; k < CHAINS_PER_CHANNEL; k++) {
        const content = `hello ${b}/${c}/${k} \u00e9\u{1f44b}`;
        const rest = next();
        calls.push(
          (async () => {
            const sent = await rest.createMessage(channel, content);
            expect(sent).toMatchObject({ content, channelId: channel, authorId: bot.botId });
            created.add(sent.id);
            const edited = await rest.editMessage(channel, sent.id, `${content} (edited)`);
            expect(edited).toMatchObject({ id: sent.id, content: `${content} (edited)` });
            await rest.deleteMessage(channel, sent.id);
          })(),
        );
        count('POST /channels/{channel_id}/messages');
        count('PATCH /channels/{channel_id}/messages/{message_id}');
        count('DELETE /channels/{channel_id}/messages/{message_id}');
      }
      calls.push(next().getChannel(channel));
      count('GET /channels/{channel_id}');
      for (let k = 0; k < REACTIONS_PER_CHANNEL; k++) {
        calls.push(next().addReaction(channel, OLD_MESSAGE, THUMBS_UP));
        count('PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me');
      }
    }
    for (let k = 0; k < 2; k++) {
      calls.push(
        next()
          .currentUser()
          .then((user) => expect(user).toMatchObject({ id: bot.botId, bot: true })),
      );
      count('GET /users/@me');
    }
    const webhook = id(5000 + b);
    const webhookToken = `${'w'.repeat(60)}Tok${String(b).padStart(5, '0')}`;
    for (const wait of [true, false]) {
      const content = `hook ${b} ${wait}`;
      calls.push(
        next()
          .executeWebhook(webhook, webhookToken, content, wait)
          .then((sent) => {
            if (wait) expect(sent).toMatchObject({ content });
            else expect(sent).toBeUndefined();
          }),
      );
      count('POST /webhooks/{webhook_id}/{webhook_token}');
    }
    for (let k = 0; k < 2; k++) {
      const token = `aW50ZXJhY3Rpb246${'c'.repeat(60)}${b}${k}`;
      calls.push(next().interactionCallback(id(7000 + b * 10 + k), token, 'pong'));
      count('POST /interactions/{interaction_id}/{interaction_token}/callback');
    }
  });
  const outcomes = await Promise.allSettled(calls);
  const failures = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
  expect(failures.map((f) => String(f.reason)).slice(0, 5)).toEqual([]);
  const planned = [...expected.values()].reduce((a, n) => a + n, 0);
  expect(planned).toBe(bots.length * CALLS_PER_BOT);

  const stats = env.fake.stats();
  expect(stats.rateLimited).toEqual({ user: 0, global: 0, shared: 0, sublimit: 0, cloudflare: 0 });
  expect(stats.invalid).toBe(0);
  expect(Object.keys(stats.byStatus).every((s) => Number(s) >= 200 && Number(s) < 300)).toBe(true);
  // Each call reached Discord exactly once, on the route it was meant for.
  expect(stats.total).toBe(bots.length * CALLS_PER_BOT);
  expect(stats.byRoute).toEqual(Object.fromEntries(expected));
  expect(stats.busiestWindow()).toBeLessThanOrEqual(50);

  // The wire format the library produced arrived as it was sent.
  const tokens = new Set(bots.map((bot) => bot.authorization));
  const seen = new Set<string>();
  expect(env.fake.received.length).toBe(stats.total);
  for (const r of env.fake.received) {
    const at = r.rawHeaders.findIndex((h) => h.toLowerCase() === 'authorization');
    const authorization = at >= 0 ? r.rawHeaders[at + 1] : undefined;
    if (TOKEN_ROUTES.has(r.route) && !options.tokenRoutesCarryAuth) {
      expect(authorization, r.route).toBeUndefined();
    } else {
      expect(tokens.has(authorization ?? ''), r.route).toBe(true);
      seen.add(authorization!);
    }
    const channel = /^\/api\/v10\/channels\/(\d+)/.exec(r.path)?.[1];
    if (channel) expect(authorization, r.path).toBe(owner.get(channel));
    if (r.method === 'PUT') expect(r.path.split('/').at(-2)).toBe(encodeURIComponent(THUMBS_UP));
    if (r.method === 'PATCH' || r.method === 'DELETE')
      expect(created.has(r.path.split('/').at(-1)!)).toBe(true);
  }
  expect(seen).toEqual(tokens);
}
