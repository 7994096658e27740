/**
 * Redis failing is a normal event. While Redis answers, every decision is Redis's. When a call fails, this
 * replica switches to its own in-process state at once (no request waits for a dead Redis) and keeps serving
 * with a safe share of each identity's global limit: `globalLimit / fallbackReplicas`, so that all replicas
 * together stay within the limit. Buckets are then tracked per replica from the headers each one sees; a bucket
 * hot on several replicas can draw a few 429s in that mode, which are learned from like any other.
 *
 * Every `recoveryIntervalMs` one call is tried against Redis again; the first success switches back.
 * The in-process store learns from every response in both modes, so it is warm when it is needed.
 */
import { type Clock, realClock } from './clock.js';
import {
  type BucketRef,
  type BucketView,
  type IdentityView,
  isInspectable,
  type MarkView,
} from './inspection.js';
import type { MemoryStore } from './memory.js';
import {
  type AdmitInput,
  type AdmitResult,
  type LearnInput,
  type LimiterStore,
  type MarkAt,
  type MarkScope,
  pending,
} from './types.js';

export interface FailoverOptions {
  /** How many replicas share a global limit while each falls back to its own state. */
  readonly fallbackReplicas: number;
  /** The global window including its margin: what Redis admitted in the last one may already fill it. */
  readonly globalWindowMs: number;
  readonly recoveryIntervalMs: number;
  readonly onModeChange?: (mode: 'redis' | 'local', error?: unknown) => void;
  readonly onError?: (error: unknown) => void;
  readonly onLatency?: (op: string, seconds: number) => void;
}

const DONE: Promise<void> = Promise.resolve();

export class FailoverStore implements LimiterStore {
  private local = false;
  private retryAt = 0;
  private localSince = 0;
  /** Some admissions were decided locally, so the shared window may not know of all that count. */
  private decidedLocally = false;

  constructor(
    private readonly shared: LimiterStore,
    private readonly fallback: MemoryStore,
    private readonly options: FailoverOptions,
    /** Decides when the local window is known and when Redis is tried again; also times the calls. */
    private readonly clock: Pick<Clock, 'now'> = realClock,
  ) {}

  /** Whether decisions are currently made by the shared store. */
  get healthy(): boolean {
    return !this.local;
  }

  admit(input: AdmitInput): AdmitResult | Promise<AdmitResult> {
    if (!this.useShared()) return this.admitLocally(input);
    let result: AdmitResult | Promise<AdmitResult>;
    try {
      const limited = this.afterOutage(input);
      if (limited === null) {
        const waitMs = Math.max(1, this.fallback.globalWait(input.identity, input.globalLimit));
        return { ok: false, reason: 'global', waitMs };
      }
      // Its round trips are timed by the shared store itself (RedisStore onCall): one admit may be a share of
      // one call, or none at all (a lease, answered at once).
      result = this.shared.admit(limited);
    } catch (error) {
      this.failed(error);
      return this.admitLocally(input);
    }
    // Decided without a round trip (a lease, a cached pause): it says nothing about whether Redis is back.
    if (!pending(result)) return result;
    return result.then(
      (admitted) => {
        this.recovered();
        return admitted;
      },
      (error: unknown) => {
        this.failed(error);
        return this.admitLocally(input);
      },
    );
  }

  /** This replica's own decision, while Redis is away or after a call to it failed. */
  private admitLocally(input: AdmitInput): AdmitResult {
    if (input.globalLimit === 0) return this.fallback.admitNow(input);
    // The local window knows nothing of what the shared one admitted before Redis failed; until one full window
    // has passed, assume it was full.
    const unknownFor = this.localSince + this.options.globalWindowMs - this.clock.now();
    if (unknownFor > 0) return { ok: false, reason: 'global', waitMs: unknownFor };
    const share = Math.max(1, Math.floor(input.globalLimit / this.options.fallbackReplicas));
    this.decidedLocally = true;
    return this.fallback.admitNow({ ...input, globalLimit: share });
  }

  /**
   * Back on Redis after deciding locally: the shared window never saw this replica's local admissions, which
   * still count at Discord until a window after their answers. Until they have left, the shared window is asked
   * for that much less; null when they alone fill the window (a limit of 0 would read as exempt).
   */
  private afterOutage(input: AdmitInput): AdmitInput | null {
    if (!this.decidedLocally || input.globalLimit === 0) return input;
    const unseen = this.fallback.globalInUse(input.identity);
    if (unseen === 0) return input;
    const left = input.globalLimit - unseen;
    return left > 0 ? { ...input, globalLimit: left } : null;
  }

  /** Learned here at once, then by the shared store: every answer, so written without an async frame of its own. */
  learn(input: LearnInput): Promise<void> {
    try {
      this.fallback.learnNow(input);
    } catch (error) {
      // As a failed learn always was: a rejection for the caller to log, never a throw into the request's path.
      return Promise.reject(error);
    }
    if (!this.useShared()) return DONE;
    let sent: Promise<void>;
    try {
      sent = this.shared.learn(input);
    } catch (error) {
      this.failed(error);
      return DONE;
    }
    return sent.then(this.onShared, this.onSharedError);
  }

  private readonly onShared = (): void => this.recovered();
  private readonly onSharedError = (error: unknown): void => this.failed(error);

  async pauseIdentity(identity: string, ms: number): Promise<void> {
    await this.fallback.pauseIdentity(identity, ms);
    await this.both((store) => store.pauseIdentity(identity, ms), 'pause');
  }

  async pauseAll(ms: number): Promise<number> {
    const local = await this.fallback.pauseAll(ms);
    let shared = 0;
    await this.both(async (store) => {
      shared = await store.pauseAll(ms);
    }, 'pause');
    return Math.max(local, shared);
  }

  async cloudflarePause(): Promise<number> {
    const local = await this.fallback.cloudflarePause();
    if (this.local) return local;
    try {
      return Math.max(local, await this.shared.cloudflarePause());
    } catch (error) {
      this.failed(error);
      return local;
    }
  }

  async mark(at: MarkAt, scope: MarkScope, ms: number, code: number): Promise<void> {
    await this.fallback.mark(at, scope, ms, code);
    await this.both((store) => store.mark(at, scope, ms, code), 'mark');
  }

  async countInvalid(count: number): Promise<number> {
    // Counted locally too, so that the budget still holds for this replica while Redis is away.
    const local = await this.fallback.countInvalid(count);
    if (!this.useShared()) return local;
    try {
      return Math.max(local, await this.shared.countInvalid(count));
    } catch (error) {
      this.failed(error);
      return local;
    }
  }

  async vouch(identity: string): Promise<void> {
    await this.fallback.vouch(identity);
    await this.both((store) => store.vouch(identity), 'vouch');
  }

  async vouched(identity: string): Promise<boolean> {
    if (await this.fallback.vouched(identity)) return true;
    if (!this.useShared()) return false;
    try {
      return await this.shared.vouched(identity);
    } catch (error) {
      this.failed(error);
      return false;
    }
  }

  /** Probes Redis right away (used by /readyz so readiness does not wait for traffic). */
  async check(): Promise<boolean> {
    try {
      await this.shared.cloudflarePause();
      this.recovered();
      return true;
    } catch (error) {
      this.failed(error);
      return false;
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.shared.close(), this.fallback.close()]);
  }

  // Inspection: the state that decides now (Redis while it answers, else this replica's), read without touching
  // the failover's mode: an inspector that fails to read Redis must not switch the replica to local limits.

  async inspectBuckets(refs: readonly BucketRef[]): Promise<(BucketView | null)[]> {
    const shared = this.local || !isInspectable(this.shared) ? undefined : this.shared;
    return (await shared?.inspectBuckets(refs).catch(() => undefined)) ?? this.fallback.inspectBuckets(refs);
  }

  async inspectIdentities(identities: readonly string[]): Promise<IdentityView[]> {
    const shared = this.local || !isInspectable(this.shared) ? undefined : this.shared;
    return (
      (await shared?.inspectIdentities(identities).catch(() => undefined)) ??
      this.fallback.inspectIdentities(identities)
    );
  }

  async inspectMarks(identity: string): Promise<MarkView[]> {
    const shared = this.local || !isInspectable(this.shared) ? undefined : this.shared;
    return (
      (await shared?.inspectMarks(identity).catch(() => undefined)) ?? this.fallback.inspectMarks(identity)
    );
  }

  inspectCloudflare(): number {
    const shared = isInspectable(this.shared) ? this.shared.inspectCloudflare() : 0;
    return Math.max(this.fallback.inspectCloudflare(), shared);
  }

  /** The in-process store learns from every answer in both modes, so it knows which buckets this replica used. */
  knownBuckets(identity: string, max: number): BucketRef[] {
    return this.fallback.knownBuckets(identity, max);
  }

  private useShared(): boolean {
    if (!this.local) return true;
    const now = this.clock.now();
    if (now < this.retryAt) return false;
    // One request per interval finds out whether Redis is back; the others keep going locally meanwhile.
    this.retryAt = now + this.options.recoveryIntervalMs;
    return true;
  }

  /**
   * Writes to the shared store when it is in use; a failure switches to local mode and is not rethrown. `op`: the
   * write is timed as that operation (learns are not: they are batched, and the shared store times its calls).
   */
  private async both(write: (store: LimiterStore) => Promise<void>, op?: string): Promise<void> {
    if (!this.useShared()) return;
    const started = this.clock.now();
    try {
      await write(this.shared);
      if (op) this.options.onLatency?.(op, (this.clock.now() - started) / 1000);
      this.recovered();
    } catch (error) {
      this.failed(error);
    }
  }

  private failed(error: unknown): void {
    this.options.onError?.(error);
    this.retryAt = this.clock.now() + this.options.recoveryIntervalMs;
    if (!this.local) {
      this.local = true;
      this.localSince = this.clock.now();
      this.options.onModeChange?.('local', error);
    }
  }

  private recovered(): void {
    if (this.local) {
      this.local = false;
      this.options.onModeChange?.('redis');
    }
  }
}
