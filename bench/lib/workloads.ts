/**
 * The requests each workload sends. Paths are Discord's; tokens look like real bot tokens (base64 of a snowflake
 * user id, then two more segments) so that the proxy's identity code takes the same path as in production.
 */
import type { WorkloadKind } from './spec.js';

export interface BenchRequest {
  readonly method: 'GET' | 'POST' | 'PUT';
  readonly path: string;
  readonly authorization: string;
  readonly body: string | null;
}

export function botToken(index: number): string {
  const userId = String(300000000000000000n + BigInt(index));
  const secret = `benchSecret${String(index).padStart(6, '0')}`.padEnd(38, 'x');
  return `Bot ${Buffer.from(userId).toString('base64')}.GbEnCh.${secret}`;
}

/** The token of every single-token workload. */
export const MAIN_TOKEN = botToken(0);

export function channelId(index: number): string {
  return String(400000000000000000n + BigInt(index));
}

/** A message id about a minute old, like the ones bots react to. */
const MESSAGE_ID = String((BigInt(Date.now() - 1420070400000 - 60_000) << 22n) + 1n);

export const HOT_CHANNEL = channelId(7);
export const HOLD_CHANNELS = 10;
export const MIXED_TOKENS = 1000;
export const MIXED_CHANNELS = 100;
export const TOKENS20 = 20;

const MESSAGE_BODY = '{"content":"benchmark message"}';

/** Small deterministic generator (mulberry32): the same seed gives every target the same request sequence. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Returns a function from (worker, global sequence number) to the next request. */
export function workload(kind: WorkloadKind, seed: number): (worker: number, seq: number) => BenchRequest {
  switch (kind) {
    case 'unbucketed':
      return () => ({ method: 'GET', path: '/api/v10/users/@me', authorization: MAIN_TOKEN, body: null });
    case 'bucketed': {
      const paths = Array.from(
        { length: 50 },
        (_, i) => `/api/v10/channels/${channelId(i)}/messages?limit=50`,
      );
      return (_worker, seq) => ({
        method: 'GET',
        path: paths[seq % 50]!,
        authorization: MAIN_TOKEN,
        body: null,
      });
    }
    case 'hot': {
      const path = `/api/v10/channels/${HOT_CHANNEL}/messages`;
      return () => ({ method: 'POST', path, authorization: MAIN_TOKEN, body: MESSAGE_BODY });
    }
    case 'global': {
      const paths = Array.from(
        { length: 200 },
        (_, i) => `/api/v10/channels/${channelId(1000 + i)}/messages`,
      );
      return (worker, seq) => ({
        method: 'POST',
        path: paths[(worker * 7 + seq) % 200]!,
        authorization: MAIN_TOKEN,
        body: MESSAGE_BODY,
      });
    }
    case 'reactions': {
      const path = `/api/v10/channels/${HOT_CHANNEL}/messages/${MESSAGE_ID}/reactions/%F0%9F%91%8D/@me`;
      return () => ({ method: 'PUT', path, authorization: MAIN_TOKEN, body: null });
    }
    case 'tokens20': {
      const tokens = Array.from({ length: TOKENS20 }, (_, i) => botToken(20_000 + i));
      return (worker, seq) => {
        const token = worker % TOKENS20;
        return {
          method: 'GET',
          path: `/api/v10/channels/${channelId(20_000 + token * 5 + (seq % 5))}/messages?limit=50`,
          authorization: tokens[token]!,
          body: null,
        };
      };
    }
    case 'hold': {
      const paths = Array.from(
        { length: HOLD_CHANNELS },
        (_, i) => `/api/v10/channels/${channelId(5000 + i)}/pins`,
      );
      return (_worker, seq) => ({
        method: 'GET',
        path: paths[seq % HOLD_CHANNELS]!,
        authorization: MAIN_TOKEN,
        body: null,
      });
    }
    case 'mixed': {
      const next = random(seed);
      const tokens = Array.from({ length: MIXED_TOKENS }, (_, i) => botToken(10_000 + i));
      const channels = Array.from({ length: MIXED_CHANNELS }, (_, i) => channelId(10_000 + i));
      return () => {
        const authorization = tokens[Math.floor(next() * MIXED_TOKENS)]!;
        const channel = channels[Math.floor(next() * MIXED_CHANNELS)]!;
        const pick = next();
        // Reads dominate a bot's REST traffic; writes and reactions have small buckets (5 per 5 s, 1 per 250 ms).
        if (pick < 0.4)
          return {
            method: 'GET',
            path: `/api/v10/channels/${channel}/messages?limit=50`,
            authorization,
            body: null,
          };
        if (pick < 0.6)
          return { method: 'GET', path: `/api/v10/channels/${channel}`, authorization, body: null };
        if (pick < 0.8)
          return {
            method: 'POST',
            path: `/api/v10/channels/${channel}/messages`,
            authorization,
            body: MESSAGE_BODY,
          };
        if (pick < 0.9)
          return {
            method: 'PUT',
            path: `/api/v10/channels/${channel}/messages/${MESSAGE_ID}/reactions/%F0%9F%91%8D/@me`,
            authorization,
            body: null,
          };
        return { method: 'GET', path: '/api/v10/users/@me', authorization, body: null };
      };
    }
  }
}
