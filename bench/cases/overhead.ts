/**
 * Overhead cases: the same closed-loop load on two routes of one bot token, straight to the fake and through each
 * target, so that the proxy's cost shows as a ratio to a bare pass-through measured in the same run.
 *
 * - `overhead-cpu`: the fake answers at once, 64 in flight: what each target costs in CPU.
 * - `overhead-latency`: the fake's log-normal latency (GET median 60 ms), 32 and 256 in flight: what that cost
 *   means once Discord is as far as it is in production.
 * - `overhead-low`: a fixed 20 ms answer and 4 in flight (about 200 requests per second): the latency the proxy
 *   adds when it is not busy, without the spread of a random upstream latency hiding a millisecond.
 *
 * Redis mode runs with one replica and with three on the same Redis (the load generator sends its requests round
 * robin over them, as in the efficiency cases), so that its cost per request can be read for a deployment of
 * several replicas too: Redis commands per request are then those of the one Redis, CPU per request that of the
 * three replicas together.
 */
import type { Harness, Target } from '../lib/harness.js';
import { fakeControl } from '../lib/observe.js';
import { DISTURBED_CORES, MAX_REPAIRS, type Session } from '../lib/session.js';
import type { WorkloadKind } from '../lib/spec.js';

/** The proxy's GLOBAL_RATE_LIMIT in the overhead cases (its maximum): the global window must not cap them. */
export const HIGH_GLOBAL = 100_000;

/** One target of an overhead case: its kind (see `Harness.target`) and how many processes of it. */
export interface TargetSetup {
  readonly kind: string;
  readonly replicas: number;
}

/** In the order of the table's rows. */
export const OVERHEAD_TARGETS: readonly TargetSetup[] = [
  { kind: 'direct', replicas: 1 },
  { kind: 'bare', replicas: 1 },
  { kind: 'proxy-memory', replicas: 1 },
  { kind: 'proxy-redis', replicas: 1 },
  { kind: 'proxy-redis', replicas: 3 },
  { kind: 'proxy-redis-nolease', replicas: 1 },
  { kind: 'proxy-redis-unbatched', replicas: 1 },
  { kind: 'discordjs', replicas: 1 },
];

/** At low load only what bears on added latency: @discordjs/proxy and the Redis variants add nothing to read. */
export const LOW_LOAD_TARGETS: readonly TargetSetup[] = OVERHEAD_TARGETS.filter(
  (t) => t.kind !== 'discordjs' && t.kind !== 'proxy-redis-unbatched' && t.kind !== 'proxy-redis-nolease',
);
/** The low-load case: answers after a fixed 20 ms, 4 requests in flight. */
export const LOW_LOAD = { latency: 'fixed:20', latencyMs: 20, concurrency: 4 } as const;
export const ROUTES = ['unbucketed', 'bucketed'] as const;
/** Raised far above what any target reaches, so classification, admission and learning run but nothing waits. */
export const BUCKETED_POLICY = {
  method: 'GET',
  template: '/channels/{id}/messages',
  limit: 1_000_000,
  windowMs: 1000,
};

export type OverheadGroup = 'overhead-cpu' | 'overhead-latency' | 'overhead-low';

export async function overhead(
  s: Session,
  group: OverheadGroup,
  latency: string,
  concurrencies: readonly number[],
  durationMs: number,
  rounds: number,
  targets: readonly TargetSetup[],
): Promise<void> {
  const h: Harness = s.h;
  const fake = await h.fake(group, latency, 1_000_000);
  const live = new Map<string, Target>();
  const runOne = async (setup: TargetSetup, concurrency: number, workload: WorkloadKind, round: number) => {
    const { kind, replicas } = setup;
    const key = `${kind}×${replicas}`;
    let target = live.get(key);
    if (!target) {
      target = await h.target(kind, fake.url, HIGH_GLOBAL, replicas);
      live.set(key, target);
    }
    await fakeControl(fake.url, 'reset');
    await s.record(
      { group, target: kind, workload, concurrency, replicas, round },
      {
        targets: target.urls,
        workload,
        concurrency,
        warmupMs: s.windows.warmup,
        durationMs,
        end: 'drain',
        drainMs: 3000,
        seed: 1,
      },
      target,
      fake,
    );
    // @discordjs/proxy keeps sending its queue after the clients have gone: a fresh one every run.
    if (kind === 'discordjs') {
      live.delete(key);
      await target.stop();
    }
  };
  try {
    await fakeControl(fake.url, 'policy', BUCKETED_POLICY);
    const combos = concurrencies.flatMap((concurrency) =>
      ROUTES.flatMap((workload) => targets.map((setup) => ({ setup, concurrency, workload }))),
    );
    // Targets take turns within each round, so that a burst of load from elsewhere on the machine hits one
    // round of one target, not all rounds of it.
    for (let round = 1; round <= rounds; round++) {
      for (const c of combos) await runOne(c.setup, c.concurrency, c.workload, round);
    }
    // Runs that only ever had other processes eating CPU next to them get a few more tries (bounded).
    let repairs = 0;
    for (let round = rounds + 1; round <= rounds + 2; round++) {
      for (const c of combos) {
        if (repairs >= MAX_REPAIRS || s.settings.quick) break;
        const runs = s.matching(group, c.setup.kind, c.workload, c.concurrency, c.setup.replicas);
        if (runs.some((r) => r.rec.foreignCores < DISTURBED_CORES)) continue;
        repairs++;
        await runOne(c.setup, c.concurrency, c.workload, round);
      }
    }
  } finally {
    for (const target of live.values()) await target.stop();
    await h.stopFake(group);
  }
}
