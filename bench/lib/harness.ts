/**
 * The pieces every case is built from: the fake Discord, Redis, the targets (proxy, bare pass-through,
 * @discordjs/proxy) as processes, and `measure`, which runs the load generator against a target and reads every
 * process's CPU time, the proxy's metrics, Redis's counters and the fake's counters when the measured window
 * opens and closes.
 */
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { systemBusyMs } from './machine.js';
import {
  commandDelta,
  type FakeStats,
  fakeStats,
  limited,
  metric,
  type RedisSnapshot,
  redisSnapshot,
  type Sample,
  scrape,
} from './observe.js';
import {
  cpuMs,
  fileSize,
  freePort,
  nodeArgs,
  ROOT,
  rssBytes,
  type Service,
  sleep,
  startService,
  tail,
  warnings,
} from './procs.js';
import {
  type LoadResult,
  type LoadSpec,
  MARK_RESULT,
  MARK_STARTED,
  MARK_WINDOW_CLOSED,
  MARK_WINDOW_OPEN,
} from './spec.js';

/** Where processes run: unpinned, or targets on one CPU and everything else on the other (--pin). */
export interface Placement {
  readonly target?: string | undefined;
  readonly other?: string | undefined;
}

export interface HarnessOptions {
  readonly logDir: string;
  readonly placement: Placement;
  /** The proxy's entry point: the compiled build (bench/.tmp/dist/main.js) or src/main.ts through tsx. */
  readonly proxyEntry: string;
}

const BUILD_DIR = 'bench/.tmp/dist';

/**
 * The Node.js flags of `npm start` (package.json), which the Dockerfile's CMD repeats (test/deploy.test.ts checks
 * that they agree): the benchmark runs the proxy with the flags production uses.
 */
export function startFlags(): string[] {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } };
  const words = pkg.scripts.start.trim().split(/\s+/);
  if (words[0] !== 'node' || words[words.length - 1] !== 'dist/main.js')
    throw new Error(
      `package.json: expected "start" to be "node [flags] dist/main.js", got "${pkg.scripts.start}"`,
    );
  return words.slice(1, -1);
}

/**
 * Compiles src/ the way `npm run build` does, into bench/.tmp/dist (git-ignored), so that the proxy runs as it
 * does in production (`node dist/main.js`) without touching the project's own dist/. Returns the entry point,
 * or undefined when the compiler produced nothing.
 */
export function buildProxy(): string | undefined {
  const out = join(ROOT, BUILD_DIR);
  rmSync(out, { recursive: true, force: true });
  const tsc = spawnSync(
    process.execPath,
    [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', out],
    { cwd: ROOT, encoding: 'utf8' },
  );
  const entry = join(out, 'main.js');
  if (!existsSync(entry)) {
    process.stderr.write(`proxy build failed:\n${tsc.stdout}${tsc.stderr}\n`);
    return undefined;
  }
  // tsc emits despite type errors; say so, since someone may be editing src/ right now.
  if (tsc.status !== 0)
    process.stderr.write(`proxy build had type errors (emitted anyway):\n${tsc.stdout}\n`);
  if (existsSync(join(ROOT, 'src/limiter/lua')))
    cpSync(join(ROOT, 'src/limiter/lua'), join(out, 'limiter/lua'), { recursive: true });
  // The admin port's inspector page, as scripts/copy-lua.mjs copies it for `npm run build`.
  if (existsSync(join(ROOT, 'src/inspect/page.html')))
    cpSync(join(ROOT, 'src/inspect/page.html'), join(out, 'inspect/page.html'));
  return entry;
}

// Variables the proxy reads (src/config.ts) or the fake reads: never inherited from the shell running the bench.
const FOREIGN_ENV =
  /^(PORT|HOST|ADMIN_PORT|ADMIN_HOST|UPSTREAM_|REDIS_|GLOBAL_|LOG_LEVEL|REQUEST_LOG_LEVEL|MAX_|RESET_MARGIN|CLOUDFLARE_|BODY_LIMIT|RETRY_BODY|TOKEN_HASH|PROXY_AUTH|SHUTDOWN_|FAKE_)/;

function cleanEnv(extra: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !FOREIGN_ENV.test(k)) env[k] = v;
  return { ...env, ...extra };
}

export interface Role {
  readonly role: string;
  readonly pid: number;
}

/** One thing the load generator talks to: one or more processes behind a list of URLs. */
export interface Target {
  readonly name: string;
  readonly urls: readonly string[];
  /** Admin URLs of proxy replicas (metrics); empty for other targets. */
  readonly admins: readonly string[];
  readonly services: readonly Service[];
  stop(): Promise<void>;
}

/**
 * Starts something on a free port, and on another one if that port turns out to be taken after all (a port
 * freed a moment ago can still be blocked by connections in TIME_WAIT).
 */
async function onFreePort<T>(start: (port: number) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start(await freePort());
    } catch (error) {
      if (attempt >= 3 || !/EADDRINUSE|already in use/.test(String(error))) throw error;
    }
  }
}

export class Harness {
  private readonly fakes = new Map<string, Service>();
  private redisService: Service | undefined;
  private redisClient: Redis | undefined;

  constructor(readonly options: HarnessOptions) {}

  get placement(): Placement {
    return this.options.placement;
  }

  /**
   * A fake Discord in its own process; one per name, started on first use. `extraArgs` go to its CLI
   * after the others, e.g. ['--profile', 'far'] (then pass latency '' to keep the profile's) or
   * ['--transit-ms', '40'].
   */
  async fake(
    name: string,
    latency: string,
    globalLimit: number,
    extraArgs: readonly string[] = [],
  ): Promise<Service> {
    const existing = this.fakes.get(name);
    if (existing) return existing;
    const service = await onFreePort((port) =>
      startService({
        name: `fake-${name}`,
        command: process.execPath,
        args: nodeArgs('test/fake-discord/cli.ts', [
          '--port',
          String(port),
          ...(latency === '' ? [] : ['--latency', latency]),
          '--global',
          String(globalLimit),
          ...extraArgs,
        ]),
        env: cleanEnv({}),
        port,
        logDir: this.options.logDir,
        cpus: this.placement.other,
      }),
    );
    this.fakes.set(name, service);
    return service;
  }

  async stopFake(name: string): Promise<void> {
    await this.fakes.get(name)?.stop();
    this.fakes.delete(name);
  }

  async redis(): Promise<{ service: Service; client: Redis; url: string }> {
    if (!this.redisService || !this.redisClient) {
      this.redisService = await onFreePort((port) =>
        startService({
          name: 'redis',
          command: 'redis-server',
          args: ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
          env: cleanEnv({}),
          port,
          logDir: this.options.logDir,
          cpus: this.placement.other,
        }),
      );
      this.redisClient = new Redis(this.redisService.port, '127.0.0.1', { maxRetriesPerRequest: 1 });
      await this.redisClient.ping();
    }
    return {
      service: this.redisService,
      client: this.redisClient,
      url: `redis://127.0.0.1:${this.redisService.port}`,
    };
  }

  /** The proxy itself, `node main.js` of the build, with default settings except the ones given. */
  async proxy(
    name: string,
    upstream: string,
    env: Record<string, string> = {},
  ): Promise<Service & { admin: string }> {
    let adminPort = 0;
    const service = await onFreePort(async (port) => {
      adminPort = await freePort();
      return startService({
        name,
        command: process.execPath,
        args: [
          ...startFlags(),
          ...(this.options.proxyEntry.endsWith('.ts')
            ? nodeArgs(this.options.proxyEntry)
            : [this.options.proxyEntry]),
        ],
        env: cleanEnv({
          PORT: String(port),
          ADMIN_PORT: String(adminPort),
          HOST: '127.0.0.1',
          ADMIN_HOST: '127.0.0.1',
          UPSTREAM_URL: upstream,
          ...env,
        }),
        port,
        logDir: this.options.logDir,
        cpus: this.placement.target,
      });
    });
    return Object.assign(service, { admin: `http://127.0.0.1:${adminPort}` });
  }

  /**
   * kind: 'direct' (no process: straight to the fake), 'bare', 'proxy-memory', 'proxy-redis' (with `replicas`
   * processes sharing Redis) or 'discordjs'. `globalLimit` goes to the proxy's GLOBAL_RATE_LIMIT and
   * @discordjs/rest's globalRequestsPerSecond.
   */
  async target(kind: string, upstream: string, globalLimit?: number, replicas = 1): Promise<Target> {
    const global: Record<string, string> =
      globalLimit === undefined ? {} : { GLOBAL_RATE_LIMIT: String(globalLimit) };
    const make = (services: Service[], admins: string[] = []): Target => ({
      name: kind,
      urls: services.length === 0 ? [upstream] : services.map((s) => s.url),
      admins,
      services,
      stop: async () => {
        await Promise.all(services.map((s) => s.stop()));
      },
    });
    switch (kind) {
      case 'direct':
        return make([]);
      case 'bare':
      case 'discordjs': {
        const service = await onFreePort((port) =>
          startService({
            name: kind,
            command: process.execPath,
            args: nodeArgs(kind === 'bare' ? 'bench/passthrough.ts' : 'bench/discordjs-proxy.ts'),
            env: cleanEnv({ PORT: String(port), UPSTREAM_URL: upstream, ...global }),
            port,
            logDir: this.options.logDir,
            cpus: this.placement.target,
          }),
        );
        return make([service]);
      }
      case 'proxy-memory': {
        const p = await this.proxy('proxy-memory', upstream, global);
        return make([p], [p.admin]);
      }
      case 'proxy-redis':
      case 'proxy-redis-nolease':
      case 'proxy-redis-unbatched': {
        const { url } = await this.redis();
        // For comparison in the same run: without leases (batching only), and unbatched (one script call per
        // admit and per learn, without leases: as before issue 13).
        const batch =
          kind === 'proxy-redis'
            ? {}
            : kind === 'proxy-redis-nolease'
              ? { REDIS_LEASE_MS: '0' }
              : { REDIS_BATCH_MAX: '1', REDIS_LEASE_MS: '0' };
        const started = await Promise.all(
          Array.from({ length: replicas }, (_, i) =>
            this.proxy(`${kind}-${i + 1}`, upstream, { ...global, ...batch, REDIS_URL: url }),
          ),
        );
        return make(
          started,
          started.map((p) => p.admin),
        );
      }
      default:
        throw new Error(`unknown target ${kind}`);
    }
  }

  async close(): Promise<void> {
    for (const name of [...this.fakes.keys()]) await this.stopFake(name);
    if (this.redisClient) this.redisClient.disconnect();
    await this.redisService?.stop();
  }

  /** Redis counters, when this harness started Redis. */
  redisSnapshotIfAny(): Promise<RedisSnapshot | undefined> {
    return this.redisClient ? redisSnapshot(this.redisClient) : Promise.resolve(undefined);
  }

  get redisPid(): number | undefined {
    return this.redisService?.pid;
  }
}

interface Snapshot {
  readonly at: number;
  readonly cpu: Record<string, number>;
  readonly busyMs: number;
  readonly selfCpuMs: number;
  readonly metrics: Sample[][];
  readonly redis: RedisSnapshot | undefined;
  readonly fake: FakeStats;
}

export interface Observed {
  readonly target: Target;
  readonly fake: Service;
  /** Watch Redis's counters and CPU too. */
  readonly redis: boolean;
}

export interface RunRecord {
  readonly load: LoadResult;
  /** Orchestrator's view of the window, ms (CPU, fake and Redis deltas are over this). */
  readonly windowMs: number;
  /** CPU used during the window, in cores (1 = one core busy all the time), by role. */
  readonly cpuCores: Record<string, number>;
  /** CPU of the target's processes per 2xx response, µs. */
  readonly targetCpuUsPerRequest: number | undefined;
  /** CPU busy on the machine during the window that none of the benchmark's processes used, in cores. */
  readonly foreignCores: number;
  readonly fake: {
    /** Requests that arrived at the fake during the window. */
    readonly arrivals: number;
    /** 429s the fake answered during the window, by scope. */
    readonly limited: Record<string, number>;
    /** Since the last reset (run start), including the drain after the window. */
    readonly busiestWindow: number;
    readonly totalSinceReset: number;
    readonly limitedSinceReset: number;
    readonly limitedSinceResetByScope: Record<string, number>;
  };
  /** Event-loop delay during the window (worst replica), ms. */
  readonly eventLoop: { readonly p50: number; readonly p99: number; readonly max: number } | undefined;
  /** Mean time requests answered in the window spent in the proxy in all, and held (all replicas), ms. */
  readonly proxyTiming: { readonly totalMs: number; readonly holdMs: number } | undefined;
  /** Limiter calls to Redis by operation, during the window (all replicas), from the proxy's metrics. */
  readonly storeOps: Record<string, number> | undefined;
  /** Redis command calls during the window, scripts' inner commands included. */
  readonly redisCommands: Record<string, number> | undefined;
  readonly rssBytes: number[];
  /** Targets that exited by themselves. */
  readonly crashed: string[];
  /** Log lines at warn or above that the target's processes wrote during the run (count, a few samples). */
  readonly warnings: { readonly count: number; readonly samples: readonly string[] };
}

export interface MeasureHooks {
  /** Runs while the load is on, from the moment the load generator started; awaited before the result. */
  during?(): Promise<void>;
}

async function snapshot(h: Harness, obs: Observed, roles: Role[]): Promise<Snapshot> {
  const cpu: Record<string, number> = {};
  for (const r of roles) cpu[r.role] = cpuMs(r.pid);
  const self = process.cpuUsage();
  const at = performance.now();
  const busyMs = systemBusyMs();
  const [metrics, redis, fake] = await Promise.all([
    Promise.all(obs.target.admins.map((a) => scrape(a).catch(() => [] as Sample[]))),
    obs.redis ? h.redisSnapshotIfAny() : Promise.resolve(undefined),
    fakeStats(obs.fake.url),
  ]);
  return { at, cpu, busyMs, selfCpuMs: (self.user + self.system) / 1000, metrics, redis, fake };
}

function opsDelta(before: Sample[][], after: Sample[][]): Record<string, number> | undefined {
  const ops: Record<string, number> = {};
  let any = false;
  after.forEach((samples, i) => {
    for (const s of samples) {
      if (s.name !== 'discord_proxy_redis_duration_seconds_count') continue;
      const op = /op="([^"]*)"/.exec(s.labels)?.[1] ?? '?';
      const prior = metric(before[i] ?? [], 'discord_proxy_redis_duration_seconds_count', `op="${op}"`);
      ops[op] = (ops[op] ?? 0) + s.value - (Number.isFinite(prior) ? prior : 0);
      any = true;
    }
  });
  return any ? ops : undefined;
}

/** Mean of a histogram over the window, all label sets and replicas together (its _sum and _count deltas). */
function meanDelta(before: Sample[][], after: Sample[][], name: string): number {
  let sum = 0;
  let count = 0;
  after.forEach((samples, i) => {
    const prior = before[i] ?? [];
    const get = (list: readonly Sample[], suffix: string) => {
      const v = metric(list, `${name}${suffix}`);
      return Number.isFinite(v) ? v : 0;
    };
    sum += get(samples, '_sum') - get(prior, '_sum');
    count += get(samples, '_count') - get(prior, '_count');
  });
  return count > 0 ? sum / count : Number.NaN;
}

/** Runs the load generator with `spec` against `obs.target` and reads everything around the measured window. */
export async function measure(
  h: Harness,
  spec: LoadSpec,
  obs: Observed,
  hooks: MeasureHooks = {},
): Promise<RunRecord> {
  const args = nodeArgs('bench/loadgen.ts', [JSON.stringify(spec)]);
  const other = h.placement.other;
  const child = other
    ? spawn('taskset', ['-c', other, process.execPath, ...args], {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
      })
    : spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const roles: Role[] = [{ role: 'loadgen', pid: child.pid ?? 0 }];
  obs.target.services.forEach((s) => {
    roles.push({ role: s.name, pid: s.pid });
  });
  roles.push({ role: 'fake', pid: obs.fake.pid });
  if (obs.redis && h.redisPid) roles.push({ role: 'redis', pid: h.redisPid });

  const logOffsets = obs.target.services.map((s) => fileSize(s.logFile));
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => {
    if (stderr.length < 20_000) stderr += c.toString();
  });
  let t0: Promise<Snapshot> | undefined;
  let t1: Promise<Snapshot> | undefined;
  let during: Promise<void> | undefined;
  let result: LoadResult | undefined;
  let buffered = '';
  child.stdout?.on('data', (c: Buffer) => {
    buffered += c.toString();
    for (let nl = buffered.indexOf('\n'); nl !== -1; nl = buffered.indexOf('\n')) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line === MARK_STARTED && hooks.during) during = hooks.during();
      else if (line === MARK_WINDOW_OPEN) t0 = snapshot(h, obs, roles);
      else if (line === MARK_WINDOW_CLOSED) t1 = snapshot(h, obs, roles);
      else if (line.startsWith(MARK_RESULT))
        result = JSON.parse(line.slice(MARK_RESULT.length)) as LoadResult;
    }
  });
  const limitMs = spec.warmupMs + spec.durationMs + spec.drainMs + 60_000;
  const code = await new Promise<number | null>((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), limitMs);
    child.once('exit', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  await during;
  if (!result || !t0 || !t1) {
    throw new Error(`load generator failed (exit ${code}):\n${stderr.slice(-4000)}`);
  }
  const [s0, s1] = [await t0, await t1];
  const windowMs = s1.at - s0.at;
  const cpuCores: Record<string, number> = {};
  let ours = s1.selfCpuMs - s0.selfCpuMs;
  for (const r of roles) {
    const used = (s1.cpu[r.role] ?? Number.NaN) - (s0.cpu[r.role] ?? Number.NaN);
    cpuCores[r.role] = used / windowMs;
    if (Number.isFinite(used)) ours += used;
  }
  const targetCpu = obs.target.services.reduce(
    (sum, s) => sum + ((s1.cpu[s.name] ?? Number.NaN) - (s0.cpu[s.name] ?? Number.NaN)),
    0,
  );
  const lag = s1.metrics.length
    ? {
        p50: Math.max(...s1.metrics.map((m) => metric(m, 'nodejs_eventloop_lag_p50_seconds') * 1000)),
        p99: Math.max(...s1.metrics.map((m) => metric(m, 'nodejs_eventloop_lag_p99_seconds') * 1000)),
        max: Math.max(...s1.metrics.map((m) => metric(m, 'nodejs_eventloop_lag_max_seconds') * 1000)),
      }
    : undefined;
  const limitedDelta: Record<string, number> = {};
  for (const [scope, n] of Object.entries(s1.fake.rateLimited)) {
    const d = n - (s0.fake.rateLimited[scope as keyof FakeStats['rateLimited']] ?? 0);
    if (d > 0) limitedDelta[scope] = d;
  }
  return {
    load: result,
    windowMs,
    cpuCores,
    targetCpuUsPerRequest:
      obs.target.services.length > 0 && result.ok > 0 ? (targetCpu * 1000) / result.ok : undefined,
    foreignCores: (s1.busyMs - s0.busyMs - ours) / windowMs,
    fake: {
      arrivals: s1.fake.total - s0.fake.total,
      limited: limitedDelta,
      busiestWindow: s1.fake.busiestWindow,
      totalSinceReset: s1.fake.total,
      limitedSinceReset: limited(s1.fake),
      limitedSinceResetByScope: Object.fromEntries(
        Object.entries(s1.fake.rateLimited).filter(([, n]) => n > 0),
      ),
    },
    eventLoop: lag,
    proxyTiming: s1.metrics.length
      ? {
          totalMs: meanDelta(s0.metrics, s1.metrics, 'discord_proxy_request_duration_seconds') * 1000,
          holdMs: meanDelta(s0.metrics, s1.metrics, 'discord_proxy_hold_seconds') * 1000,
        }
      : undefined,
    storeOps: opsDelta(s0.metrics, s1.metrics),
    redisCommands: s0.redis && s1.redis ? commandDelta(s0.redis, s1.redis) : undefined,
    rssBytes: obs.target.services.map((s) => rssBytes(s.pid)),
    warnings: obs.target.services.reduce(
      (all, s, i) => {
        const w = warnings(s.logFile, logOffsets[i] ?? 0);
        return { count: all.count + w.count, samples: [...all.samples, ...w.samples].slice(0, 3) };
      },
      { count: 0, samples: [] as string[] },
    ),
    crashed: obs.target.services
      .filter((s) => s.crashed() !== undefined)
      .map((s) => `${s.name} ${s.crashed()}:\n${tail(s.logFile, 15)}`),
  };
}

export async function waitFor(
  check: () => Promise<boolean>,
  timeoutMs: number,
  everyMs = 100,
): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await check().catch(() => false)) return true;
    await sleep(everyMs);
  }
  return false;
}
