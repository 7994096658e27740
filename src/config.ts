/**
 * Environment → frozen, typed Config. Every problem is collected and reported at once, so an operator
 * fixes a broken deployment in one round instead of one variable per restart.
 */

export interface Config {
  readonly port: number;
  readonly host: string;
  readonly adminPort: number;
  readonly adminHost: string;
  readonly upstreamUrl: string;
  readonly redisUrl: string | undefined;
  readonly redisClusterNodes: readonly string[];
  readonly redisKeyPrefix: string;
  /** While Redis is unreachable each replica uses this share of the global limit: limit / this. */
  readonly redisFallbackReplicas: number;
  /** Most requests of one identity sent to Redis in one script call (1: one call per request). */
  readonly redisBatchMax: number;
  readonly redisLeaseMs: number;
  readonly redisPlaceLeaseMs: number;
  readonly redisLearnLingerMs: number;
  readonly globalRateLimit: number;
  readonly globalRateLimitOverrides: ReadonlyMap<string, number>;
  /** Added to the 1000 ms global window so jitter between here and Discord cannot squeeze 51 into a second. */
  readonly globalWindowMarginMs: number;
  /** Added to every learned reset: transit time and header rounding must never make the proxy early. */
  readonly resetMarginMs: number;
  readonly maxHoldMs: number;
  readonly maxRetries: number;
  readonly upstreamTimeoutMs: number;
  readonly upstreamConnectTimeoutMs: number;
  readonly upstreamConnections: number;
  readonly cloudflareCooldownMs: number;
  readonly bodyLimitBytes: number;
  /** Bodies up to this size are buffered so that a 429 can be retried for the client; larger ones stream once. */
  readonly retryBodyLimitBytes: number;
  /** Bytes of request bodies a replica keeps in memory for held requests; bodies past it wait in their sockets. */
  readonly heldBodyLimitBytes: number;
  readonly tokenHashKey: string;
  readonly proxyAuthToken: string | undefined;
  readonly logLevel: string;
  readonly requestLogLevel: string;
  readonly shutdownTimeoutMs: number;
  /** Invalid responses (401, 403, non-shared 429) allowed per 10 minutes for this egress; Discord bans at 10,000. */
  readonly invalidRequestBudget: number;
  /** Percent of the budget past which only identities with a clean record are served. */
  readonly invalidBudgetSoftPercent: number;
  readonly revokedTokenTtlMs: number;
  readonly webhookGoneTtlMs: number;
  readonly forbiddenBackoffMs: number;
  readonly maxHeldRequests: number;
  readonly maxHeldPerIdentity: number;
  readonly maxHeaderBytes: number;
  readonly headersTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  /** X-Proxy-Hold-Ms, X-Proxy-Upstream-Ms, X-Proxy-Retries and X-Proxy-Bucket on every answer. */
  readonly diagnosticHeaders: boolean;
  /** Where OTLP/HTTP traces go (the signal's URL, `/v1/traces` included); undefined: tracing off, SDK not loaded. */
  readonly tracesEndpoint: string | undefined;
  /** The traces' `service.name`. */
  readonly serviceName: string;
}

export type Env = Readonly<Record<string, string | undefined>>;

/** Every variable the proxy reads, with its default; the README's table mirrors this list. */
export const ENV_DEFAULTS = {
  PORT: '8080',
  HOST: '0.0.0.0',
  ADMIN_PORT: '9090',
  ADMIN_HOST: '0.0.0.0',
  UPSTREAM_URL: 'https://discord.com',
  REDIS_URL: '',
  REDIS_CLUSTER_NODES: '',
  REDIS_KEY_PREFIX: 'drlp:',
  REDIS_FALLBACK_REPLICAS: '3',
  REDIS_BATCH_MAX: '64',
  REDIS_LEASE_MS: '200',
  REDIS_PLACE_LEASE_MS: '1000',
  REDIS_LEARN_LINGER_MS: '20',
  GLOBAL_RATE_LIMIT: '50',
  GLOBAL_RATE_LIMIT_OVERRIDES: '',
  GLOBAL_WINDOW_MARGIN_MS: '20',
  RESET_MARGIN_MS: '15',
  MAX_HOLD_MS: '30000',
  MAX_RETRIES: '3',
  UPSTREAM_TIMEOUT_MS: '30000',
  UPSTREAM_CONNECT_TIMEOUT_MS: '10000',
  UPSTREAM_CONNECTIONS: '256',
  CLOUDFLARE_COOLDOWN_MS: '600000',
  BODY_LIMIT_BYTES: String(520 * 1024 * 1024),
  RETRY_BODY_LIMIT_BYTES: String(1024 * 1024),
  HELD_BODY_LIMIT_BYTES: String(64 * 1024 * 1024),
  TOKEN_HASH_KEY: '',
  PROXY_AUTH_TOKEN: '',
  LOG_LEVEL: 'info',
  REQUEST_LOG_LEVEL: 'debug',
  SHUTDOWN_TIMEOUT_MS: '10000',
  INVALID_REQUEST_BUDGET: '5000',
  INVALID_BUDGET_SOFT_PERCENT: '50',
  REVOKED_TOKEN_TTL_MS: '600000',
  WEBHOOK_GONE_TTL_MS: '600000',
  FORBIDDEN_BACKOFF_MS: '30000',
  MAX_HELD_REQUESTS: '20000',
  MAX_HELD_PER_IDENTITY: '10000',
  MAX_HEADER_BYTES: '16384',
  HEADERS_TIMEOUT_MS: '10000',
  KEEP_ALIVE_TIMEOUT_MS: '65000',
  PROXY_DIAGNOSTIC_HEADERS: 'true',
  // The standard OpenTelemetry variables the proxy acts on; the sampler ones are read by the SDK itself and only
  // checked here, so that a typo is reported at start-up rather than silently sampling everything.
  OTEL_EXPORTER_OTLP_ENDPOINT: '',
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: '',
  OTEL_SERVICE_NAME: 'discord-ratelimit-proxy',
  OTEL_TRACES_SAMPLER: 'parentbased_always_on',
  OTEL_TRACES_SAMPLER_ARG: '',
} as const satisfies Record<string, string>;

export type EnvName = keyof typeof ENV_DEFAULTS;

const LOG_LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);
/** The samplers the OpenTelemetry SDK builds from OTEL_TRACES_SAMPLER (the jaeger/xray ones need other packages). */
const SAMPLERS = new Set([
  'always_on',
  'always_off',
  'traceidratio',
  'parentbased_always_on',
  'parentbased_always_off',
  'parentbased_traceidratio',
]);

// Without TOKEN_HASH_KEY the hash is still keyed, but with a key anyone can read here; replicas must agree on it.
const DEFAULT_TOKEN_HASH_KEY = 'discord-ratelimit-proxy/default-key';

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`Invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

export function loadConfig(env: Env): Config {
  const problems: string[] = [];
  const raw = (name: EnvName): string => {
    const value = env[name];
    return value === undefined || value === '' ? ENV_DEFAULTS[name] : value.trim();
  };
  const int = (name: EnvName, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const text = raw(name);
    const value = Number(text);
    if (!/^\d+$/.test(text) || value < min || value > max) {
      problems.push(`${name} must be an integer between ${min} and ${max}, got "${text}"`);
      return Number(ENV_DEFAULTS[name]);
    }
    return value;
  };
  const url = (name: EnvName, protocols: readonly string[]): string | undefined => {
    const text = raw(name);
    if (text === '') return undefined;
    try {
      const parsed = new URL(text);
      if (!protocols.includes(parsed.protocol)) throw new Error('protocol');
      return text;
    } catch {
      problems.push(`${name} must be a URL (${protocols.join(' or ')}), got "${text}"`);
      return undefined;
    }
  };
  const bool = (name: EnvName): boolean => {
    const text = raw(name).toLowerCase();
    if (text !== 'true' && text !== 'false') problems.push(`${name} must be true or false, got "${text}"`);
    return text === 'true';
  };
  const level = (name: EnvName): string => {
    const text = raw(name);
    if (!LOG_LEVELS.has(text))
      problems.push(`${name} must be one of ${[...LOG_LEVELS].join(', ')}, got "${text}"`);
    return text;
  };

  const upstream = url('UPSTREAM_URL', ['http:', 'https:']);
  if (upstream && new URL(upstream).pathname !== '/') {
    problems.push(
      `UPSTREAM_URL must be an origin without a path (the request path is appended), got "${upstream}"`,
    );
  }
  const config: Config = {
    port: int('PORT', 0, 65535),
    host: raw('HOST'),
    adminPort: int('ADMIN_PORT', 0, 65535),
    adminHost: raw('ADMIN_HOST'),
    upstreamUrl: (upstream ?? ENV_DEFAULTS.UPSTREAM_URL).replace(/\/$/, ''),
    redisUrl: url('REDIS_URL', ['redis:', 'rediss:']),
    redisClusterNodes: parseClusterNodes(raw('REDIS_CLUSTER_NODES'), problems),
    redisKeyPrefix: raw('REDIS_KEY_PREFIX'),
    redisFallbackReplicas: int('REDIS_FALLBACK_REPLICAS', 1, 1000),
    redisBatchMax: int('REDIS_BATCH_MAX', 1, 1000),
    redisLeaseMs: int('REDIS_LEASE_MS', 0, 1000),
    redisPlaceLeaseMs: int('REDIS_PLACE_LEASE_MS', 0, 5000),
    redisLearnLingerMs: int('REDIS_LEARN_LINGER_MS', 0, 100),
    globalRateLimit: int('GLOBAL_RATE_LIMIT', 1, 100_000),
    globalRateLimitOverrides: parseOverrides(raw('GLOBAL_RATE_LIMIT_OVERRIDES'), problems),
    globalWindowMarginMs: int('GLOBAL_WINDOW_MARGIN_MS', 0, 1000),
    resetMarginMs: int('RESET_MARGIN_MS', 0, 5000),
    maxHoldMs: int('MAX_HOLD_MS', 1, 3_600_000),
    maxRetries: int('MAX_RETRIES', 0, 10),
    upstreamTimeoutMs: int('UPSTREAM_TIMEOUT_MS', 100, 600_000),
    upstreamConnectTimeoutMs: int('UPSTREAM_CONNECT_TIMEOUT_MS', 100, 600_000),
    upstreamConnections: int('UPSTREAM_CONNECTIONS', 1, 10_000),
    cloudflareCooldownMs: int('CLOUDFLARE_COOLDOWN_MS', 1000, 86_400_000),
    bodyLimitBytes: int('BODY_LIMIT_BYTES', 1024),
    retryBodyLimitBytes: int('RETRY_BODY_LIMIT_BYTES', 0),
    heldBodyLimitBytes: int('HELD_BODY_LIMIT_BYTES', 0),
    tokenHashKey: raw('TOKEN_HASH_KEY') || DEFAULT_TOKEN_HASH_KEY,
    proxyAuthToken: raw('PROXY_AUTH_TOKEN') || undefined,
    logLevel: level('LOG_LEVEL'),
    requestLogLevel: level('REQUEST_LOG_LEVEL'),
    shutdownTimeoutMs: int('SHUTDOWN_TIMEOUT_MS', 0, 600_000),
    invalidRequestBudget: int('INVALID_REQUEST_BUDGET', 1, 9_999),
    invalidBudgetSoftPercent: int('INVALID_BUDGET_SOFT_PERCENT', 1, 100),
    revokedTokenTtlMs: int('REVOKED_TOKEN_TTL_MS', 0, 86_400_000),
    webhookGoneTtlMs: int('WEBHOOK_GONE_TTL_MS', 0, 86_400_000),
    forbiddenBackoffMs: int('FORBIDDEN_BACKOFF_MS', 0, 86_400_000),
    maxHeldRequests: int('MAX_HELD_REQUESTS', 1, 10_000_000),
    maxHeldPerIdentity: int('MAX_HELD_PER_IDENTITY', 1, 10_000_000),
    maxHeaderBytes: int('MAX_HEADER_BYTES', 1024, 1_048_576),
    headersTimeoutMs: int('HEADERS_TIMEOUT_MS', 100, 600_000),
    keepAliveTimeoutMs: int('KEEP_ALIVE_TIMEOUT_MS', 100, 3_600_000),
    diagnosticHeaders: bool('PROXY_DIAGNOSTIC_HEADERS'),
    tracesEndpoint: tracesEndpoint(
      url('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', ['http:', 'https:']),
      url('OTEL_EXPORTER_OTLP_ENDPOINT', ['http:', 'https:']),
    ),
    serviceName: raw('OTEL_SERVICE_NAME'),
  };
  if (!SAMPLERS.has(raw('OTEL_TRACES_SAMPLER'))) {
    problems.push(
      `OTEL_TRACES_SAMPLER must be one of ${[...SAMPLERS].join(', ')}, got "${raw('OTEL_TRACES_SAMPLER')}"`,
    );
  }
  const ratio = raw('OTEL_TRACES_SAMPLER_ARG');
  if (ratio !== '' && !/^(0(\.\d+)?|1(\.0+)?|\.\d+)$/.test(ratio)) {
    problems.push(`OTEL_TRACES_SAMPLER_ARG must be a ratio between 0 and 1, got "${ratio}"`);
  }
  if (/[{}]/.test(config.redisKeyPrefix)) {
    problems.push('REDIS_KEY_PREFIX must not contain { or }: they would move the per-identity hash tag');
  }
  if (config.redisUrl && config.redisClusterNodes.length > 0) {
    problems.push('set either REDIS_URL or REDIS_CLUSTER_NODES, not both');
  }
  if (config.port !== 0 && config.port === config.adminPort) {
    problems.push('ADMIN_PORT must differ from PORT: metrics and health are never served on the public port');
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze(config);
}

/**
 * The traces URL as the OTLP exporter specification builds it: the signal's own variable as it is, or the
 * general one with `/v1/traces` appended.
 */
function tracesEndpoint(traces: string | undefined, general: string | undefined): string | undefined {
  if (traces !== undefined) return traces;
  return general === undefined ? undefined : `${general.replace(/\/+$/, '')}/v1/traces`;
}

/** "123456789012345678:500,234567890123456789:1200" → bot id → requests per second. */
function parseOverrides(text: string, problems: string[]): ReadonlyMap<string, number> {
  const map = new Map<string, number>();
  if (text === '') return map;
  for (const part of text.split(',')) {
    const [id, limit] = part.trim().split(':');
    if (!id || !/^\d{17,20}$/.test(id) || !limit || !/^\d+$/.test(limit) || Number(limit) < 1) {
      problems.push(
        `GLOBAL_RATE_LIMIT_OVERRIDES entries must look like <bot id>:<limit>, got "${part.trim()}"`,
      );
      continue;
    }
    map.set(id, Number(limit));
  }
  return map;
}

function parseClusterNodes(text: string, problems: string[]): readonly string[] {
  if (text === '') return [];
  const nodes = text.split(',').map((node) => node.trim());
  for (const node of nodes) {
    if (!/^[\w.-]+:\d{1,5}$/.test(node))
      problems.push(`REDIS_CLUSTER_NODES entries must be host:port, got "${node}"`);
  }
  return nodes;
}
