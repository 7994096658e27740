/**
 * The OpenTelemetry side of tracing, imported only by start.ts and only when an OTLP endpoint is configured.
 *
 * One trace per proxied request:
 * - a SERVER span `METHOD /route/template`, a child of the client's `traceparent` when it sent one, from arrival to
 *   the answer's headers;
 * - under it an INTERNAL `hold` span for each wait for admission (the first, and one before each retry);
 * - and a CLIENT span `METHOD /route/template` for each attempt upstream, up to Discord's response headers.
 *
 * What goes into them is chosen so that no secret can: route templates (ids and tokens replaced), the bucket as
 * X-Proxy-Bucket shows it (webhook tokens hashed), numbers and reasons. Never the URL, a header, or an error's
 * message (undici's can quote the request). The client's `traceparent` and `tracestate` go upstream as the client
 * sent them (they are ordinary headers to the proxy); the proxy's own span ids are not injected, since Discord
 * does not continue traces and the headers are the client's.
 *
 * Every span is created with the times the request path measured (`performance.now()`), after the fact: nothing
 * is kept per held request beyond the SERVER span itself. They are turned into wall-clock times with one origin per
 * request: the SDK would correct each span by its own reading of Date.now(), whose millisecond steps could then put a
 * child a fraction of a millisecond outside its parent.
 */
import { hostname } from 'node:os';
import {
  type Attributes,
  type Context,
  defaultTextMapGetter,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import {
  defaultResource,
  detectResources,
  envDetector,
  resourceFromAttributes,
} from '@opentelemetry/resources';
import { BasicTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import {
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_REQUEST_RESEND_COUNT,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_SERVICE_INSTANCE_ID,
  ATTR_SERVICE_NAME,
} from '@opentelemetry/semantic-conventions';
import type { Logger } from 'pino';
import type { RouteInfo } from '../discord/types.js';
import type { RequestTrace, RequestTracer, TracedEnd, Tracing, TracingConfig } from './types.js';

/** Still "development" in the semantic conventions, so not exported by their stable entry point. */
const ATTR_URL_TEMPLATE = 'url.template';

/** The proxy's own attributes. */
export const ATTR = {
  /** Route key and major parameter, as X-Proxy-Bucket shows them (webhook tokens hashed). */
  bucket: 'discord_proxy.bucket',
  retries: 'discord_proxy.retries',
  holdMs: 'discord_proxy.hold_ms',
  upstreamMs: 'discord_proxy.upstream_ms',
  /** The reason of an answer the proxy made itself (hold_timeout, known_bad, …). */
  generated: 'discord_proxy.generated',
  /** `admitted`, or why a wait ended without admission. */
  holdOutcome: 'discord_proxy.hold.outcome',
  /** The client left before its answer. */
  aborted: 'discord_proxy.aborted',
} as const;

const TRACER_NAME = 'discord-ratelimit-proxy';

export function createTracing(config: TracingConfig, log: Logger | undefined): Tracing {
  // Defaults of the proxy's own, under what OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME say (envDetector): the
  // replica is its host name (the pod's name in Kubernetes, the container's id in Compose), which is also what
  // tells replicas apart in Prometheus's `instance` once resolved.
  const resource = defaultResource()
    .merge(
      resourceFromAttributes({
        [ATTR_SERVICE_NAME]: config.serviceName,
        [ATTR_SERVICE_INSTANCE_ID]: hostname(),
      }),
    )
    .merge(detectResources({ detectors: [envDetector] }));
  // The exporter reads OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT and _COMPRESSION itself; the URL is the one config.ts
  // validated. The batch processor reads OTEL_BSP_*, the provider OTEL_TRACES_SAMPLER and _ARG.
  const exporter = new OTLPTraceExporter({ url: config.tracesEndpoint });
  const provider = new BasicTracerProvider({
    resource,
    spanProcessors: [new BatchSpanProcessor(exporter)],
  });
  log?.info({ endpoint: config.tracesEndpoint, service: config.serviceName }, 'exporting traces (OTLP/HTTP)');
  return {
    tracer: new OtelRequestTracer(provider.getTracer(TRACER_NAME)),
    flush: () => provider.forceFlush(),
    shutdown: () => provider.shutdown(),
  };
}

const propagator = new W3CTraceContextPropagator();

class OtelRequestTracer implements RequestTracer {
  constructor(private readonly tracer: Tracer) {}

  start(
    headers: Record<string, string | string[] | undefined>,
    method: string,
    route: Pick<RouteInfo, 'template' | 'routeKey' | 'major'>,
    startedAt: number,
  ): RequestTrace {
    // Only traceparent and tracestate are read from the headers; nothing else of them is kept.
    const parent =
      headers.traceparent === undefined
        ? ROOT_CONTEXT
        : propagator.extract(ROOT_CONTEXT, headers, defaultTextMapGetter);
    const origin = Date.now() - performance.now();
    const span = this.tracer.startSpan(
      `${method} ${route.template}`,
      {
        kind: SpanKind.SERVER,
        startTime: origin + startedAt,
        attributes: {
          [ATTR_HTTP_REQUEST_METHOD]: method,
          [ATTR_HTTP_ROUTE]: route.template,
          [ATTR.bucket]: `${route.routeKey} ${route.major}`,
        },
      },
      parent,
    );
    return new OtelRequestTrace(this.tracer, span, origin, method, route.template);
  }
}

class OtelRequestTrace implements RequestTrace {
  private ended = false;
  /** The SERVER span as a parent, made on the first child (most requests have two: one hold, one attempt). */
  private context: Context | undefined;

  constructor(
    private readonly tracer: Tracer,
    private readonly span: Span,
    /** Wall-clock milliseconds at performance.now() 0, read once for the whole trace. */
    private readonly origin: number,
    private readonly method: string,
    private readonly template: string,
  ) {}

  held(since: number, outcome: string): void {
    if (!this.recording()) return;
    const now = performance.now();
    this.child('hold', SpanKind.INTERNAL, since, {
      [ATTR.holdOutcome]: outcome,
      [ATTR.holdMs]: Math.round(now - since),
    }).end(this.origin + now);
  }

  attempt(attempt: number, sentAt: number, status: number | undefined, error?: unknown): void {
    if (!this.recording()) return;
    const attributes: Attributes = {
      [ATTR_HTTP_REQUEST_METHOD]: this.method,
      [ATTR_URL_TEMPLATE]: this.template,
    };
    // The semantic conventions put the resend count on retries only.
    if (attempt > 0) attributes[ATTR_HTTP_REQUEST_RESEND_COUNT] = attempt;
    if (status !== undefined) attributes[ATTR_HTTP_RESPONSE_STATUS_CODE] = status;
    else attributes[ATTR_ERROR_TYPE] = errorType(error);
    const span = this.child(`${this.method} ${this.template}`, SpanKind.CLIENT, sentAt, attributes);
    // For a client span every 4xx is an error (semantic conventions), the 429s that were retried included.
    if (status === undefined || status >= 400) span.setStatus({ code: SpanStatusCode.ERROR });
    span.end(this.origin + performance.now());
  }

  end(outcome: TracedEnd): void {
    if (this.ended) return;
    this.ended = true;
    const { status, generated } = outcome;
    const span = this.span;
    span.setAttribute(ATTR.retries, outcome.retries);
    span.setAttribute(ATTR.holdMs, Math.round(outcome.holdMs));
    span.setAttribute(ATTR.upstreamMs, Math.round(outcome.upstreamMs));
    if (status !== undefined) span.setAttribute(ATTR_HTTP_RESPONSE_STATUS_CODE, status);
    else span.setAttribute(ATTR.aborted, true);
    if (generated) span.setAttribute(ATTR.generated, generated);
    // For a server span only 5xx are errors: a 4xx is the client's (semantic conventions).
    if (status !== undefined && status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
    span.end(this.origin + performance.now());
  }

  fail(error: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.span.setAttribute(ATTR_ERROR_TYPE, errorType(error));
    this.span.setStatus({ code: SpanStatusCode.ERROR });
    this.span.end(this.origin + performance.now());
  }

  /** False once ended, and for requests the sampler left out (children of an unsampled parent included). */
  private recording(): boolean {
    return !this.ended && this.span.isRecording();
  }

  private child(name: string, kind: SpanKind, startTime: number, attributes: Attributes): Span {
    this.context ??= trace.setSpan(ROOT_CONTEXT, this.span);
    return this.tracer.startSpan(
      name,
      { kind, startTime: this.origin + startTime, attributes },
      this.context,
    );
  }
}

/** What failed, never how it was described: upstream errors carry a kind, anything else its class name. */
function errorType(error: unknown): string {
  if (typeof error === 'object' && error !== null) {
    const kind = (error as { kind?: unknown }).kind;
    if (typeof kind === 'string') return kind;
    return error.constructor?.name ?? 'Error';
  }
  return 'unknown';
}
