/**
 * The invalid-request budget of this egress IP. Discord bans an IP for about an hour after 10,000 invalid
 * requests (401, 403, and 429 except shared scope) in 10 minutes, taking every bot behind it offline
 * (docs/discord-ratelimits.md §4). The count lives in the store, so all replicas share it; each replica keeps
 * the latest value it saw (from its own invalid answers, and a refresh every few seconds) and refuses to send
 * anything once the budget is used up. Requests known to fail are stopped long before, by the marks.
 */
import type { LimiterStore } from './limiter/types.js';
import { INVALID_SLOT_MS } from './limiter/types.js';
import type { Metrics } from './metrics.js';

const REFRESH_MS = 5000;

export class InvalidBudget {
  private count = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly store: LimiterStore,
    private readonly metrics: Metrics,
    readonly budget: number,
  ) {
    metrics.invalidBudget.set(budget);
    this.timer = setInterval(() => void this.record(0), REFRESH_MS);
    this.timer.unref();
  }

  /** Invalid responses in the window, as last read from the store. */
  get used(): number {
    return this.count;
  }

  /** True when one more request could cross the line: nothing may be sent until old ones leave the window. */
  get exhausted(): boolean {
    return this.count >= this.budget;
  }

  /** How long until the oldest slot leaves the window (an upper bound on the wait). */
  get retryAfterMs(): number {
    return INVALID_SLOT_MS;
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
}
