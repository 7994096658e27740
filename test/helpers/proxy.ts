import { type App, buildApp } from '../../src/app.js';
import { type Config, type Env, loadConfig } from '../../src/config.js';
import type { LimiterStore } from '../../src/limiter/types.js';
import type { Metrics } from '../../src/metrics.js';
import { createParts } from '../../src/parts.js';
import type { RequestTracer } from '../../src/tracing/types.js';

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
  const custom = await options.store?.(config);
  // The same parts as production (src/parts.ts), with the test's store and log sink when it gives them.
  const parts = createParts(config, {
    ...(custom ? { store: custom } : {}),
    ...(sink ? { logSink: (line: string) => void sink.push(line) } : {}),
  });
  const app = buildApp({ ...parts, tracer: options.tracer });
  const url = await app.proxy.listen({ port: 0, host: '127.0.0.1' });
  const adminUrl = await app.admin.listen({ port: 0, host: '127.0.0.1' });
  return { url, adminUrl, app, config, metrics: parts.metrics, store: parts.store, close: () => app.close() };
}
