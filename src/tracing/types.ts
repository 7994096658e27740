/**
 * The seam between the request path and OpenTelemetry. The request path only ever sees these two interfaces, and
 * only through optional fields: with tracing off (no OTLP endpoint) the tracer is undefined, the SDK is never loaded,
 * and each hook point costs one `?.` on an undefined field.
 *
 * Times are `performance.now()` values, the clock the request path already reads; no hook reads a clock of its own
 * unless it ends something.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { RouteInfo } from '../discord/types.js';

/** How a request ended, as its SERVER span records it (what reply.ts logs and counts). */
export interface TracedEnd {
  /** The status the client got, Discord's or the proxy's; undefined when the client went away first. */
  readonly status: number | undefined;
  /** The reason of the proxy's own answer, when it answered itself. */
  readonly generated?: string | undefined;
  readonly retries: number;
  readonly holdMs: number;
  readonly upstreamMs: number;
}

/** Starts one request's trace; present only while tracing is on. */
export interface RequestTracer {
  /**
   * The SERVER span of one classified request, a child of the client's `traceparent` when it sent one. Takes the
   * route as classified (template, route key, major parameter): never the raw URL, which may hold a webhook token.
   */
  start(
    headers: IncomingHttpHeaders,
    method: string,
    route: Pick<RouteInfo, 'template' | 'routeKey' | 'major'>,
    startedAt: number,
  ): RequestTrace;
}

/** One request's spans. Every method is safe to call after the request ended (it then does nothing). */
export interface RequestTrace {
  /** One wait for admission, from `since` to now: `admitted` or the reason it was refused. */
  held(since: number, outcome: string): void;
  /** One upstream attempt (0 first), from `sentAt` to Discord's response headers (now): its status, or the error. */
  attempt(attempt: number, sentAt: number, status: number | undefined, error?: unknown): void;
  /** The request was answered (its answer written to the end) or its client went away. */
  end(outcome: TracedEnd): void;
  /** The proxy itself failed (a bug); the span records the error's type, never its message. */
  fail(error: unknown): void;
}

/** Tracing while it is on: the tracer the request path calls, and the exporter's lifecycle. */
export interface Tracing {
  readonly tracer: RequestTracer;
  /** Sends every finished span now (tests; never needed in production, where the batch processor sends them). */
  flush(): Promise<void>;
  /** Sends what is left and stops, within a bound: an unreachable collector must not hold the exit up. */
  shutdown(): Promise<void>;
}

/** What otel.ts is given: tracing is on, so there is an endpoint. */
export interface TracingConfig {
  readonly tracesEndpoint: string;
  readonly serviceName: string;
}
