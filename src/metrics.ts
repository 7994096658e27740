/**
 * Every Prometheus metric of the proxy, in one registry. Labels are bounded sets: route templates (never raw ids
 * or tokens), methods, status codes, and small enums; that keeps the series count flat however many channels
 * and tokens pass through.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { GENERATED_REASONS } from './errors.js';
import { LEASE_OUTCOMES } from './limiter/leases.js';
import type { UpstreamFailureKind } from './upstream.js';

export const UPSTREAM_SCOPES = ['user', 'global', 'shared', 'sublimit', 'cloudflare'] as const;
export type UpstreamScope = (typeof UPSTREAM_SCOPES)[number];

// The reasons of generated_responses_total are the proxy's answers' own (the table in errors.ts).
export { GENERATED_REASONS, type GeneratedReason } from './errors.js';

/** What relay.ts counts in upstream_errors_total ('aborted' is our client leaving, not an upstream failure). */
export const UPSTREAM_ERROR_KINDS = ['connect', 'timeout', 'socket'] as const satisfies readonly Exclude<
  UpstreamFailureKind,
  'aborted'
>[];

/**
 * Distinct route templates one process labels before it counts new ones as `other`. Discord has about 240
 * routes; a template only goes past that when a client invents path words (`/api/v10/<random>` classifies as a
 * literal), and without a cap each such word would add ~20 series to every scrape.
 */
export const MAX_ROUTE_LABELS = 512;
export const OTHER_ROUTE = 'other';

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

type RouteCap = (route: string) => string;

function routeCap(max: number): RouteCap {
  const seen = new Set<string>();
  return (route) => {
    if (seen.has(route)) return route;
    if (seen.size >= max) return OTHER_ROUTE;
    seen.add(route);
    return route;
  };
}

/**
 * Sends the `route` label of every inc()/observe() through the cap, so callers pass templates without minding the
 * bound. Wraps the instance's own method: prom-client assigns inc/observe per instance in its constructor, so a
 * subclass override would never be called. Exemplars are off, so an object argument is always a label set.
 */
function withRouteCap<M extends Counter<string> | Histogram<string>>(metric: M, cap: RouteCap): M {
  const key = metric instanceof Counter ? 'inc' : 'observe';
  const target = metric as unknown as Record<typeof key, (labels: unknown, value?: number) => void>;
  const original = target[key].bind(metric);
  target[key] = (labels, value) => {
    const route = typeof labels === 'object' ? (labels as { route?: unknown } | null)?.route : undefined;
    if (typeof route !== 'string') return original(labels, value);
    return original({ ...(labels as object), route: cap(route) }, value);
  };
  return metric;
}

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const cap = routeCap(MAX_ROUTE_LABELS);
  const m = {
    registry,
    requests: withRouteCap(
      new Counter({
        name: 'discord_proxy_requests_total',
        help: 'Requests answered, by method, route template and status.',
        labelNames: ['method', 'route', 'status'] as const,
        registers: [registry],
      }),
      cap,
    ),
    duration: withRouteCap(
      new Histogram({
        name: 'discord_proxy_request_duration_seconds',
        help: 'Time from receiving a request to its answer, including hold time.',
        labelNames: ['method', 'route', 'status'] as const,
        buckets: LATENCY_BUCKETS,
        registers: [registry],
      }),
      cap,
    ),
    hold: withRouteCap(
      new Histogram({
        name: 'discord_proxy_hold_seconds',
        help: 'Time a request was held before it was forwarded upstream.',
        labelNames: ['route'] as const,
        buckets: LATENCY_BUCKETS,
        registers: [registry],
      }),
      cap,
    ),
    upstreamDuration: withRouteCap(
      new Histogram({
        name: 'discord_proxy_upstream_duration_seconds',
        help: 'Time from forwarding to the upstream response headers.',
        labelNames: ['route'] as const,
        buckets: LATENCY_BUCKETS,
        registers: [registry],
      }),
      cap,
    ),
    held: new Gauge({
      name: 'discord_proxy_held_requests',
      help: 'Requests held right now, waiting for their bucket or global window.',
      registers: [registry],
    }),
    heldBodyBytes: new Gauge({
      name: 'discord_proxy_held_body_bytes',
      help: 'Bytes of request bodies kept in memory for held requests (bounded by HELD_BODY_LIMIT_BYTES).',
      registers: [registry],
    }),
    upstream429: new Counter({
      name: 'discord_proxy_upstream_429_total',
      help: '429 answers received from Discord, by scope.',
      labelNames: ['scope'] as const,
      registers: [registry],
    }),
    generated: new Counter({
      name: 'discord_proxy_generated_responses_total',
      help: 'Answers the proxy generated itself instead of forwarding, by reason.',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    globalPauses: new Counter({
      name: 'discord_proxy_global_pauses_total',
      help: 'Pauses of an identity after a global 429 from Discord.',
      registers: [registry],
    }),
    retries: new Counter({
      name: 'discord_proxy_upstream_retries_total',
      help: 'Requests sent again upstream, by reason.',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    invalidRequests: new Gauge({
      name: 'discord_proxy_invalid_requests_window',
      help: 'Invalid requests (401, 403, non-shared 429) counted in the current 10-minute window for this egress.',
      registers: [registry],
    }),
    invalidAnswers: new Counter({
      name: 'discord_proxy_invalid_answers_total',
      help: 'Invalid answers (401, 403, non-shared 429) from Discord, by the standing of the identity that drew them: who spends the budget.',
      labelNames: ['standing'] as const,
      registers: [registry],
    }),
    budgetRefusals: new Counter({
      name: 'discord_proxy_budget_refusals_total',
      help: 'Requests refused to protect the invalid-request budget, by the standing of their identity (clean ones only past the hard line).',
      labelNames: ['standing'] as const,
      registers: [registry],
    }),
    invalidBudget: new Gauge({
      name: 'discord_proxy_invalid_request_budget',
      help: 'The configured invalid-request budget per 10 minutes (Discord bans at 10,000).',
      registers: [registry],
    }),
    upstreamErrors: new Counter({
      name: 'discord_proxy_upstream_errors_total',
      help: 'Failures to get an answer from upstream, by kind.',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    redisErrors: new Counter({
      name: 'discord_proxy_redis_errors_total',
      help: 'Redis commands that failed.',
      registers: [registry],
    }),
    redisLatency: new Histogram({
      name: 'discord_proxy_redis_duration_seconds',
      help: 'Round trip of limiter calls to Redis, by operation (admit and learn: one per script call, however many requests it carries).',
      labelNames: ['op'] as const,
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
      registers: [registry],
    }),
    leased: new Counter({
      name: 'discord_proxy_redis_leased_admissions_total',
      help: 'Global slots and bucket places taken from Redis ahead of demand (granted), admissions made from them without a round trip (spent), and parts given back unused (returned).',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    redisUp: new Gauge({
      name: 'discord_proxy_redis_up',
      help: '1 when the shared state in Redis is reachable (or not configured), 0 while falling back.',
      registers: [registry],
    }),
    ready: new Gauge({
      name: 'discord_proxy_ready',
      help: '1 when /readyz would answer 200.',
      registers: [registry],
    }),
    cloudflareCooldown: new Gauge({
      name: 'discord_proxy_cloudflare_cooldown',
      help: '1 while all upstream traffic is paused after a Cloudflare ban.',
      registers: [registry],
    }),
    shortCircuits: new Counter({
      name: 'discord_proxy_short_circuit_total',
      help: 'Requests answered without contacting Discord because they were known to fail, by reason.',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
  };
  m.redisUp.set(1);
  // Labelled counters only appear at their first event, and rate()/increase() need a sample before it to see
  // that event at all: an alert on the first 429 of a scope would otherwise never fire.
  for (const scope of UPSTREAM_SCOPES) m.upstream429.inc({ scope }, 0);
  for (const reason of GENERATED_REASONS) m.generated.inc({ reason }, 0);
  for (const kind of UPSTREAM_ERROR_KINDS) m.upstreamErrors.inc({ kind }, 0);
  for (const outcome of LEASE_OUTCOMES) m.leased.inc({ outcome }, 0);
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;
