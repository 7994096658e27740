/**
 * Wires the parts into two Fastify instances (public and admin) without opening sockets or reading the
 * environment, so tests build exactly what production runs and listen where they like.
 */
import {
  createServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import type { Socket } from 'node:net';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  LogController,
} from 'fastify';
import type { Logger } from 'pino';
import { InvalidBudget } from './budget.js';
import type { Config } from './config.js';
import { classify, normalizeApiPath } from './discord/classify.js';
import { createIdentifier, createTokenHasher } from './discord/identity.js';
import type { Identity } from './discord/types.js';
import { answers, type ProxyAnswer } from './errors.js';
import { HeldBodies } from './held-bodies.js';
import { Inspector } from './inspect/state.js';
import { FailoverStore } from './limiter/failover.js';
import { Scheduler } from './limiter/scheduler.js';
import type { LimiterStore } from './limiter/types.js';
import type { Metrics } from './metrics.js';
import { registerAdmin } from './routes/admin.js';
import { registerInspector } from './routes/inspector.js';
import { registerProxy, writeAnswer } from './routes/proxy.js';
import { createProxyAuth } from './security.js';
import type { RequestTracer } from './tracing/types.js';
import type { Upstream } from './upstream.js';

export interface AppDeps {
  readonly config: Config;
  readonly store: LimiterStore;
  readonly upstream: Upstream;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** Whether the shared state answers; absent for in-process state. */
  readonly storeCheck?: () => Promise<boolean>;
  /** Where the state lives, as createStore() chose; shown by the inspector (default: memory). */
  readonly storeMode?: 'memory' | 'redis';
  /** Set while tracing is on (startTracing() in src/tracing/start.ts). */
  readonly tracer?: RequestTracer | undefined;
}

export interface App {
  readonly proxy: FastifyInstance;
  readonly admin: FastifyInstance;
  readonly scheduler: Scheduler;
  /**
   * Graceful stop: refuses new connections and turns /readyz to 503 at once, lets held and in-flight requests
   * finish until SHUTDOWN_TIMEOUT_MS, then answers the held ones with the proxy's 503, cuts upstream calls that
   * still hang, and closes the upstream pool and the store. Never takes much longer than the timeout.
   */
  close(): Promise<void>;
}

/** After the deadline: time for the 503s (and retries that end in one) to reach clients before sockets are cut. */
const FLUSH_GRACE_MS = 1000;
/** A Redis that does not answer QUIT must not keep the process from exiting. */
const STORE_CLOSE_MS = 1000;

/**
 * The public server's requests still being answered. Fastify's close() cannot tell: the proxy hijacks every reply,
 * and on Node 20 server.close() leaves a keep-alive socket open after its last response (until keepAliveTimeout),
 * so waiting on the server alone would hang for a minute.
 */
class Drain {
  private readonly open = new Set<ServerResponse>();
  private draining = false;
  private onIdle: (() => void) | undefined;

  constructor(private readonly server: Server) {}

  get size(): number {
    return this.open.size;
  }

  track(req: IncomingMessage, res: ServerResponse): void {
    this.open.add(res);
    const socket = req.socket;
    // A response queued behind a pipelined one never emits 'close' when its socket goes: watch the socket too.
    const done = () => {
      res.off('close', done);
      socket.off('close', done);
      this.open.delete(res);
      if (this.draining) this.server.closeIdleConnections();
      if (this.open.size === 0) this.onIdle?.();
    };
    res.once('close', done);
    socket.once('close', done);
  }

  /** From now on each socket closes as soon as its response is done, and says so in the response. */
  begin(): void {
    this.draining = true;
    for (const res of this.open) if (!res.headersSent) res.setHeader('connection', 'close');
    this.server.closeIdleConnections();
  }

  /** Resolves true once every tracked response is done, false if `ms` passes first. */
  wait(ms: number): Promise<boolean> {
    if (this.open.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(
        () => {
          this.onIdle = undefined;
          resolve(false);
        },
        Math.max(0, ms),
      );
      this.onIdle = () => {
        clearTimeout(timer);
        this.onIdle = undefined;
        resolve(true);
      };
    });
  }

  cut(): void {
    this.server.closeAllConnections();
  }
}

/** An answer written straight to a socket that has no usable HTTP response (the parser gave up on it). */
function rawAnswer(answer: ProxyAnswer): string {
  const payload = JSON.stringify(answer.body);
  const headers = Object.entries(answer.headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('');
  return (
    `HTTP/1.1 ${answer.status} ${STATUS_CODES[answer.status] ?? ''}\r\n${headers}` +
    `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(payload)}\r\nconnection: close\r\n\r\n${payload}`
  );
}

function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export function buildApp(deps: AppDeps): App {
  const { config, store, upstream, metrics, log } = deps;
  let shuttingDown = false;
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
  const globalLimitFor = (identity: Identity): number =>
    (identity.botId && config.globalRateLimitOverrides.get(identity.botId)) || config.globalRateLimit;

  const tokenHash = createTokenHasher(config.tokenHashKey);
  const identify = createIdentifier(config.tokenHashKey);
  const routeOf = (method: string | undefined, url: string | undefined): string => {
    const path = normalizeApiPath((url ?? '/').split('?', 1)[0] ?? '/');
    return path === null
      ? '-'
      : classify((method ?? 'GET').toUpperCase(), path, Date.now(), tokenHash).template;
  };
  // Fastify's own error lines carry `req` with its raw URL, which holds webhook and interaction tokens; log the
  // route template instead (pino's child serializers win over the defaults Fastify adds). The cast only bridges
  // pino's generic parameters to Fastify's logger type.
  const fastifyLog = log.child(
    {},
    {
      serializers: {
        req: (req: FastifyRequest) => ({ method: req.method, route: routeOf(req.method, req.url) }),
      },
    },
  ) as unknown as FastifyBaseLogger;
  // Keep-alive sockets from bot workers are long-lived; a slow client must not hold one forever. Node counts this
  // until the whole request has arrived, and a large upload only streams once it leaves the hold.
  const requestTimeoutMs = Math.max(
    config.maxHoldMs + config.upstreamTimeoutMs + 5000,
    config.headersTimeoutMs,
  );
  const proxy = Fastify({
    // Slow or oversized headers are a cheap way to hold sockets: Node drops them before Fastify sees them. With a
    // serverFactory Fastify applies none of its own timeouts, so they are all set here. Node only looks for
    // expired requests every connectionsCheckingInterval (30 s by default), which would stretch a 10 s headers
    // timeout to 40 s.
    serverFactory: (handler) => {
      const server = createServer(
        {
          maxHeaderSize: config.maxHeaderBytes,
          headersTimeout: config.headersTimeoutMs,
          requestTimeout: requestTimeoutMs,
          connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(config.headersTimeoutMs / 4))),
          // Host is refused in onRequest below, with an answer in Discord's shape instead of Node's bare 400.
          requireHostHeader: false,
        },
        handler,
      );
      server.keepAliveTimeout = config.keepAliveTimeoutMs;
      // Node's own answer to an unknown Expect is a bare 417; give it the same shape as every other refusal.
      server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
        generatedEarly(req.method, req.url, answers.expectationFailed());
        res.shouldKeepAlive = false;
        writeAnswer(res, answers.expectationFailed());
      });
      return server;
    },
    // What Node's HTTP parser refuses (malformed request lines and headers, oversized or slow headers) never
    // reaches a route: answer it in Discord's error shape too, then close the connection.
    clientErrorHandler: (error: Error & { code?: string }, socket: Socket) => {
      if (error.code === 'ECONNRESET' || socket.destroyed) return;
      // A request whose answer is still due owns the socket: anything written now would be read as that answer
      // (a pipelined request after a complete one broke the parser). The connection just closes then.
      const pending = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
      const owned = pending && (pending.headersSent || pending.req?.complete === true);
      if (socket.writable && !owned) {
        const answer =
          error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
            ? answers.requestTimeout()
            : error.code === 'HPE_HEADER_OVERFLOW'
              ? answers.headersTooLarge()
              : answers.malformed();
        generatedEarly(undefined, undefined, answer);
        socket.write(rawAnswer(answer));
      }
      socket.destroy(error);
    },
    // Targets the router cannot even decode (bad percent-encoding) get the proxy's 400, not Fastify's.
    frameworkErrors: (error, request, reply) => {
      const answer = answers.badRequest(
        error.code === 'FST_ERR_BAD_URL'
          ? 'Refused request target (bad-encoding).'
          : 'Refused request target.',
      );
      generatedEarly(request.raw.method, undefined, answer);
      reply.hijack();
      writeAnswer(reply.raw, answer);
    },
    loggerInstance: fastifyLog,
    // The proxy logs one line per request itself, with what matters here (hold and upstream time).
    logController: new LogController({ disableRequestLogging: true }),
    // No child logger per request (pino's default here): held requests would each keep one alive, and the
    // proxy's own request lines carry what they need.
    childLoggerFactory: (logger) => logger,
    bodyLimit: config.bodyLimitBytes,
    // Requests that still arrive on an open socket while draining get the proxy's own 503 (onRequest below),
    // which client libraries tell apart by its header, instead of Fastify's generic one.
    return503OnClosing: false,
  });
  /** Counts an answer made before any route ran (the target is unknown or unparsable: no route label). */
  function generatedEarly(method: string | undefined, url: string | undefined, answer: ProxyAnswer): void {
    metrics.generated.inc({ reason: answer.reason });
    metrics.requests.inc({
      method: method ?? '-',
      route: url === undefined ? '-' : routeOf(method, url),
      status: String(answer.status),
    });
  }
  const drain = new Drain(proxy.server);
  const refuse = (request: FastifyRequest, reply: FastifyReply): void => {
    const answer = answers.shuttingDown();
    const route = routeOf(request.raw.method, request.raw.url);
    metrics.generated.inc({ reason: answer.reason });
    metrics.requests.inc({ method: request.method, route, status: String(answer.status) });
    const level = config.requestLogLevel as 'info';
    log[level](
      { reqId: request.id, method: request.method, route, status: answer.status, holdMs: 0, upstreamMs: 0 },
      'request refused: shutting down',
    );
    reply
      .code(answer.status)
      .headers({ ...answer.headers, connection: 'close', 'content-type': 'application/json' })
      .send(JSON.stringify(answer.body));
  };
  proxy.addHook('onRequest', (request, reply, done) => {
    drain.track(request.raw, reply.raw);
    if (shuttingDown) return refuse(request, reply);
    // RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400 (Host itself is never forwarded). Node's
    // parser takes a request line without a version for HTTP/0.9, which no Discord client speaks.
    const version = request.raw.httpVersion;
    const problem =
      version !== '1.1' && version !== '1.0'
        ? 'Unsupported HTTP version.'
        : version === '1.1' && request.raw.headers.host === undefined
          ? 'Missing Host header.'
          : undefined;
    if (problem) {
      const answer = answers.badRequest(problem);
      generatedEarly(request.raw.method, request.raw.url, answer);
      reply
        .code(answer.status)
        .headers({ ...answer.headers, connection: 'close', 'content-type': 'application/json' })
        .send(JSON.stringify(answer.body));
      return;
    }
    done();
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
      budget,
      marks: {
        revokedMs: config.revokedTokenTtlMs,
        goneMs: config.webhookGoneTtlMs,
        forbiddenMs: config.forbiddenBackoffMs,
      },
    },
    metrics,
    log,
    requestLogLevel: config.requestLogLevel,
    identify,
    tokenHash,
    globalLimitFor,
    maxHoldMs: config.maxHoldMs,
    bodyLimitBytes: config.bodyLimitBytes,
    retryBodyLimitBytes: config.retryBodyLimitBytes,
    heldBodies: new HeldBodies(config.heldBodyLimitBytes, (delta) => metrics.heldBodyBytes.inc(delta)),
    proxyAuth: config.proxyAuthToken ? createProxyAuth(config.proxyAuthToken) : undefined,
    diagnosticHeaders: config.diagnosticHeaders,
    tracer: deps.tracer,
  });

  const admin = Fastify({
    loggerInstance: fastifyLog,
    logController: new LogController({ disableRequestLogging: true }),
    // Health checks and scrapes are cheap to cut; a scraper's keep-alive socket must not hold the exit up.
    forceCloseConnections: true,
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
      if (budget.exhausted) return 'invalid-request budget used up: refusing to send until it recovers';
      return null;
    },
  });

  const inspector = new Inspector({
    scheduler,
    store,
    budget,
    mode: deps.storeMode ?? 'memory',
    redisUp: () => (store instanceof FailoverStore ? store.healthy : undefined),
    globalLimitFor,
    maxHeld: config.maxHeldRequests,
  });
  registerInspector(admin, { inspector, identify });

  let closing: Promise<void> | undefined;
  const shutdown = async (): Promise<void> => {
    shuttingDown = true;
    metrics.ready.set(0);
    const deadline = performance.now() + config.shutdownTimeoutMs;
    // No new connections from here on; the admin port stays up so the load balancer sees /readyz answer 503.
    const proxyClosed = proxy
      .close()
      .catch((error: unknown) => log.warn({ err: error }, 'public server close'));
    drain.begin();
    log.info({ open: drain.size, timeoutMs: config.shutdownTimeoutMs }, 'draining');
    const drained = await drain.wait(deadline - performance.now());
    if (!drained) {
      log.warn(
        { open: drain.size, held: scheduler.held },
        'shutdown deadline: answering held requests with 503 and cutting upstream calls',
      );
    }
    // Held requests get 503 shutting_down; destroying the pool fails the calls still waiting on Discord, which
    // relay answers itself (a retry it attempts meets the closed scheduler and becomes a 503 too).
    scheduler.close();
    budget.close();
    inspector.close();
    const upstreamClosed = drained ? upstream.close() : upstream.destroy();
    if (!(await drain.wait(FLUSH_GRACE_MS))) {
      log.warn({ open: drain.size }, 'closing connections that are still open');
      drain.cut();
    }
    await within(proxyClosed, FLUSH_GRACE_MS);
    await within(
      upstreamClosed.catch(() => undefined),
      FLUSH_GRACE_MS,
    );
    await within(
      store.close().catch((error: unknown) => log.warn({ err: error }, 'could not close the store')),
      STORE_CLOSE_MS,
    );
    await within(
      admin.close().catch((error: unknown) => log.warn({ err: error }, 'admin server close')),
      FLUSH_GRACE_MS,
    );
  };

  return {
    proxy,
    admin,
    scheduler,
    close() {
      closing ??= shutdown();
      return closing;
    },
  };
}
