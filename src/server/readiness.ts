/**
 * Whether this replica should get traffic (/readyz, and the `ready` metric): not while it shuts down, while Redis
 * is unreachable, during a Cloudflare cool-down, or while the invalid-request budget is used up.
 */
import type { InvalidBudget } from '../budget.js';
import type { LimiterStore } from '../limiter/types.js';
import type { Metrics } from '../metrics.js';
import type { Readiness } from '../routes/admin.js';

export interface ReadinessParts {
  readonly store: LimiterStore;
  readonly metrics: Metrics;
  readonly budget: InvalidBudget;
  /** Whether the shared state answers; absent for in-process state. */
  readonly storeCheck: (() => Promise<boolean>) | undefined;
  /** True once shutdown has begun. */
  readonly stopping: () => boolean;
}

export function createReadiness(parts: ReadinessParts): Readiness {
  const { store, metrics, budget, storeCheck } = parts;
  return {
    async check() {
      if (parts.stopping()) return 'shutting down';
      if (storeCheck && !(await storeCheck())) return 'Redis unreachable (serving with local limits)';
      const pause = await store.cloudflarePause().catch(() => -1);
      if (pause < 0) return 'shared state unreachable';
      metrics.cloudflareCooldown.set(pause > 0 ? 1 : 0);
      if (pause > 0) return `Cloudflare cool-down for ${Math.ceil(pause / 1000)} s`;
      if (budget.exhausted) return 'invalid-request budget used up: refusing to send until it recovers';
      return null;
    },
  };
}
