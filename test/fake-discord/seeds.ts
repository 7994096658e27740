import type { Seed, SharedSpec, SublimitSpec } from './policies.js';

// The seeded route table. Limits are the user-reported values of docs/discord-ratelimits.md §7.2, or
// plausible guesses where nothing was reported; Discord changes them without notice (D-RL:11), so a test that
// depends on a number should pin it with a PolicyOverride. Routes not listed here get no bucket.

const S = 1000;
const C = '/channels/{channel_id}';
const G = '/guilds/{guild_id}';
const W = '/webhooks/{webhook_id}';
const WT = `${W}/{webhook_token}`;
const REACTIONS = `${C}/messages/{message_id}/reactions`;

/** Bucketed route: `group` names the hash (md5 of it), so routes with one group share X-RateLimit-Bucket. */
function b(
  method: string,
  template: string,
  group: string,
  limit: number,
  windowMs: number,
  extra: Partial<Seed> = {},
): Seed {
  return { method, template, group, limit, windowMs, ...extra };
}

/** Unbucketed route: no X-RateLimit-* headers at all (docs/discord-ratelimits.md §1.3). */
function u(method: string, template: string, extra: Partial<Seed> = {}): Seed {
  return { method, template, unbucketed: true, ...extra };
}

// Staff: a hidden 30/60 s per channel shared by all its webhooks (#367). Keyed by webhook id unless
// FakeDiscord.linkWebhook tells the fake which channel a webhook posts to.
const WEBHOOK_CHANNEL: SharedSpec = { name: 'webhook-channel', limit: 30, windowMs: 60 * S, key: 'webhook' };
// "The quota returned by our APIs may be inaccurate" (D-RL:21): the headers advertise a roomy bucket
// while a per-guild limit shared by every editor answers with shared 429s.
const GUILD_EMOJI: SharedSpec = { name: 'guild-emoji', limit: 10, windowMs: 60 * S, key: 'major' };
// Staff, #2190: 2 renames or topic changes per 10 minutes per channel, invisible in the headers.
const NAME_TOPIC: SublimitSpec = {
  name: 'channel-name-topic',
  limit: 2,
  windowMs: 600 * S,
  bodyKeys: ['name', 'topic'],
};

const NO_CONTENT = { successStatus: 204 } as const;
const PER_ROUTE = { counter: 'route' } as const;
const TOKEN_AUTH = { authOptional: true } as const;

export const SEEDS: readonly Seed[] = [
  u('GET', '/gateway', { authOptional: true, body: 'gateway' }),
  b('GET', '/gateway/bot', 'gateway-bot', 2, 5 * S, {
    hash: '41f9cd5d28af77da04563bcb1d67fdfd',
    body: 'gateway-bot',
  }),
  u('GET', '/users/@me', { body: 'user-me' }),
  u('GET', '/applications/@me'),
  b('GET', '/users/{user_id}', 'user-get', 30, 10 * S),
  b('GET', '/users/@me/guilds', 'my-guilds', 1, S),
  u('GET', '/invites/{code}', TOKEN_AUTH),
  u('*', '/__echo', { authOptional: true, body: 'echo' }),

  b('GET', C, 'channel-get', 5, S),
  b('PATCH', C, 'channel-modify', 10, 15 * S, {
    hash: '9852e1a53c06ffc5a89d65fef85ca4ce',
    sublimits: [NAME_TOPIC],
  }),
  b('DELETE', C, 'channel-delete', 5, 5 * S),
  b('GET', `${C}/messages`, 'messages-list', 50, S),
  // One hash, one counter per route (#1442, #8073): create and edit each get 5 per 5 s.
  b('POST', `${C}/messages`, 'message-write', 5, 5 * S, { ...PER_ROUTE, body: 'message' }),
  b('PATCH', `${C}/messages/{message_id}`, 'message-write', 5, 5 * S, { ...PER_ROUTE, body: 'message' }),
  b('GET', `${C}/messages/{message_id}`, 'message-get', 50, S),
  b('DELETE', `${C}/messages/{message_id}`, 'message-delete', 3, S, { byMessageAge: true }),
  b('POST', `${C}/messages/bulk-delete`, 'bulk-delete', 1, S, NO_CONTENT),
  b('POST', `${C}/messages/{message_id}/crosspost`, 'crosspost', 10, 3600 * S),
  // Every reaction verb on every message of a channel: one hash and one counter (#981, tw#1046).
  b('DELETE', REACTIONS, 'reactions', 1, 250),
  b('DELETE', `${REACTIONS}/{emoji}`, 'reactions', 1, 250),
  b('GET', `${REACTIONS}/{emoji}`, 'reactions', 1, 250),
  b('PUT', `${REACTIONS}/{emoji}/@me`, 'reactions', 1, 250, NO_CONTENT),
  b('DELETE', `${REACTIONS}/{emoji}/@me`, 'reactions', 1, 250),
  b('DELETE', `${REACTIONS}/{emoji}/{user_id}`, 'reactions', 1, 250),
  b('GET', `${C}/pins`, 'pins-get', 5, S),
  b('PUT', `${C}/pins/{message_id}`, 'pins', 5, 5 * S, NO_CONTENT),
  b('DELETE', `${C}/pins/{message_id}`, 'pins', 5, 5 * S),
  b('PUT', `${C}/messages/pins/{message_id}`, 'pins', 5, 5 * S, NO_CONTENT),
  b('DELETE', `${C}/messages/pins/{message_id}`, 'pins', 5, 5 * S),
  b('POST', `${C}/typing`, 'typing', 5, 5 * S, NO_CONTENT),
  b('PUT', `${C}/permissions/{overwrite_id}`, 'overwrites', 10, 10 * S, NO_CONTENT),
  b('DELETE', `${C}/permissions/{overwrite_id}`, 'overwrites', 10, 10 * S),

  b('GET', G, 'guild-get', 50, S),
  b('PATCH', G, 'guild-modify', 5, 5 * S),
  b('GET', `${G}/channels`, 'guild-channels', 50, S),
  b('GET', `${G}/roles`, 'guild-roles', 50, S),
  b('GET', `${G}/members`, 'members-list', 10, 10 * S),
  // GET and PATCH of one member path have different hashes (#190).
  b('GET', `${G}/members/{user_id}`, 'member-get', 5, S),
  b('PATCH', `${G}/members/{user_id}`, 'member-modify', 10, 10 * S),
  b('DELETE', `${G}/members/{user_id}`, 'member-kick', 5, S),
  b('PUT', `${G}/members/{user_id}/roles/{role_id}`, 'member-roles', 10, 10 * S, NO_CONTENT),
  b('DELETE', `${G}/members/{user_id}/roles/{role_id}`, 'member-roles', 10, 10 * S),
  b('PUT', `${G}/bans/{user_id}`, 'bans', 5, S, { ...PER_ROUTE, ...NO_CONTENT }),
  b('DELETE', `${G}/bans/{user_id}`, 'bans', 5, S, PER_ROUTE),
  b('GET', `${G}/audit-logs`, 'audit-logs', 5, 5 * S),
  b('GET', `${G}/emojis`, 'emojis-get', 50, S),
  b('POST', `${G}/emojis`, 'guild-emojis', 50, S, { shared: GUILD_EMOJI }),
  b('PATCH', `${G}/emojis/{emoji_id}`, 'guild-emojis', 50, S, { shared: GUILD_EMOJI }),
  b('DELETE', `${G}/emojis/{emoji_id}`, 'guild-emojis', 50, S, { shared: GUILD_EMOJI }),

  // Not bound by the global limit (D-RL:128); libraries treat it as unbucketed burst traffic.
  u('POST', '/interactions/{interaction_id}/{interaction_token}/callback', {
    exempt: true,
    ...TOKEN_AUTH,
    ...NO_CONTENT,
  }),
  b('GET', W, 'webhook-get', 5, S),
  b('PATCH', W, 'webhook-modify', 5, S),
  b('DELETE', W, 'webhook-modify', 5, S),
  b('POST', WT, 'webhook-execute', 5, 2 * S, {
    ...TOKEN_AUTH,
    shared: WEBHOOK_CHANNEL,
    body: 'webhook-execute',
  }),
  b('GET', WT, 'webhook-token', 5, S, TOKEN_AUTH),
  b('PATCH', WT, 'webhook-token', 5, S, TOKEN_AUTH),
  b('DELETE', WT, 'webhook-token', 5, S, TOKEN_AUTH),
  ...['GET', 'PATCH', 'DELETE'].flatMap((m) => [
    b(m, `${WT}/messages/@original`, 'webhook-message', 5, S, { ...PER_ROUTE, ...TOKEN_AUTH }),
    b(m, `${WT}/messages/{message_id}`, 'webhook-message', 5, S, { ...PER_ROUTE, ...TOKEN_AUTH }),
  ]),
];
