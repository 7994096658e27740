/**
 * The bucket rules, as pure functions over one bucket's state. memory.ts calls them directly; the Redis scripts
 * (lua/admit-*.lua, lua/learn-*.lua) implement the same rules line for line, and the contract suite holds both
 * to the same behaviour.
 *
 * Discord's windows start at the first request after a reset (docs/discord-ratelimits.md §1.3) and we only
 * learn where a window ends from the responses, so after a local reset the bucket is "fresh": up to `limit`
 * requests may go, and the first response from the new window tells us when it ends. Responses from an older
 * window that arrive late are recognised by their earlier reset and ignored.
 */
import { type AdmitResult, PROBE_POLL_MS, SAME_WINDOW_TOLERANCE_MS, STALLED_WINDOW_MS } from './types.js';

export interface BucketState {
  /** Unknown until a response tells us; while unknown, one probe request goes at a time. */
  limit?: number;
  remaining: number;
  /** When the current window ends (store clock, ms), margin included. */
  resetAt: number;
  /** Reset locally; waiting for the first response of the new window to learn when it ends. */
  fresh: boolean;
  /** A shared or route 429 delays the bucket until then. */
  blockedUntil: number;
  /** The unknown bucket's probe is out until then (expires so a crashed replica cannot hold it forever). */
  probeUntil: number;
}

export type Wait = Extract<AdmitResult, { ok: false }>;

export function emptyBucket(): BucketState {
  return { remaining: 0, resetAt: 0, fresh: false, blockedUntil: 0, probeUntil: 0 };
}

/** Why a request must wait for this bucket, or null when it may go now. Does not change the state. */
export function checkBucket(s: BucketState, now: number): Wait | null {
  if (s.blockedUntil > now) return { ok: false, reason: 'blocked', waitMs: s.blockedUntil - now };
  if (s.limit === undefined) {
    return s.probeUntil > now
      ? { ok: false, reason: 'probe', waitMs: Math.min(PROBE_POLL_MS, s.probeUntil - now) }
      : null;
  }
  if (s.remaining > 0) return null;
  if (!s.fresh) return now >= s.resetAt ? null : { ok: false, reason: 'bucket', waitMs: s.resetAt - now };
  // Everything of the new window is out and no response has said when it ends yet: ask again shortly.
  return now >= s.resetAt + STALLED_WINDOW_MS ? null : { ok: false, reason: 'bucket', waitMs: PROBE_POLL_MS };
}

/** Takes one slot after checkBucket allowed it; returns true when this request is the unknown bucket's probe. */
export function takeBucket(s: BucketState, now: number, probeTimeoutMs: number): boolean {
  if (s.limit === undefined) {
    s.probeUntil = now + probeTimeoutMs;
    return true;
  }
  const windowOver = now >= s.resetAt && (!s.fresh || s.remaining <= 0);
  if (windowOver) {
    if (s.fresh) s.resetAt = now; // stalled: restart the wait for a first response
    s.remaining = s.limit;
    s.fresh = true;
  }
  s.remaining -= 1;
  return false;
}

export interface BucketFacts {
  readonly limit?: number | undefined;
  readonly remaining?: number | undefined;
  readonly resetAfterMs?: number | undefined;
  readonly blockMs?: number | undefined;
}

/** Applies one response's headers. Never raises `remaining` above what we counted ourselves. */
export function learnBucket(s: BucketState, facts: BucketFacts, now: number, marginMs: number): void {
  if (facts.blockMs !== undefined) s.blockedUntil = Math.max(s.blockedUntil, now + facts.blockMs);
  const { limit, remaining, resetAfterMs } = facts;
  if (limit === undefined || remaining === undefined || resetAfterMs === undefined) return;
  const reset = now + resetAfterMs + marginMs;
  if (s.limit === undefined) {
    s.limit = limit;
    s.remaining = remaining;
    s.resetAt = reset;
    s.fresh = false;
    s.probeUntil = 0;
    return;
  }
  s.limit = limit;
  // An answer that left Discord after its window had ended (latency longer than the window's rest) says
  // "resets in 0": it describes no window still running, least of all a new one.
  if (resetAfterMs <= SAME_WINDOW_TOLERANCE_MS) return;
  if (reset > s.resetAt + SAME_WINDOW_TOLERANCE_MS) {
    // A window that ends later than the one we knew: the first answer after a local reset, or a request that
    // reached Discord just after its reset.
    s.resetAt = reset;
    s.fresh = false;
    s.remaining = Math.min(s.remaining, remaining);
  } else if (!s.fresh && reset >= s.resetAt - SAME_WINDOW_TOLERANCE_MS) {
    s.remaining = Math.min(s.remaining, remaining);
    s.resetAt = Math.max(s.resetAt, reset);
  }
  // Otherwise the answer belongs to a window that is already over: it says nothing about the current one.
}
