/**
 * Leases: admissions a replica took from Redis ahead of demand, spent here without a round trip.
 *
 * A hot queue (one identity, route, major parameter and sublimit tag asking many times a second) would otherwise
 * cost every request a wait for Redis before it may leave. Instead, when such a queue asks Redis, it asks for about
 * as many admissions more as it will ask for within one lease period (`want`), and the admit script grants them only
 * while nothing holds the identity back and they leave at least half of the bucket and of the global window to
 * everyone else (lua/admit.lua). Once half of a grant is spent, the queue asks for the next one in the background
 * (`refill`), so a steady hot queue never waits for Redis at all.
 *
 * Each leased admission is an ordinary admission, counted in flight in Redis from the moment it was granted, so
 * every guarantee of the in-flight accounting holds whenever it is spent: a bucket's next window is handed out less
 * the admissions still out, a global slot counts until its answer. What a lease gives up is freshness: a pause,
 * mark or sublimit another replica learns meanwhile reaches a leased admission at most `leaseMs` late. This
 * replica's own such lessons drop the identity's leases at once (`drop`), and grants of asks sent before the drop
 * go straight back.
 *
 * An admission unspent `leaseMs` after its ask was sent is given back (learn with `unsent`), which frees its global
 * slot and, while its bucket is still in the same window, its place in the bucket.
 */
import type { Clock, Timer } from './clock.js';
import type { Admission, AdmitInput } from './types.js';

export const LEASE_OUTCOMES = ['granted', 'spent', 'returned'] as const;
export type LeaseOutcome = (typeof LEASE_OUTCOMES)[number];

/** Most admissions one queue asks for ahead of demand in one call. */
export const LEASE_MAX = 64;

interface Spare {
  readonly admission: Admission;
  /** Spent before this (the leases' clock), or given back. */
  readonly until: number;
}

interface Lease {
  readonly identity: string;
  readonly input: AdmitInput;
  /** Unspent admissions, oldest (soonest to expire) first. */
  spare: Spare[];
  /** Half of the last grant: when the spare falls to this, the next grant is asked for in the background. */
  low: number;
  /**
   * Admits of this queue (from the lease or from Redis) in the lease period numbered `period` (now / leaseMs) and
   * in the one before: the demand the next ask sizes for.
   */
  period: number;
  asked: number;
  askedBefore: number;
  /** An ask for more is out: others of the queue ask for nothing more meanwhile. */
  fetching: boolean;
  /** When this replica last dropped the identity's leases: grants of asks sent before then go back. */
  droppedAt: number;
}

export class Leases {
  private readonly leases = new Map<string, Lease>();
  private timer: Timer | undefined;

  constructor(
    private readonly clock: Clock,
    /** How long an admission taken ahead of demand may be spent, from when its ask was sent. */
    private readonly leaseMs: number,
    /** Ends an admission that was never spent (learn with `unsent`). */
    private readonly giveBack: (input: AdmitInput, admission: Admission) => void,
    /** Asks Redis for the queue's next grant in the background: an admit of `input` that comes back through `refilled`. */
    private readonly refill: (input: AdmitInput) => void,
    /** Counts admissions granted ahead of demand, spent from a lease and given back unspent (metrics). */
    private readonly count?: (outcome: LeaseOutcome, n: number) => void,
  ) {}

  /** An unspent admission for this request, if its queue holds one. */
  take(input: AdmitInput): Admission | undefined {
    const key = leaseKey(input);
    const now = this.clock.now();
    const period = Math.floor(now / this.leaseMs);
    let lease = this.leases.get(key);
    if (!lease) {
      lease = {
        identity: input.identity,
        input,
        spare: [],
        low: 0,
        period,
        asked: 0,
        askedBefore: 0,
        fetching: false,
        droppedAt: Number.NEGATIVE_INFINITY,
      };
      this.leases.set(key, lease);
      this.arm();
    }
    if (lease.period !== period) {
      lease.askedBefore = lease.period === period - 1 ? lease.asked : 0;
      lease.asked = 0;
      lease.period = period;
    }
    lease.asked += 1;
    this.expire(lease, now);
    const spare = lease.spare.shift();
    if (!spare) return undefined;
    this.count?.('spent', 1);
    if (!lease.fetching && lease.spare.length <= lease.low) {
      lease.fetching = true;
      this.refill(lease.input);
    }
    return spare.admission;
  }

  /**
   * How many admissions more to ask for along with this request, which goes to Redis: about as many as its queue
   * will ask for within one lease lifetime besides this one (half of what it asked for in this lease period and the
   * one before), less what it still holds, at most LEASE_MAX; none while another ask of the queue is out. A queue
   * asked less than twice a period never leases: an admission granted to it would most likely run out unspent,
   * and giving it back costs a learn call and keeps its place in the bucket from everyone else meanwhile.
   * Call once per request sent, then `granted` (or `failed`) with the answer.
   */
  want(input: AdmitInput, refill = false): number {
    const lease = this.leases.get(leaseKey(input));
    if (!lease || (lease.fetching && !refill)) return 0;
    const demand = Math.floor((lease.asked + lease.askedBefore - (refill ? 0 : 1)) / 2);
    const want = Math.min(LEASE_MAX, demand) - lease.spare.length;
    lease.fetching = want > 0;
    return Math.max(0, want);
  }

  /**
   * What an ask sent at `sentAt` (this clock) brought for the queue's lease: the admissions granted beyond the
   * request's own (or, for a refill, all of them). They count in Redis from before then, so they are spent until
   * `sentAt + leaseMs` at the latest.
   */
  granted(input: AdmitInput, admissions: readonly Admission[], sentAt: number): void {
    const lease = this.leases.get(leaseKey(input));
    if (lease) lease.fetching = false;
    if (admissions.length === 0) return;
    this.count?.('granted', admissions.length);
    if (!lease || sentAt <= lease.droppedAt) {
      this.count?.('returned', admissions.length);
      for (const admission of admissions) this.giveBack(input, admission);
      return;
    }
    const until = sentAt + this.leaseMs;
    for (const admission of admissions) lease.spare.push({ admission, until });
    lease.low = Math.floor(admissions.length / 2);
    this.arm();
  }

  /** The ask that wanted more failed: the next one may ask again. */
  failed(input: AdmitInput): void {
    const lease = this.leases.get(leaseKey(input));
    if (lease) lease.fetching = false;
  }

  /** This replica learned something that holds the identity back (a pause, a mark, a 429): its leases end now. */
  drop(identity: string): void {
    const now = this.clock.now();
    for (const lease of this.leases.values()) {
      if (lease.identity !== identity) continue;
      lease.droppedAt = now;
      this.expire(lease, Number.POSITIVE_INFINITY);
    }
  }

  /** Gives back every unspent admission (at shutdown). */
  close(): void {
    for (const lease of this.leases.values()) this.expire(lease, Number.POSITIVE_INFINITY);
    this.leases.clear();
    if (this.timer) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Unspent admissions held now, all queues together (tests, inspection). */
  get held(): number {
    let n = 0;
    for (const lease of this.leases.values()) n += lease.spare.length;
    return n;
  }

  /** Gives back the admissions no longer valid at `now` (all of them at +∞). */
  private expire(lease: Lease, now: number): void {
    const spare = lease.spare;
    let over = 0;
    while (over < spare.length && spare[over]!.until <= now) over += 1;
    if (over === 0) return;
    const ended = spare.splice(0, over);
    this.count?.('returned', ended.length);
    for (const { admission } of ended) this.giveBack(lease.input, admission);
  }

  /**
   * One timer for every queue, every `leaseMs` while any is known: gives back what ran out unspent and forgets
   * queues idle for two periods, so that a hundred thousand channels asked once each do not stay in memory.
   */
  private arm(): void {
    if (this.timer) return;
    this.timer = this.clock.setTimeout(() => this.sweep(), this.leaseMs);
    this.timer.unref();
  }

  private sweep(): void {
    this.timer = undefined;
    const now = this.clock.now();
    const period = Math.floor(now / this.leaseMs);
    for (const [key, lease] of this.leases) {
      this.expire(lease, now);
      if (lease.spare.length === 0 && !lease.fetching && lease.period < period - 1) this.leases.delete(key);
    }
    if (this.leases.size > 0) this.arm();
  }
}

/**
 * Admissions are interchangeable within one identity, route, major parameter, sublimit tag and global limit. The
 * exact target (the ids past the major parameter) is left out: the script leases nothing while the identity has
 * any known-bad mark, and this replica's own marks drop its leases.
 */
export function leaseKey(input: AdmitInput): string {
  return `${input.identity}|${input.routeKey}|${input.major}|${input.sublimit}|${input.globalLimit}`;
}
