/**
 * What every case shares during one `npm run bench`: the options it was started with, the window lengths they
 * imply, and the list of measured runs that the report reads back. A case records each load it runs here, so
 * that the tables, the goals and the results file all read the same figures.
 */
import { fix } from './format.js';
import { type Harness, measure, type RunRecord, type Target } from './harness.js';
import type { LoadSpec, WorkloadKind } from './spec.js';

/** Window lengths, ms. Quick mode halves most of them: noisier figures, same cases. */
export interface Windows {
  readonly warmup: number;
  readonly cpu: number;
  readonly latency: number;
  readonly low: number;
  readonly hot: number;
  readonly global: number;
  readonly mixed: number;
  readonly hold: number;
  readonly buckets: number;
}

export interface Settings {
  readonly quick: boolean;
  readonly only: readonly string[];
  readonly pinned: boolean;
  readonly windows: Windows;
  /** Interleaved rounds of each overhead run; the best is reported. */
  readonly rounds: { readonly cpu: number; readonly latency: number };
}

export function settings(quick: boolean, only: readonly string[], pinned: boolean): Settings {
  return {
    quick,
    only,
    pinned,
    rounds: quick ? { cpu: 1, latency: 1 } : { cpu: 2, latency: 1 },
    windows: quick
      ? {
          warmup: 500,
          cpu: 2000,
          latency: 2000,
          low: 2000,
          hot: 4000,
          global: 3000,
          mixed: 2000,
          hold: 12_000,
          buckets: 20_000,
        }
      : {
          warmup: 1000,
          cpu: 3000,
          latency: 3000,
          low: 3000,
          hot: 8000,
          global: 6000,
          mixed: 5000,
          hold: 15_000,
          buckets: 100_000,
        },
  };
}

/** A run during which processes outside the benchmark used this much CPU (in cores) is marked as disturbed. */
export const DISTURBED_CORES = 0.3;
/** Extra overhead runs, per overhead case, for target/route pairs that were disturbed in every round. */
export const MAX_REPAIRS = 8;

export interface Run {
  readonly id: string;
  readonly group: string;
  readonly target: string;
  readonly workload: WorkloadKind;
  readonly concurrency: number;
  readonly replicas: number;
  /** Overhead cases run each target in several interleaved rounds; the best is reported. */
  readonly round: number;
  readonly rec: RunRecord;
}

const LABEL: Record<string, string> = {
  direct: 'direct to fake',
  bare: 'bare pass-through',
  'proxy-memory': 'proxy (in-process)',
  'proxy-redis': 'proxy (Redis)',
  'proxy-redis-nolease': 'proxy (Redis, no leases)',
  'proxy-redis-unbatched': 'proxy (Redis, unbatched)',
  discordjs: '@discordjs/proxy',
};

/** How a target kind is named in tables. */
export function label(kind: string): string {
  return LABEL[kind] ?? kind;
}

/**
 * Every target kind that keeps its state in Redis, the unbatched variant included: its runs read Redis's
 * counters (and its CPU), so that commands per request can be shown for each of them.
 */
export const usesRedis = (kind: string): boolean => kind.startsWith('proxy-redis');

/** A target as its row is named: Redis modes with their number of replicas (×1, ×3). */
export function setupLabel(kind: string, replicas: number): string {
  return usesRedis(kind) ? `${label(kind)} ×${replicas}` : label(kind);
}

/**
 * Redis's work per request the proxy forwarded in the window (requests that reached the fake): `calls` are the
 * script calls (EVALSHA, EVAL), one round trip each however many requests a batch decides; `commands` is every
 * command Redis executed, those run inside the scripts included (INFO commandstats counts both). Both come from
 * the difference of INFO commandstats between the window's two snapshots, so with several replicas on one Redis
 * they are the sum over all of them. Undefined for runs that do not use Redis.
 */
export function redisPerRequest(rec: RunRecord): { calls: number; commands: number } | undefined {
  const c = rec.redisCommands;
  if (!c || rec.fake.arrivals === 0) return undefined;
  const calls = (c.evalsha ?? 0) + (c.eval ?? 0);
  const commands = Object.values(c).reduce((a, b) => a + b, 0);
  return { calls: calls / rec.fake.arrivals, commands: commands / rec.fake.arrivals };
}

export function progress(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

function describe(run: Run): string {
  const r = run.rec;
  const bits = [
    `${run.id}: ${fix(r.load.throughput, 0)} ok/s`,
    `p50 ${fix(r.load.latency.p50, 2)} ms p99 ${fix(r.load.latency.p99, 2)} ms`,
    `statuses ${JSON.stringify(r.load.statuses)}`,
    `cpu ${Object.entries(r.cpuCores)
      .map(([k, v]) => `${k}=${fix(v * 100, 0)}%`)
      .join(' ')}`,
    `foreign ${fix(r.foreignCores * 100, 0)}%`,
  ];
  if (Object.keys(r.load.errors).length) bits.push(`errors ${JSON.stringify(r.load.errors)}`);
  if (r.fake.limitedSinceReset) bits.push(`429s at fake ${JSON.stringify(r.fake.limitedSinceResetByScope)}`);
  if (r.warnings.count)
    bits.push(`${r.warnings.count} warnings in target logs, e.g. ${r.warnings.samples[0]}`);
  if (r.crashed.length) bits.push(`CRASHED ${r.crashed.join(' | ')}`);
  return bits.join(', ');
}

type Fake = Awaited<ReturnType<Harness['fake']>>;

export class Session {
  readonly runs: Run[] = [];
  readonly errors: Array<{ case: string; error: string }> = [];

  constructor(
    readonly h: Harness,
    readonly settings: Settings,
  ) {}

  get windows(): Windows {
    return this.settings.windows;
  }

  /** Runs one load against `target`, keeps it in `runs` and prints a line about it on stderr. */
  async record(base: Omit<Run, 'rec' | 'id'>, spec: LoadSpec, target: Target, fake: Fake): Promise<Run> {
    const rec = await measure(this.h, spec, { target, fake, redis: usesRedis(base.target) });
    const replicas = base.replicas > 1 ? `×${base.replicas}` : '';
    const round = base.round > 1 ? ` (round ${base.round})` : '';
    const id = `${base.group}/${base.target}${replicas}/${base.workload}@${base.concurrency}${round}`;
    const run: Run = { ...base, id, rec };
    this.runs.push(run);
    progress(describe(run));
    return run;
  }

  matching(group: string, target: string, workload: string, concurrency: number, replicas = 1): Run[] {
    return this.runs.filter(
      (r) =>
        r.group === group &&
        r.target === target &&
        r.workload === workload &&
        r.concurrency === concurrency &&
        r.replicas === replicas,
    );
  }

  /**
   * The round with the highest throughput among those that ran without much else busy on the machine (or among
   * all, when none did): other load only ever makes a round slower.
   */
  find(group: string, target: string, workload: string, concurrency: number, replicas = 1): Run | undefined {
    const all = this.matching(group, target, workload, concurrency, replicas);
    const clean = all.filter((r) => r.rec.foreignCores < DISTURBED_CORES);
    return (clean.length ? clean : all).reduce<Run | undefined>(
      (best, r) => (!best || r.rec.load.throughput > best.rec.load.throughput ? r : best),
      undefined,
    );
  }

  isBest(run: Run): boolean {
    return this.find(run.group, run.target, run.workload, run.concurrency, run.replicas) === run;
  }
}
