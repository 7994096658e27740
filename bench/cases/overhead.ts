/**
 * Overhead cases: the same closed-loop load on two routes of one bot token, straight to the fake and through each
 * target, so that the proxy's cost shows as a ratio to a bare pass-through measured in the same run.
 *
 * - `overhead-cpu`: the fake answers at once, 64 in flight: what each target costs in CPU.
 * - `overhead-latency`: the fake's log-normal latency (GET median 60 ms), 32 and 256 in flight: what that cost
 *   means once Discord is as far as it is in production.
 */
import type { Harness, Target } from '../lib/harness.js';
import { fakeControl } from '../lib/observe.js';
import { DISTURBED_CORES, MAX_REPAIRS, type Session } from '../lib/session.js';
import type { WorkloadKind } from '../lib/spec.js';

/** The proxy's GLOBAL_RATE_LIMIT in the overhead cases (its maximum): the global window must not cap them. */
export const HIGH_GLOBAL = 100_000;
export const OVERHEAD_TARGETS = [
  'direct',
  'bare',
  'proxy-memory',
  'proxy-redis',
  'proxy-redis-unbatched',
  'discordjs',
] as const;
export const ROUTES = ['unbucketed', 'bucketed'] as const;
/** Raised far above what any target reaches, so classification, admission and learning run but nothing waits. */
export const BUCKETED_POLICY = {
  method: 'GET',
  template: '/channels/{id}/messages',
  limit: 1_000_000,
  windowMs: 1000,
};

export type OverheadGroup = 'overhead-cpu' | 'overhead-latency';

export async function overhead(
  s: Session,
  group: OverheadGroup,
  latency: string,
  concurrencies: readonly number[],
  durationMs: number,
  rounds: number,
  targets: readonly string[],
): Promise<void> {
  const h: Harness = s.h;
  const fake = await h.fake(group, latency, 1_000_000);
  const live = new Map<string, Target>();
  const runOne = async (kind: string, concurrency: number, workload: WorkloadKind, round: number) => {
    let target = live.get(kind);
    if (!target) {
      target = await h.target(kind, fake.url, HIGH_GLOBAL);
      live.set(kind, target);
    }
    await fakeControl(fake.url, 'reset');
    await s.record(
      { group, target: kind, workload, concurrency, replicas: 1, round },
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
      live.delete(kind);
      await target.stop();
    }
  };
  try {
    await fakeControl(fake.url, 'policy', BUCKETED_POLICY);
    const combos = concurrencies.flatMap((concurrency) =>
      ROUTES.flatMap((workload) => targets.map((kind) => ({ kind, concurrency, workload }))),
    );
    // Targets take turns within each round, so that a burst of load from elsewhere on the machine hits one
    // round of one target, not all rounds of it.
    for (let round = 1; round <= rounds; round++) {
      for (const c of combos) await runOne(c.kind, c.concurrency, c.workload, round);
    }
    // Runs that only ever had other processes eating CPU next to them get a few more tries (bounded).
    let repairs = 0;
    for (let round = rounds + 1; round <= rounds + 2; round++) {
      for (const c of combos) {
        if (repairs >= MAX_REPAIRS || s.settings.quick) break;
        const runs = s.matching(group, c.kind, c.workload, c.concurrency);
        if (runs.some((r) => r.rec.foreignCores < DISTURBED_CORES)) continue;
        repairs++;
        await runOne(c.kind, c.concurrency, c.workload, round);
      }
    }
  } finally {
    for (const target of live.values()) await target.stop();
    await h.stopFake(group);
  }
}
