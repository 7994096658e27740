/**
 * Efficiency cases: how much of what Discord allows a client gets through the proxy, and how many 429s Discord
 * answers on the way. Each case is a fake Discord at some distance, one limit that binds, and a closed-loop load
 * that always wants more than that limit allows.
 *
 * Efficiency = requests the fake answered without a 429 per second of the measured window ÷ what the binding
 * limit allows per second (limit ÷ window). A perfect client reaches 1.0 only if it knows exactly when each
 * request reaches Discord; one that must wait for answers to learn windows pays up to a one-way transit per
 * window, so short windows far away cannot reach 1.0 for anyone.
 */
import { fakeControl } from '../lib/observe.js';
import type { Session } from '../lib/session.js';
import type { WorkloadKind } from '../lib/spec.js';

export interface EfficiencyCase {
  /** Name in the report and after `--only efficiency.` */
  readonly name: string;
  /** How the fake is started: a name shared by cases with the same distance, its --latency, extra CLI flags. */
  readonly fake: { readonly name: string; readonly latency: string; readonly args: readonly string[] };
  readonly distance: string;
  /** The route limit that binds (sent to the fake as a policy), or undefined for the seeded one. */
  readonly policy?: { method: string; template: string; limit: number; windowMs: number };
  readonly workload: WorkloadKind;
  readonly workers: number;
  /** Requests per second the binding limit allows. */
  readonly ideal: number;
  /** The global window binds (the busiest second at the fake must stay within it). */
  readonly global: boolean;
  /** Least acceptable efficiency (the goal). */
  readonly goal: number;
}

const NEAR = { name: 'efficiency', latency: 'lognormal', args: [] };
const FAR = { name: 'far', latency: '', args: ['--profile', 'far'] };
const MESSAGES = { method: 'POST', template: '/channels/{id}/messages' };

export const EFFICIENCY_CASES: readonly EfficiencyCase[] = [
  {
    name: 'hot',
    fake: NEAR,
    distance: 'answers log-normal (write median 150 ms)',
    policy: { ...MESSAGES, limit: 5, windowMs: 500 },
    workload: 'hot',
    workers: 40,
    ideal: 10,
    global: false,
    goal: 0.95,
  },
  {
    // Back to the seeded 5 per 5 s per channel: 200 channels allow 200/s, so the token's 50/s is what binds.
    name: 'global',
    fake: NEAR,
    distance: 'answers log-normal (write median 150 ms)',
    policy: { ...MESSAGES, limit: 5, windowMs: 5000 },
    workload: 'global',
    workers: 60,
    ideal: 50,
    global: true,
    goal: 0.95,
  },
  {
    // (a) Reactions, 1 per 250 ms (seeded), with every answer 230 ms away: answers say the window ends in ~20 ms.
    name: 'far-reactions',
    fake: { name: 'fixed-230', latency: 'fixed:230', args: [] },
    distance: 'answers fixed 230 ms',
    workload: 'reactions',
    workers: 12,
    ideal: 4,
    global: false,
    goal: 0.9,
  },
  {
    // (b) A hot 5 per 1 s bucket far away.
    name: 'far-hot',
    fake: FAR,
    distance: 'far: transit median 40 ms (tail 400), answers median 80 ms (tail 600)',
    policy: { ...MESSAGES, limit: 5, windowMs: 1000 },
    workload: 'hot',
    workers: 40,
    ideal: 5,
    global: false,
    goal: 0.9,
  },
  {
    // (c) The strict (sliding) 50/s global window far away.
    name: 'far-global',
    fake: FAR,
    distance: 'far: transit median 40 ms (tail 400), answers median 80 ms (tail 600)',
    policy: { ...MESSAGES, limit: 5, windowMs: 5000 },
    workload: 'global',
    workers: 60,
    ideal: 50,
    global: true,
    goal: 0.9,
  },
];

/** The token's global limit at the fake; the global cases' ideal. */
export const GLOBAL_LIMIT = 50;

/** Each efficiency case runs on one in-process replica, one Redis replica and three sharing one Redis. */
export const REPLICA_SETUPS = [
  { kind: 'proxy-memory', replicas: 1 },
  { kind: 'proxy-redis', replicas: 1 },
  { kind: 'proxy-redis', replicas: 3 },
] as const;

export interface EfficiencyRow {
  case: string;
  distance: string;
  goal: number;
  global: boolean;
  target: string;
  replicas: number;
  achievedPerSecond: number;
  idealPerSecond: number;
  ratio: number;
  limitedAtFake: number;
  limitedByScope: Record<string, number>;
  busiestWindow: number;
  clientStatuses: Record<string, number>;
  foreignCores: number;
}

export async function efficiency(s: Session, c: EfficiencyCase): Promise<EfficiencyRow[]> {
  const h = s.h;
  const rows: EfficiencyRow[] = [];
  const fake = await h.fake(c.fake.name, c.fake.latency, GLOBAL_LIMIT, c.fake.args);
  if (c.policy) await fakeControl(fake.url, 'policy', c.policy);
  for (const setup of REPLICA_SETUPS) {
    if (setup.kind === 'proxy-redis') await (await h.redis()).client.flushall();
    await fakeControl(fake.url, 'reset');
    const target = await h.target(setup.kind, fake.url, undefined, setup.replicas);
    try {
      const run = await s.record(
        {
          group: `efficiency-${c.name}`,
          target: setup.kind,
          workload: c.workload,
          concurrency: c.workers,
          replicas: setup.replicas,
          round: 1,
        },
        {
          targets: target.urls,
          workload: c.workload,
          concurrency: c.workers,
          warmupMs: 0,
          durationMs: c.global ? s.windows.global : s.windows.hot,
          // Held clients give up when the window closes, so nothing sent after it counts.
          end: 'abort',
          drainMs: 0,
          seed: 1,
        },
        target,
        fake,
      );
      // Counted from the fake's reset just before the run, so the first burst is in whatever the timing of the
      // first snapshot; requests that got a 429 used no slot and do not count as achieved.
      const f = run.rec.fake;
      const achieved = ((f.totalSinceReset - f.limitedSinceReset) * 1000) / run.rec.windowMs;
      rows.push({
        case: c.name,
        distance: c.distance,
        goal: c.goal,
        global: c.global,
        target: setup.kind,
        replicas: setup.replicas,
        achievedPerSecond: achieved,
        idealPerSecond: c.ideal,
        ratio: achieved / c.ideal,
        limitedAtFake: run.rec.fake.limitedSinceReset,
        limitedByScope: run.rec.fake.limitedSinceResetByScope,
        busiestWindow: run.rec.fake.busiestWindow,
        clientStatuses: run.rec.load.statuses,
        foreignCores: run.rec.foreignCores,
      });
    } finally {
      await target.stop();
    }
  }
  return rows;
}
