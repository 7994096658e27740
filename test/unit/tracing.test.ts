/**
 * Tracing is off unless an OTLP endpoint is configured, and then OpenTelemetry is not even loaded; the endpoint and
 * sampler variables are read and checked as the OpenTelemetry specification describes them.
 */
import { describe, expect, it, vi } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';
import { type LoadOtel, startTracing } from '../../src/tracing/start.js';
import type { RequestTracer, Tracing } from '../../src/tracing/types.js';

describe('startTracing', () => {
  it('returns no tracer and never loads the SDK without an endpoint', async () => {
    const load = vi.fn<LoadOtel>();
    const config = loadConfig({});
    expect(config.tracesEndpoint).toBeUndefined();
    expect(await startTracing(config, undefined, load)).toBeUndefined();
    expect(load).not.toHaveBeenCalled();
  });

  it('loads the SDK once and hands it the endpoint and service name when one is set', async () => {
    const tracer: RequestTracer = { start: vi.fn() };
    const shutdown = vi.fn(() => Promise.resolve());
    const created: Tracing = { tracer, flush: () => Promise.resolve(), shutdown };
    const createTracing = vi.fn(() => created);
    const load = vi.fn<LoadOtel>(() => Promise.resolve({ createTracing }));
    const config = loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' });
    const tracing = await startTracing(config, undefined, load);
    expect(load).toHaveBeenCalledTimes(1);
    expect(createTracing).toHaveBeenCalledWith(
      { tracesEndpoint: 'http://collector:4318/v1/traces', serviceName: 'discord-ratelimit-proxy' },
      undefined,
    );
    expect(tracing?.tracer).toBe(tracer);
    await tracing?.shutdown();
    expect(shutdown).toHaveBeenCalledTimes(1);
  });

  it('does not wait on a collector that never answers at shutdown', async () => {
    vi.useFakeTimers();
    try {
      const created: Tracing = {
        tracer: { start: vi.fn() },
        flush: () => Promise.resolve(),
        shutdown: () => new Promise<void>(() => undefined),
      };
      const load: LoadOtel = () => Promise.resolve({ createTracing: () => created });
      const tracing = await startTracing(
        { tracesEndpoint: 'http://collector:4318/v1/traces', serviceName: 'x' },
        undefined,
        load,
      );
      let done = false;
      void tracing?.shutdown().then(() => {
        done = true;
      });
      await vi.advanceTimersByTimeAsync(1999);
      expect(done).toBe(false);
      await vi.advanceTimersByTimeAsync(1);
      expect(done).toBe(true);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('tracing configuration', () => {
  it('appends /v1/traces to the general endpoint and takes the traces endpoint as it is', () => {
    expect(loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/' }).tracesEndpoint).toBe(
      'http://collector:4318/v1/traces',
    );
    expect(
      loadConfig({
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://traces.example:4318/custom',
      }).tracesEndpoint,
    ).toBe('https://traces.example:4318/custom');
    expect(loadConfig({ OTEL_SERVICE_NAME: 'edge-proxy' }).serviceName).toBe('edge-proxy');
  });

  it('reports a bad endpoint, sampler or ratio at start-up, all at once', () => {
    const load = () =>
      loadConfig({
        OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4318',
        OTEL_TRACES_SAMPLER: 'parentbased_traceidratio_typo',
        OTEL_TRACES_SAMPLER_ARG: '1.5',
      });
    expect(load).toThrow(ConfigError);
    try {
      load();
    } catch (error) {
      const problems = (error as ConfigError).problems.join('\n');
      expect(problems).toMatch(/OTEL_EXPORTER_OTLP_ENDPOINT/);
      expect(problems).toMatch(/OTEL_TRACES_SAMPLER must be/);
      expect(problems).toMatch(/OTEL_TRACES_SAMPLER_ARG/);
    }
    expect(() =>
      loadConfig({ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.25' }),
    ).not.toThrow();
  });
});
