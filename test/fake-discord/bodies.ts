import type { IncomingHttpHeaders } from 'node:http';
import type { BodyKind } from './policies.js';
import { JSON_TYPE, type Reply, reply } from './reply.js';

// Success bodies. Each carries method, path (as received, with /api/vN) and the raw query, so tests can
// check that the proxy forwarded the request line byte for byte; /api/vN/__echo returns the body itself.

const DISCORD_EPOCH = 1420070400000n;
const FOURTEEN_DAYS_MS = 14 * 24 * 3600 * 1000;
let increment = 0;

export function snowflake(epochMs = Date.now()): string {
  increment = (increment + 1) & 0xfff;
  return (((BigInt(epochMs) - DISCORD_EPOCH) << 22n) | (1n << 17n) | BigInt(increment)).toString();
}

/** Index into a policy's age buckets: 0 for <10 s (and ids that are not snowflakes, like Discord's 404s), 1, 2 for >14 d. */
export function messageAgeIndex(id: string | undefined, nowEpochMs: number): 0 | 1 | 2 {
  if (!id || !/^\d{1,20}$/.test(id)) return 0;
  const age = nowEpochMs - Number((BigInt(id) >> 22n) + DISCORD_EPOCH);
  return age < 10_000 ? 0 : age > FOURTEEN_DAYS_MS ? 2 : 1;
}

/** Bot user id from the first segment of a bot token (base64 of the id); undefined for anything else. */
export function botIdOf(authorization: string | undefined): string | undefined {
  if (!authorization || authorization.startsWith('Bearer ')) return undefined;
  const token = authorization.startsWith('Bot ') ? authorization.slice(4) : authorization;
  const dot = token.indexOf('.');
  const id = Buffer.from(dot < 0 ? token : token.slice(0, dot), 'base64').toString('utf8');
  return /^\d{5,20}$/.test(id) ? id : undefined;
}

export interface SuccessInput {
  readonly kind: BodyKind;
  readonly status: 200 | 204;
  readonly method: string;
  /** As received, including /api/vN. */
  readonly path: string;
  readonly query: string;
  readonly segs: readonly string[];
  readonly body: Buffer;
  readonly headers: IncomingHttpHeaders;
  readonly botId: string | undefined;
}

function jsonObject(body: Buffer, headers: IncomingHttpHeaders): Record<string, unknown> {
  if (body.length === 0 || body.length > 65536 || !headers['content-type']?.includes('json')) return {};
  try {
    const parsed: unknown = JSON.parse(body.toString('utf8'));
    return typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function message(
  i: SuccessInput,
  channelId: string,
  extra: Record<string, unknown>,
): Record<string, unknown> {
  const editing = i.method === 'PATCH';
  const now = new Date().toISOString();
  const sent = jsonObject(i.body, i.headers);
  return {
    id: editing ? (i.segs[4] ?? snowflake()) : snowflake(),
    type: 0,
    channel_id: channelId,
    content: sent.content ?? '',
    author: { id: i.botId ?? '0', username: 'fake-bot', discriminator: '0000', bot: true },
    timestamp: now,
    edited_timestamp: editing ? now : null,
    tts: false,
    mention_everyone: false,
    mentions: [],
    embeds: [],
    attachments: [],
    pinned: false,
    nonce: sent.nonce ?? null,
    ...extra,
    method: i.method,
    path: i.path,
    query: i.query,
  };
}

function patterned(size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  for (let k = 0; k < size; k++) out[k] = (k * 31 + 7) & 0xff;
  return out;
}

function echo(i: SuccessInput): Reply {
  const size = /(?:^|&)size=(\d+)/.exec(i.query)?.[1];
  const body = i.body.length === 0 && size ? patterned(Math.min(Number(size), 64 << 20)) : i.body;
  const headers = ['X-Echo-Method', i.method, 'X-Echo-Path', i.path, 'X-Echo-Query', i.query];
  const contentType = i.headers['content-type'] ?? 'application/octet-stream';
  return reply('ok', 200, { body, contentType, headers });
}

export function successReply(i: SuccessInput): Reply {
  const echoFields = { method: i.method, path: i.path, query: i.query };
  switch (i.kind) {
    case 'echo':
      return echo(i);
    case 'message':
      return reply('ok', 200, { body: JSON.stringify(message(i, i.segs[2] ?? '0', {})) });
    case 'webhook-execute': {
      // Discord answers 204 unless the caller asked to wait for the created message.
      if (!/(?:^|&)wait=true(?:&|$)/.test(i.query)) return reply('ok', 204);
      return reply('ok', 200, { body: JSON.stringify(message(i, '0', { webhook_id: i.segs[2] })) });
    }
    case 'gateway':
      return reply('ok', 200, { body: JSON.stringify({ url: 'wss://gateway.discord.gg', ...echoFields }) });
    case 'gateway-bot': {
      const limit = { total: 1000, remaining: 999, reset_after: 14_400_000, max_concurrency: 1 };
      const body = { url: 'wss://gateway.discord.gg', shards: 1, session_start_limit: limit, ...echoFields };
      return reply('ok', 200, { body: JSON.stringify(body) });
    }
    case 'user-me': {
      const user = {
        id: i.botId ?? '0',
        username: 'fake-bot',
        discriminator: '0000',
        bot: true,
        ...echoFields,
      };
      return reply('ok', 200, { body: JSON.stringify(user) });
    }
    default:
      if (i.status === 204) return reply('ok', 204);
      return reply('ok', 200, { body: JSON.stringify(echoFields), contentType: JSON_TYPE });
  }
}
