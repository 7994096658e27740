/**
 * Leases: admissions a replica took from Redis ahead of demand, spent here without a round trip.
 *
 * A hot queue (one identity, route, major parameter and sublimit tag asking many times a second) would otherwise
 * cost every request a wait for Redis before it may leave. Instead, when such a queue asks Redis anyway, it asks
 * for as many admissions more as it used in the last lease period (`want`), and the admit script grants them only
 * while nothing holds the identity back and they leave at least half of the bucket and of the global window to
 * everyone else (lua/admit.lua). Each one is an ordinary admission, counted in flight in Redis from the moment it
 * was granted, so every guarantee of the in-flight accounting holds whenever it is spent: a bucket's next window is
 * handed out less the admissions still out, a global slot counts until its answer. What a lease gives up is only
 * freshness: a pause, mark or sublimit another replica learns meanwhile reaches a leased admission at most
 * `leaseMs` late. This replica's own such lessons drop the identity's leases at once (`drop`).
 *
 * An admission unspent after `leaseMs` is given back (learn with `unsent`), which frees its global slot and, while
 * its bucket is still in the same window, its place in the bucket.
 */
import type { Clock, Timer } from './clock.js';
import type { AdmitInput, AdmitResult } from './types.js';

export type Admission = Extract<AdmitResult, { ok: true }>;

export const LEASE_OUTCOMES = ['granted', 'spent', 'returned'] as const;
export type LeaseOutcome = (typeof LEASE_OUTCOMES)[number];

/** Most admissions one queue asks for ahead of demand in one call (and so holds unspent at once). */
export const LEASE_MAX = 64;

interface Lease {
  readonly identity: string;
  readonly input: AdmitInput;
  /** Unspent admissions, valid until `until`. */
  spare: Admission[];
  until: number;
  /**
   * Admits of this queue (from the lease or from Redis) in the lease period numbered `period` (now / leaseMs) and
   * in the one before: the demand the next ask sizes for.
   */
  period: number;
  asked: number;
  askedBefore: number;
  /** A call asking for more is out: others of the queue go to Redis without asking for more. */
  fetching: boolean;
}

export class Leases {
  private readonly leases = new Map<string, Lease>();
  private timer: Timer | undefined;

  constructor(
    private readonly clock: Clock,
    /** How long an admission taken ahead of demand may be spent. */
    private readonly leaseMs: number,
    /** Ends an admission that was never spent (learn with `unsent`). */
    private readonly giveBack: (input: AdmitInput, admission: Admission) => void,
    /** Counts admissions granted ahead of demand, spent from a lease and given back unspent (metrics). */
    private readonly count?: (outcome: LeaseOutcome, n: number) => void,
  ) {}

  /** An unspent admission for this request, if its queue holds one. */
  take(input: AdmitInput): Admission | undefined {
    const key = leaseKey(input);
    let lease = this.leases.get(key);
    const now = this.clock.now();
    const period = Math.floor(now / this.leaseMs);
    if (!lease) {
      lease = {
        identity: input.identity,
        input,
        spare: [],
        until: 0,
        period,
        asked: 0,
        askedBefore: 0,
        fetching: false,
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
    if (lease.spare.length === 0) return undefined;
    if (lease.until > now) {
      this.count?.('spent', 1);
      return lease.spare.pop();
    }
    this.expire(lease);
    return undefined;
  }

  /**
   * How many admissions more to ask for along with this request, which goes to Redis: as many as its queue asked
   * for besides this one in this lease period and the one before (about one period's demand), less what it still
   * holds, at most LEASE_MAX; none while another ask of the queue is out, so a queue asked once never leases.
   * Call once per request sent, then `granted` (or `failed`) with the answer.
   */
  want(input: AdmitInput): number {
    const lease = this.leases.get(leaseKey(input));
    if (!lease || lease.fetching) return 0;
    const demand = lease.asked + lease.askedBefore - 1;
    const want = Math.min(LEASE_MAX, demand) - lease.spare.length;
    if (want <= 0) return 0;
    lease.fetching = true;
    return want;
  }

  /**
   * The admissions granted beyond the request's own, for an ask sent at `sentAt` (this clock): they count in
   * Redis from before then, so they are spent until `sentAt + leaseMs` at the latest.
   */
  granted(input: AdmitInput, extra: readonly Admission[], sentAt: number): void {
    const lease = this.leases.get(leaseKey(input));
    if (!lease) {
      this.count?.('granted', extra.length);
      this.count?.('returned', extra.length);
      for (const admission of extra) this.giveBack(input, admission);
      return;
    }
    lease.fetching = false;
    if (extra.length === 0) return;
    this.count?.('granted', extra.length);
    this.expire(lease);
    lease.spare.push(...extra);
    lease.until = sentAt + this.leaseMs;
    this.arm();
  }

  /** The ask that wanted more failed: the next one may ask again. */
  failed(input: AdmitInput): void {
    const lease = this.leases.get(leaseKey(input));
    if (lease) lease.fetching = false;
  }

  /** This replica learned something that holds the identity back (a pause, a mark, a 429): its leases end now. */
  drop(identity: string): void {
    for (const lease of this.leases.values()) if (lease.identity === identity) this.expire(lease);
  }

  /** Gives back every unspent admission (at shutdown). */
  close(): void {
    for (const lease of this.leases.values()) this.expire(lease);
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

  private expire(lease: Lease): void {
    const spare = lease.spare;
    if (spare.length === 0) return;
    lease.spare = [];
    this.count?.('returned', spare.length);
    for (const admission of spare) this.giveBack(lease.input, admission);
  }

  /**
   * One timer for every queue, every `leaseMs` while any is known: gives back what ran out unspent and forgets
   * queues idle for a whole period, so that a hundred thousand channels asked once each do not stay in memory.
   */
  private arm(): void {
    if (this.timer) return;
    this.timer = this.clock.setTimeout(() => this.sweep(), this.leaseMs);
    this.timer.unref();
  }

  private sweep(): void {
    this.timer = undefined;
    const now = this.clock.now();
    for (const [key, lease] of this.leases) {
      if (lease.until <= now) this.expire(lease);
      // Nothing asked in this period or the one before: idle.
      if (lease.spare.length === 0 && !lease.fetching && lease.period < Math.floor(now / this.leaseMs) - 1)
        this.leases.delete(key);
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
