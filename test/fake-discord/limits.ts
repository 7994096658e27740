// Counters of the fake. Every time is a performance.now() value in milliseconds: monotonic, so wall-clock
// jumps on the test machine cannot open or close windows.

export interface Window {
  count: number;
  resetAt: number;
}

/**
 * Fixed windows anchored at the first request after a reset, so the first response of a period shows
 * Reset-After equal to the whole window, as observed on real traffic (docs/discord-ratelimits.md §1.3).
 */
export class Windows {
  private readonly map = new Map<string, Window>();

  /** The window as the next request would find it, without creating or changing it. */
  view(key: string, now: number, windowMs: number): Window {
    const w = this.map.get(key);
    return w && w.resetAt > now ? w : { count: 0, resetAt: now + windowMs };
  }

  consume(key: string, now: number, windowMs: number): Window {
    let w = this.map.get(key);
    if (!w) {
      w = { count: 0, resetAt: now + windowMs };
      this.map.set(key, w);
    } else if (w.resetAt <= now) {
      w.count = 0;
      w.resetAt = now + windowMs;
    }
    w.count++;
    return w;
  }

  /** Drops expired windows so a long benchmark over many channels does not grow without bound. */
  sweep(now: number): void {
    for (const [key, w] of this.map) if (w.resetAt <= now) this.map.delete(key);
  }

  clear(): void {
    this.map.clear();
  }

  get size(): number {
    return this.map.size;
  }
}

export interface GlobalLimiter {
  /** 0 when a request may pass now, else the time at which it could. */
  blockedUntil(now: number): number;
  take(now: number): void;
}

/** Strict sliding 1 s window: never more than `limit` accepted requests in any 1000 ms span. */
export class SlidingLimiter implements GlobalLimiter {
  private readonly ring: Float64Array;
  private head = 0;
  private size = 0;

  constructor(
    private readonly limit: number,
    private readonly periodMs = 1000,
  ) {
    this.ring = new Float64Array(Math.max(1, limit));
  }

  blockedUntil(now: number): number {
    if (this.size < this.limit) return 0;
    const oldest = this.ring[this.head]!;
    return now - oldest < this.periodMs ? oldest + this.periodMs : 0;
  }

  take(now: number): void {
    if (this.size < this.ring.length) {
      this.ring[(this.head + this.size) % this.ring.length] = now;
      this.size++;
    } else {
      this.ring[this.head] = now;
      this.head = (this.head + 1) % this.ring.length;
    }
  }
}

/** GCRA with burst = rate: `limit` at once, then one every 1000/limit ms (docs/discord-ratelimits.md §3). */
export class GcraLimiter implements GlobalLimiter {
  private tat = 0;
  private readonly interval: number;

  constructor(
    limit: number,
    private readonly periodMs = 1000,
  ) {
    this.interval = periodMs / Math.max(1, limit);
  }

  blockedUntil(now: number): number {
    const next = Math.max(this.tat, now) + this.interval;
    return next - now > this.periodMs ? next - this.periodMs : 0;
  }

  take(now: number): void {
    this.tat = Math.max(this.tat, now) + this.interval;
  }
}

/**
 * Sliding count of one IP's invalid requests (docs/discord-ratelimits.md §4). A ring of the last `threshold`
 * timestamps answers "were there threshold of them within windowMs" in O(1) and fixed memory.
 */
export class InvalidTracker {
  private ring: Float64Array | null = null;
  private head = 0;
  private size = 0;
  bannedUntil = 0;

  constructor(
    private readonly threshold: number,
    private readonly windowMs: number,
  ) {}

  /** Returns true when this invalid request reaches the threshold. */
  add(now: number): boolean {
    const cap = Math.max(1, this.threshold);
    this.ring ??= new Float64Array(cap);
    if (this.size < cap) {
      this.ring[(this.head + this.size) % cap] = now;
      this.size++;
    } else {
      this.ring[this.head] = now;
      this.head = (this.head + 1) % cap;
    }
    if (this.size < cap || now - this.ring[this.head]! >= this.windowMs) return false;
    this.size = 0;
    this.head = 0;
    return true;
  }
}

/** Running maximum of arrivals within any `spanMs` window; arrivals come in time order. */
export class BusiestWindow {
  private buf = new Float64Array(64);
  private head = 0;
  private size = 0;
  max = 0;

  constructor(private readonly spanMs = 1000) {}

  add(t: number): void {
    // Half-open windows [t, t + span): two arrivals exactly span apart are never counted together.
    while (this.size > 0 && this.buf[this.head]! <= t - this.spanMs) {
      this.head = (this.head + 1) % this.buf.length;
      this.size--;
    }
    if (this.size === this.buf.length) this.grow();
    this.buf[(this.head + this.size) % this.buf.length] = t;
    this.size++;
    if (this.size > this.max) this.max = this.size;
  }

  private grow(): void {
    const next = new Float64Array(this.buf.length * 2);
    for (let i = 0; i < this.size; i++) next[i] = this.buf[(this.head + i) % this.buf.length]!;
    this.buf = next;
    this.head = 0;
  }
}

/** The same maximum over any time-ordered list, for ad-hoc filters on recorded requests. */
export function maxInWindow(times: readonly number[], spanMs: number): number {
  let best = 0;
  let lo = 0;
  for (let hi = 0; hi < times.length; hi++) {
    while (times[lo]! <= times[hi]! - spanMs) lo++;
    best = Math.max(best, hi - lo + 1);
  }
  return best;
}
