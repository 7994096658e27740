/**
 * In-process limiter state for a single replica. The decision rules live in bucket-rules.ts and are the same ones
 * the Redis scripts implement; this file only keeps the state in Maps and sweeps what has gone stale.
 */
import {
  type BucketState,
  checkBucket,
  emptyBucket,
  endInFlight,
  learnBucket,
  takeBucket,
} from './bucket-rules.js';
import { GlobalWindow } from './global-window.js';
import {
  type BucketRef,
  type BucketView,
  type IdentityView,
  type MarkView,
  markPlace,
  viewBucket,
} from './inspection.js';
import {
  type AdmitInput,
  type AdmitResult,
  GLOBAL_WINDOW_MS,
  INVALID_SLOT_MS,
  INVALID_WINDOW_MS,
  type LearnInput,
  type LimiterStore,
  MARK_REASON,
  MARK_SCOPES,
  type MarkAt,
  type MarkScope,
  PROBE_POLL_MS,
  type StoreOptions,
} from './types.js';

const UNBUCKETED = '';
/** A route limited without rate-limit headers: admitted like an unknown bucket, one probe at a time. */
const HEADERLESS = '!';
// Long enough that a bucket idle for this long has certainly reset; keeps memory flat with 100k channels.
const IDLE_EXPIRY_MS = 10 * 60_000;

export class MemoryStore implements LimiterStore {
  /** Route → bucket hash, with when the mapping may be forgotten. */
  private readonly hashes = new Map<string, { hash: string; until: number }>();
  private readonly buckets = new Map<string, BucketState>();
  private readonly globals = new Map<string, GlobalWindow>();
  private readonly pauses = new Map<string, number>();
  private readonly sublimits = new Map<string, number>();
  /** Known-bad marks: key (see markKey) → expiry, and the code of the answer that set it. */
  private readonly marks = new Map<string, { until: number; code: number }>();
  /** Identities seen succeeding → until when that counts. */
  private readonly vouches = new Map<string, number>();
  /** Invalid responses per INVALID_SLOT_MS slot, by slot number. */
  private readonly invalidSlots = new Map<number, number>();
  private cloudflareUntil = 0;
  private nextSlot = 0;
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly options: StoreOptions,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.sweeper = setInterval(() => this.sweep(), 60_000);
    this.sweeper.unref();
  }

  admit(input: AdmitInput): AdmitResult {
    return this.admitNow(input);
  }

  /** Synchronous core, also used by the Redis store's fallback when Redis is down. */
  admitNow(input: AdmitInput): AdmitResult {
    const now = this.now();
    if (this.cloudflareUntil > now)
      return { ok: false, reason: 'cloudflare', waitMs: this.cloudflareUntil - now };
    if (this.marks.size > 0) {
      for (const scope of MARK_SCOPES) {
        const mark = this.marks.get(markKey(input, scope));
        if (mark !== undefined && mark.until > now)
          return { ok: false, reason: MARK_REASON[scope], waitMs: mark.until - now, code: mark.code };
      }
    }
    if (input.globalLimit > 0) {
      const pausedUntil = this.pauses.get(input.identity);
      if (pausedUntil !== undefined && pausedUntil > now)
        return { ok: false, reason: 'paused', waitMs: pausedUntil - now };
    }
    const subUntil = this.sublimits.get(sublimitKey(input, input.sublimit));
    if (subUntil !== undefined && subUntil > now)
      return { ok: false, reason: 'sublimit', waitMs: subUntil - now };

    const mapped = this.hashes.get(`${input.identity}|${input.routeKey}`)?.hash;
    const hash = mapped === HEADERLESS ? undefined : mapped;
    const bucket =
      hash === UNBUCKETED ? null : `${input.identity}|${hash ?? `unk:${input.routeKey}`}|${input.major}`;
    let state: BucketState | undefined;
    if (bucket !== null) {
      state = this.buckets.get(bucket) ?? emptyBucket();
      const wait = checkBucket(state, now) ?? this.probeBeforeHash(input, hash, state, now);
      if (wait) return wait;
    }
    let slot = '';
    if (input.globalLimit > 0) {
      const global = this.globalFor(input.identity);
      const wait = global.wait(input.globalLimit, now, this.windowMs());
      if (wait > 0) return { ok: false, reason: 'global', waitMs: wait };
      slot = String(++this.nextSlot);
      global.take(slot, now + this.options.probeTimeoutMs + this.windowMs());
      global.touched = now;
    }
    // Commit the bucket only now: a request turned away by the global window must not use a bucket slot.
    let taken = { probe: false, window: 0 };
    if (bucket !== null && state) {
      taken = takeBucket(state, now, this.options.probeTimeoutMs);
      this.buckets.set(bucket, state);
    }
    return { ok: true, bucket, probe: taken.probe, window: taken.window, slot };
  }

  /**
   * A bucket whose hash is known (another major parameter taught it) but that has no state here yet would send
   * a probe; if this major parameter's probe from before the hash was known is still out, that one answers
   * first, or two requests would find out the same limits at once.
   */
  private probeBeforeHash(input: AdmitInput, hash: string | undefined, state: BucketState, now: number) {
    if (hash === undefined || state.limit !== undefined) return null;
    const early = this.buckets.get(`${input.identity}|unk:${input.routeKey}|${input.major}`);
    if (!early || early.probeUntil <= now) return null;
    return { ok: false, reason: 'probe', waitMs: Math.min(PROBE_POLL_MS, early.probeUntil - now) } as const;
  }

  async learn(input: LearnInput): Promise<void> {
    this.learnNow(input);
  }

  /** Synchronous core, also used by the Redis store's fallback, which learns every answer to stay warm. */
  learnNow(input: LearnInput): void {
    const now = this.now();
    this.endGlobalSlot(input, now);
    const routeHashKey = `${input.identity}|${input.routeKey}`;
    // A mapping lives at least as long as the block it leads to: forgotten earlier, the next request would
    // probe as an unknown bucket, skip the block and draw a 429.
    const mappedUntil = now + IDLE_EXPIRY_MS + (input.blockMs ?? 0);
    if (input.hash) this.hashes.set(routeHashKey, { hash: input.hash, until: mappedUntil });
    else if (input.limitedWithoutHeaders)
      this.hashes.set(routeHashKey, { hash: HEADERLESS, until: mappedUntil });
    else if (input.unbucketed && this.hashes.get(routeHashKey)?.hash !== HEADERLESS)
      this.hashes.set(routeHashKey, { hash: UNBUCKETED, until: mappedUntil });

    const admitted = input.bucket === null ? undefined : this.buckets.get(input.bucket);
    if (admitted && input.probe && admitted.limit === undefined) {
      // A probe that found no limits leaves nothing to keep; one that did is converted in place below.
      admitted.probeUntil = 0;
      if (!input.hash || input.bucket !== `${input.identity}|${input.hash}|${input.major}`) {
        this.buckets.delete(input.bucket!);
      }
    } else if (admitted && !input.probe) endInFlight(admitted, input.unsent, input.window);
    if (input.sublimitDelay) {
      const key = sublimitKey(input, input.sublimitDelay.tag);
      this.sublimits.set(key, Math.max(this.sublimits.get(key) ?? 0, now + input.sublimitDelay.ms));
    }
    const target = input.hash ? `${input.identity}|${input.hash}|${input.major}` : input.bucket;
    if (target === null) return;
    const state = this.buckets.get(target);
    if (!state && !input.hash) return;
    const next = state ?? emptyBucket();
    const sameBucket = target === input.bucket && !input.probe;
    learnBucket(next, input, now, this.options.resetMarginMs, sameBucket ? (input.window ?? 0) : undefined);
    this.buckets.set(target, next);
  }

  /** The request's global slot counts a full window past its answer; one that never left counts no more. */
  private endGlobalSlot(input: LearnInput, now: number): void {
    if (!input.slot) return;
    this.globals
      .get(input.identity)
      ?.end(input.slot, input.unsent ? undefined : now - (input.serviceMs ?? 0) + this.windowMs());
  }

  private windowMs(): number {
    return GLOBAL_WINDOW_MS + this.options.globalWindowMarginMs;
  }

  async pauseIdentity(identity: string, ms: number): Promise<void> {
    const until = this.now() + ms;
    this.pauses.set(identity, Math.max(this.pauses.get(identity) ?? 0, until));
  }

  async pauseAll(ms: number): Promise<number> {
    const now = this.now();
    this.cloudflareUntil = Math.max(this.cloudflareUntil, now + ms);
    return this.cloudflareUntil - now;
  }

  async cloudflarePause(): Promise<number> {
    return Math.max(0, this.cloudflareUntil - this.now());
  }

  async mark(at: MarkAt, scope: MarkScope, ms: number, code: number): Promise<void> {
    const key = markKey(at, scope);
    this.marks.set(key, { until: Math.max(this.marks.get(key)?.until ?? 0, this.now() + ms), code });
  }

  async countInvalid(count: number): Promise<number> {
    // Slots follow the wall clock so that every replica of a fleet (and Redis) cuts the same slots.
    const slot = Math.floor(Date.now() / INVALID_SLOT_MS);
    const oldest = slot - INVALID_WINDOW_MS / INVALID_SLOT_MS + 1;
    if (count > 0) this.invalidSlots.set(slot, (this.invalidSlots.get(slot) ?? 0) + count);
    let total = 0;
    for (const [key, n] of this.invalidSlots) {
      if (key < oldest) this.invalidSlots.delete(key);
      else total += n;
    }
    return total;
  }

  /** Admissions of the identity that still count in its global window here. */
  globalInUse(identity: string): number {
    return this.globals.get(identity)?.count(this.now()) ?? 0;
  }

  /** How long until fewer than `limit` admissions of the identity count here, ms. */
  globalWait(identity: string, limit: number): number {
    return this.globals.get(identity)?.wait(limit, this.now(), this.windowMs()) ?? 0;
  }

  async vouch(identity: string): Promise<void> {
    this.vouches.set(identity, this.now() + INVALID_WINDOW_MS);
  }

  async vouched(identity: string): Promise<boolean> {
    return (this.vouches.get(identity) ?? 0) > this.now();
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
  }

  /** Number of tracked buckets, for tests of the sweeper. */
  get size(): number {
    return this.buckets.size;
  }

  sweep(): void {
    const now = this.now();
    const cutoff = now - IDLE_EXPIRY_MS;
    for (const [key, state] of this.buckets) {
      if (Math.max(state.resetAt, state.probeUntil, state.blockedUntil) < cutoff) this.buckets.delete(key);
    }
    for (const [key, value] of this.hashes) if (value.until < now) this.hashes.delete(key);
    for (const [key, until] of this.sublimits) if (until < cutoff) this.sublimits.delete(key);
    for (const [key, mark] of this.marks) if (mark.until < cutoff) this.marks.delete(key);
    for (const [key, global] of this.globals) if (global.touched < cutoff) this.globals.delete(key);
    for (const [key, until] of this.pauses) if (until < cutoff) this.pauses.delete(key);
    for (const [key, until] of this.vouches) if (until < now) this.vouches.delete(key);
  }

  // Inspection (src/limiter/inspection.ts): read-only, never called on a request's path.

  async inspectBuckets(refs: readonly BucketRef[]): Promise<(BucketView | null)[]> {
    const now = this.now();
    return refs.map((ref) => {
      const mapped = this.hashes.get(`${ref.identity}|${ref.routeKey}`)?.hash;
      if (mapped === UNBUCKETED) return viewBucket(null, undefined, now);
      const hash = mapped === undefined || mapped === HEADERLESS ? undefined : mapped;
      const state = this.buckets.get(`${ref.identity}|${hash ?? `unk:${ref.routeKey}`}|${ref.major}`);
      if (!state && mapped === undefined) return null;
      return viewBucket(hash ?? 'unknown', state, now);
    });
  }

  async inspectIdentities(identities: readonly string[]): Promise<IdentityView[]> {
    const now = this.now();
    return identities.map((identity) => ({
      globalUsed: this.globals.get(identity)?.used(now) ?? 0,
      pausedMs: Math.max(0, Math.ceil((this.pauses.get(identity) ?? 0) - now)),
    }));
  }

  inspectCloudflare(): number {
    return Math.max(0, this.cloudflareUntil - this.now());
  }

  async inspectMarks(identity: string): Promise<MarkView[]> {
    const now = this.now();
    const marks: MarkView[] = [];
    for (const [key, mark] of this.marks) {
      if (mark.until <= now || (key !== identity && !key.startsWith(`${identity}|`))) continue;
      // markKey(): the identity alone (revoked), or identity|<scope letter>|<what it applies to>.
      const place =
        key === identity ? markPlace(['r']) : markPlace(key.slice(identity.length + 1).split('|'));
      if (place) marks.push({ ...place, code: mark.code, ms: Math.ceil(mark.until - now) });
    }
    return marks;
  }

  knownBuckets(identity: string, max: number): BucketRef[] {
    const prefix = `${identity}|`;
    // Bucket ids name Discord's hash, not a route: find a route that maps to each hash.
    const routeOf = new Map<string, string>();
    for (const [key, { hash }] of this.hashes) {
      if (key.startsWith(prefix) && hash !== UNBUCKETED && hash !== HEADERLESS && !routeOf.has(hash))
        routeOf.set(hash, key.slice(prefix.length));
    }
    const refs: BucketRef[] = [];
    for (const key of this.buckets.keys()) {
      if (refs.length >= max) break;
      if (!key.startsWith(prefix)) continue;
      const rest = key.slice(prefix.length);
      const bar = rest.lastIndexOf('|');
      const hash = rest.slice(0, bar);
      const routeKey = hash.startsWith('unk:') ? hash.slice(4) : routeOf.get(hash);
      if (routeKey !== undefined) refs.push({ identity, routeKey, major: rest.slice(bar + 1) });
    }
    return refs;
  }

  private globalFor(identity: string): GlobalWindow {
    let global = this.globals.get(identity);
    if (!global) {
      global = new GlobalWindow();
      this.globals.set(identity, global);
    }
    return global;
  }
}

function markKey(at: MarkAt, scope: MarkScope): string {
  switch (scope) {
    case 'revoked':
      return at.identity;
    case 'unauthorized':
      return `${at.identity}|u|${at.routeKey}`;
    case 'gone':
      return `${at.identity}|g|${at.major}`;
    case 'closed':
      return `${at.identity}|c|${at.major}`;
    case 'forbidden':
      return `${at.identity}|f|${at.routeKey}|${at.major}|${at.target ?? ''}`;
  }
}

function sublimitKey(input: { identity: string; routeKey: string; major: string }, tag: string): string {
  return `${input.identity}|${input.routeKey}|${input.major}|${tag}`;
}
