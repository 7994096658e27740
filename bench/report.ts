/**
 * What `npm run bench` prints and writes: one plain-text table per case, the goal verdicts and the results JSON,
 * all read from the runs the cases recorded in the session and the rows they returned.
 */
import type { EfficiencyRow } from './cases/efficiency.js';
import { LATENCY_DROP, type LatencyDropRow } from './cases/latency-drop.js';
import { LOW_LOAD, OVERHEAD_TARGETS, type OverheadGroup, ROUTES } from './cases/overhead.js';
import type { BucketsResult, HeldResult, MixedExtra } from './cases/scale.js';
import { goals } from './goals.js';
import { fix, int, mb, ratio, rounded, table } from './lib/format.js';
import { startFlags } from './lib/harness.js';
import type { Machine } from './lib/machine.js';
import {
  DISTURBED_CORES,
  label,
  MAX_REPAIRS,
  redisPerRequest,
  type Session,
  setupLabel,
} from './lib/session.js';
import { HOLD_CHANNELS, MIXED_CHANNELS, MIXED_TOKENS, TOKENS20 } from './lib/workloads.js';

/** What the cases returned besides the runs they recorded in the session. */
export interface Results {
  machine?: Machine;
  efficiency: EfficiencyRow[];
  latencyDrop: LatencyDropRow[];
  mixed: MixedExtra[];
  buckets?: BucketsResult;
  held?: HeldResult;
}

function overheadTable(s: Session, group: string, concurrency: number): string | undefined {
  const rows: string[][] = [];
  for (const workload of ROUTES) {
    const bare = s.find(group, 'bare', workload, concurrency);
    for (const { kind, replicas } of OVERHEAD_TARGETS) {
      const run = s.find(group, kind, workload, concurrency, replicas);
      if (!run) continue;
      const r = run.rec;
      const bad = Object.entries(r.load.statuses)
        .filter(([s]) => !s.startsWith('2'))
        .reduce((a, [, n]) => a + n, 0);
      const redis = redisPerRequest(r);
      rows.push([
        workload,
        setupLabel(kind, replicas),
        fix(r.load.throughput, 0),
        fix(r.load.latency.p50, 2),
        fix(r.load.latency.p99, 2),
        r.targetCpuUsPerRequest === undefined ? '-' : fix(r.targetCpuUsPerRequest, 0),
        redis ? fix(redis.calls, 2) : '-',
        redis ? fix(redis.commands, 1) : '-',
        kind === 'direct' || !bare ? '-' : ratio(r.load.throughput / bare.rec.load.throughput),
        String(bad + Object.values(r.load.errors).reduce((a, b) => a + b, 0)),
        String(Object.values(r.fake.limited).reduce((a, b) => a + b, 0)),
        `${fix((r.cpuCores.loadgen ?? 0) * 100, 0)}%`,
        `${fix(r.foreignCores * 100, 0)}%${r.foreignCores >= DISTURBED_CORES ? '!' : ''}`,
      ]);
    }
  }
  if (rows.length === 0) return undefined;
  return table(
    [
      'route',
      'target',
      'ok req/s',
      'p50 ms',
      'p99 ms',
      'target CPU µs/req',
      'Redis calls/req',
      'Redis cmds/req',
      'vs bare',
      'non-2xx',
      '429@fake',
      'loadgen CPU',
      'other CPU',
    ],
    rows,
  );
}

/** The overhead tables, in the order they are printed: case, concurrency, title. */
const OVERHEAD_TABLES: ReadonlyArray<readonly [OverheadGroup, number, string]> = [
  ['overhead-cpu', 64, 'Overhead, CPU-bound: fake latency none, 64 concurrent'],
  ['overhead-latency', 32, 'Overhead, realistic latency: fake log-normal (GET median 60 ms), 32 concurrent'],
  [
    'overhead-latency',
    256,
    'Overhead, realistic latency: fake log-normal (GET median 60 ms), 256 concurrent',
  ],
  [
    'overhead-low',
    LOW_LOAD.concurrency,
    `Overhead, low load: fake answers after a fixed ${LOW_LOAD.latencyMs} ms, ${LOW_LOAD.concurrency} concurrent`,
  ],
];

function overheadSections(s: Session): string[] {
  const out: string[] = [];
  const w = s.windows;
  let explained = false;
  for (const [group, concurrency, title] of OVERHEAD_TABLES) {
    const t = overheadTable(s, group, concurrency);
    if (!t) continue;
    const ms = group === 'overhead-cpu' ? w.cpu : group === 'overhead-low' ? w.low : w.latency;
    const rounds = group === 'overhead-cpu' ? s.settings.rounds.cpu : s.settings.rounds.latency;
    const best = `, ${rounds > 1 ? `best of ${rounds} interleaved rounds` : 'one round'}${s.settings.quick ? '' : `, runs disturbed by other load re-run up to ${MAX_REPAIRS} times`}`;
    out.push('', `${title} (${ms / 1000} s after ${w.warmup / 1000} s warm-up${best})`, t);
    const run = (target: string, route: string, replicas = 1) =>
      s.find(group, target, route, concurrency, replicas)?.rec;
    const tp = (target: string, route: string, replicas = 1) =>
      run(target, route, replicas)?.load.throughput ?? Number.NaN;
    const cpu = (target: string, route: string, replicas = 1) =>
      run(target, route, replicas)?.targetCpuUsPerRequest ?? Number.NaN;
    const lines: string[] = [];
    for (const r of ROUTES) {
      lines.push(
        `  ${r}: proxy/bare ${ratio(tp('proxy-memory', r) / tp('bare', r))}, redis/bare ${ratio(tp('proxy-redis', r) / tp('bare', r))}, ` +
          `redis×3/bare ${ratio(tp('proxy-redis', r, 3) / tp('bare', r))}, ` +
          `proxy/discordjs ${ratio(tp('proxy-memory', r) / tp('discordjs', r))}, redis/discordjs ${ratio(tp('proxy-redis', r) / tp('discordjs', r))}, ` +
          `proxy/direct ${ratio(tp('proxy-memory', r) / tp('direct', r))}`,
      );
    }
    out.push(
      `(other CPU: CPU that processes outside the benchmark used during the run, in % of a core; ! = over ${DISTURBED_CORES * 100}%)`,
    );
    // The per-request columns are new to most readers of these tables: said once, under the first of them.
    if (!explained) {
      explained = true;
      out.push(
        '(target CPU µs/req: CPU of the target’s processes per 2xx, the three replicas together for ×3; Redis calls/req:',
        ' EVALSHA + EVAL calls per request that reached the fake; Redis cmds/req: every command Redis ran, those inside',
        ' the scripts too, per such request; both from INFO commandstats at the start and end of the window)',
      );
    }
    out.push('Ratios of ok req/s, same run:', ...lines);
    if (group === 'overhead-cpu') {
      const cpuLines = ROUTES.map(
        (r) =>
          `  ${r}: proxy ${ratio(cpu('bare', r) / cpu('proxy-memory', r))}, redis ${ratio(cpu('bare', r) / cpu('proxy-redis', r))}, ` +
          `redis×3 ${ratio(cpu('bare', r) / cpu('proxy-redis', r, 3))}, ` +
          `proxy/discordjs ${ratio(cpu('discordjs', r) / cpu('proxy-memory', r))}`,
      );
      out.push(
        'Ratios of CPU per request (bare µs/req ÷ target µs/req: the throughput ratio if each target had its cores to itself):',
        ...cpuLines,
      );
    }
    if (group === 'overhead-low') {
      const p50 = (target: string, route: string, replicas = 1) =>
        run(target, route, replicas)?.load.latency.p50 ?? Number.NaN;
      const added = (target: string, route: string, replicas = 1) => {
        const ms = p50(target, route, replicas) - p50('bare', route);
        return Number.isFinite(ms) ? `${ms >= 0 ? '+' : ''}${fix(ms, 2)} ms` : 'n/a';
      };
      out.push(
        'p50 added over the bare pass-through:',
        ...ROUTES.map(
          (r) =>
            `  ${r}: in-process ${added('proxy-memory', r)}, Redis ×1 ${added('proxy-redis', r)}, Redis ×3 ${added('proxy-redis', r, 3)}`,
        ),
      );
    }
  }
  return out;
}

export function render(s: Session, res: Results): string {
  const w = s.windows;
  const out: string[] = [];
  const m = res.machine;
  if (m) {
    out.push(
      `Machine: ${m.nproc} CPUs (${m.cpuModel}), ${m.memoryGiB} GiB, Node ${m.node}, Redis ${m.redis}, Linux ${m.kernel}; ` +
        `background load before start ${fix(m.backgroundCores * 100, 0)}% of a core`,
    );
  }
  out.push(
    `Mode: ${s.settings.quick ? 'quick' : 'full'}${s.settings.only.length ? `, only ${s.settings.only.join(',')}` : ''}${s.settings.pinned ? ', pinned (targets on CPU 1, rest on CPU 0)' : ', unpinned'}; proxy started as \`node ${[...startFlags(), 'dist/main.js'].join(' ')}\` (npm start)`,
  );
  out.push(...overheadSections(s));

  if (res.efficiency.length) {
    out.push(
      '',
      `Efficiency (bench/cases/efficiency.ts): achieved = 2xx at the fake per second of the window, ideal = what the ` +
        `binding limit allows; ${w.hot / 1000} s per bucket case, ${w.global / 1000} s per global case`,
      ...[...new Map(res.efficiency.map((e) => [e.case, e.distance])).entries()].map(
        ([name, distance]) => `  ${name}: ${distance}`,
      ),
      table(
        [
          'case',
          'target',
          'achieved/s',
          'ideal/s',
          'achieved/ideal',
          '429s at fake',
          'busiest 1 s',
          'client statuses',
          'other CPU',
        ],
        res.efficiency.map((e) => [
          e.case,
          `${label(e.target)} ×${e.replicas}`,
          fix(e.achievedPerSecond, 2),
          fix(e.idealPerSecond, 0),
          fix(e.ratio, 3),
          e.limitedAtFake === 0 ? '0' : `${e.limitedAtFake} ${JSON.stringify(e.limitedByScope)}`,
          String(e.busiestWindow),
          JSON.stringify(e.clientStatuses),
          `${fix(e.foreignCores * 100, 0)}%`,
        ]),
      ),
    );
  }

  if (res.latencyDrop.length) {
    const d = LATENCY_DROP;
    out.push(
      '',
      `Latency drop (bench/cases/latency-drop.ts): ${TOKENS20} tokens at ${d.perToken}/s each, ${d.workers} workers, answers ` +
        `${d.slowMs} ms then ${d.fastMs} ms from ${d.switchAt / 1000} s; slow = 2xx/s at the fake ${d.slowFrom / 1000}–${d.switchAt / 1000} s, ` +
        `fast = per token ${d.fastFrom / 1000}–${d.fastTo / 1000} s; pool = ${d.connections} connections per replica ÷ ${d.slowMs} ms`,
      table(
        [
          'target',
          'slow/s',
          'pool allows/s',
          'fast/s per token (min, median, max)',
          '429s at fake',
          'busiest 1 s',
        ],
        res.latencyDrop.map((row) => [
          `${label(row.target)} ×${row.replicas}`,
          fix(row.slowPerSecond, 0),
          fix(row.slowBound, 0),
          [0, Math.floor(row.fastPerToken.length / 2), row.fastPerToken.length - 1]
            .map((k) => fix(row.fastPerToken[k] ?? 0, 1))
            .join(' / '),
          JSON.stringify(row.limited),
          String(row.busiestWindow),
        ]),
      ),
    );
  }

  const mixedRuns = s.runs.filter((r) => r.group === 'scale-mixed');
  if (mixedRuns.length) {
    out.push(
      '',
      `Scale, mixed: ${int(MIXED_TOKENS)} tokens × ${MIXED_CHANNELS} channels (40% GET messages, 20% GET channel, 20% POST message, 10% PUT reaction, 10% GET @me), 256 concurrent, fake log-normal, ${w.mixed / 1000} s`,
      table(
        [
          'target',
          'ok req/s',
          'p50 ms',
          'p99 ms',
          'statuses',
          '429s at fake',
          'target CPU µs/req',
          'RSS',
          'Redis keys',
          'Redis used',
        ],
        mixedRuns.map((r) => {
          const extra = res.mixed.find((x) => x.target === r.target);
          return [
            label(r.target),
            fix(r.rec.load.throughput, 0),
            fix(r.rec.load.latency.p50, 1),
            fix(r.rec.load.latency.p99, 1),
            JSON.stringify(r.rec.load.statuses),
            JSON.stringify(r.rec.fake.limited),
            r.rec.targetCpuUsPerRequest === undefined ? '-' : fix(r.rec.targetCpuUsPerRequest, 0),
            r.rec.rssBytes.length ? mb(r.rec.rssBytes[0]) : '-',
            extra?.redisKeys === undefined ? '-' : int(extra.redisKeys),
            extra?.redisUsedMemory === undefined ? '-' : mb(extra.redisUsedMemory),
          ];
        }),
      ),
    );
  }
  if (res.buckets) {
    const b = res.buckets;
    out.push(
      '',
      `Scale, Redis memory: ${int(b.buckets)} buckets (${int(b.identities)} identities × 100 channels) created through the ${b.method}`,
      `  used_memory +${mb(b.usedMemoryDelta)} = ${fix(b.bytesPerBucket, 0)} bytes per bucket (all keys, per-identity ones included); ` +
        `${int(b.keysDelta)} keys; one bucket hash alone (MEMORY USAGE, sample) ${fix(b.bucketKeyBytes, 0)} bytes; created in ${fix(b.createSeconds, 1)} s`,
    );
  }
  if (res.held) {
    const hd = res.held;
    out.push(
      '',
      `Scale, held requests: ${int(hd.target)} clients on ${HOLD_CHANNELS} exhausted buckets (1 per 20 s) of one in-process replica`,
      `  held ${int(hd.reached)} after ${fix(hd.secondsToHold, 1)} s; RSS ${mb(hd.rssBefore)} idle -> ${mb(hd.rssHeld)} holding ` +
        `(+${mb(hd.rssHeld - hd.rssBefore)}, ${fix(hd.bytesPerHeld / 1024, 1)} KiB per held request); heap used ${mb(hd.heapBefore)} -> ${mb(hd.heapHeld)}`,
      `  requests that reached the fake: ${hd.upstreamArrivals} (429s there: ${hd.limitedAtFake} ${JSON.stringify(hd.limitedByScope)}); after the clients aborted, held = ${hd.heldAfterAbort} ` +
        `(${hd.releasedAfterAbort ? 'released' : 'NOT released within 5 s'}); client statuses ${JSON.stringify(hd.statuses)}`,
    );
  }

  const costRows = s.runs
    .filter((r) => s.isBest(r) && r.rec.redisCommands && r.rec.fake.arrivals > 0)
    .map((r) => {
      const c = r.rec.redisCommands!;
      const admitted = r.rec.fake.arrivals;
      const all = Object.values(c).reduce((a, b) => a + b, 0);
      const scripts = (c.evalsha ?? 0) + (c.eval ?? 0);
      const ops = r.rec.storeOps ?? {};
      return [
        r.id,
        int(admitted),
        fix((ops.admit ?? Number.NaN) / admitted, 2),
        fix((ops.learn ?? Number.NaN) / admitted, 2),
        fix(scripts / admitted, 2),
        fix(all / admitted, 1),
        fix(all / (r.rec.windowMs / 1000), 0),
        fix(((r.rec.cpuCores.redis ?? Number.NaN) * r.rec.windowMs * 1000) / admitted, 0),
      ];
    });
  if (costRows.length) {
    out.push(
      '',
      'Cost per request: Redis (admitted = requests that reached the fake in the window)',
      table(
        [
          'run',
          'admitted',
          'admit calls/req',
          'learn calls/req',
          'EVALSHA/req',
          'Redis cmds/req (in scripts too)',
          'Redis cmds/s',
          'Redis CPU µs/req',
        ],
        costRows,
      ),
    );
  }
  const lagRows = s.runs
    .filter((r) => s.isBest(r) && r.rec.eventLoop && r.target.startsWith('proxy'))
    .map((r) => [
      r.id,
      fix(r.rec.load.throughput, 0),
      fix(r.rec.eventLoop!.p50, 1),
      fix(r.rec.eventLoop!.p99, 1),
      fix(r.rec.eventLoop!.max, 1),
      fix(r.rec.proxyTiming?.totalMs, 1),
      fix(r.rec.proxyTiming?.holdMs, 1),
      r.rec.targetCpuUsPerRequest === undefined ? '-' : fix(r.rec.targetCpuUsPerRequest, 0),
      // The run's proxy processes are its only roles named proxy-*: with several replicas, their sum.
      `${fix(
        Object.entries(r.rec.cpuCores)
          .filter(([k]) => k.startsWith('proxy'))
          .reduce((a, [, v]) => a + v, 0) * 100,
        0,
      )}%${r.replicas > 1 ? ' (all)' : ''}`,
    ]);
  if (lagRows.length) {
    out.push(
      '',
      'Cost per request: the proxy under load (event-loop delay from prom-client, worst replica; mean time in the proxy and held, of requests answered in the window)',
      table(
        [
          'run',
          'ok req/s',
          'lag p50 ms',
          'lag p99 ms',
          'lag max ms',
          'mean in proxy ms',
          'mean held ms',
          'CPU µs/req',
          'proxy CPU',
        ],
        lagRows,
      ),
    );
  }

  const g = goals(s, res);
  if (g.length) {
    out.push('', 'Goals (issue 6 §3, issue 10, issue 13):');
    for (const goal of g) {
      const verdict = goal.pass === undefined ? 'SKIP' : goal.pass ? 'PASS' : 'FAIL';
      out.push(
        `  ${verdict}  ${goal.name}: ${goal.value === undefined ? 'n/a' : fix(goal.value, 2)}  (${goal.detail})`,
      );
    }
  }
  const crashes = s.runs.filter((r) => r.rec.crashed.length);
  if (crashes.length || s.errors.length) {
    out.push('', 'Problems:');
    for (const r of crashes) out.push(`  ${r.id}: ${r.rec.crashed.join('\n    ')}`);
    for (const e of s.errors) out.push(`  ${e.case}: ${e.error}`);
  }
  return out.join('\n');
}

export function resultsJson(s: Session, res: Results): unknown {
  return rounded({
    timestamp: new Date().toISOString(),
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    machine: res.machine,
    mode: {
      quick: s.settings.quick,
      only: s.settings.only,
      pinned: s.settings.pinned,
      windowsMs: s.windows,
      proxyNodeFlags: startFlags(),
    },
    overhead: s.runs
      .filter((r) => r.group.startsWith('overhead') && s.isBest(r))
      .map((r) => ({
        case: r.group,
        target: r.target,
        route: r.workload,
        concurrency: r.concurrency,
        okPerSecond: r.rec.load.throughput,
        roundsOkPerSecond: s
          .matching(r.group, r.target, r.workload, r.concurrency)
          .map((x) => x.rec.load.throughput),
        p50Ms: r.rec.load.latency.p50,
        p99Ms: r.rec.load.latency.p99,
        targetCpuUsPerRequest: r.rec.targetCpuUsPerRequest,
        redisCallsPerRequest: redisPerRequest(r.rec)?.calls,
        redisCommandsPerRequest: redisPerRequest(r.rec)?.commands,
        nonOk:
          r.rec.load.ok === 0
            ? undefined
            : Object.fromEntries(Object.entries(r.rec.load.statuses).filter(([s]) => !s.startsWith('2'))),
        limitedAtFake: r.rec.fake.limited,
        loadgenCores: r.rec.cpuCores.loadgen,
        foreignCores: r.rec.foreignCores,
      })),
    efficiency: res.efficiency,
    latencyDrop: res.latencyDrop,
    mixed: s.runs
      .filter((r) => r.group === 'scale-mixed')
      .map((r) => ({
        target: r.target,
        okPerSecond: r.rec.load.throughput,
        p50Ms: r.rec.load.latency.p50,
        p99Ms: r.rec.load.latency.p99,
        statuses: r.rec.load.statuses,
        limitedAtFake: r.rec.fake.limited,
        ...res.mixed.find((m) => m.target === r.target),
      })),
    redisMemory: res.buckets,
    held: res.held,
    cost: s.runs
      .filter((r) => s.isBest(r) && (r.rec.eventLoop || r.rec.redisCommands))
      .map((r) => ({
        run: r.id,
        admitted: r.rec.fake.arrivals,
        storeOps: r.rec.storeOps,
        redisCommands: r.rec.redisCommands,
        eventLoopMs: r.rec.eventLoop,
        proxyTimingMs: r.rec.proxyTiming,
      })),
    goals: goals(s, res).map((g) => ({
      ...g,
      verdict: g.pass === undefined ? 'SKIP' : g.pass ? 'PASS' : 'FAIL',
    })),
    errors: s.errors,
  });
}
