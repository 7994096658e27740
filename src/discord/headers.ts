import type { RateLimitHeaders, ResponseKind } from './types.js';

type HeaderMap = Record<string, string | string[] | undefined>;
type Mutable<T> = { -readonly [K in keyof T]: T[K] };

const INTEGER = /^\d+$/;
const DECIMAL = /^\d+(?:\.\d+)?$/;
const JSON_CONTENT_TYPE = /json/i;

function single(value: string | string[] | undefined): string | undefined {
  return typeof value === 'string' ? value : value?.[0];
}

function parseInteger(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (!INTEGER.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * Seconds to whole milliseconds, rounded up so a client never goes early. Rounding to microseconds first
 * absorbs binary noise: 0.234 * 1000 is 234.00000000000003, which must not become 235.
 */
function secondsToMs(seconds: number): number {
  return Math.ceil(Math.round(seconds * 1e6) / 1e3);
}

function parseSeconds(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (!DECIMAL.test(text)) return undefined;
  const ms = secondsToMs(Number(text));
  return Number.isSafeInteger(ms) ? ms : undefined;
}

function parseScope(value: string | undefined): RateLimitHeaders['scope'] {
  if (value === undefined) return undefined;
  const scope = value.trim().toLowerCase();
  return scope === 'user' || scope === 'global' || scope === 'shared' ? scope : undefined;
}

/**
 * Reads the rate-limit facts of one response (header names lower case, as undici gives them).
 * X-RateLimit-Reset is ignored on purpose: it is absolute and breaks under clock skew
 * (docs/discord-ratelimits.md §1.1, #2132).
 */
export function parseRateLimitHeaders(headers: HeaderMap): RateLimitHeaders {
  const global = single(headers['x-ratelimit-global'])?.trim().toLowerCase() === 'true';
  const result: Mutable<RateLimitHeaders> = { global, via: headers.via !== undefined };

  const bucket = single(headers['x-ratelimit-bucket'])?.trim();
  if (bucket !== undefined && bucket !== '') result.bucket = bucket;
  const limit = parseInteger(single(headers['x-ratelimit-limit']));
  if (limit !== undefined) result.limit = limit;
  const remaining = parseInteger(single(headers['x-ratelimit-remaining']));
  if (remaining !== undefined) result.remaining = remaining;
  const serviceMs = parseInteger(single(headers['x-envoy-upstream-service-time']));
  if (serviceMs !== undefined) result.serviceMs = serviceMs;
  const resetAfterMs = parseSeconds(single(headers['x-ratelimit-reset-after']));
  if (resetAfterMs !== undefined) result.resetAfterMs = resetAfterMs;
  // Integer seconds since API v8; a float is accepted because proxies (e.g. @discordjs/proxy) send them.
  const retryAfter = parseSeconds(single(headers['retry-after']));
  if (retryAfter !== undefined) result.retryAfterMs = retryAfter;
  const scope = parseScope(single(headers['x-ratelimit-scope']));
  if (scope !== undefined) result.scope = scope;
  return result;
}

/**
 * How a response must be treated (docs/discord-ratelimits.md §1.5). A 429 that did not pass Discord's origin
 * (no Via) or is not JSON comes from Cloudflare, including Form A whose JSON body carries `code: 0`. A
 * missing content type alone is not taken as proof of Cloudflare: Via already says the origin answered.
 */
export function classifyResponse(
  status: number,
  rl: RateLimitHeaders,
  contentType: string | undefined,
  body?: { code?: unknown; global?: unknown; retry_after?: unknown } | null,
): ResponseKind {
  if (status !== 429) return 'ok';
  if (!rl.via) return 'cloudflare';
  if (contentType !== undefined && !JSON_CONTENT_TYPE.test(contentType)) return 'cloudflare';
  if (rl.global || rl.scope === 'global' || body?.global === true) return 'global';
  if (rl.scope === 'shared') return 'shared';
  // The bucket still has room, so something narrower than the bucket said no
  // (docs/discord-ratelimits.md §1.5, #2190).
  if (rl.remaining !== undefined && rl.remaining > 0) return 'sublimit';
  return 'route';
}

/**
 * How long to wait after a 429: the body's float `retry_after`, unless the Retry-After header asks for longer than
 * its rounding explains. The header is normally the body's wait rounded up to whole seconds (docs/discord-ratelimits.md §1.2), and pausing
 * a whole identity for that rounded-up second after a global 429 would waste most of it; but the two have been
 * seen to disagree (discord-api-docs #7394), and then the longer is the safe one.
 */
export function retryAfterMs(
  rl: RateLimitHeaders,
  body?: { retry_after?: unknown } | null,
): number | undefined {
  const seconds = body?.retry_after;
  const bodyMs = typeof seconds === 'number' && seconds >= 0 ? secondsToMs(seconds) : Number.NaN;
  const fromBody = Number.isSafeInteger(bodyMs) ? bodyMs : undefined;
  const header = rl.retryAfterMs;
  if (fromBody === undefined) return header;
  return header !== undefined && header - fromBody >= 1000 ? header : fromBody;
}
