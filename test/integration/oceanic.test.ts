/**
 * A real client library pointed at the proxy, as the README shows it: Oceanic.js Clients with `rest.baseURL`
 * set to the proxy, two per bot token. Only their REST side is used; no Client connects to the gateway. Each
 * Client keeps its own per-route buckets from the X-RateLimit-* headers the proxy passes on, which cannot
 * account for the other Client of the same bot: without the proxy, the two reactions of a channel get a 429.
 */
import { Client, InteractionResponseTypes, type Message } from 'oceanic.js';
import { afterAll, beforeAll, describe, it } from 'vitest';
import {
  type BotCalls,
  CALLS_PER_BOT,
  runMixedWorkload,
  type SentMessage,
  testBots,
} from '../helpers/client-workload.js';
import { startEnv, type TestEnv } from '../helpers/env.js';

const BOTS = testBots(5, 320000000000000000n, 'oceanic');
/** Two Clients per token, like two processes of one bot: each keeps its own buckets; the proxy sees both. */
const WORKERS = [0, 1];

const sent = (m: Message): SentMessage => ({
  id: m.id,
  channelId: m.channelID,
  content: m.content,
  authorId: m.author.id,
});

function calls(client: Client): BotCalls {
  const { channels, oauth, webhooks, interactions } = client.rest;
  return {
    createMessage: async (channelId, content) => sent(await channels.createMessage(channelId, { content })),
    editMessage: async (channelId, messageId, content) =>
      sent(await channels.editMessage(channelId, messageId, { content })),
    deleteMessage: (channelId, messageId) => channels.deleteMessage(channelId, messageId),
    addReaction: (channelId, messageId, emoji) => channels.createReaction(channelId, messageId, emoji),
    getChannel: async (channelId) => void (await channels.get(channelId)),
    currentUser: async () => {
      const user = await oauth.getCurrentUser();
      return { id: user.id, bot: user.bot };
    },
    executeWebhook: async (webhookId, token, content, wait) => {
      if (wait) return sent(await webhooks.execute(webhookId, token, { content, wait: true }));
      await webhooks.execute(webhookId, token, { content });
      return undefined;
    },
    interactionCallback: async (interactionId, token, content) => {
      await interactions.createInteractionResponse(interactionId, token, {
        type: InteractionResponseTypes.CHANNEL_MESSAGE_WITH_SOURCE,
        data: { content },
      });
    },
  };
}

describe('Oceanic.js through the proxy', () => {
  let env: TestEnv;
  let workers: BotCalls[][] = [];
  beforeAll(async () => {
    // A small fixed latency, so that concurrent calls really overlap in flight.
    env = await startEnv({ latency: { kind: 'fixed', ms: 15 } });
    // As in the README: the proxy's URL with /api/v10, which Oceanic's baseURL includes.
    const rest = { baseURL: `${env.proxy.url}/api/v10` };
    workers = BOTS.map((bot) => WORKERS.map(() => calls(new Client({ auth: bot.authorization, rest }))));
  });
  afterAll(async () => {
    await env?.close();
  });

  it(`completes ${BOTS.length * CALLS_PER_BOT} concurrent mixed calls with zero 429s at the fake`, {
    timeout: 28_000,
  }, async () => {
    // Oceanic sends the client's token on every call, webhook executions and interaction callbacks included.
    await runMixedWorkload(env, BOTS, workers, { tokenRoutesCarryAuth: true });
  });
});
