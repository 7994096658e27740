/**
 * Every Prometheus metric of the proxy, in one registry. Labels are bounded sets: route templates (never raw ids
 * or tokens), methods, status codes, and small enums; that keeps the series count flat however many channels
 * and tokens pass through.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

export type UpstreamScope = 'user' | 'global' | 'shared' | 'sublimit' | 'cloudflare';
export type GeneratedReason =
  | 'hold_timeout'
  | 'cloudflare_cooldown'
  | 'upstream_unreachable'
  | 'upstream_timeout'
  | 'bad_request'
  | 'unauthorized'
  | 'token_revoked'
  | 'webhook_deleted'
  | 'forbidden_backoff'
  | 'invalid_budget'
  | 'overloaded'
  | 'redis_unavailable'
  | 'shutting_down'
  | 'not_found';

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const m = {
    registry,
    requests: new Counter({
      name: 'discord_proxy_requests_total',
      help: 'Requests answered, by method, route template and status.',
      labelNames: ['method', 'route', 'status'] as const,
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'discord_proxy_request_duration_seconds',
      help: 'Time from receiving a request to its answer, including hold time.',
      labelNames: ['method', 'route', 'status'] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    hold: new Histogram({
      name: 'discord_proxy_hold_seconds',
      help: 'Time a request was held before it was forwarded upstream.',
      labelNames: ['route'] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    upstreamDuration: new Histogram({
      name: 'discord_proxy_upstream_duration_seconds',
      help: 'Time from forwarding to the upstream response headers.',
      labelNames: ['route'] as const,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    held: new Gauge({
      name: 'discord_proxy_held_requests',
      help: 'Requests held right now, waiting for their bucket or global window.',
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
      help: 'Round trip of limiter calls to Redis, by operation.',
      labelNames: ['op'] as const,
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5],
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
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;
