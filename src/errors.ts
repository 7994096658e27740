/**
 * The answers the proxy makes itself, in one table: every way a request can fail inside the proxy (a kind), and what
 * the client gets for it (status, Discord-shaped code, message) with the reason metrics and logs count it under.
 * They use Discord's error shape so that client libraries handle them with the code they already have, and carry
 * `X-Proxy-Generated: true` so that a human (and a library that cares) can tell them from Discord's own.
 *
 * The README's "Answers the proxy generates" is this table for humans; test/unit/errors.test.ts keeps the two
 * equal. This file imports no metrics: metrics.ts reads its reasons from here.
 */
import type { HoldError } from './limiter/scheduler.js';
import type { WaitReason } from './limiter/types.js';
import type { UpstreamFailureKind } from './upstream.js';

export const GENERATED_HEADER = 'x-proxy-generated';

/** The `reason` label of discord_proxy_generated_responses_total and of the request log's `generated` field. */
export const GENERATED_REASONS = [
  'hold_timeout',
  'cloudflare_cooldown',
  'upstream_unreachable',
  'upstream_timeout',
  'bad_request',
  'unauthorized',
  'token_revoked',
  'webhook_deleted',
  'forbidden_backoff',
  'invalid_budget',
  'overloaded',
  'redis_unavailable',
  'shutting_down',
  'not_found',
  'internal',
] as const;
export type GeneratedReason = (typeof GENERATED_REASONS)[number];

export interface ProxyAnswer {
  readonly status: number;
  readonly reason: GeneratedReason;
  readonly body: { message: string; code: number; retry_after?: number; global?: boolean };
  readonly headers: Record<string, string>;
}

/**
 * Where an answer says how long to wait:
 * - `body`: `Retry-After` (whole seconds, rounded up) and the precise `retry_after` in the body, as Discord's 429s;
 * - `header`: `Retry-After` only, for a 401/403/404 the proxy repeats for Discord: exactly Discord's body (no
 *   `retry_after`, which Discord never puts there and which would read as "retry then"), the header saying when
 *   the proxy will ask Discord again;
 * - `none`: no wait applies.
 */
type WaitIn = 'body' | 'header' | 'none';

export interface Failure {
  readonly status: number;
  /** Discord's error `code`; 0 is what Discord itself uses for generic errors. */
  readonly code: number;
  readonly reason: GeneratedReason;
  /** The default message; a few kinds take a more precise one from the caller. */
  readonly message: string;
  readonly waitIn: WaitIn;
  /** A wait that is always the same (the caller gives it otherwise). */
  readonly waitMs?: number;
}

const BAD_REQUEST = 50035;

/** Every failure kind and the proxy's answer to it. */
export const FAILURES = {
  // Refused before anything is sent: the request, or its target, is not one the proxy forwards.
  malformed: { status: 400, code: BAD_REQUEST, reason: 'bad_request', message: 'Malformed HTTP request.' },
  bad_target: { status: 400, code: BAD_REQUEST, reason: 'bad_request', message: 'Refused request target.' },
  bad_http_version: {
    status: 400,
    code: BAD_REQUEST,
    reason: 'bad_request',
    message: 'Unsupported HTTP version.',
  },
  missing_host: { status: 400, code: BAD_REQUEST, reason: 'bad_request', message: 'Missing Host header.' },
  // Which one would Discord read? Neither is charged nor forwarded.
  two_authorizations: {
    status: 400,
    code: BAD_REQUEST,
    reason: 'bad_request',
    message: 'More than one Authorization header.',
  },
  bad_query: { status: 400, code: BAD_REQUEST, reason: 'bad_request', message: 'Bad query.' },
  method_not_allowed: {
    status: 405,
    code: BAD_REQUEST,
    reason: 'bad_request',
    message: 'Method not allowed.',
  },
  request_timeout: {
    status: 408,
    code: BAD_REQUEST,
    reason: 'bad_request',
    message: 'The request did not arrive in time.',
  },
  body_too_large: {
    status: 413,
    code: BAD_REQUEST,
    reason: 'bad_request',
    message: 'Request body too large.',
  },
  expectation_failed: {
    status: 417,
    code: BAD_REQUEST,
    reason: 'bad_request',
    message: 'Only "Expect: 100-continue" is supported.',
  },
  headers_too_large: {
    status: 431,
    code: BAD_REQUEST,
    reason: 'bad_request',
    message: 'Request headers too large (MAX_HEADER_BYTES).',
  },
  not_found: {
    status: 404,
    code: 0,
    reason: 'not_found',
    message: 'The proxy only forwards Discord API paths under /api/.',
  },
  proxy_unauthorized: {
    status: 401,
    code: 0,
    reason: 'unauthorized',
    message: 'This proxy requires its access token (Proxy-Authorization).',
  },
  // Not admitted: held too long, or refused by the limiter's state.
  hold_timeout: {
    status: 429,
    code: 990001,
    reason: 'hold_timeout',
    message: 'The proxy held this request for its maximum hold time; try again after retry_after.',
    waitIn: 'body',
  },
  cloudflare_cooldown: {
    status: 429,
    code: 990002,
    reason: 'cloudflare_cooldown',
    message:
      'Discord (Cloudflare) is blocking this egress IP; the proxy pauses all traffic until the cool-down ends.',
    waitIn: 'body',
  },
  invalid_budget: {
    status: 429,
    code: 990008,
    reason: 'invalid_budget',
    message:
      'This egress used its invalid-request budget (401/403/429 answers); the proxy sends nothing until it recovers.',
    waitIn: 'body',
  },
  store_unavailable: {
    status: 503,
    code: 990005,
    reason: 'redis_unavailable',
    message: 'The proxy cannot reach its shared rate-limit state.',
    waitIn: 'body',
    waitMs: 1000,
  },
  shutting_down: {
    status: 503,
    code: 990006,
    reason: 'shutting_down',
    message: 'The proxy is shutting down; retry on another replica.',
    waitIn: 'body',
    waitMs: 1000,
  },
  overloaded: {
    status: 503,
    code: 990007,
    reason: 'overloaded',
    message: 'The proxy holds as many requests as it may; retry shortly.',
    waitIn: 'body',
    waitMs: 1000,
  },
  // Known to fail (a mark, discord/marks.ts): the same bodies Discord sends, so clients treat them as Discord's.
  token_revoked: {
    status: 401,
    code: 0,
    reason: 'token_revoked',
    message: '401: Unauthorized',
    waitIn: 'header',
  },
  webhook_unknown: {
    status: 404,
    code: 10015,
    reason: 'webhook_deleted',
    message: 'Unknown Webhook',
    waitIn: 'header',
  },
  webhook_token_invalid: {
    status: 401,
    code: 50027,
    reason: 'webhook_deleted',
    message: 'Invalid Webhook Token',
    waitIn: 'header',
  },
  missing_access: {
    status: 403,
    code: 50001,
    reason: 'forbidden_backoff',
    message: 'Missing Access',
    waitIn: 'header',
  },
  cannot_message_user: {
    status: 403,
    code: 50007,
    reason: 'forbidden_backoff',
    message: 'Cannot send messages to this user',
    waitIn: 'header',
  },
  missing_permissions: {
    status: 403,
    code: 50013,
    reason: 'forbidden_backoff',
    message: 'Missing Permissions',
    waitIn: 'header',
  },
  // Discord did not answer. Unlike a refused connect, a broken connection or a timeout may hide a request Discord
  // carried out: the client must not assume it did nothing.
  upstream_unreachable: {
    status: 502,
    code: 990003,
    reason: 'upstream_unreachable',
    message: 'The proxy could not reach Discord.',
  },
  upstream_broken: {
    status: 502,
    code: 990003,
    reason: 'upstream_unreachable',
    message:
      'The connection to Discord broke before it answered; the request may or may not have been carried out.',
  },
  upstream_timeout: {
    status: 504,
    code: 990004,
    reason: 'upstream_timeout',
    message: 'Discord did not answer in time; the request may or may not have been carried out.',
  },
  // A bug in the proxy: the request was not (or not completely) forwarded, and the log has the error.
  internal: {
    status: 500,
    code: 0,
    reason: 'internal',
    message: 'The proxy failed on this request; see its logs.',
  },
} as const satisfies Record<string, Omit<Failure, 'waitIn'> & { waitIn?: WaitIn }>;

export type FailureKind = keyof typeof FAILURES;

/**
 * The proxy's answer to one failure. `waitMs`: how long the client should wait, for kinds whose wait varies;
 * `message`: a more precise message than the table's.
 */
export function failure(kind: FailureKind, waitMs?: number, message?: string): ProxyAnswer {
  const row: Failure = { waitIn: 'none', ...FAILURES[kind] };
  const headers: Record<string, string> = { [GENERATED_HEADER]: 'true' };
  const body: ProxyAnswer['body'] = { message: message ?? row.message, code: row.code };
  const wait = row.waitMs ?? waitMs;
  if (row.waitIn !== 'none' && wait !== undefined) {
    const seconds = Math.max(0.001, wait / 1000);
    // Like Discord: an integer header (ceil) and the precise wait in the body.
    headers['retry-after'] = String(Math.ceil(seconds));
    if (row.waitIn === 'body') {
      body.retry_after = Math.round(seconds * 1000) / 1000;
      if (row.status === 429) body.global = false;
    }
  }
  return { status: row.status, reason: row.reason, body, headers };
}

/** What Node's HTTP parser reported (its error `code`) → the failure; anything else is `malformed`. */
export const PARSER_FAILURES: Readonly<Record<string, FailureKind>> = {
  ERR_HTTP_REQUEST_TIMEOUT: 'request_timeout',
  HPE_HEADER_OVERFLOW: 'headers_too_large',
};

/** Why Discord gave no answer (upstream.ts) → the failure, once no retry is allowed. */
export const UPSTREAM_FAILURES: Readonly<Record<Exclude<UpstreamFailureKind, 'aborted'>, FailureKind>> = {
  connect: 'upstream_unreachable',
  socket: 'upstream_broken',
  timeout: 'upstream_timeout',
};

/** Why the scheduler did not admit a request → the failure ('known_bad' depends on the mark: knownBadFailure()). */
export const HOLD_FAILURES: Readonly<
  Record<Exclude<HoldError['reason'], 'aborted' | 'known_bad'>, FailureKind>
> = {
  hold_timeout: 'hold_timeout',
  overloaded: 'overloaded',
  cloudflare: 'cloudflare_cooldown',
  store_error: 'store_unavailable',
  shutting_down: 'shutting_down',
};

/** The 403 codes the proxy repeats (see discord/marks.ts); any other code of a forbidden mark reads as 50013. */
const FORBIDDEN_FAILURES: Readonly<Record<number, FailureKind>> = {
  50001: 'missing_access',
  50007: 'cannot_message_user',
  50013: 'missing_permissions',
};

/**
 * A request a known-bad mark applies to: Discord's own status, message and code, from the answer that set the
 * mark (`code`; absent for marks written by an older replica).
 */
export function knownBadFailure(scope: WaitReason | undefined, code: number | undefined): FailureKind {
  switch (scope) {
    case 'revoked':
      return 'token_revoked';
    case 'gone':
      return code === FAILURES.webhook_token_invalid.code ? 'webhook_token_invalid' : 'webhook_unknown';
    default:
      return (code !== undefined && FORBIDDEN_FAILURES[code]) || 'missing_permissions';
  }
}

/** The answer to a request the scheduler refused (not for 'aborted': nobody is left to answer). */
export function holdFailure(error: HoldError): ProxyAnswer {
  switch (error.reason) {
    case 'known_bad':
      return failure(knownBadFailure(error.waitReason, error.code), error.retryAfterMs);
    case 'hold_timeout':
    case 'aborted':
      // A hold that timed out says how long the client should wait: at least 1 ms, 1 s when unknown.
      return failure('hold_timeout', Math.max(error.retryAfterMs || 1000, 1));
    default:
      return failure(HOLD_FAILURES[error.reason], error.retryAfterMs);
  }
}
