/**
 * The bucket rules, as pure functions over one bucket's state. memory.ts calls them directly; the Redis scripts
 * (lua/admit-*.lua, lua/learn-*.lua) implement the same rules line for line, and the contract suite holds both
 * to the same behaviour.
 *
 * Discord's windows start at the first request that *arrives* after a reset (docs/discord-ratelimits.md §1.3),
 * and we only learn where a window ends from the answers, which come back late and out of order. So:
 *
 * - every local reset starts a numbered window; admissions carry its number and an answer only says where the
 *   window ends if it belongs to the current one (an answer from an earlier window, however late, is ignored);
 * - the first answer of a window sets its end (now + Reset-After + margin, however small Reset-After is);
 * - requests admitted but not yet answered may land in Discord's next window, so a local reset hands out only
 *   `limit - in flight`.
 *
 * The invariant: the requests a bucket admits in one local window plus those still in flight at its start never
 * exceed `limit`, and a local window never starts before the end of the Discord window its predecessor's first
 * answer described. Since the local reset is always at or after Discord's (Reset-After is measured after the
 * request arrived), no Discord window receives more than `limit` of our requests, whatever the latency.
 */
import { type AdmitResult, PROBE_POLL_MS, STALLED_WINDOW_MS } from './types.js';

export interface BucketState {
  /** Unknown until a response tells us; while unknown, one probe request goes at a time. */
  limit?: number;
  remaining: number;
  /** When the current window ends (store clock, ms), margin included; while `fresh`, when it started. */
  resetAt: number;
  /** Reset locally; waiting for the first answer of the new window to learn when it ends. */
  fresh: boolean;
  /** A shared or route 429 delays the bucket until then. */
  blockedUntil: number;
  /** The unknown bucket's probe is out until then (expires so a crashed replica cannot hold it forever). */
  probeUntil: number;
  /** Number of the current local window: counted up at each local reset. */
  window: number;
  /** Admitted requests not yet answered, of any window. */
  inflight: number;
  /** When the newest of them stops counting (a crashed replica never reports back). */
  inflightUntil: number;
}

export type Wait = Extract<AdmitResult, { ok: false }>;

export function emptyBucket(): BucketState {
  return {
    remaining: 0,
    resetAt: 0,
    fresh: false,
    blockedUntil: 0,
    probeUntil: 0,
    window: 0,
    inflight: 0,
    inflightUntil: 0,
  };
}

function inFlight(s: BucketState, now: number): number {
  return now < s.inflightUntil ? s.inflight : 0;
}

/** The window is over and a request would start a new one. */
export function windowOver(s: BucketState, now: number): boolean {
  if (!s.fresh) return now >= s.resetAt;
  // Everything of a new window is out and every answer came back without facts (errors): after a while, start
  // again rather than wait for an answer that will not come.
  return s.remaining <= 0 && inFlight(s, now) === 0 && now >= s.resetAt + STALLED_WINDOW_MS;
}

/** Why a request must wait for this bucket, or null when it may go now. Does not change the state. */
export function checkBucket(s: BucketState, now: number): Wait | null {
  if (s.blockedUntil > now) return { ok: false, reason: 'blocked', waitMs: s.blockedUntil - now };
  if (s.limit === undefined) {
    return s.probeUntil > now
      ? { ok: false, reason: 'probe', waitMs: Math.min(PROBE_POLL_MS, s.probeUntil - now) }
      : null;
  }
  const over = windowOver(s, now);
  if ((over ? s.limit - inFlight(s, now) : s.remaining) > 0) return null;
  if (!s.fresh && !over) return { ok: false, reason: 'bucket', waitMs: s.resetAt - now };
  // Waiting for answers: of the new window (to learn its end), or of the old one still in flight (each may land
  // in the next window). Their learn() wakes the queue; the poll is only a safety net.
  const stalledAt = s.fresh && inFlight(s, now) === 0 ? s.resetAt + STALLED_WINDOW_MS : s.inflightUntil;
  return { ok: false, reason: 'bucket', waitMs: Math.max(1, Math.min(PROBE_POLL_MS, stalledAt - now)) };
}

/**
 * Takes one slot after checkBucket allowed it. Returns whether this request is the unknown bucket's probe, and
 * the window it was counted in.
 */
export function takeBucket(
  s: BucketState,
  now: number,
  timeoutMs: number,
): { probe: boolean; window: number } {
  if (s.limit === undefined) {
    s.probeUntil = now + timeoutMs;
    return { probe: true, window: s.window };
  }
  if (windowOver(s, now)) {
    s.window += 1;
    s.fresh = true;
    s.resetAt = now;
    s.remaining = s.limit - inFlight(s, now);
  }
  s.remaining -= 1;
  s.inflight = inFlight(s, now) + 1;
  s.inflightUntil = now + timeoutMs;
  return { probe: false, window: s.window };
}

/**
 * Ends one admission of this bucket that was counted in flight (not a probe). One that never left (`unsent`: its
 * client went away, or a replica's lease ran out unspent) also gives its place back while the bucket is still in
 * the window it was counted in: Discord never saw it.
 */
export function endInFlight(s: BucketState, unsent = false, window?: number): void {
  if (s.inflight > 0) s.inflight -= 1;
  if (unsent && window === s.window && s.limit !== undefined)
    s.remaining = Math.min(s.limit, s.remaining + 1);
}

export interface BucketFacts {
  readonly limit?: number | undefined;
  readonly remaining?: number | undefined;
  readonly resetAfterMs?: number | undefined;
  readonly blockMs?: number | undefined;
}

/**
 * Applies one response's headers. `window` is the local window the request was admitted in, or undefined when
 * the answer describes another bucket than the one that admitted it (a probe, a changed hash). Never raises
 * `remaining` above what we counted ourselves, and never moves a known window's end earlier.
 */
export function learnBucket(
  s: BucketState,
  facts: BucketFacts,
  now: number,
  marginMs: number,
  window: number | undefined,
): void {
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
  if (window === s.window && s.fresh) {
    // The first answer of this window: it ends when this answer says, even "in 0" (a window already over).
    s.resetAt = reset;
    s.fresh = false;
    s.remaining = Math.min(s.remaining, remaining);
  } else if (window === s.window || window === undefined) {
    s.remaining = Math.min(s.remaining, remaining);
    // A request that reached Discord after the window we know ended started another one: wait for its end too.
    if (!s.fresh) s.resetAt = Math.max(s.resetAt, reset);
  }
  // Otherwise the answer belongs to an earlier window: it says nothing about the current one.
}
