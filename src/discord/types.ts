/** Whose limits apply to a request: derived from the Authorization header, never the raw token. */
export interface Identity {
  /** Short keyed hash of the Authorization value ("none" for requests without one). Safe for keys, logs, labels. */
  readonly key: string;
  readonly kind: 'bot' | 'bearer' | 'none';
  /** The bot's user id, decoded from the first segment of a bot token, for per-bot global limit overrides. */
  readonly botId?: string;
}

/**
 * What the proxy needs to know about a request to decide when it may go (pure; see
 * docs/discord-ratelimits.md §5).
 */
export interface RouteInfo {
  /** Route template without ids or tokens, for metrics and logs, e.g. "/channels/:id/messages/:id". */
  readonly template: string;
  /** METHOD + " " + template + optional sub-bucket tag, e.g. "DELETE /channels/:id/messages/:id <10s". */
  readonly routeKey: string;
  /** Top-level resource: "c:<id>", "g:<id>", "w:<id>", "w:<id>:<hash of token>", "i:<interaction id>" for callbacks, or "-". Never a raw token. */
  readonly major: string;
  /** Interaction callbacks and interaction-token webhooks: not bound by the global limit. */
  readonly exempt: boolean;
  /** A webhook execute/message route with a token (a 404 there means the webhook is gone). */
  readonly webhookWithToken: boolean;
  /**
   * The ids of the path past the major parameter, e.g. "/100000000000000077" for a ban of that member ("" when
   * none): what a 403 about one target is about. Never a token.
   */
  readonly target: string;
}

/** The rate-limit facts carried by one Discord response. */
export interface RateLimitHeaders {
  readonly bucket?: string;
  readonly limit?: number;
  readonly remaining?: number;
  /** From X-RateLimit-Reset-After, in milliseconds; the absolute X-RateLimit-Reset is never used. */
  readonly resetAfterMs?: number;
  readonly retryAfterMs?: number;
  readonly global: boolean;
  readonly scope?: 'user' | 'global' | 'shared';
  /** Present on responses that passed through Discord's origin ("Via: 1.1 google"); absent on Cloudflare's. */
  readonly via: boolean;
  /**
   * X-Envoy-Upstream-Service-Time, ms: how long Discord's origin worked on the request. Its limits were applied
   * before that work, so the request reached Discord at least this long before its answer left
   * (docs/discord-ratelimits.md §6.1).
   */
  readonly serviceMs?: number;
}

/** How a 429 (or any response) must be treated; see docs/discord-ratelimits.md §1.5. */
export type ResponseKind =
  | 'ok' // not a 429
  | 'route' // bucket exhausted: update the bucket, retry
  | 'global' // per-identity global limit: pause the identity
  | 'shared' // resource shared with others: delay that bucket, not invalid
  | 'sublimit' // remaining > 0 on a user 429: delay only matching requests
  | 'cloudflare'; // an IP ban from Cloudflare: stop everything
