/**
 * The goals the benchmark checks (issue 6 §3, issue 10, issue 13), each with the figure it read and a PASS/FAIL verdict,
 * or SKIP when the run that gives the figure was not part of this benchmark.
 */
import { GLOBAL_LIMIT } from './cases/efficiency.js';
import { LATENCY_DROP } from './cases/latency-drop.js';
import { LOW_LOAD, ROUTES } from './cases/overhead.js';
import { HELD } from './cases/scale.js';
import { fix, int, mb, ratio } from './lib/format.js';
import { label, redisPerRequest, type Session } from './lib/session.js';
import { TOKENS20 } from './lib/workloads.js';
import type { Results } from './report.js';

export interface Goal {
  readonly name: string;
  readonly value: number | undefined;
  readonly pass: boolean | undefined;
  readonly detail: string;
}

export function goals(s: Session, res: Results): Goal[] {
  const list: Goal[] = [];
  const tp = (target: string, workload: string) =>
    s.find('overhead-cpu', target, workload, 64)?.rec.load.throughput ?? Number.NaN;
  const atLeast = (name: string, value: number, bound: number, detail: string): Goal => ({
    name,
    value: Number.isFinite(value) ? value : undefined,
    pass: Number.isFinite(value) ? value >= bound : undefined,
    detail,
  });
  list.push(
    atLeast(
      'in-process ≥ 0.8× bare, unbucketed',
      tp('proxy-memory', 'unbucketed') / tp('bare', 'unbucketed'),
      0.8,
      'overhead-cpu @64',
    ),
  );
  list.push(
    atLeast(
      'in-process ≥ 0.7× bare, bucketed',
      tp('proxy-memory', 'bucketed') / tp('bare', 'bucketed'),
      0.7,
      'overhead-cpu @64',
    ),
  );
  list.push(
    atLeast(
      'Redis ≥ 0.5× bare, bucketed',
      tp('proxy-redis', 'bucketed') / tp('bare', 'bucketed'),
      0.5,
      'overhead-cpu @64',
    ),
  );
  for (const workload of ROUTES) {
    list.push(
      atLeast(
        `in-process ≥ 2× @discordjs/proxy, ${workload}`,
        tp('proxy-memory', workload) / tp('discordjs', workload),
        2,
        'overhead-cpu @64',
      ),
    );
  }
  for (const d of res.latencyDrop) {
    const limitedCount = Object.values(d.limited).reduce((a, b) => a + b, 0);
    const slowest = d.fastPerToken[0] ?? 0;
    const least = 0.8 * LATENCY_DROP.perToken;
    list.push({
      name: `latency drop ${LATENCY_DROP.slowMs} -> ${LATENCY_DROP.fastMs} ms, ${label(d.target)} ×${d.replicas}: zero 429s, fast ≥ ${least}/s per token, slow ≥ 0.9 × min(pool, tokens' limits)`,
      value: slowest / LATENCY_DROP.perToken,
      pass:
        limitedCount === 0 &&
        slowest >= least &&
        d.slowPerSecond >= 0.9 * Math.min(d.slowBound, TOKENS20 * LATENCY_DROP.perToken),
      detail: `slow ${fix(d.slowPerSecond, 0)}/s (pool allows ${fix(d.slowBound, 0)}/s), slowest token fast ${fix(slowest, 1)}/s, 429s ${limitedCount}, busiest 1 s ${d.busiestWindow}`,
    });
  }
  for (const e of res.efficiency) {
    const zero = e.limitedAtFake === 0;
    const withinGlobal = !e.global || e.busiestWindow <= GLOBAL_LIMIT;
    list.push({
      name: `efficiency ${e.case}, ${label(e.target)} ×${e.replicas}: ≥ ${e.goal} and zero 429s${e.global ? ', busiest 1 s ≤ 50' : ''}`,
      value: e.ratio,
      pass: e.ratio >= e.goal && zero && withinGlobal,
      detail: `${fix(e.achievedPerSecond, 2)}/s of ${e.idealPerSecond}/s, 429s at fake ${e.limitedAtFake}, busiest 1 s ${e.busiestWindow}`,
    });
  }
  const redisRun = s.find('overhead-cpu', 'proxy-redis', 'bucketed', 64);
  if (redisRun?.rec.storeOps && redisRun.rec.redisCommands) {
    const admitted = redisRun.rec.fake.arrivals;
    const admits = (redisRun.rec.storeOps.admit ?? 0) / admitted;
    const scripts =
      ((redisRun.rec.redisCommands.evalsha ?? 0) + (redisRun.rec.redisCommands.eval ?? 0)) / admitted;
    list.push({
      name: 'one Redis round trip to admit a request (admit calls per admitted ≤ 1.1)',
      value: admits,
      pass: admits <= 1.1,
      detail: `bucketed @64: ${fix(admits, 2)} admit calls/req; all script calls ${fix(scripts, 2)}/req (admit + learn)`,
    });
  }
  list.push(...redisGoals(s));
  if (res.held) {
    const hd = res.held;
    list.push({
      name: `${int(HELD)} held requests in < 200 MB (proxy RSS while holding)`,
      value: hd.rssHeld / 1024 / 1024,
      pass: hd.reached >= HELD && hd.rssHeld < 200 * 1024 * 1024,
      detail: `${int(hd.reached)} held, RSS ${mb(hd.rssHeld)} (+${mb(hd.rssHeld - hd.rssBefore)} over idle)`,
    });
  }
  return list;
}

/**
 * Issue 13: Redis mode's cost. Throughput against the bare pass-through on both CPU-bound routes and with 60 ms
 * upstream latency at 256 in flight, script calls per forwarded request for one hot token (one replica and
 * three), and the median latency the proxy adds when it is not busy. The figures for three replicas and for the
 * in-process proxy are in the details, to read beside the goal.
 */
function redisGoals(s: Session): Goal[] {
  const list: Goal[] = [];
  const rec = (group: string, target: string, route: string, concurrency: number, replicas = 1) =>
    s.find(group, target, route, concurrency, replicas)?.rec;
  const tpRatio = (group: string, route: string, concurrency: number, replicas: number) =>
    (rec(group, 'proxy-redis', route, concurrency, replicas)?.load.throughput ?? Number.NaN) /
    (rec(group, 'bare', route, concurrency)?.load.throughput ?? Number.NaN);
  const verdict = (value: number, ok: (v: number) => boolean) => ({
    value: Number.isFinite(value) ? value : undefined,
    pass: Number.isFinite(value) ? ok(value) : undefined,
  });
  const throughput: Array<[string, string, number, number, string]> = [
    ['overhead-cpu', 'unbucketed', 64, 0.85, 'CPU-bound'],
    ['overhead-cpu', 'bucketed', 64, 0.85, 'CPU-bound'],
    ['overhead-latency', 'bucketed', 256, 0.95, '60 ms upstream'],
  ];
  for (const [group, route, concurrency, bound, what] of throughput) {
    list.push({
      name: `Redis ×1 ≥ ${bound}× bare, ${route}, ${what} (issue 13)`,
      ...verdict(tpRatio(group, route, concurrency, 1), (v) => v >= bound),
      detail: `${group} @${concurrency}; Redis ×3 ${ratio(tpRatio(group, route, concurrency, 3))} bare`,
    });
  }
  for (const replicas of [1, 3]) {
    for (const route of ROUTES) {
      const r = rec('overhead-cpu', 'proxy-redis', route, 64, replicas);
      const per = r ? redisPerRequest(r) : undefined;
      list.push({
        name: `Redis ×${replicas} ≤ 0.5 Redis calls per proxied request, one hot token, ${route} (issue 13)`,
        ...verdict(per?.calls ?? Number.NaN, (v) => v <= 0.5),
        detail: `overhead-cpu @64: ${fix(per?.calls, 2)} script calls/req, ${fix(per?.commands, 1)} commands/req, ${fix(r?.targetCpuUsPerRequest, 0)} proxy CPU µs/req`,
      });
    }
  }
  const p50 = (target: string, route: string, replicas = 1) =>
    rec('overhead-low', target, route, LOW_LOAD.concurrency, replicas)?.load.latency.p50 ?? Number.NaN;
  for (const route of ROUTES) {
    const added = (target: string, replicas = 1) => p50(target, route, replicas) - p50('bare', route);
    list.push({
      name: `Redis ×1 adds ≤ 1 ms to the p50 of bare at low load, ${route} (issue 13)`,
      ...verdict(added('proxy-redis'), (v) => v <= 1),
      detail: `overhead-low @${LOW_LOAD.concurrency}, ms: bare p50 ${fix(p50('bare', route), 2)}; added: Redis ×3 ${fix(added('proxy-redis', 3), 2)}, in-process ${fix(added('proxy-memory'), 2)}`,
    });
  }
  return list;
}
