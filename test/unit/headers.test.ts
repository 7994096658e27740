import { describe, expect, it } from 'vitest';
import { classifyResponse, parseRateLimitHeaders, retryAfterMs } from '../../src/discord/headers.js';

type Headers = Record<string, string | string[] | undefined>;
type Body = { code?: unknown; global?: unknown; retry_after?: unknown; message?: unknown } | null;

const JSON_TYPE = 'application/json';
const VIA = '1.1 google';

interface Case {
  readonly name: string;
  readonly status: number;
  readonly headers: Headers;
  readonly contentType: string | undefined;
  readonly body: Body;
  readonly kind: string;
  readonly waitMs: number | undefined;
}

// The 429 forms of docs/discord-ratelimits.md §1.2 and §4.1, header names lower case as undici gives them.
const CASES: readonly Case[] = [
  {
    name: 'user (route) limit, D-RL:64–80',
    status: 429,
    headers: {
      'content-type': JSON_TYPE,
      'retry-after': '65',
      'x-ratelimit-limit': '10',
      'x-ratelimit-remaining': '0',
      'x-ratelimit-reset': '1470173023.123',
      'x-ratelimit-reset-after': '64.57',
      'x-ratelimit-bucket': 'abcd1234',
      'x-ratelimit-scope': 'user',
      via: VIA,
    },
    contentType: JSON_TYPE,
    body: { message: 'You are being rate limited.', retry_after: 64.57, global: false },
    kind: 'route',
    waitMs: 64_570,
  },
  {
    name: 'shared limit with remaining 9, D-RL:85–101',
    status: 429,
    headers: {
      'retry-after': '1337',
      'x-ratelimit-limit': '10',
      'x-ratelimit-remaining': '9',
      'x-ratelimit-reset-after': '64.57',
      'x-ratelimit-bucket': 'abcd1234',
      'x-ratelimit-scope': 'shared',
      via: VIA,
    },
    contentType: JSON_TYPE,
    body: { message: 'The resource is being rate limited.', retry_after: 1336.57, global: false },
    kind: 'shared',
    waitMs: 1_336_570,
  },
  {
    name: 'global limit, disgo PR 14 capture',
    status: 429,
    headers: {
      'content-type': JSON_TYPE,
      'retry-after': '1',
      'x-ratelimit-scope': 'global',
      'x-ratelimit-global': 'true',
      'x-envoy-upstream-service-time': '13',
      via: VIA,
    },
    contentType: JSON_TYPE,
    body: { global: true, message: 'You are being rate limited.', retry_after: 0.661 },
    kind: 'global',
    waitMs: 661,
  },
  {
    name: 'resource write limit 20028 with shared scope, PR #8290',
    status: 429,
    headers: { 'retry-after': '1', 'x-ratelimit-scope': 'shared', via: VIA },
    contentType: JSON_TYPE,
    body: { message: 'The write action …', retry_after: 0.3, global: false, code: 20028 },
    kind: 'shared',
    waitMs: 300,
  },
  {
    name: 'channel name/topic sublimit, remaining > 0, JDA#1306',
    status: 429,
    headers: {
      'retry-after': '584',
      'x-ratelimit-limit': '10',
      'x-ratelimit-remaining': '8',
      'x-ratelimit-reset-after': '13.112',
      'x-ratelimit-bucket': '9852e1a53c06ffc5a89d65fef85ca4ce',
      'x-ratelimit-scope': 'user',
      via: VIA,
    },
    contentType: JSON_TYPE,
    body: { message: 'You are being rate limited.', retry_after: 583.413, global: false },
    kind: 'sublimit',
    waitMs: 583_413,
  },
  {
    name: 'Cloudflare form A without Retry-After, #5810',
    status: 429,
    headers: { 'content-type': JSON_TYPE, 'cf-ray': '7f1c2b3a4d5e6f70-FRA' },
    contentType: JSON_TYPE,
    body: { code: 0, message: 'You are being blocked from accessing our API temporarily …' },
    kind: 'cloudflare',
    waitMs: undefined,
  },
  {
    name: 'Cloudflare form A with Retry-After, djs PR 5203',
    status: 429,
    headers: { 'content-type': JSON_TYPE, 'retry-after': '3600' },
    contentType: JSON_TYPE,
    body: { code: 0, message: 'You are being blocked from accessing our API temporarily …' },
    kind: 'cloudflare',
    waitMs: 3_600_000,
  },
  {
    name: 'Cloudflare form B, HTML error 1015',
    status: 429,
    headers: { 'content-type': 'text/html; charset=UTF-8', 'cf-ray': '7f1c2b3a4d5e6f70-FRA' },
    contentType: 'text/html; charset=UTF-8',
    body: null,
    kind: 'cloudflare',
    waitMs: undefined,
  },
  {
    name: 'Cloudflare form B, plain text, even with a Via header',
    status: 429,
    headers: { 'content-type': 'text/plain', via: VIA },
    contentType: 'text/plain',
    body: null,
    kind: 'cloudflare',
    waitMs: undefined,
  },
];

describe('429 forms', () => {
  it.each(CASES)('$name → $kind', (c) => {
    const rl = parseRateLimitHeaders(c.headers);
    expect(classifyResponse(c.status, rl, c.contentType, c.body)).toBe(c.kind);
    expect(retryAfterMs(rl, c.body)).toBe(c.waitMs);
  });

  it('parses the user-limit 429 completely and ignores X-RateLimit-Reset', () => {
    const [route] = CASES;
    expect(parseRateLimitHeaders(route?.headers ?? {})).toEqual({
      bucket: 'abcd1234',
      limit: 10,
      remaining: 0,
      resetAfterMs: 64_570,
      retryAfterMs: 65_000,
      global: false,
      scope: 'user',
      via: true,
    });
  });

  it('parses the global 429: no per-route headers', () => {
    expect(parseRateLimitHeaders(CASES[2]?.headers ?? {})).toEqual({
      retryAfterMs: 1000,
      serviceMs: 13,
      global: true,
      scope: 'global',
      via: true,
    });
  });

  it('parses a Cloudflare ban: no Via, nothing else', () => {
    expect(parseRateLimitHeaders(CASES[5]?.headers ?? {})).toEqual({ global: false, via: false });
  });

  it.each([
    ['the header alone', { 'x-ratelimit-global': 'true', via: VIA }, null],
    ['the scope alone', { 'x-ratelimit-scope': 'global', via: VIA }, null],
    ['the body alone', { via: VIA }, { global: true, retry_after: 0.5 }],
  ])('a global 429 is recognised from %s', (_name, headers: Headers, body: Body) => {
    expect(classifyResponse(429, parseRateLimitHeaders(headers), JSON_TYPE, body)).toBe('global');
  });

  it('takes Via as proof of Discord origin when the content type is missing', () => {
    const rl = parseRateLimitHeaders({ 'x-ratelimit-remaining': '0', via: VIA });
    expect(classifyResponse(429, rl, undefined, null)).toBe('route');
  });

  it('treats a 429 without rate-limit headers from the origin as a route limit', () => {
    expect(classifyResponse(429, parseRateLimitHeaders({ via: VIA }), JSON_TYPE, { retry_after: 1 })).toBe(
      'route',
    );
  });
});

describe('non-429 responses', () => {
  it.each([200, 201, 204, 400, 401, 403, 404, 500, 502])('%i is ok', (status) => {
    expect(classifyResponse(status, parseRateLimitHeaders({}), undefined)).toBe('ok');
  });

  it('parses a real 2xx (djs#3891)', () => {
    const rl = parseRateLimitHeaders({
      'x-ratelimit-bucket': '41f9cd5d28af77da04563bcb1d67fdfd',
      'x-ratelimit-limit': '2',
      'x-ratelimit-remaining': '1',
      'x-ratelimit-reset': '1606613168.588',
      'x-ratelimit-reset-after': '5.000',
      via: VIA,
    });
    expect(rl).toEqual({
      bucket: '41f9cd5d28af77da04563bcb1d67fdfd',
      limit: 2,
      remaining: 1,
      resetAfterMs: 5000,
      global: false,
      via: true,
    });
    expect(classifyResponse(200, rl, JSON_TYPE)).toBe('ok');
  });
});

describe('parseRateLimitHeaders: numbers', () => {
  it.each([
    ['0.234', 234],
    ['0.2341', 235],
    ['64.57', 64_570],
    ['1336.57', 1_336_570],
    ['5', 5000],
    ['0', 0],
    [' 1.5 ', 1500],
  ])('Reset-After %j → %i ms (rounded up, no binary noise)', (value, ms) => {
    expect(parseRateLimitHeaders({ 'x-ratelimit-reset-after': value }).resetAfterMs).toBe(ms);
  });

  it.each([
    ['65', 65_000],
    ['1', 1000],
    ['0.661', 661],
    ['2.5', 2500],
  ])('Retry-After %j → %i ms', (value, ms) => {
    expect(parseRateLimitHeaders({ 'retry-after': value }).retryAfterMs).toBe(ms);
  });

  it.each([
    '',
    ' ',
    'abc',
    '-1',
    '1e3',
    '0x10',
    'Infinity',
    'NaN',
    '1.',
    '.5',
    '1,5',
    'Wed, 21 Oct 2015 07:28:00 GMT',
  ])('invalid value %j leaves every numeric field out', (value) => {
    const rl = parseRateLimitHeaders({
      'x-ratelimit-limit': value,
      'x-ratelimit-remaining': value,
      'x-ratelimit-reset-after': value,
      'retry-after': value,
    });
    expect(rl).toEqual({ global: false, via: false });
  });

  it('limit and remaining must be integers', () => {
    const rl = parseRateLimitHeaders({ 'x-ratelimit-limit': '5.5', 'x-ratelimit-remaining': '2.0' });
    expect(rl).toEqual({ global: false, via: false });
  });

  it('takes the first of repeated headers', () => {
    const rl = parseRateLimitHeaders({
      'x-ratelimit-remaining': ['3', '7'],
      via: ['1.1 google', '1.1 other'],
    });
    expect(rl).toMatchObject({ remaining: 3, via: true });
  });
});

describe('parseRateLimitHeaders: flags', () => {
  it.each([
    ['true', true],
    ['True', true],
    ['false', false],
    ['1', false],
  ])('X-RateLimit-Global %j → %s', (value, global) => {
    expect(parseRateLimitHeaders({ 'x-ratelimit-global': value }).global).toBe(global);
  });

  it.each([
    ['user', 'user'],
    ['shared', 'shared'],
    ['global', 'global'],
    ['Shared', 'shared'],
    ['bogus', undefined],
    ['', undefined],
  ])('X-RateLimit-Scope %j → %s', (value, scope) => {
    expect(parseRateLimitHeaders({ 'x-ratelimit-scope': value }).scope).toBe(scope);
  });

  it("reads Discord's service time (X-Envoy-Upstream-Service-Time) in whole ms", () => {
    expect(parseRateLimitHeaders({ 'x-envoy-upstream-service-time': '33' }).serviceMs).toBe(33);
    expect('serviceMs' in parseRateLimitHeaders({ 'x-envoy-upstream-service-time': 'soon' })).toBe(false);
  });

  it('an empty bucket is no bucket', () => {
    expect('bucket' in parseRateLimitHeaders({ 'x-ratelimit-bucket': '' })).toBe(false);
  });
});

describe('retryAfterMs', () => {
  const header = (value: string) => parseRateLimitHeaders({ 'retry-after': value });

  it.each([
    ['body only', parseRateLimitHeaders({}), { retry_after: 0.661 }, 661],
    ['header only', header('2'), null, 2000],
    ['header only, body without the field', header('2'), {}, 2000],
    ['body longer than header', header('1'), { retry_after: 1.25 }, 1250],
    // The header is only the body's wait rounded up to whole seconds: the body is the precise one.
    ['header longer than body', header('65'), { retry_after: 64.57 }, 64_570],
    // Beyond its rounding the header disagrees with the body (discord-api-docs #7394): the longer is safe.
    ['header disagrees with the body, longer', header('30'), { retry_after: 2.5 }, 30_000],
    ['header exactly one second over the body', header('3'), { retry_after: 2 }, 3000],
    ['neither', parseRateLimitHeaders({}), null, undefined],
    ['nothing at all', parseRateLimitHeaders({}), undefined, undefined],
    ['body value not a number', parseRateLimitHeaders({}), { retry_after: '5' }, undefined],
    ['negative body value', header('3'), { retry_after: -1 }, 3000],
    ['infinite body value', header('3'), { retry_after: Number.POSITIVE_INFINITY }, 3000],
    ['NaN body value', parseRateLimitHeaders({}), { retry_after: Number.NaN }, undefined],
  ])('%s', (_name, rl, body, expected) => {
    expect(retryAfterMs(rl, body)).toBe(expected);
  });
});
