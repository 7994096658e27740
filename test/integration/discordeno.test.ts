/**
 * A real client library pointed at the proxy, as the README shows it: @discordeno/rest in proxy mode, two
 * rest managers per bot token with `proxy.baseUrl` set to the proxy. In proxy mode discordeno keeps no
 * buckets of its own and does not retry 429s, so every call goes straight out and the proxy alone keeps the
 * fake free of 429s.
 */
import { createRestManager, type RestManager } from '@discordeno/rest';
import { afterAll, beforeAll, describe, it } from 'vitest';
import {
  type BotCalls,
  CALLS_PER_BOT,
  runMixedWorkload,
  type SentMessage,
  testBots,
} from '../helpers/client-workload.js';
import { startEnv, type TestEnv } from '../helpers/env.js';

const BOTS = testBots(5, 310000000000000000n, 'discordeno');
/** Two rest managers per token, like two processes of one bot. */
const WORKERS = [0, 1];

interface DiscordenoMessage {
  id: string;
  channelId: string;
  content?: string;
  author: { id: string };
}

const sent = (m: DiscordenoMessage): SentMessage => ({
  id: m.id,
  channelId: m.channelId,
  content: m.content ?? '',
  authorId: m.author.id,
});

function calls(rest: RestManager): BotCalls {
  return {
    createMessage: async (channelId, content) => sent(await rest.sendMessage(channelId, { content })),
    editMessage: async (channelId, messageId, content) =>
      sent(await rest.editMessage(channelId, messageId, { content })),
    deleteMessage: (channelId, messageId) => rest.deleteMessage(channelId, messageId),
    addReaction: (channelId, messageId, emoji) => rest.addReaction(channelId, messageId, emoji),
    getChannel: async (channelId) => void (await rest.getChannel(channelId)),
    // getCurrentUser() is the OAuth2 call that takes a Bearer token; a bot asks for its own user like this.
    currentUser: async () => {
      const user = await rest.get<{ id: string; bot: boolean }>(rest.routes.currentUser());
      return { id: user.id, bot: user.bot };
    },
    executeWebhook: async (webhookId, token, content, wait) => {
      const message = await rest.executeWebhook(webhookId, token, { content, wait });
      return message && sent(message);
    },
    interactionCallback: async (interactionId, token, content) => {
      await rest.sendInteractionResponse(interactionId, token, { type: 4, data: { content } });
    },
  };
}

describe('@discordeno/rest through the proxy', () => {
  let env: TestEnv;
  let workers: BotCalls[][] = [];
  beforeAll(async () => {
    // A small fixed latency, so that concurrent calls really overlap in flight.
    env = await startEnv({ latency: { kind: 'fixed', ms: 15 } });
    // As in the README: the proxy's base URL and nothing else; discordeno sends `Bot <token>` itself.
    const proxy = { baseUrl: `${env.proxy.url}/api` };
    workers = BOTS.map((bot) => WORKERS.map(() => calls(createRestManager({ token: bot.token, proxy }))));
  });
  afterAll(async () => {
    await env?.close();
  });

  it(`completes ${BOTS.length * CALLS_PER_BOT} concurrent mixed calls with zero 429s at the fake`, {
    timeout: 28_000,
  }, async () => {
    // Webhook executions and interaction callbacks go without a token: discordeno marks them unauthorized.
    await runMixedWorkload(env, BOTS, workers, { tokenRoutesCarryAuth: false });
  });
});
