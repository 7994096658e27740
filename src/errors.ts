/**
 * The answers the proxy makes itself, in one place. They use Discord's error shape so that client libraries
 * handle them with the code they already have, and carry `X-Proxy-Generated: true` so that a human (and a
 * library that cares) can tell them from Discord's own.
 */
import type { WaitReason } from './limiter/types.js';
import type { GeneratedReason } from './metrics.js';

export const GENERATED_HEADER = 'x-proxy-generated';

export interface ProxyAnswer {
  readonly status: number;
  readonly reason: GeneratedReason;
  readonly body: { message: string; code: number; retry_after?: number; global?: boolean };
  readonly headers: Record<string, string>;
}

/** Error codes in Discord's error shape; 0 is what Discord itself uses for generic errors. */
export const ProxyCode = {
  General: 0,
  Unauthorized: 0,
  UnknownWebhook: 10015,
  MissingAccess: 50001,
  CannotMessageUser: 50007,
  MissingPermissions: 50013,
  InvalidWebhookToken: 50027,
  HoldTimeout: 990001,
  CloudflareCooldown: 990002,
  UpstreamUnreachable: 990003,
  UpstreamTimeout: 990004,
  StoreUnavailable: 990005,
  ShuttingDown: 990006,
  Overloaded: 990007,
  InvalidBudget: 990008,
  BadRequest: 50035,
  NotFound: 0,
} as const;

export function answer(
  status: number,
  reason: GeneratedReason,
  message: string,
  code: number,
  retryAfterMs?: number,
): ProxyAnswer {
  const headers: Record<string, string> = { [GENERATED_HEADER]: 'true' };
  const body: ProxyAnswer['body'] = { message, code };
  if (retryAfterMs !== undefined) {
    const seconds = Math.max(0.001, retryAfterMs / 1000);
    // Like Discord: an integer header (ceil) and the precise wait in the body.
    headers['retry-after'] = String(Math.ceil(seconds));
    body.retry_after = Math.round(seconds * 1000) / 1000;
    if (status === 429) body.global = false;
  }
  return { status, reason, body, headers };
}

/**
 * A 401, 403 or 404 the proxy repeats for Discord: exactly Discord's body (no `retry_after`, which Discord never
 * puts there and which would read as "retry then"), and `Retry-After` only as a header, saying when the proxy
 * will ask Discord again.
 */
function knownBad(
  status: number,
  reason: GeneratedReason,
  message: string,
  code: number,
  waitMs: number,
): ProxyAnswer {
  const plain = answer(status, reason, message, code);
  const seconds = Math.max(0.001, waitMs / 1000);
  return { ...plain, headers: { ...plain.headers, 'retry-after': String(Math.ceil(seconds)) } };
}

/** Discord's messages for the 403 codes the proxy repeats (see discord/marks.ts). */
const FORBIDDEN_MESSAGES: Record<number, string> = {
  [ProxyCode.MissingAccess]: 'Missing Access',
  [ProxyCode.CannotMessageUser]: 'Cannot send messages to this user',
  [ProxyCode.MissingPermissions]: 'Missing Permissions',
};

export const answers = {
  holdTimeout: (waitMs: number) =>
    answer(
      429,
      'hold_timeout',
      'The proxy held this request for its maximum hold time; try again after retry_after.',
      ProxyCode.HoldTimeout,
      Math.max(waitMs, 1),
    ),
  cloudflare: (waitMs: number) =>
    answer(
      429,
      'cloudflare_cooldown',
      'Discord (Cloudflare) is blocking this egress IP; the proxy pauses all traffic until the cool-down ends.',
      ProxyCode.CloudflareCooldown,
      waitMs,
    ),
  upstreamUnreachable: () =>
    answer(502, 'upstream_unreachable', 'The proxy could not reach Discord.', ProxyCode.UpstreamUnreachable),
  // Unlike a refused connect, Discord may have received the request: the client must not assume it did nothing.
  upstreamBroken: () =>
    answer(
      502,
      'upstream_unreachable',
      'The connection to Discord broke before it answered; the request may or may not have been carried out.',
      ProxyCode.UpstreamUnreachable,
    ),
  upstreamTimeout: () =>
    answer(
      504,
      'upstream_timeout',
      'Discord did not answer in time; the request may or may not have been carried out.',
      ProxyCode.UpstreamTimeout,
    ),
  storeUnavailable: () =>
    answer(
      503,
      'redis_unavailable',
      'The proxy cannot reach its shared rate-limit state.',
      ProxyCode.StoreUnavailable,
      1000,
    ),
  shuttingDown: () =>
    answer(
      503,
      'shutting_down',
      'The proxy is shutting down; retry on another replica.',
      ProxyCode.ShuttingDown,
      1000,
    ),
  badRequest: (message: string) => answer(400, 'bad_request', message, ProxyCode.BadRequest),
  // Known to fail: the same bodies Discord sends for these, so clients treat them exactly as Discord's.
  tokenRevoked: (waitMs: number) =>
    knownBad(401, 'token_revoked', '401: Unauthorized', ProxyCode.Unauthorized, waitMs),
  webhookDeleted: (waitMs: number) =>
    knownBad(404, 'webhook_deleted', 'Unknown Webhook', ProxyCode.UnknownWebhook, waitMs),
  forbidden: (waitMs: number, code: number = ProxyCode.MissingPermissions) =>
    knownBad(403, 'forbidden_backoff', FORBIDDEN_MESSAGES[code] ?? 'Missing Permissions', code, waitMs),
  invalidWebhookToken: (waitMs: number) =>
    knownBad(401, 'webhook_deleted', 'Invalid Webhook Token', ProxyCode.InvalidWebhookToken, waitMs),
  invalidBudget: (waitMs: number) =>
    answer(
      429,
      'invalid_budget',
      'This egress used its invalid-request budget (401/403/429 answers); the proxy sends nothing until it recovers.',
      ProxyCode.InvalidBudget,
      waitMs,
    ),
  overloaded: () =>
    answer(
      503,
      'overloaded',
      'The proxy holds as many requests as it may; retry shortly.',
      ProxyCode.Overloaded,
      1000,
    ),
  unauthorized: () =>
    answer(
      401,
      'unauthorized',
      'This proxy requires its access token (Proxy-Authorization).',
      ProxyCode.Unauthorized,
    ),
  // Requests Node's HTTP parser refuses before any route runs (see clientErrorHandler in app.ts).
  malformed: () => answer(400, 'bad_request', 'Malformed HTTP request.', ProxyCode.BadRequest),
  headersTooLarge: () =>
    answer(431, 'bad_request', 'Request headers too large (MAX_HEADER_BYTES).', ProxyCode.BadRequest),
  requestTimeout: () =>
    answer(408, 'bad_request', 'The request did not arrive in time.', ProxyCode.BadRequest),
  expectationFailed: () =>
    answer(417, 'bad_request', 'Only "Expect: 100-continue" is supported.', ProxyCode.BadRequest),
  methodNotAllowed: () => answer(405, 'bad_request', 'Method not allowed.', ProxyCode.BadRequest),
  // A bug in the proxy: the request was not (or not completely) forwarded, and the log has the error.
  internal: () =>
    answer(500, 'internal', 'The proxy failed on this request; see its logs.', ProxyCode.General),
  notFound: () =>
    answer(404, 'not_found', 'The proxy only forwards Discord API paths under /api/.', ProxyCode.NotFound),
} as const;

/**
 * The proxy's answer for a request a known-bad mark applies to: Discord's own status, message and code, from the
 * answer that set the mark (`code`; absent for marks written by an older replica).
 */
export function knownBadAnswer(
  reason: WaitReason | undefined,
  code: number | undefined,
  waitMs: number,
): ProxyAnswer {
  switch (reason) {
    case 'revoked':
      return answers.tokenRevoked(waitMs);
    case 'gone':
      return code === ProxyCode.InvalidWebhookToken
        ? answers.invalidWebhookToken(waitMs)
        : answers.webhookDeleted(waitMs);
    default:
      return answers.forbidden(waitMs, code !== undefined && code in FORBIDDEN_MESSAGES ? code : undefined);
  }
}
