/**
 * Builds the parts of one replica from its configuration: logger, metrics, store, upstream pool, scheduler, budget,
 * identity and the request-side helpers. Production (main.ts) and the tests (test/helpers/proxy.ts) both build
 * them here, so the wiring is written once; buildApp() in app.ts then only connects them to Fastify.
 */
import type { Logger } from 'pino';
import { InvalidBudget } from './budget.js';
import type { Config } from './config.js';
import { createIdentifier, createTokenHasher } from './discord/identity.js';
import type { Identity } from './discord/types.js';
import { HeldBodies } from './held-bodies.js';
import { Scheduler } from './limiter/scheduler.js';
import type { LimiterStore } from './limiter/types.js';
import { createMetrics, type Metrics } from './metrics.js';
import { createProxyAuth } from './security.js';
import { createLogger } from './server/logger.js';
import { createStore } from './store.js';
import type { RequestTracer } from './tracing/types.js';
import { Upstream } from './upstream.js';

export interface Parts {
  readonly config: Config;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly store: LimiterStore;
  /** Where the state lives, as createStore() chose; shown by the inspector. */
  readonly storeMode: 'memory' | 'redis';
  /** Whether the shared state answers; absent for in-process state and for a store given by a test. */
  readonly storeCheck: (() => Promise<boolean>) | undefined;
  readonly upstream: Upstream;
  readonly scheduler: Scheduler;
  readonly budget: InvalidBudget;
  /** The Authorization value → the identity whose limits apply (discord/identity.ts). */
  readonly identify: (authorization: string | undefined) => Identity;
  /** Keyed hash of webhook and interaction tokens in paths. */
  readonly tokenHash: (value: string) => string;
  readonly globalLimitFor: (identity: Identity) => number;
  readonly heldBodies: HeldBodies;
  /** Set when PROXY_AUTH_TOKEN is: checks a client's Proxy-Authorization header in constant time. */
  readonly proxyAuth: ((presented: string | undefined) => boolean) | undefined;
  /** Set while tracing is on: main.ts starts it (tracing/start.ts), since loading the SDK is asynchronous. */
  readonly tracer?: RequestTracer | undefined;
}

export interface PartsOptions {
  /** Where log lines go instead of stdout. */
  readonly logSink?: (line: string) => void;
  /** A store to use instead of the one the configuration names (tests only); the replica then reports memory mode. */
  readonly store?: LimiterStore;
}

export function createParts(config: Config, options: PartsOptions = {}): Parts {
  const log = createLogger(config, options.logSink);
  const metrics = createMetrics();
  const created = options.store
    ? { store: options.store, mode: 'memory' as const, check: undefined }
    : createStore(config, metrics, log);
  const store = created.store;
  const upstream = new Upstream({
    url: config.upstreamUrl,
    connections: config.upstreamConnections,
    timeoutMs: config.upstreamTimeoutMs,
    connectTimeoutMs: config.upstreamConnectTimeoutMs,
  });
  const scheduler = new Scheduler(store, {
    maxHoldMs: config.maxHoldMs,
    maxHeld: config.maxHeldRequests,
    maxHeldPerIdentity: config.maxHeldPerIdentity,
    onHeldChange: (delta) => metrics.held.inc(delta),
  });
  const budget = new InvalidBudget(
    store,
    metrics,
    config.invalidRequestBudget,
    config.invalidBudgetSoftPercent / 100,
  );
  return {
    config,
    log,
    metrics,
    store,
    storeMode: created.mode,
    // Memory mode's check always answers true: no need to call it.
    storeCheck: created.mode === 'redis' ? created.check : undefined,
    upstream,
    scheduler,
    budget,
    identify: createIdentifier(config.tokenHashKey),
    tokenHash: createTokenHasher(config.tokenHashKey),
    globalLimitFor: (identity) =>
      (identity.botId && config.globalRateLimitOverrides.get(identity.botId)) || config.globalRateLimit,
    heldBodies: new HeldBodies(config.heldBodyLimitBytes, (delta) => metrics.heldBodyBytes.inc(delta)),
    proxyAuth: config.proxyAuthToken ? createProxyAuth(config.proxyAuthToken) : undefined,
  };
}
