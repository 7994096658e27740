/**
 * Read-only views of a store's state, for the inspector on the admin port (src/inspect/). Nothing here is on a
 * request's path: a store answers these only when someone asks, and only for the buckets and identities asked
 * about (a bounded list), so neither store ever walks all of its state for them (Redis: no SCAN).
 */
import { type BucketState, windowOver } from './bucket-rules.js';
import type { LimiterStore, MarkScope } from './types.js';

/** One bucket as the scheduler and the stores name it: whose, which route, which major parameter. */
export interface BucketRef {
  readonly identity: string;
  readonly routeKey: string;
  readonly major: string;
}

export interface BucketView {
  /** Discord's X-RateLimit-Bucket hash; 'unknown' until a response names it; null: Discord does not bucket the route. */
  readonly hash: string | null;
  /** Unknown (null) until a response has told it. */
  readonly limit: number | null;
  /** How many requests the bucket would let go now (a reset already due counts as done). */
  readonly remaining: number | null;
  /** Until the current window ends, ms; null when no window is running (none yet, or waiting for its first answer). */
  readonly resetMs: number | null;
  /** Admitted and not yet answered. */
  readonly inflight: number;
  /** A shared-scope or route 429 delays the bucket this much longer, ms (0: none). */
  readonly blockedMs: number;
}

export interface IdentityView {
  /** Requests counting in the identity's global window now (in flight or answered less than a window ago). */
  readonly globalUsed: number;
  /** Remaining global-429 pause, ms (0: none). */
  readonly pausedMs: number;
}

export interface MarkView {
  readonly scope: MarkScope;
  /** The route key an 'unauthorized' or 'forbidden' mark applies to. */
  readonly routeKey?: string;
  /** The major parameter a 'gone', 'closed' or 'forbidden' mark applies to (webhook tokens are hashed in it). */
  readonly major?: string;
  /** The ids past the major parameter a 'forbidden' mark applies to. */
  readonly target?: string;
  /** The code of Discord's answer that set the mark, which the proxy repeats. */
  readonly code?: number;
  /** Until the mark expires, ms. */
  readonly ms: number;
}

/**
 * A mark's place, from the parts of its key after the identity: "r"; "u", routeKey; "g" or "c", major; "f", routeKey,
 * major, target (memory.ts markKey and redis.ts MARK_FIELD write them in this order).
 */
export function markPlace(parts: readonly string[]): Omit<MarkView, 'ms' | 'code'> | undefined {
  switch (parts[0]) {
    case 'r':
      return { scope: 'revoked' };
    case 'u':
      return { scope: 'unauthorized', routeKey: parts[1] ?? '' };
    case 'g':
      return { scope: 'gone', major: parts[1] ?? '' };
    case 'c':
      return { scope: 'closed', major: parts[1] ?? '' };
    case 'f':
      return { scope: 'forbidden', routeKey: parts[1] ?? '', major: parts[2] ?? '', target: parts[3] ?? '' };
    default:
      return undefined;
  }
}

/** What a store can tell the inspector; both stores and the failover implement it. */
export interface InspectableStore {
  /** The state of each bucket asked about, in order; null where the store knows nothing of it. */
  inspectBuckets(refs: readonly BucketRef[]): Promise<(BucketView | null)[]>;
  /** Global window use and pause of each identity asked about, in order. */
  inspectIdentities(identities: readonly string[]): Promise<IdentityView[]>;
  /** Remaining Cloudflare pause as this replica knows it now, ms (no I/O: the Redis store keeps it polled). */
  inspectCloudflare(): number;
  /** The identity's known-bad marks that have not expired. */
  inspectMarks(identity: string): Promise<MarkView[]>;
  /**
   * Buckets this replica has seen answers for, of one identity, at most `max`: from process memory (the Redis
   * store's keys are not listed, which would need a SCAN).
   */
  knownBuckets(identity: string, max: number): BucketRef[];
}

export function isInspectable(store: LimiterStore): store is LimiterStore & InspectableStore {
  const s = store as Partial<InspectableStore>;
  return (
    typeof s.inspectBuckets === 'function' &&
    typeof s.inspectIdentities === 'function' &&
    typeof s.inspectMarks === 'function' &&
    typeof s.inspectCloudflare === 'function' &&
    typeof s.knownBuckets === 'function'
  );
}

/** A bucket's state as the inspector shows it, by the same rules the stores decide with (bucket-rules.ts). */
export function viewBucket(hash: string | null, s: BucketState | undefined, now: number): BucketView {
  if (hash === null) {
    return { hash: null, limit: null, remaining: null, resetMs: null, inflight: 0, blockedMs: 0 };
  }
  const inflight = s && now < s.inflightUntil ? s.inflight : 0;
  const blockedMs = s ? Math.max(0, Math.ceil(s.blockedUntil - now)) : 0;
  if (!s || s.limit === undefined) {
    return { hash, limit: null, remaining: null, resetMs: null, inflight, blockedMs };
  }
  const over = windowOver(s, now);
  return {
    hash,
    limit: s.limit,
    remaining: Math.max(0, over ? s.limit - inflight : s.remaining),
    resetMs: !over && !s.fresh ? Math.ceil(s.resetAt - now) : null,
    inflight,
    blockedMs,
  };
}
