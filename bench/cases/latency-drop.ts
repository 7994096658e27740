/**
 * (d) Twenty bot tokens saturate their global windows while Discord's answers take 900 ms, then answers drop to
 * 5 ms mid-run. While slow, the upstream pool (UPSTREAM_CONNECTIONS) is what limits: nobody can do better than
 * connections ÷ latency. When answers speed up, requests that were admitted while slow must not all land in one
 * second: a limiter that times windows from its decisions sends them together and draws global 429s.
 *
 * Measured at the fake: 2xx per second in a slow stretch and, per token, in a fast stretch after the switch has
 * settled; every 429 of the whole run.
 */
import type { Harness, Target } from '../lib/harness.js';
import { type FakeStats, fakeControl, fakeStats } from '../lib/observe.js';
import { sleep } from '../lib/procs.js';
import type { Session } from '../lib/session.js';
import type { LoadSpec } from '../lib/spec.js';
import { TOKENS20 } from '../lib/workloads.js';

export const LATENCY_DROP = {
  slowMs: 900,
  fastMs: 5,
  workers: 800,
  connections: 256,
  perToken: 50,
  durationMs: 14_000,
  /** After the run starts: a slow stretch, the switch, settling, a fast stretch (all inside the window). */
  slowFrom: 2000,
  switchAt: 6000,
  fastFrom: 7500,
  fastTo: 12_500,
} as const;

export interface LatencyDropRow {
  readonly target: string;
  readonly replicas: number;
  readonly slowPerSecond: number;
  /** Pool bound while slow: connections × replicas ÷ latency. */
  readonly slowBound: number;
  readonly fastPerToken: number[];
  readonly limited: Record<string, number>;
  readonly busiestWindow: number;
}

type Fake = Awaited<ReturnType<Harness['fake']>>;
/** Runs one measured load (`Session.record`) and gives back the fake's counts since its reset. */
type Measure = (
  target: Target,
  fake: Fake,
  spec: LoadSpec,
  replicas: number,
) => Promise<{ limited: Record<string, number>; busiestWindow: number }>;

const ok = (s: FakeStats) => Object.values(s.okByIdentity).reduce((a, b) => a + b, 0);

export async function latencyDrop(
  h: Harness,
  setups: readonly { kind: string; replicas: number }[],
  record: Measure,
): Promise<LatencyDropRow[]> {
  const d = LATENCY_DROP;
  const fake = await h.fake('latency-drop', `fixed:${d.slowMs}`, d.perToken);
  const rows: LatencyDropRow[] = [];
  try {
    for (const setup of setups) {
      if (setup.kind === 'proxy-redis') await (await h.redis()).client.flushall();
      await fakeControl(fake.url, 'latency', { kind: 'fixed', ms: d.slowMs });
      await fakeControl(fake.url, 'reset');
      const target = await h.target(setup.kind, fake.url, undefined, setup.replicas);
      try {
        const started = performance.now();
        const at = (ms: number) => sleep(Math.max(0, started + ms - performance.now()));
        const run = record(
          target,
          fake,
          {
            targets: target.urls,
            workload: 'tokens20',
            concurrency: d.workers,
            warmupMs: 0,
            durationMs: d.durationMs,
            end: 'abort',
            drainMs: 0,
            seed: 1,
          },
          setup.replicas,
        );
        await at(d.slowFrom);
        const a = await fakeStats(fake.url);
        const aAt = performance.now();
        await at(d.switchAt);
        const b = await fakeStats(fake.url);
        const slowPerSecond = ((ok(b) - ok(a)) * 1000) / (performance.now() - aAt);
        await fakeControl(fake.url, 'latency', { kind: 'fixed', ms: d.fastMs });
        await at(d.fastFrom);
        const c = await fakeStats(fake.url);
        const cAt = performance.now();
        await at(d.fastTo);
        const e = await fakeStats(fake.url);
        const seconds = (performance.now() - cAt) / 1000;
        const fastPerToken = Object.keys(e.okByIdentity)
          .map((id) => ((e.okByIdentity[id] ?? 0) - (c.okByIdentity[id] ?? 0)) / seconds)
          .sort((x, y) => x - y);
        const end = await run;
        rows.push({
          target: setup.kind,
          replicas: setup.replicas,
          slowPerSecond,
          slowBound: (d.connections * setup.replicas * 1000) / d.slowMs,
          // A token that got nothing through in the fast stretch is not in the counts at all.
          fastPerToken: [...Array(Math.max(0, TOKENS20 - fastPerToken.length)).fill(0), ...fastPerToken],
          limited: end.limited,
          busiestWindow: end.busiestWindow,
        });
      } finally {
        await target.stop();
      }
    }
  } finally {
    await h.stopFake('latency-drop');
  }
  return rows;
}

/** The case as `npm run bench` runs it: in process and on three Redis replicas, each load kept in the session. */
export function latencyDropCase(
  s: Session,
  setups: readonly { kind: string; replicas: number }[],
): Promise<LatencyDropRow[]> {
  return latencyDrop(s.h, setups, async (target, fake, spec, replicas) => {
    const base = { group: 'latency-drop', target: target.name, workload: spec.workload, round: 1 };
    const run = await s.record({ ...base, concurrency: spec.concurrency, replicas }, spec, target, fake);
    const f = run.rec.fake;
    return { limited: f.limitedSinceResetByScope, busiestWindow: f.busiestWindow };
  });
}
