/**
 * The narrow seam between deciding (admit/learn) and where the state lives. Two implementations keep the same
 * contract: memory.ts (one replica) and redis.ts (any number of replicas acting as one); test/contract runs one
 * suite against both.
 *
 * All times inside a store are the store's own clock. Callers only ever see relative waits in milliseconds, so
 * replicas whose clocks disagree still agree on every window (Redis decides with its TIME).
 */

export interface AdmitInput {
  /** Keyed hash of the Authorization value. */
  readonly identity: string;
  /** METHOD + template (+ sub-bucket tag): the route that learns a bucket hash. */
  readonly routeKey: string;
  /** Top-level resource ("c:…", "g:…", "w:…" or "-"). */
  readonly major: string;
  /** Requests per second allowed for the identity; 0 for exempt traffic (interactions), which skips the global window. */
  readonly globalLimit: number;
  /** Scopes sublimit delays: only requests with the same tag wait behind a sublimit 429. */
  readonly sublimit: string;
  /** The ids of the path past its major parameter ("" or absent if none): the exact target a 403 can be about. */
  readonly target?: string;
}

/** Where a request goes, as far as known-bad marks care. */
export type MarkAt = Pick<AdmitInput, 'identity' | 'routeKey' | 'major' | 'target'>;

export type WaitReason =
  | 'bucket' // the bucket is exhausted until its reset
  | 'probe' // the bucket is unknown and one request is finding out its limits
  | 'blocked' // a shared-scope 429 delays this bucket
  | 'sublimit' // a hidden sublimit delays requests like this one
  | 'global' // the identity's 1000 ms window is full
  | 'paused' // a global 429 paused the identity
  | 'cloudflare' // everything is paused after a Cloudflare ban
  // Known to fail: answered by the proxy itself until the mark expires (see LimiterStore.mark).
  | 'revoked' // the token got a 401 (or, without a token, this route did)
  | 'gone' // the webhook (major parameter) is unknown or its token invalid
  | 'forbidden'; // a 403: this exact target, or the whole channel or guild

/** Reasons that end a request at once instead of holding it. */
export const KNOWN_BAD: ReadonlySet<WaitReason> = new Set(['revoked', 'gone', 'forbidden']);

/**
 * How narrowly a known-bad mark applies (src/discord/marks.ts decides which): 'revoked' the whole token,
 * 'unauthorized' one route for requests without a token, 'gone' a webhook, 'closed' a channel or guild (for this
 * token), 'forbidden' one exact target (route, major parameter and the ids after it).
 */
export type MarkScope = 'revoked' | 'unauthorized' | 'gone' | 'closed' | 'forbidden';

/** The wait reason admit() gives for a request a mark of this scope applies to. */
export const MARK_REASON: Readonly<Record<MarkScope, WaitReason>> = {
  revoked: 'revoked',
  unauthorized: 'revoked',
  gone: 'gone',
  closed: 'forbidden',
  forbidden: 'forbidden',
};
/** Marks are checked in this order; the first that applies answers. */
export const MARK_SCOPES: readonly MarkScope[] = ['revoked', 'unauthorized', 'gone', 'closed', 'forbidden'];

export type AdmitResult =
  | {
      readonly ok: true;
      /** The bucket slot taken (null for routes Discord does not bucket). Passed back to learn(). */
      readonly bucket: string | null;
      /** This request is the one allowed to find out an unknown bucket's limits. */
      readonly probe: boolean;
      /**
       * The bucket's window this request was counted in (its local reset count); passed back to learn() so that
       * an answer from an earlier window is never read as the current window's.
       */
      readonly window: number;
      /** The identity's global-window slot this request holds until its answer ('' for exempt traffic). */
      readonly slot: string;
    }
  | {
      readonly ok: false;
      readonly reason: WaitReason;
      readonly waitMs: number;
      /** For a known-bad reason: the code of Discord's answer that set the mark, which the proxy repeats. */
      readonly code?: number;
    };

/** An admitted request's result: what learn() needs back to end it. */
export type Admission = Extract<AdmitResult, { ok: true }>;

export interface LearnInput {
  readonly identity: string;
  readonly routeKey: string;
  readonly major: string;
  /** The bucket returned by admit() for this request. */
  readonly bucket: string | null;
  readonly probe: boolean;
  /** admit()'s `window` for this request (0 when unknown). */
  readonly window?: number;
  /** admit()'s `slot` for this request ('' or absent when it holds none). */
  readonly slot?: string;
  /**
   * The request never left (its client went away after admission, or the budget ran out): its slots are given
   * back at once instead of being kept a window past its answer.
   */
  readonly unsent?: boolean;
  /**
   * How long before its answer came back the request is known to have reached Discord at the latest, ms (its
   * origin's service time, at most the round trip): its global slot counts a window from then.
   */
  readonly serviceMs?: number;
  /** X-RateLimit-Bucket, when the response carried one. */
  readonly hash?: string | undefined;
  readonly limit?: number | undefined;
  readonly remaining?: number | undefined;
  /** Wait until the bucket resets (Reset-After, or a route 429's retry-after when longer). */
  readonly resetAfterMs?: number | undefined;
  /** A successful response without rate-limit headers: the route is not bucketed. */
  readonly unbucketed?: boolean;
  /**
   * A 429 without rate-limit headers: the route is limited but does not say how. From then on it is treated as a
   * bucket whose limits are unknown (one request at a time), and header-less successes no longer make it
   * unbucketed.
   */
  readonly limitedWithoutHeaders?: boolean;
  /** Shared-scope 429: delay the whole bucket this long without touching its counters. */
  readonly blockMs?: number | undefined;
  /** Sublimit 429: delay requests with this tag on this route and major parameter. */
  readonly sublimitDelay?: { readonly tag: string; readonly ms: number } | undefined;
  /**
   * No request of the identity is held on this replica: nothing here waits for this answer to land, so a store
   * may send it together with later ones (redis.ts learn).
   */
  readonly unhurried?: boolean;
}

export interface LimiterStore {
  /**
   * Decides atomically whether one request may go now: Cloudflare pause, identity pause, sublimit, bucket, global.
   * A decision made without I/O (in process, or from a lease) comes back as it is, not in a promise, so that the
   * request it admits goes on in the same turn instead of waiting for a microtask and its closures.
   */
  admit(input: AdmitInput): AdmitResult | Promise<AdmitResult>;
  /**
   * Applies what one response said about its bucket, and ends the request's admission: releases the probe if
   * it was one, and takes it out of the bucket's and the global window's requests in flight. Every admission
   * must end here exactly once, answered or not (an admission that is never ended holds its slots until
   * `probeTimeoutMs`).
   */
  learn(input: LearnInput): Promise<void>;
  /** A global 429: pause every non-exempt request of the identity. */
  pauseIdentity(identity: string, ms: number): Promise<void>;
  /** A Cloudflare ban: pause every request leaving this egress. Returns the pause's remaining time. */
  pauseAll(ms: number): Promise<number>;
  /** Remaining Cloudflare pause in ms (0 when none); read by /readyz. */
  cloudflarePause(): Promise<number>;
  /**
   * Marks requests as known to fail for `ms`, as narrowly as `scope` says (see MarkScope). admit() answers them
   * with the scope's reason (MARK_REASON) and `code` until it expires.
   */
  mark(at: MarkAt, scope: MarkScope, ms: number, code: number): Promise<void>;
  /**
   * Adds `count` invalid responses (401, 403, non-shared 429) to this egress's sliding 10-minute window and
   * returns how many the window holds now (all replicas together when shared). `count` 0 only reads.
   */
  countInvalid(count: number): Promise<number>;
  /** Records that the identity got a successful answer (kept for INVALID_WINDOW_MS), for every replica to see. */
  vouch(identity: string): Promise<void>;
  /** Whether any replica vouched for the identity within INVALID_WINDOW_MS. */
  vouched(identity: string): Promise<boolean>;
  close(): Promise<void>;
}

/** Options both stores share; they come from Config. */
export interface StoreOptions {
  /** Added to each learned reset so that transit and rounding never make us early. */
  readonly resetMarginMs: number;
  /** The global window is 1000 ms plus this margin (jitter between here and Discord). */
  readonly globalWindowMarginMs: number;
  /**
   * How long an admitted request may stay unanswered before the store stops counting it in flight: an unknown
   * bucket's probe, a bucket slot, a global slot (a replica that crashed never reports back).
   */
  readonly probeTimeoutMs: number;
}

/** How long a head-of-line request waits before asking again while another request probes an unknown bucket. */
export const PROBE_POLL_MS = 25;
/** After a local reset, if no response of the new window arrives (all failed), reopen after this long. */
export const STALLED_WINDOW_MS = 5000;
export const GLOBAL_WINDOW_MS = 1000;
/** Discord counts invalid requests per IP over 10 minutes (docs/discord-ratelimits.md §4). */
export const INVALID_WINDOW_MS = 600_000;
/** The invalid-request window is kept in slots of this length; a slot leaves the window as a whole. */
export const INVALID_SLOT_MS = 10_000;

/** Whether a store's answer is still to come (admit() answers at once when it can). */
export function pending<T>(value: T | Promise<T>): value is Promise<T> {
  return value instanceof Promise;
}
