import type { LatencyOption } from './latency.js';
import type { PolicyOverride } from './policies.js';

export interface InvalidBanOption {
  /** Invalid requests (401, 403, 429 except shared) per IP within windowMs that trigger a ban. */
  threshold: number;
  windowMs: number;
  banMs: number;
  /**
   * A: Discord-branded JSON block page; B: Cloudflare's "error code: 1015" page
   * (docs/discord-ratelimits.md §4.1).
   */
  form: 'A' | 'B';
  /** Retry-After on ban pages: reported both absent and present in seconds (#5810 vs djs PR 5203). */
  retryAfter: 'absent' | number;
}

export interface FakeDiscordOptions {
  host?: string;
  port?: number;
  /**
   * One-way trip to Discord, sampled per request after its body is read. Limits are decided when it
   * ends (the request "arrives"), so requests in flight cross window boundaries as they do over a WAN.
   */
  transit?: LatencyOption;
  /** Processing and return trip, sampled per request after the decision; headers are computed as it ends. */
  latency?: LatencyOption;
  /** Requests per second per identity. */
  globalLimit?: number;
  /** Global limit by bot user id, decoded from the token's first base64 segment. */
  globalOverrides?: Record<string, number>;
  /** 'sliding': strict 1000 ms sliding window; 'gcra': burst of globalLimit, then an even rate. */
  globalMode?: 'sliding' | 'gcra';
  /**
   * X-RateLimit-Scope: user on bucketed non-429 responses too (docs/discord-ratelimits.md §1.4); false is the
   * docs-literal mode.
   */
  scopeOnSuccess?: boolean;
  invalidBan?: Partial<InvalidBanOption>;
  /** Added to X-RateLimit-Reset and Date, to catch proxies that use the absolute reset time. */
  clockSkewMs?: number;
  decimals?: 3 | 2;
  /** Precision of retry_after in 429 bodies (3, or 1 as in some real 20028 bodies). */
  retryAfterDecimals?: 3 | 1;
  /**
   * Every Discord 429's Retry-After header reports this fraction (0–1) of the real wait, floored to
   * whole seconds, while the body's retry_after keeps the real wait (#7394). null: the header is the
   * ceiling of the real wait. A policy's shortRetryAfter wins for its route.
   */
  shortRetryAfter?: number | null;
  policies?: PolicyOverride[];
  /**
   * Message ids that do not exist: requests for them under /channels/{c}/messages/{m} and
   * /webhooks/{w}/{t}/messages/{m} get 404 Unknown Message (10008); a message DELETE's 404 carries
   * the young-message hash and counter (docs/discord-ratelimits.md §2.4). Kept across reset(); FakeDiscord.deleteMessage adds more.
   */
  unknownMessages?: readonly string[];
  /** 401 for requests without Authorization on routes that need one (not webhooks, callbacks, invites). */
  requireAuth?: boolean;
  recordBodies?: boolean;
  /** Requests kept in `received`; later ones still count in stats. */
  maxRecords?: number;
  /** Bytes kept of each recorded body. */
  maxBodyBytes?: number;
}

export type ResolvedOptions = Required<Omit<FakeDiscordOptions, 'invalidBan'>> & {
  invalidBan: InvalidBanOption;
};

export const DEFAULTS: ResolvedOptions = {
  host: '127.0.0.1',
  port: 0,
  transit: { kind: 'none' },
  latency: { kind: 'none' },
  globalLimit: 50,
  globalOverrides: {},
  globalMode: 'sliding',
  scopeOnSuccess: true,
  invalidBan: { threshold: 10_000, windowMs: 600_000, banMs: 3_600_000, form: 'A', retryAfter: 'absent' },
  clockSkewMs: 0,
  decimals: 3,
  retryAfterDecimals: 3,
  shortRetryAfter: null,
  policies: [],
  unknownMessages: [],
  requireAuth: true,
  recordBodies: true,
  maxRecords: 200_000,
  maxBodyBytes: 2 * 1024 * 1024,
};

export function resolveOptions(o: FakeDiscordOptions): ResolvedOptions {
  const defined = Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
  return {
    ...DEFAULTS,
    ...defined,
    invalidBan: { ...DEFAULTS.invalidBan, ...o.invalidBan },
  } as ResolvedOptions;
}
