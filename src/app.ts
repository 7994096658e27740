/**
 * Wiring only: connects the parts (parts.ts) to two Fastify instances, public and admin, without opening sockets or
 * reading the environment, so tests build exactly what production runs and listen where they like. What happens
 * before the proxy's route, readiness and the graceful stop each live in src/server/.
 */
import Fastify, { type FastifyInstance, LogController } from 'fastify';
import { Inspector } from './inspect/state.js';
import { FailoverStore } from './limiter/failover.js';
import type { Scheduler } from './limiter/scheduler.js';
import type { Parts } from './parts.js';
import { registerAdmin } from './routes/admin.js';
import { registerInspector } from './routes/inspector.js';
import { registerProxy } from './routes/proxy.js';
import { clientErrorHandler, frameworkErrors, publicServerFactory } from './server/client-errors.js';
import { Drain } from './server/drain.js';
import { EarlyAnswers } from './server/early-answers.js';
import { fastifyLogger } from './server/logger.js';
import { createReadiness } from './server/readiness.js';
import { requestChecks } from './server/request-checks.js';
import { shutdown } from './server/shutdown.js';

export interface App {
  readonly proxy: FastifyInstance;
  readonly admin: FastifyInstance;
  readonly scheduler: Scheduler;
  /** Graceful stop (server/shutdown.ts); every call returns the same promise. */
  close(): Promise<void>;
}

export function buildApp(parts: Parts): App {
  const { config, store, upstream, metrics, log, scheduler, budget } = parts;
  let stopping = false;
  const early = new EarlyAnswers(metrics, parts.tokenHash);
  const fastifyLog = fastifyLogger(log, (method, url) => early.route(method, url));

  const proxy = Fastify({
    serverFactory: publicServerFactory(config, early),
    clientErrorHandler: clientErrorHandler(early),
    frameworkErrors: frameworkErrors(early),
    loggerInstance: fastifyLog,
    // The proxy logs one line per request itself, with what matters here (hold and upstream time).
    logController: new LogController({ disableRequestLogging: true }),
    // No child logger per request (pino's default here): held requests would each keep one alive, and the
    // proxy's own request lines carry what they need.
    childLoggerFactory: (logger) => logger,
    bodyLimit: config.bodyLimitBytes,
    // Requests that still arrive on an open socket while draining get the proxy's own 503 (request-checks.ts).
    return503OnClosing: false,
  });
  const drain = new Drain(proxy.server);
  proxy.addHook(
    'onRequest',
    requestChecks({
      drain,
      early,
      log,
      requestLogLevel: config.requestLogLevel,
      stopping: () => stopping,
    }),
  );
  registerProxy(proxy, {
    relay: {
      store,
      scheduler,
      upstream,
      metrics,
      log,
      maxRetries: config.maxRetries,
      cloudflareCooldownMs: config.cloudflareCooldownMs,
      budget,
      marks: {
        revokedMs: config.revokedTokenTtlMs,
        goneMs: config.webhookGoneTtlMs,
        forbiddenMs: config.forbiddenBackoffMs,
      },
    },
    reply: {
      metrics,
      log,
      requestLogLevel: config.requestLogLevel,
      diagnosticHeaders: config.diagnosticHeaders,
    },
    identify: parts.identify,
    tokenHash: parts.tokenHash,
    globalLimitFor: parts.globalLimitFor,
    maxHoldMs: config.maxHoldMs,
    bodyLimitBytes: config.bodyLimitBytes,
    retryBodyLimitBytes: config.retryBodyLimitBytes,
    heldBodies: parts.heldBodies,
    proxyAuth: parts.proxyAuth,
    tracer: parts.tracer,
  });

  const admin = Fastify({
    loggerInstance: fastifyLog,
    logController: new LogController({ disableRequestLogging: true }),
    // Health checks and scrapes are cheap to cut; a scraper's keep-alive socket must not hold the exit up.
    forceCloseConnections: true,
  });
  registerAdmin(
    admin,
    metrics,
    createReadiness({ store, metrics, budget, storeCheck: parts.storeCheck, stopping: () => stopping }),
  );
  const inspector = new Inspector({
    scheduler,
    store,
    budget,
    mode: parts.storeMode,
    redisUp: () => (store instanceof FailoverStore ? store.healthy : undefined),
    globalLimitFor: parts.globalLimitFor,
    maxHeld: config.maxHeldRequests,
  });
  registerInspector(admin, { inspector, identify: parts.identify });

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    stopping = true;
    closing ??= shutdown({
      proxy,
      admin,
      drain,
      scheduler,
      upstream,
      store,
      metrics,
      log,
      timeoutMs: config.shutdownTimeoutMs,
      stoppables: [budget, inspector],
    });
    return closing;
  };
  return { proxy, admin, scheduler, close };
}
