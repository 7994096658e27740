/**
 * Closed-loop load generator, run in its own process so that it never shares an event loop with what it
 * measures: `concurrency` workers, each sending its next request as soon as its previous one has ended.
 *
 *   node --import tsx bench/loadgen.ts '<LoadSpec JSON>'
 *
 * Prints MARK_* lines (spec.ts) when the warm-up starts and the measured window opens and closes, then one
 * MARK_RESULT line with a LoadResult.
 */
import { type Dispatcher, Pool } from 'undici';
import {
  type LatencySummary,
  type LoadResult,
  type LoadSpec,
  MARK_RESULT,
  MARK_STARTED,
  MARK_WINDOW_CLOSED,
  MARK_WINDOW_OPEN,
} from './lib/spec.js';
import { workload } from './lib/workloads.js';

const spec = JSON.parse(process.argv[2] ?? '') as LoadSpec;
if (!Array.isArray(spec.targets) || spec.targets.length === 0) throw new Error('loadgen: no targets');

const pools = spec.targets.map(
  (url) =>
    new Pool(url, {
      // One connection per worker: requests never queue inside the client.
      connections: spec.concurrency,
      pipelining: 1,
      keepAliveTimeout: 60_000,
      headersTimeout: 120_000,
      bodyTimeout: 120_000,
      connect: { timeout: 30_000 },
    }),
);
const next = workload(spec.workload, spec.seed);

let phase: 'warmup' | 'window' | 'after' = 'warmup';
let seq = 0;
let sent = 0;
let inFlight = 0;
let windowStart = 0;
let windowEnd = 0;
let aborted = 0;
const latencies: number[] = [];
const statuses: Record<string, number> = {};
const errors: Record<string, number> = {};
const controllers = new Set<AbortController>();
/** The first answer of each non-2xx status, headers and body, so a report can say what it was. */
const samples: Record<string, string> = {};

function count(map: Record<string, number>, key: string): void {
  map[key] = (map[key] ?? 0) + 1;
}

async function once(worker: number): Promise<void> {
  const n = seq++;
  const req = next(worker, n);
  const pool = pools[n % pools.length]!;
  const controller = new AbortController();
  controllers.add(controller);
  const headers: Record<string, string> = { authorization: req.authorization };
  if (req.body !== null) headers['content-type'] = 'application/json';
  const started = performance.now();
  sent++;
  inFlight++;
  let status = 0;
  let error: string | undefined;
  try {
    const res = await pool.request({
      method: req.method as Dispatcher.HttpMethod,
      path: req.path,
      headers,
      body: req.body,
      signal: controller.signal,
    });
    status = res.statusCode;
    if (status >= 300 && samples[status] === undefined) {
      const text = await res.body.text();
      samples[status] = `${JSON.stringify(res.headers)} ${text}`.slice(0, 600);
    } else await res.body.dump({ limit: 1 << 20 });
  } catch (e) {
    const err = e as { code?: string; name?: string };
    error = err.code ?? err.name ?? 'error';
  } finally {
    inFlight--;
    controllers.delete(controller);
  }
  const ended = performance.now();
  if (phase !== 'window' && !(phase === 'after' && ended <= windowEnd)) return;
  if (ended < windowStart) return;
  if (error !== undefined) {
    if (!controller.signal.aborted) count(errors, error);
    return;
  }
  count(statuses, String(status));
  if (status >= 200 && status < 300) latencies.push(ended - started);
}

async function worker(index: number): Promise<void> {
  while (phase !== 'after') await once(index);
}

function summarize(values: number[]): LatencySummary {
  if (values.length === 0) return { count: 0, mean: 0, p50: 0, p90: 0, p99: 0, max: 0 };
  const sorted = Float64Array.from(values).sort();
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    count: sorted.length,
    mean: sum / sorted.length,
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    max: sorted[sorted.length - 1]!,
  };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function main(): Promise<void> {
  console.log(MARK_STARTED);
  const workers = Array.from({ length: spec.concurrency }, (_, i) => worker(i));
  await sleep(spec.warmupMs);
  phase = 'window';
  windowStart = performance.now();
  console.log(MARK_WINDOW_OPEN);
  await sleep(spec.durationMs);
  windowEnd = performance.now();
  phase = 'after';
  const inFlightAtEnd = inFlight;
  console.log(MARK_WINDOW_CLOSED);
  if (spec.end === 'drain') {
    const deadline = performance.now() + spec.drainMs;
    while (inFlight > 0 && performance.now() < deadline) await sleep(20);
  }
  aborted = controllers.size;
  for (const c of controllers) c.abort();
  await Promise.race([Promise.all(workers), sleep(5000)]);
  const windowMs = windowEnd - windowStart;
  const ok = latencies.length;
  const result: LoadResult = {
    windowMs,
    statuses,
    ok,
    throughput: (ok * 1000) / windowMs,
    latency: summarize(latencies),
    errors,
    inFlightAtEnd,
    aborted,
    sentTotal: sent,
    samples,
  };
  console.log(`${MARK_RESULT}${JSON.stringify(result)}`);
  await Promise.race([Promise.all(pools.map((p) => p.destroy())), sleep(2000)]);
  process.exit(0);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
