// What the fake answers, decided when the request is evaluated, and the headers, which are computed only
// when the answer leaves (after the simulated latency) so that Reset-After and Retry-After shrink with it.

export type ReplyKind = 'ok' | 'error' | 'user' | 'global' | 'shared' | 'sublimit' | 'cloudflare' | 'failure';

/** The caller's own route bucket as it stood when the request was evaluated. */
export interface BucketSnap {
  readonly hash: string;
  readonly limit: number;
  readonly remaining: number;
  readonly resetAt: number;
}

export interface Reply {
  readonly kind: ReplyKind;
  readonly status: number;
  /** For 429s the body is built at send time from `message`, since retry_after depends on that moment. */
  readonly body: string | Buffer | null;
  readonly contentType: string;
  readonly bucket: BucketSnap | null;
  /** 429s: when the caller may retry (performance.now() time). */
  readonly retryAt: number;
  readonly message: string;
  readonly code: number | null;
  readonly headers: readonly string[];
  /** No X-RateLimit-* headers at all: a header-less route (PolicyOverride.headers false). */
  readonly bare: boolean;
  /** The route's shortRetryAfter; null defers to ReplyFormat.shortRetryAfter. */
  readonly shortRetryAfter: number | null;
}

export interface ReplyFormat {
  readonly decimals: 3 | 2;
  readonly retryDecimals: 3 | 1;
  readonly skewMs: number;
  readonly scopeOnSuccess: boolean;
  /** Cloudflare ban: Retry-After seconds, or null for the static block page without one (#5810). */
  readonly banRetryAfter: number | null;
  /** Fraction of the real wait that Retry-After reports (floored), or null for the ceiling of it. */
  readonly shortRetryAfter: number | null;
}

export const JSON_TYPE = 'application/json';
const RATE_LIMITED = 'You are being rate limited.';

export function reply(kind: ReplyKind, status: number, fields: Partial<Reply> = {}): Reply {
  return {
    kind,
    status,
    body: null,
    contentType: JSON_TYPE,
    bucket: null,
    retryAt: 0,
    message: RATE_LIMITED,
    code: null,
    headers: [],
    bare: false,
    shortRetryAfter: null,
    ...fields,
  };
}

export function errorReply(
  status: number,
  message: string,
  code: number,
  bucket: BucketSnap | null = null,
): Reply {
  return reply('error', status, { body: JSON.stringify({ message, code }), bucket });
}

// Float noise from adding and subtracting performance.now() values must not push 5.000 s to 5.001 s.
const EPS = 1e-6;

/** Seconds, rounded up to the header precision: a client that obeys the value exactly is never early. */
export function secondsUp(ms: number, decimals: number): string {
  const step = decimals === 3 ? 1 : decimals === 2 ? 10 : 100;
  const units = Math.max(0, Math.ceil(ms / step - EPS));
  return ((units * step) / 1000).toFixed(decimals);
}

function retryAfterBody(ms: number, decimals: number): number {
  const step = decimals === 3 ? 1 : 100;
  return (Math.max(0, Math.ceil(ms / step - EPS)) * step) / 1000;
}

/** Whole seconds: the ceiling of the wait, or a floored fraction of it to mimic #7394's short headers. */
function retryAfterHeader(ms: number, shortFactor: number | null): string {
  if (shortFactor === null) return String(Math.max(0, Math.ceil(ms / 1000 - EPS)));
  return String(Math.max(0, Math.floor((ms * shortFactor) / 1000 + EPS)));
}

let dateSecond = -1;
let dateValue = '';
let rayCounter = Math.floor(Math.random() * 0xffffff);

function httpDate(epochMs: number): string {
  const second = Math.floor(epochMs / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateValue = new Date(second * 1000).toUTCString();
  }
  return dateValue;
}

function cfRay(): string {
  rayCounter = (rayCounter + 1) % 0xffffffff;
  return `${rayCounter.toString(16).padStart(8, '0')}a1b2c3d4-FRA`;
}

function edgeHeaders(now: number, fmt: ReplyFormat): string[] {
  return [
    'Date',
    httpDate(performance.timeOrigin + now + fmt.skewMs),
    'Server',
    'cloudflare',
    'CF-Ray',
    cfRay(),
  ];
}

function bucketHeaders(h: string[], b: BucketSnap, now: number, fmt: ReplyFormat): void {
  h.push('X-RateLimit-Bucket', b.hash, 'X-RateLimit-Limit', String(b.limit));
  h.push('X-RateLimit-Remaining', String(b.remaining));
  h.push('X-RateLimit-Reset', secondsUp(performance.timeOrigin + b.resetAt + fmt.skewMs, fmt.decimals));
  h.push('X-RateLimit-Reset-After', secondsUp(b.resetAt - now, fmt.decimals));
}

function limitedBody(r: Reply, waitMs: number, fmt: ReplyFormat): string {
  const body: Record<string, unknown> = {
    message: r.message,
    retry_after: retryAfterBody(waitMs, fmt.retryDecimals),
    global: r.kind === 'global',
  };
  if (r.code !== null) body.code = r.code;
  return JSON.stringify(body);
}

/** Status, flat header list and body of a reply, as of `now`. */
export function render(
  r: Reply,
  now: number,
  latencyMs: number,
  fmt: ReplyFormat,
): [string[], string | Buffer] {
  const h = edgeHeaders(now, fmt);
  if (r.kind === 'cloudflare') {
    if (fmt.banRetryAfter !== null) h.push('Retry-After', String(fmt.banRetryAfter));
  } else {
    h.push('Via', '1.1 google', 'X-Envoy-Upstream-Service-Time', String(Math.round(latencyMs)));
  }
  const limited = r.kind === 'user' || r.kind === 'sublimit' || r.kind === 'shared' || r.kind === 'global';
  if (r.bucket) bucketHeaders(h, r.bucket, now, fmt);
  if (r.kind === 'global') h.push('X-RateLimit-Global', 'true', 'X-RateLimit-Scope', 'global');
  else if (r.bare) {
    // A header-less route says nothing about its limit, not even the scope of its 429s.
  } else if (r.kind === 'shared') h.push('X-RateLimit-Scope', 'shared');
  else if (limited || (r.bucket && fmt.scopeOnSuccess)) h.push('X-RateLimit-Scope', 'user');
  let body = r.body ?? '';
  if (limited) {
    const wait = r.retryAt - now;
    h.push('Retry-After', retryAfterHeader(wait, r.shortRetryAfter ?? fmt.shortRetryAfter));
    body = limitedBody(r, wait, fmt);
  }
  if (r.headers.length > 0) h.push(...r.headers);
  const length = typeof body === 'string' ? Buffer.byteLength(body) : body.length;
  if (length > 0 || r.status !== 204) h.push('Content-Type', r.contentType, 'Content-Length', String(length));
  return [h, body];
}
