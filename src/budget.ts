/**
 * The invalid-request budget of this egress IP. Discord bans an IP for about an hour after 10,000 invalid
 * requests (401, 403, and 429 except shared scope) in 10 minutes, taking every bot behind it offline
 * (docs/discord-ratelimits.md §4). The count lives in the store, so all replicas share it; each replica keeps
 * the latest value it saw (from its own invalid answers, and a refresh every few seconds).
 *
 * The budget is shared fairly: one broken worker (junk tokens, revoked ones, a loop of 403s) must not spend it
 * for every bot behind the proxy. Past the soft line (INVALID_BUDGET_SOFT_RATIO of the budget) the proxy refuses
 * the identities that spend it: those whose recent answers are mostly invalid, and those never seen succeeding
 * (every junk token is a new identity). Identities with a clean record are served until the hard line, the whole
 * budget, where everything stops. Requests known to fail are stopped long before, by the marks.
 */
import type { LimiterStore } from './limiter/types.js';
import { INVALID_SLOT_MS, INVALID_WINDOW_MS } from './limiter/types.js';
import type { Metrics } from './metrics.js';

const REFRESH_MS = 5000;
/** Identities tracked per replica; past it the oldest record is dropped (a dropped identity is unproven again). */
const MAX_RECORDS = 10_000;
/** A clean record allows this many invalid answers per window, or this share of its successes if more. */
const CLEAN_INVALID = 5;
const CLEAN_SHARE = 0.05;
/** How often a success is told to the other replicas, per identity. */
const VOUCH_EVERY_MS = 60_000;
/** How long a replica trusts what the store said of an identity it has not seen succeed itself. */
const ASK_EVERY_MS = 5_000;

/** Who spent an invalid answer, or was refused; bounded labels for the metrics. */
export type Standing = 'clean' | 'offender' | 'unproven' | 'anonymous';

interface Record {
  /** Start of the window the counts belong to (Date.now()). */
  since: number;
  ok: number;
  invalid: number;
  /** Last time this replica told the store of a success (0: never). */
  vouchedAt: number;
  /** Last time the store was asked whether another replica saw a success, and its answer. */
  askedAt: number;
  vouchedElsewhere: boolean;
}

export class InvalidBudget {
  private count = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly records = new Map<string, Record>();
  readonly softLine: number;

  constructor(
    private readonly store: LimiterStore,
    private readonly metrics: Metrics,
    readonly budget: number,
    softRatio = 0.5,
    private readonly now: () => number = Date.now,
  ) {
    // At least one invalid answer before anyone is judged: a fresh replica (count 0) serves everybody.
    this.softLine = Math.max(1, Math.floor(budget * softRatio));
    metrics.invalidBudget.set(budget);
    this.timer = setInterval(() => void this.record(0), REFRESH_MS);
    this.timer.unref();
  }

  /** Invalid responses in the window, as last read from the store. */
  get used(): number {
    return this.count;
  }

  /** True when one more request could cross the hard line: nothing may be sent until old ones leave the window. */
  get exhausted(): boolean {
    return this.count >= this.budget;
  }

  /** Past the soft line: only identities with a clean record are served. */
  get strained(): boolean {
    return this.count >= this.softLine;
  }

  /** How long until the oldest slot leaves the window (an upper bound on the wait). */
  get retryAfterMs(): number {
    return INVALID_SLOT_MS;
  }

  /**
   * Whether a request of `identity` may go now. Synchronous while the budget is not strained (every request
   * asks); past the soft line, an identity this replica has not seen succeed may cost one store read.
   */
  allows(identity: string): boolean | Promise<boolean> {
    if (this.exhausted) return this.refuse(this.standing(identity));
    if (!this.strained) return true;
    const standing = this.standing(identity);
    if (standing === 'clean' || standing === 'anonymous') return true;
    if (standing === 'offender') return this.refuse(standing);
    const record = this.records.get(identity);
    if (record && this.now() - record.askedAt < ASK_EVERY_MS) {
      return record.vouchedElsewhere || this.refuse(standing);
    }
    return this.store.vouched(identity).then(
      (yes) => {
        const r = this.recordOf(identity);
        r.askedAt = this.now();
        r.vouchedElsewhere = yes;
        return yes || this.refuse(standing);
      },
      () => this.refuse(standing),
    );
  }

  /**
   * The check again when a held request is admitted: the budget may have filled while it waited. Synchronous;
   * what allows() decided for an identity this replica has not seen succeed stands.
   */
  stillAllows(identity: string): boolean {
    if (this.exhausted) return this.refuse(this.standing(identity));
    return !this.strained || this.standing(identity) !== 'offender' || this.refuse('offender');
  }

  /** Learns from one answer of Discord's: a success proves the identity, an invalid answer counts against it. */
  answered(identity: string, invalid: boolean): void {
    const record = this.recordOf(identity);
    if (!invalid) {
      record.ok += 1;
      const now = this.now();
      if (now - record.vouchedAt >= VOUCH_EVERY_MS && identity !== 'none') {
        record.vouchedAt = now;
        this.store.vouch(identity).catch(() => undefined);
      }
      return;
    }
    this.metrics.invalidAnswers.inc({ standing: this.standing(identity) });
    record.invalid += 1;
    void this.record(1);
  }

  /** How this identity's record stands now. */
  standing(identity: string): Standing {
    const record = this.records.get(identity);
    const clean = !record || record.invalid <= Math.max(CLEAN_INVALID, record.ok * CLEAN_SHARE);
    // Requests without a token (webhooks, mostly) are many callers in one: judged by their record alone.
    if (!clean) return 'offender';
    if (identity === 'none') return 'anonymous';
    return !record || (record.ok === 0 && !record.vouchedElsewhere) ? 'unproven' : 'clean';
  }

  async record(invalid: number): Promise<void> {
    try {
      this.count = await this.store.countInvalid(invalid);
      this.metrics.invalidRequests.set(this.count);
    } catch {
      // The failover store already counts locally when Redis is away; a failed read keeps the last value.
    }
  }

  close(): void {
    clearInterval(this.timer);
  }

  private refuse(standing: Standing): false {
    this.metrics.budgetRefusals.inc({ standing });
    return false;
  }

  private recordOf(identity: string): Record {
    const now = this.now();
    let record = this.records.get(identity);
    if (record && now - record.since > INVALID_WINDOW_MS) {
      // A new window: the record starts over, but an identity that succeeded stays proven.
      record.since = now;
      record.ok = record.ok > 0 ? 1 : 0;
      record.invalid = 0;
    }
    if (!record) {
      if (this.records.size >= MAX_RECORDS) {
        const oldest = this.records.keys().next().value;
        if (oldest !== undefined) this.records.delete(oldest);
      }
      record = { since: now, ok: 0, invalid: 0, vouchedAt: 0, askedAt: 0, vouchedElsewhere: false };
      this.records.set(identity, record);
    }
    return record;
  }
}
