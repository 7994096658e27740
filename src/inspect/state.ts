/**
 * Builds what the admin port's inspector shows (GET /state and /state/identity): this replica, the identities with
 * held requests or recent traffic, and the buckets with the most held requests.
 *
 * Everything here runs when someone asks, never on a request's path. It reads the scheduler's queues (held
 * counts, why each waits), the recent-traffic maps (fed only while someone looks) and, for the top N buckets and
 * identities only, the store. Identities appear as the store keys them (a keyed hash of the Authorization value)
 * and webhook majors as classify() hashed them: nothing built here ever holds a token.
 */
import type { InvalidBudget } from '../budget.js';
import type { Identity } from '../discord/types.js';
import {
  type BucketRef,
  type BucketView,
  type IdentityView,
  isInspectable,
  type MarkView,
} from '../limiter/inspection.js';
import type { Scheduler } from '../limiter/scheduler.js';
import type { AdmitInput, LimiterStore, WaitReason } from '../limiter/types.js';
import { RecentTraffic, rate, type Traffic } from './recent.js';

export const DEFAULT_TOP = 20;
export const MAX_TOP = 200;
/** Recent traffic is tracked for this long after the last look (see Inspector.look). */
export const WATCH_MS = 10 * 60_000;

export interface InspectorDeps {
  readonly scheduler: Scheduler;
  readonly store: LimiterStore;
  readonly budget: InvalidBudget;
  readonly mode: 'memory' | 'redis';
  /** Whether Redis decides right now; undefined in memory mode. */
  readonly redisUp: () => boolean | undefined;
  readonly globalLimitFor: (identity: Identity) => number;
  readonly maxHeld: number;
}

export interface ReplicaState {
  readonly store: 'memory' | 'redis';
  /** null in memory mode. */
  readonly redisUp: boolean | null;
  readonly cloudflarePauseMs: number;
  readonly invalidRequests: { readonly count: number; readonly budget: number };
  readonly held: number;
  readonly maxHeld: number;
  /** Since when recent traffic is tracked (ms ago): it starts with the first look after a quiet spell. */
  readonly watchingForMs: number;
}

export interface IdentityState {
  readonly identity: string;
  readonly held: number;
  /** Requests seen while watched, their rate over the last few seconds, and ms since the latest (null: none seen). */
  readonly requests: number;
  readonly perSecond: number;
  readonly lastMs: number | null;
  /** The identity's requests per global window, when a request of it has been seen (null: not known here). */
  readonly globalLimit: number | null;
  /** Requests counting in its global window now (null: the store could not say). */
  readonly globalUsed: number | null;
  readonly pausedMs: number;
}

export interface BucketState {
  readonly identity: string;
  /** Method and route template (the route key), e.g. "POST /channels/:id/messages". */
  readonly route: string;
  /** As the store keys it: "c:<id>", "g:<id>", "w:<id>:<hash of the token>", "i:<id>" or "-". */
  readonly major: string;
  readonly sublimit: string;
  readonly hash: string | null;
  readonly limit: number | null;
  readonly remaining: number | null;
  readonly resetMs: number | null;
  readonly inflight: number;
  readonly blockedMs: number;
  readonly held: number;
  /** Why its first held request waits (the last WaitReason); null when nothing is held. */
  readonly waitingFor: WaitReason | null;
  readonly waitMs: number;
  readonly perSecond: number;
  readonly lastMs: number | null;
}

export interface State {
  readonly top: number;
  readonly replica: ReplicaState;
  readonly identities: readonly IdentityState[];
  readonly buckets: readonly BucketState[];
  /** How many more than `top` there were. */
  readonly omitted: { readonly identities: number; readonly buckets: number };
}

export interface IdentityDetail {
  readonly identity: string;
  readonly kind: Identity['kind'];
  readonly held: number;
  readonly globalLimit: number;
  readonly globalUsed: number | null;
  readonly pausedMs: number;
  readonly marks: readonly MarkView[];
  readonly buckets: readonly BucketState[];
}

interface Candidate {
  readonly key: string;
  readonly input: AdmitInput;
  readonly held: number;
  readonly reason: WaitReason | undefined;
  readonly waitMs: number;
  readonly traffic: Traffic | undefined;
}

export class Inspector {
  private readonly recent = new RecentTraffic();
  private watchingSince = 0;
  private stopWatching: NodeJS.Timeout | undefined;

  constructor(private readonly deps: InspectorDeps) {}

  /** Someone looks: track recent traffic from now until WATCH_MS after the last look. */
  look(): void {
    const { scheduler } = this.deps;
    if (!scheduler.watch) {
      this.recent.clear();
      this.watchingSince = performance.now();
      const recent = this.recent;
      scheduler.watch = (key, input) => recent.note(key, input);
    }
    if (this.stopWatching) clearTimeout(this.stopWatching);
    this.stopWatching = setTimeout(() => this.close(), WATCH_MS);
    this.stopWatching.unref();
  }

  close(): void {
    if (this.stopWatching) clearTimeout(this.stopWatching);
    this.stopWatching = undefined;
    this.deps.scheduler.watch = undefined;
  }

  async state(top: number): Promise<State> {
    this.look();
    const { scheduler, store, budget } = this.deps;
    const now = performance.now();

    const candidates = this.candidates(() => true);
    const buckets = candidates.sort(byHeldThenRecent).slice(0, top);

    const held = scheduler.heldByIdentity();
    const ids = new Set<string>([...held.keys(), ...this.recent.identities.keys()]);
    const ranked = [...ids]
      .map((identity) => ({
        identity,
        held: held.get(identity) ?? 0,
        traffic: this.recent.identities.get(identity),
      }))
      .sort(
        (a, b) =>
          b.held - a.held ||
          rateOf(b.traffic, now) - rateOf(a.traffic, now) ||
          (b.traffic?.last ?? 0) - (a.traffic?.last ?? 0),
      )
      .slice(0, top);
    const limits = this.globalLimits(candidates);

    const [views, identityViews] = await Promise.all([
      this.bucketViews(buckets),
      this.identityViews(ranked.map((r) => r.identity)),
    ]);
    // The store's own view, without I/O: asking the failover store through cloudflarePause() would switch the
    // replica to local limits if Redis failed to answer the inspector.
    const cloudflarePauseMs = isInspectable(store) ? store.inspectCloudflare() : 0;
    const redisUp = this.deps.redisUp();
    return {
      top,
      replica: {
        store: this.deps.mode,
        redisUp: redisUp ?? null,
        cloudflarePauseMs: Math.ceil(cloudflarePauseMs),
        invalidRequests: { count: budget.used, budget: budget.budget },
        held: scheduler.held,
        maxHeld: this.deps.maxHeld,
        watchingForMs: Math.round(now - this.watchingSince),
      },
      identities: ranked.map((r, i) => ({
        identity: r.identity,
        held: r.held,
        ...trafficOf(r.traffic, now),
        globalLimit: limits.get(r.identity) ?? null,
        globalUsed: identityViews?.[i]?.globalUsed ?? null,
        pausedMs: identityViews?.[i]?.pausedMs ?? 0,
      })),
      buckets: buckets.map((c, i) => bucketState(c, views[i] ?? null, now)),
      omitted: {
        identities: Math.max(0, ids.size - ranked.length),
        buckets: Math.max(0, candidates.length - buckets.length),
      },
    };
  }

  /** One identity's buckets (held, recent, and those this replica knows), global window, pause and marks. */
  async identity(identity: Identity, top: number): Promise<IdentityDetail> {
    this.look();
    const { scheduler, store } = this.deps;
    const now = performance.now();
    const key = identity.key;
    const mine = this.candidates((input) => input.identity === key).sort(byHeldThenRecent);
    const seen = new Set(mine.map((c) => `${c.input.routeKey}|${c.input.major}`));
    const known: Candidate[] = [];
    if (isInspectable(store)) {
      for (const ref of store.knownBuckets(key, top)) {
        if (seen.has(`${ref.routeKey}|${ref.major}`)) continue;
        seen.add(`${ref.routeKey}|${ref.major}`);
        const input = { ...ref, globalLimit: 0, sublimit: '*' };
        known.push({ key: '', input, held: 0, reason: undefined, waitMs: 0, traffic: undefined });
      }
    }
    const chosen = [...mine, ...known].slice(0, top);
    const [views, identityViews, marks] = await Promise.all([
      this.bucketViews(chosen),
      this.identityViews([key]),
      isInspectable(store) ? store.inspectMarks(key).catch(() => []) : Promise.resolve([]),
    ]);
    return {
      identity: key,
      kind: identity.kind,
      held: scheduler.heldOf(key),
      globalLimit: this.deps.globalLimitFor(identity),
      globalUsed: identityViews?.[0]?.globalUsed ?? null,
      pausedMs: identityViews?.[0]?.pausedMs ?? 0,
      marks,
      buckets: chosen.map((c, i) => bucketState(c, views[i] ?? null, now)),
    };
  }

  /** Queues holding requests, and queues with recent traffic, once each. */
  private candidates(keep: (input: AdmitInput) => boolean): Candidate[] {
    const byKey = new Map<string, Candidate>();
    for (const q of this.deps.scheduler.snapshot()) {
      if (!keep(q.input)) continue;
      const traffic = this.recent.queues.get(q.key);
      byKey.set(q.key, {
        key: q.key,
        input: q.input,
        held: q.held,
        reason: q.reason,
        waitMs: q.waitMs,
        traffic,
      });
    }
    for (const [key, traffic] of this.recent.queues) {
      if (byKey.has(key) || !keep(traffic.input)) continue;
      byKey.set(key, { key, input: traffic.input, held: 0, reason: undefined, waitMs: 0, traffic });
    }
    return [...byKey.values()];
  }

  /** The global limit each identity's requests carried (exempt requests carry 0 and say nothing). */
  private globalLimits(candidates: readonly Candidate[]): Map<string, number> {
    const limits = new Map<string, number>();
    for (const c of candidates) {
      const limit = c.input.globalLimit;
      if (limit > (limits.get(c.input.identity) ?? 0)) limits.set(c.input.identity, limit);
    }
    return limits;
  }

  private async bucketViews(candidates: readonly Candidate[]): Promise<(BucketView | null)[]> {
    const { store } = this.deps;
    if (!isInspectable(store) || candidates.length === 0) return [];
    const refs: BucketRef[] = candidates.map((c) => c.input);
    return store.inspectBuckets(refs).catch(() => []);
  }

  private async identityViews(identities: readonly string[]): Promise<IdentityView[] | undefined> {
    const { store } = this.deps;
    if (!isInspectable(store) || identities.length === 0) return undefined;
    return store.inspectIdentities(identities).catch(() => undefined);
  }
}

/** `?top=`: absent → the default; a whole number → clamped to 1..MAX_TOP; anything else → undefined (refused). */
export function parseTop(value: unknown): number | undefined {
  if (value === undefined) return DEFAULT_TOP;
  if (typeof value !== 'string' || !/^\d{1,6}$/.test(value)) return undefined;
  return Math.min(MAX_TOP, Math.max(1, Number(value)));
}

function byHeldThenRecent(a: Candidate, b: Candidate): number {
  return b.held - a.held || (b.traffic?.last ?? 0) - (a.traffic?.last ?? 0);
}

function rateOf(traffic: Traffic | undefined, now: number): number {
  return traffic ? rate(traffic, now) : 0;
}

function trafficOf(traffic: Traffic | undefined, now: number) {
  return {
    requests: traffic?.requests ?? 0,
    perSecond: traffic ? Math.round(rate(traffic, now) * 10) / 10 : 0,
    lastMs: traffic ? Math.round(now - traffic.last) : null,
  };
}

function bucketState(c: Candidate, view: BucketView | null, now: number): BucketState {
  return {
    identity: c.input.identity,
    route: c.input.routeKey,
    major: c.input.major,
    sublimit: c.input.sublimit,
    hash: view ? view.hash : 'unknown',
    limit: view?.limit ?? null,
    remaining: view?.remaining ?? null,
    resetMs: view?.resetMs ?? null,
    inflight: view?.inflight ?? 0,
    blockedMs: view?.blockedMs ?? 0,
    held: c.held,
    waitingFor: c.held > 0 ? (c.reason ?? null) : null,
    waitMs: c.held > 0 ? c.waitMs : 0,
    perSecond: trafficOf(c.traffic, now).perSecond,
    lastMs: trafficOf(c.traffic, now).lastMs,
  };
}
