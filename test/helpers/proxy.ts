import { pino } from 'pino';
import { type App, buildApp } from '../../src/app.js';
import { type Config, type Env, loadConfig } from '../../src/config.js';
import type { LimiterStore } from '../../src/limiter/types.js';
import { createMetrics, type Metrics } from '../../src/metrics.js';
import { createStore } from '../../src/store.js';
import type { RequestTracer } from '../../src/tracing/types.js';
import { Upstream } from '../../src/upstream.js';

export interface RunningProxy {
  url: string;
  adminUrl: string;
  app: App;
  config: Config;
  metrics: Metrics;
  store: LimiterStore;
  close(): Promise<void>;
}

export interface StartProxyOptions {
  env?: Env;
  store?: (config: Config) => LimiterStore | Promise<LimiterStore>;
  /** Collects the proxy's log lines (JSON) instead of discarding them. */
  logSink?: string[];
  /** Traces requests with this tracer (as main.ts does when an OTLP endpoint is set). */
  tracer?: RequestTracer;
}

/** Builds the production app with real sockets on free loopback ports, pointing at `upstreamUrl`. */
export async function startProxy(
  upstreamUrl: string,
  options: StartProxyOptions = {},
): Promise<RunningProxy> {
  const config = loadConfig({
    PORT: '0',
    ADMIN_PORT: '0',
    HOST: '127.0.0.1',
    ADMIN_HOST: '127.0.0.1',
    UPSTREAM_URL: upstreamUrl,
    REQUEST_LOG_LEVEL: 'debug',
    LOG_LEVEL: options.logSink ? 'debug' : 'silent',
    ...options.env,
  });
  const sink = options.logSink;
  const log = sink
    ? pino({ level: config.logLevel }, { write: (line: string) => void sink.push(line) })
    : pino({ level: 'silent' });
  const metrics = createMetrics();
  const created = createStore(config, metrics, log);
  const custom = await options.store?.(config);
  const store = custom ?? created.store;
  if (custom) await created.store.close();
  const upstream = new Upstream({
    url: config.upstreamUrl,
    connections: config.upstreamConnections,
    timeoutMs: config.upstreamTimeoutMs,
    connectTimeoutMs: config.upstreamConnectTimeoutMs,
  });
  const app = buildApp({
    config,
    store,
    upstream,
    metrics,
    log,
    tracer: options.tracer,
    ...(custom ? {} : { storeCheck: created.check, storeMode: created.mode }),
  });
  const url = await app.proxy.listen({ port: 0, host: '127.0.0.1' });
  const adminUrl = await app.admin.listen({ port: 0, host: '127.0.0.1' });
  return { url, adminUrl, app, config, metrics, store, close: () => app.close() };
}
