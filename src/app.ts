/**
 * Wires the parts into two Fastify instances (public and admin) without opening sockets or reading the
 * environment, so tests build exactly what production runs and listen where they like.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { createIdentifier, createTokenHasher } from './discord/identity.js';
import type { Identity } from './discord/types.js';
import { Scheduler } from './limiter/scheduler.js';
import type { LimiterStore } from './limiter/types.js';
import type { Metrics } from './metrics.js';
import { registerAdmin } from './routes/admin.js';
import { registerProxy } from './routes/proxy.js';
import type { Upstream } from './upstream.js';

export interface AppDeps {
  readonly config: Config;
  readonly store: LimiterStore;
  readonly upstream: Upstream;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** Whether the shared state answers; absent for in-process state. */
  readonly storeCheck?: () => Promise<boolean>;
}

export interface App {
  readonly proxy: FastifyInstance;
  readonly admin: FastifyInstance;
  readonly scheduler: Scheduler;
  /** Stops taking requests, answers held ones, closes the upstream pool and the store. */
  close(): Promise<void>;
}

export function buildApp(deps: AppDeps): App {
  const { config, store, upstream, metrics, log } = deps;
  let shuttingDown = false;
  const scheduler = new Scheduler(store, {
    maxHoldMs: config.maxHoldMs,
    onHeldChange: (delta) => metrics.held.inc(delta),
  });
  const globalLimitFor = (identity: Identity): number =>
    (identity.botId && config.globalRateLimitOverrides.get(identity.botId)) || config.globalRateLimit;

  // pino's Logger is what Fastify logs with; the cast only bridges its generic parameters.
  const fastifyLog = log as unknown as FastifyBaseLogger;
  const proxy = Fastify({
    loggerInstance: fastifyLog,
    // The proxy logs one line per request itself, with what matters here (hold and upstream time).
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.bodyLimitBytes,
    // Keep-alive sockets from bot workers are long-lived; a slow client must not hold one forever.
    requestTimeout: config.maxHoldMs + config.upstreamTimeoutMs + 5000,
    return503OnClosing: true,
  });
  registerProxy(proxy, {
    relay: {
      store,
      scheduler,
      upstream,
      metrics,
      log,
      maxRetries: config.maxRetries,
      cloudflareCooldownMs: config.cloudflareCooldownMs,
    },
    metrics,
    log,
    requestLogLevel: config.requestLogLevel,
    identify: createIdentifier(config.tokenHashKey),
    tokenHash: createTokenHasher(config.tokenHashKey),
    globalLimitFor,
    maxHoldMs: config.maxHoldMs,
    bodyLimitBytes: config.bodyLimitBytes,
    retryBodyLimitBytes: config.retryBodyLimitBytes,
  });

  const admin = Fastify({
    loggerInstance: fastifyLog,
    logController: new LogController({ disableRequestLogging: true }),
  });
  registerAdmin(admin, metrics, {
    async check() {
      if (shuttingDown) return 'shutting down';
      if (deps.storeCheck && !(await deps.storeCheck()))
        return 'Redis unreachable (serving with local limits)';
      const pause = await store.cloudflarePause().catch(() => -1);
      if (pause < 0) return 'shared state unreachable';
      metrics.cloudflareCooldown.set(pause > 0 ? 1 : 0);
      if (pause > 0) return `Cloudflare cool-down for ${Math.ceil(pause / 1000)} s`;
      return null;
    },
  });

  return {
    proxy,
    admin,
    scheduler,
    async close() {
      shuttingDown = true;
      scheduler.close();
      await proxy.close();
      await admin.close();
      await upstream.close();
      await store.close();
    },
  };
}
