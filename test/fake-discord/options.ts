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
  policies?: PolicyOverride[];
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
  latency: { kind: 'none' },
  globalLimit: 50,
  globalOverrides: {},
  globalMode: 'sliding',
  scopeOnSuccess: true,
  invalidBan: { threshold: 10_000, windowMs: 600_000, banMs: 3_600_000, form: 'A', retryAfter: 'absent' },
  clockSkewMs: 0,
  decimals: 3,
  retryAfterDecimals: 3,
  policies: [],
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
