/**
 * Decides whether the proxy traces, and only then loads OpenTelemetry: without an OTLP endpoint nothing of the SDK
 * is imported (its modules, timers and exporter would cost memory and start-up time for nothing), and the request
 * path gets no tracer at all.
 */
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { Tracing, TracingConfig } from './types.js';

/** What otel.ts exports; a parameter so that a test can see it is never loaded when tracing is off. */
export type LoadOtel = () => Promise<{
  createTracing(config: TracingConfig, log: Logger | undefined): Tracing;
}>;

const SHUTDOWN_FLUSH_MS = 2000;

/** The SDK, loaded on demand. */
const loadOtel: LoadOtel = () => import('./otel.js');

/**
 * Tracing as configured, or undefined when no OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT): then `load` is never called.
 */
export async function startTracing(
  config: Pick<Config, 'tracesEndpoint' | 'serviceName'>,
  log?: Logger,
  load: LoadOtel = loadOtel,
): Promise<Tracing | undefined> {
  const { tracesEndpoint, serviceName } = config;
  if (tracesEndpoint === undefined) return undefined;
  const { createTracing } = await load();
  const tracing = createTracing({ tracesEndpoint, serviceName }, log);
  return {
    tracer: tracing.tracer,
    flush: () => tracing.flush(),
    shutdown: () => within(tracing.shutdown(), SHUTDOWN_FLUSH_MS),
  };
}

function within(promise: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  return Promise.race([promise.catch(() => undefined), timeout]).finally(() => clearTimeout(timer));
}
