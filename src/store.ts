/**
 * Chooses where limiter state lives from the configuration: in process, or in Redis (single node or cluster)
 * behind the failover that keeps serving when Redis does not answer.
 */
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { FailoverStore } from './limiter/failover.js';
import { MemoryStore } from './limiter/memory.js';
import { BATCHED_SCRIPTS, RedisStore } from './limiter/redis.js';
import { GLOBAL_WINDOW_MS, type LimiterStore, type StoreOptions } from './limiter/types.js';
import type { Metrics } from './metrics.js';

export interface CreatedStore {
  readonly store: LimiterStore;
  readonly mode: 'memory' | 'redis';
  /** Resolves true when the shared state answers (always true in memory mode). */
  readonly check: () => Promise<boolean>;
}

/** How the client writes commands (exported for the contract test that checks which path a batch takes). */
export const PIPELINING: Pick<RedisOptions, 'enableAutoPipelining' | 'autoPipeliningIgnoredCommands'> = {
  // Commands issued in the same tick go out in one write: fewer syscalls per request under load.
  enableAutoPipelining: true,
  // Except a turn's only batch of admits or learns (limiter/redis.ts BATCHED_SCRIPTS): through the auto-pipeline it
  // would wait one more event-loop turn and a pipeline's bookkeeping, which at low load was about half of the time
  // a request waits for its admit (README, Performance).
  autoPipeliningIgnoredCommands: [...BATCHED_SCRIPTS],
};

// A dead Redis must fail a call fast instead of queueing it: the failover decides locally in the meantime.
const CLIENT_OPTIONS: RedisOptions = {
  ...PIPELINING,
  enableOfflineQueue: false,
  maxRetriesPerRequest: 0,
  commandTimeout: 500,
  connectTimeout: 2000,
  retryStrategy: (attempt: number) => Math.min(100 * attempt, 1000),
};

export function storeOptions(config: Config): StoreOptions {
  return {
    resetMarginMs: config.resetMarginMs,
    globalWindowMarginMs: config.globalWindowMarginMs,
    // A probe whose replica died must not block its bucket longer than an upstream call can take.
    probeTimeoutMs: config.upstreamTimeoutMs + 1000,
  };
}

export function createStore(config: Config, metrics: Metrics, log: Logger): CreatedStore {
  const local = new MemoryStore(storeOptions(config));
  if (!config.redisUrl && config.redisClusterNodes.length === 0) {
    return { store: local, mode: 'memory', check: async () => true };
  }
  const client = config.redisUrl
    ? new Redis(config.redisUrl, CLIENT_OPTIONS)
    : new Cluster(
        config.redisClusterNodes.map((node) => {
          const [host, port] = node.split(':');
          return { host: host ?? '127.0.0.1', port: Number(port) };
        }),
        {
          enableOfflineQueue: false,
          redisOptions: CLIENT_OPTIONS,
          clusterRetryStrategy: CLIENT_OPTIONS.retryStrategy,
        },
      );
  // ioredis reports connection trouble as events; the failover already reacts to the failed calls.
  client.on('error', (error: Error) => log.debug({ err: error.message }, 'redis connection error'));
  client.once('ready', () => void checkEviction(client, log));
  const shared = new RedisStore(client, {
    ...storeOptions(config),
    prefix: config.redisKeyPrefix,
    ownsClient: true,
    batchMax: config.redisBatchMax,
    leaseMs: config.redisLeaseMs,
    placeLeaseMs: config.redisPlaceLeaseMs,
    learnLingerMs: config.redisLearnLingerMs,
    onLease: (outcome, n) => metrics.leased.inc({ outcome }, n),
    onCall: (op, seconds) => metrics.redisLatency.observe({ op }, seconds),
  });
  const store = new FailoverStore(shared, local, {
    fallbackReplicas: config.redisFallbackReplicas,
    globalWindowMs: GLOBAL_WINDOW_MS + config.globalWindowMarginMs,
    recoveryIntervalMs: 1000,
    onModeChange(mode, error) {
      metrics.redisUp.set(mode === 'redis' ? 1 : 0);
      if (mode === 'local') {
        log.error(
          { err: error instanceof Error ? error.message : String(error) },
          'Redis unreachable: deciding with local limits',
        );
      } else log.warn('Redis reachable again: shared limits restored');
    },
    onError: () => metrics.redisErrors.inc(),
    onLatency: (op, seconds) => metrics.redisLatency.observe({ op }, seconds),
  });
  return { store, mode: 'redis', check: () => store.check() };
}

/**
 * Every key the proxy writes expires by itself, so an eviction policy that picks among keys with a TTL (or any
 * key) would silently drop pauses, global windows and the invalid-request count under memory pressure: 429s, or
 * a budget that forgets what it spent. Redis with a memory limit must be set to `noeviction` (writes then fail,
 * and the failover decides locally, which is loud). Managed services that hide CONFIG are trusted.
 */
export async function checkEviction(client: Redis | Cluster, log: Logger): Promise<string | null> {
  try {
    const [, maxmemory] = (await client.config('GET', 'maxmemory')) as string[];
    const [, policy] = (await client.config('GET', 'maxmemory-policy')) as string[];
    if (Number(maxmemory) > 0 && policy !== 'noeviction') {
      log.warn(
        { maxmemory: Number(maxmemory), policy },
        "Redis may evict the proxy's keys under memory pressure (maxmemory-policy is not noeviction): rate-limit state could be lost",
      );
      return policy ?? null;
    }
  } catch (error) {
    log.debug(
      { err: error instanceof Error ? error.message : String(error) },
      'could not read the Redis eviction policy',
    );
  }
  return null;
}
