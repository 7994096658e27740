/**
 * Leases: admissions a replica took from Redis ahead of demand, spent here without a round trip.
 *
 * An admission has two parts, and they are leased apart because they are scarce in different ways:
 * - a *global slot* in the identity's window (every request of the token but exempt traffic needs one). A busy
 *   token asks for slots many times a period over all its queues, so its slots are leased per identity and for
 *   a short while (`leaseMs`): a slot held and not spent keeps the whole token from using it.
 * - a *bucket place* of one queue (identity, route, major parameter, sublimit tag). A queue of a roomy bucket
 *   asked a few times a second would never lease a whole admission, so its places last longer (`placeMs`): a
 *   place held and not spent costs only that bucket, and never more than half of its remaining (lua/admit.lua).
 *   A route Discord does not bucket needs no place; its queue still leases "places" (without a bucket, free, for
 *   `leaseMs`), which is how this replica goes on knowing the route is unbucketed and the queue is not held back.
 * A request is admitted here when its queue holds a place and, unless exempt, its identity holds a slot: exactly
 * the admission Redis would give it, counted there from the moment the parts were granted.
 *
 * When a request goes to Redis, it asks for about as many places more as its queue will ask for within a place
 * lease, and as many slots more as its identity will ask for within a slot lease (`want`); the admit script grants
 * them only while nothing holds the identity back and they leave at least half of the bucket and of the global
 * window to everyone else. Once half of a grant is spent, the next one is asked for in the background (`refill`),
 * so a steady queue never waits for Redis at all.
 *
 * Every leased part counts in Redis from the moment it was granted (in flight in the bucket, a slot in the
 * window), so every guarantee of the in-flight accounting holds whenever it is spent: a bucket's next window is
 * handed out less the places still out, a global slot counts until its answer. What a lease gives up is
 * freshness: a pause, mark or sublimit another replica learns reaches a leased admission at most `leaseMs` late
 * (every admission here of a non-exempt request needs a slot of at most that age, and no slot is granted while the
 * identity has a mark or sublimit); a shared-scope block of one bucket reaches its leased places at most `placeMs`
 * late. Exempt traffic's places last `leaseMs`. This replica's own such lessons drop the identity's leases at once
 * (`drop`), and grants of asks sent before the drop go straight back.
 *
 * A part unspent when its lease ends is given back (learn with `unsent`), which frees its global slot or, while
 * its bucket is still in the same window, its place in the bucket.
 */
import type { Clock, Timer } from './clock.js';
import type { Admission, AdmitInput } from './types.js';

export const LEASE_OUTCOMES = ['granted', 'spent', 'returned'] as const;
export type LeaseOutcome = (typeof LEASE_OUTCOMES)[number];

/**
 * Most places (or slots) one request asks for ahead of demand. A grant lasts until half of it is spent and the next
 * is asked for; a token sending 2,000 requests a second spends 64 slots in 32 ms, less than an admit round trip
 * takes under that load, so the pool ran dry between grants (an ad-hoc run at 256 in flight against a 60 ms
 * upstream, read from the leased-admissions metric: 71% of requests served here with 64, 94% with 256). The
 * half-of-the-window rule bounds it first for any ordinary global limit.
 */
export const LEASE_MAX = 256;

/** How many places and slots more an admit asks for (lua/admit.lua grants at most these). */
export interface Want {
  readonly places: number;
  readonly slots: number;
}

/** What an admit call granted ahead of demand. */
export interface Grant {
  /** Places in the admitted request's bucket (for an unbucketed route: how many it may go on without asking). */
  readonly places: number;
  /** Global slot ids. */
  readonly slots: readonly string[];
}

interface Part<T> {
  readonly value: T;
  /** Spent before this (the leases' clock), or given back. */
  readonly until: number;
}

/** One pool of leased parts, with the demand that sizes its next ask. */
interface Pool<T> {
  readonly identity: string;
  readonly input: AdmitInput;
  /** How long a part lasts from its ask, and the period the demand is counted in. */
  readonly periodMs: number;
  /** Unspent parts, oldest (soonest to expire) first. */
  spare: Part<T>[];
  /** Half of the last grant: when the spare falls to this, the next grant is asked for in the background. */
  low: number;
  /** Asks of this pool in the period numbered `period` (now / periodMs) and in the one before. */
  period: number;
  asked: number;
  askedBefore: number;
  /** A refill is wanted and not asked for yet. */
  due: boolean;
  /** An ask for more is out: others ask for nothing more meanwhile. */
  fetching: boolean;
  /** When this replica last dropped the identity's leases: grants of asks sent before then go back. */
  droppedAt: number;
}

/** A bucket place: the bucket and window it was counted in (null for a route Discord does not bucket). */
interface Place {
  readonly bucket: string | null;
  readonly window: number;
}

export class Leases {
  /** Places, by queue (leaseKey). */
  private readonly places = new Map<string, Pool<Place>>();
  /** Global slots, by identity (slotKey). */
  private readonly slots = new Map<string, Pool<string>>();
  private timer: Timer | undefined;

  constructor(
    private readonly clock: Clock,
    /** How long a global slot (and a place without a global slot or bucket) may be spent from its ask. */
    private readonly leaseMs: number,
    /** How long a bucket place of a non-exempt request may be spent from its ask (at least leaseMs). */
    private readonly placeMs: number,
    /** Ends a part never spent (learn with `unsent`): a place (slot '') or a slot (bucket null). */
    private readonly giveBack: (input: AdmitInput, part: Admission) => void,
    /** Asks Redis for more in the background: an admit of `input` whose answer comes back through `granted`. */
    private readonly refill: (input: AdmitInput) => void,
    /** Counts parts granted ahead of demand, admissions spent here, and parts given back unspent (metrics). */
    private readonly count?: (outcome: LeaseOutcome, n: number) => void,
  ) {}

  /** An admission for this request from its queue's places and its identity's slots, if both hold one. */
  take(input: AdmitInput): Admission | undefined {
    const now = this.clock.now();
    const queue = this.pool(this.places, leaseKey(input), input, this.placePeriod(input), now);
    const global = input.globalLimit > 0;
    const slots = global ? this.pool(this.slots, slotKey(input), input, this.leaseMs, now) : undefined;
    if (queue.spare.length === 0 || (slots && slots.spare.length === 0)) return undefined;
    const place = queue.spare.shift()!.value;
    const slot = slots ? slots.spare.shift()!.value : '';
    this.count?.('spent', 1);
    if (this.low(queue) || (slots && this.low(slots))) this.refill(queue.input);
    return { ok: true, bucket: place.bucket, probe: false, window: place.window, slot };
  }

  /**
   * How many places and slots more to ask for along with this request, which goes to Redis: about as many as its
   * queue (its identity) will ask for within one lease besides this one (half of what it asked for in this period
   * and the one before), less what it still holds, at most LEASE_MAX; none while another ask is out. Slots round
   * down, so an identity asked less than twice a period leases none: a slot would most likely run out unspent,
   * keeping the identity's whole window from everyone meanwhile and costing a learn call to give back. Places round
   * up, so a queue asked twice in two periods leases one: an unspent place strands at most half of one roomy
   * bucket. Call once per request sent after `take` missed (or for a refill), then `granted` (or `failed`) with
   * the answer.
   */
  want(input: AdmitInput, refill = false): Want {
    const queue = this.places.get(leaseKey(input));
    const slots = input.globalLimit > 0 ? this.slots.get(slotKey(input)) : undefined;
    const wantSlots = slots ? this.wanted(slots, refill, Math.floor) : 0;
    // A place is spent only with a slot: while the identity leases no slot, a leased place would sit here unspent
    // and keep its bucket's other callers waiting (and, past the window's end, cost the next window a place).
    const useless = slots !== undefined && wantSlots === 0 && slots.spare.length === 0 && !slots.fetching;
    return {
      places: queue && !useless ? this.wanted(queue, refill, Math.ceil) : 0,
      slots: wantSlots,
    };
  }

  /**
   * What an ask sent at `sentAt` (this clock) brought: the parts granted beyond the request's own, and for a
   * refill (nobody waits for it) its own admission's parts too. They count in Redis from before then, so they are
   * spent until `sentAt` plus their lease at the latest.
   */
  granted(input: AdmitInput, admission: Admission, grant: Grant, sentAt: number, refill = false): void {
    const queue = this.places.get(leaseKey(input));
    const slots = input.globalLimit > 0 ? this.slots.get(slotKey(input)) : undefined;
    if (queue) queue.fetching = false;
    if (slots) slots.fetching = false;
    const place: Place = { bucket: admission.bucket, window: admission.window };
    const places = grant.places + (refill ? 1 : 0);
    const ids = refill && admission.slot !== '' ? [admission.slot, ...grant.slots] : grant.slots;
    const counted = (place.bucket === null ? 0 : places) + ids.length;
    if (counted > 0) this.count?.('granted', counted);
    if (places > 0) {
      if (!queue || sentAt <= queue.droppedAt) this.giveBackPlaces(input, place, places);
      else {
        const placeMs = place.bucket !== null && input.globalLimit > 0 ? this.placeMs : this.leaseMs;
        for (let i = 0; i < places; i++) queue.spare.push({ value: place, until: sentAt + placeMs });
        queue.low = Math.floor(places / 2);
      }
    }
    if (ids.length > 0) {
      if (!slots || sentAt <= slots.droppedAt) this.giveBackSlots(input, ids);
      else {
        for (const id of ids) slots.spare.push({ value: id, until: sentAt + this.leaseMs });
        slots.low = Math.floor(ids.length / 2);
      }
    }
    this.arm();
  }

  /** The ask that wanted more failed: the next one may ask again. */
  failed(input: AdmitInput): void {
    for (const pool of [this.places.get(leaseKey(input)), this.slots.get(slotKey(input))]) {
      if (!pool) continue;
      pool.fetching = false;
      pool.due = false;
    }
  }

  /** This replica learned something that holds the identity back (a pause, a mark, a 429): its leases end now. */
  drop(identity: string): void {
    const now = this.clock.now();
    const end = <T extends Place | string>(pool: Pool<T>) => {
      if (pool.identity !== identity) return;
      pool.droppedAt = now;
      this.expire(pool, Number.POSITIVE_INFINITY);
    };
    for (const pool of this.places.values()) end(pool);
    for (const pool of this.slots.values()) end(pool);
  }

  /** Gives back every unspent part (at shutdown). */
  close(): void {
    for (const pool of this.places.values()) this.expire(pool, Number.POSITIVE_INFINITY);
    for (const pool of this.slots.values()) this.expire(pool, Number.POSITIVE_INFINITY);
    this.places.clear();
    this.slots.clear();
    if (this.timer) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Unspent global slots and bucket places held now, all pools together (tests, inspection). */
  get held(): { slots: number; places: number } {
    let slots = 0;
    let places = 0;
    for (const pool of this.slots.values()) slots += pool.spare.length;
    for (const pool of this.places.values())
      for (const part of pool.spare) if (part.value.bucket !== null) places += 1;
    return { slots, places };
  }

  /** A queue's places last `placeMs` when they come with a global slot of their own, `leaseMs` otherwise. */
  private placePeriod(input: AdmitInput): number {
    return input.globalLimit > 0 ? this.placeMs : this.leaseMs;
  }

  /** The pool under `key`, made if new, with this ask counted and what ran out given back. */
  private pool<T extends Place | string>(
    pools: Map<string, Pool<T>>,
    key: string,
    input: AdmitInput,
    periodMs: number,
    now: number,
  ): Pool<T> {
    const period = Math.floor(now / periodMs);
    let pool = pools.get(key);
    if (!pool) {
      pool = {
        identity: input.identity,
        input,
        periodMs,
        spare: [],
        low: 0,
        period,
        asked: 0,
        askedBefore: 0,
        due: false,
        fetching: false,
        droppedAt: Number.NEGATIVE_INFINITY,
      };
      pools.set(key, pool);
      this.arm();
    }
    if (pool.period !== period) {
      pool.askedBefore = pool.period === period - 1 ? pool.asked : 0;
      pool.asked = 0;
      pool.period = period;
    }
    pool.asked += 1;
    this.expire(pool, now);
    return pool;
  }

  /** Whether the pool just fell to half of its last grant and should ask for more (once). */
  private low(pool: Pool<unknown>): boolean {
    if (pool.due || pool.fetching || pool.spare.length > pool.low) return false;
    pool.due = true;
    return true;
  }

  private wanted(pool: Pool<unknown>, refill: boolean, round: (n: number) => number): number {
    // A refill asks for the pools that wanted it (and any other of its pools with no ask out); a request sent
    // meanwhile leaves them to it.
    if (refill ? pool.fetching && !pool.due : pool.fetching || pool.due) return 0;
    pool.due = false;
    const demand = round((pool.asked + pool.askedBefore - (refill ? 0 : 1)) / 2);
    const want = Math.max(0, Math.min(LEASE_MAX, demand) - pool.spare.length);
    pool.fetching = want > 0;
    return want;
  }

  private giveBackPlaces(input: AdmitInput, place: Place, n: number): void {
    if (n === 0 || place.bucket === null) return;
    this.count?.('returned', n);
    const part: Admission = { ok: true, bucket: place.bucket, probe: false, window: place.window, slot: '' };
    for (let i = 0; i < n; i++) this.giveBack(input, part);
  }

  private giveBackSlots(input: AdmitInput, ids: readonly string[]): void {
    this.count?.('returned', ids.length);
    for (const slot of ids) this.giveBack(input, { ok: true, bucket: null, probe: false, window: 0, slot });
  }

  /** Gives back the parts no longer valid at `now` (all of them at +∞). */
  private expire<T extends Place | string>(pool: Pool<T>, now: number): void {
    const spare = pool.spare;
    let over = 0;
    while (over < spare.length && spare[over]!.until <= now) over += 1;
    if (over === 0) return;
    for (const { value } of spare.splice(0, over)) {
      if (typeof value === 'string') this.giveBackSlots(pool.input, [value]);
      else this.giveBackPlaces(pool.input, value as Place, 1);
    }
  }

  /**
   * One timer for every pool, every `leaseMs` while any is known: gives back what ran out unspent and forgets
   * pools idle for two periods, so that a hundred thousand channels asked once each do not stay in memory.
   */
  private arm(): void {
    if (this.timer) return;
    this.timer = this.clock.setTimeout(() => this.sweep(), this.leaseMs);
    this.timer.unref();
  }

  private sweep(): void {
    this.timer = undefined;
    const now = this.clock.now();
    this.sweepPools(this.places, now);
    this.sweepPools(this.slots, now);
    if (this.places.size > 0 || this.slots.size > 0) this.arm();
  }

  private sweepPools<T extends Place | string>(pools: Map<string, Pool<T>>, now: number): void {
    for (const [key, pool] of pools) {
      this.expire(pool, now);
      const idle = pool.period < Math.floor(now / pool.periodMs) - 1;
      if (pool.spare.length === 0 && !pool.fetching && idle) pools.delete(key);
    }
  }
}

/**
 * Places are interchangeable within one identity, route, major parameter, sublimit tag and global limit. The
 * exact target (the ids past the major parameter) is left out: the script leases nothing while the identity has
 * any known-bad mark, and this replica's own marks drop its leases.
 */
export function leaseKey(input: AdmitInput): string {
  return `${input.identity}|${input.routeKey}|${input.major}|${input.sublimit}|${input.globalLimit}`;
}

/**
 * Global slots are interchangeable within one identity: they are members of its one window in Redis, and an
 * identity's requests have one global limit (or none, and need no slot).
 */
function slotKey(input: AdmitInput): string {
  return input.identity;
}
