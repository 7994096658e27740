/**
 * Per-request diagnostics on every answer (PROXY_DIAGNOSTIC_HEADERS): how long the proxy held the request, how
 * long Discord took, how often it was sent again, and which bucket decided, never with a token in them; and none
 * of them when turned off.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';
import { BOT_A, BOT_B, startEnv, type TestEnv } from '../helpers/env.js';

const HEADERS = ['x-proxy-hold-ms', 'x-proxy-upstream-ms', 'x-proxy-retries', 'x-proxy-bucket'] as const;
const CHANNEL = '100000000000000001';
const webhookToken = `${'q'.repeat(20)}Diagnostic_Webhook-Token${'5'.repeat(24)}`;

const numberOf = (headers: Record<string, string | string[] | undefined>, name: string): number => {
  const value = headers[name];
  expect(typeof value, name).toBe('string');
  expect(value, name).toMatch(/^\d+$/);
  return Number(value);
};

describe('diagnostic headers', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await startEnv({
      // The fake allows 3 requests per second per token, the proxy believes 50: the fourth draws a global 429.
      globalLimit: 3,
      policies: [{ method: 'POST', template: '/channels/{id}/messages', limit: 1, windowMs: 800 }],
    });
  });
  afterAll(async () => env?.close());

  it('says how long a request waited for its bucket to reset, and which bucket', async () => {
    const post = () =>
      env.call('POST', `/api/v10/channels/${CHANNEL}/messages`, { auth: BOT_B, body: '{"content":"x"}' });
    const first = await post();
    expect(first.status).toBe(200);
    const second = await post(); // the bucket (1 per 800 ms) is empty: held until its reset
    expect(second.status).toBe(200);

    expect(numberOf(first.headers, 'x-proxy-hold-ms')).toBeLessThan(100);
    const held = numberOf(second.headers, 'x-proxy-hold-ms');
    expect(held).toBeGreaterThan(300);
    expect(held).toBeLessThan(1500);
    expect(numberOf(second.headers, 'x-proxy-upstream-ms')).toBeLessThan(held);
    expect(numberOf(second.headers, 'x-proxy-retries')).toBe(0);
    expect(second.headers['x-proxy-bucket']).toBe(`POST /channels/:id/messages c:${CHANNEL}`);
  });

  it('counts the retries of a request that drew a 429 from Discord', async () => {
    const answers = await Promise.all(
      Array.from({ length: 6 }, () => env.call('GET', '/api/v10/users/@me', { auth: BOT_A })),
    );
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200, 200]);
    expect(env.fake.stats().rateLimited.global).toBeGreaterThanOrEqual(1);
    const retried = answers.filter((a) => numberOf(a.headers, 'x-proxy-retries') >= 1);
    expect(retried.length).toBeGreaterThanOrEqual(1);
    for (const answer of retried) {
      // Held again for the global pause (retry_after) before going round.
      expect(numberOf(answer.headers, 'x-proxy-hold-ms')).toBeGreaterThan(50);
      expect(answer.headers['x-proxy-bucket']).toBe('GET /users/@me -');
    }
  });

  it("puts them on the proxy's own answers too", async () => {
    const post = (hold: string) =>
      env.call('POST', `/api/v10/channels/${CHANNEL}/messages`, {
        auth: BOT_B,
        body: '{"content":"y"}',
        headers: { 'x-proxy-max-hold-ms': hold },
      });
    await post('5000');
    const refused = await post('50'); // the bucket is empty for ~800 ms: more than the 50 ms allowed
    expect(refused.status).toBe(429);
    expect(refused.headers['x-proxy-generated']).toBe('true');
    expect(numberOf(refused.headers, 'x-proxy-retries')).toBe(0);
    expect(numberOf(refused.headers, 'x-proxy-upstream-ms')).toBe(0);
    expect(refused.headers['x-proxy-bucket']).toBe(`POST /channels/:id/messages c:${CHANNEL}`);

    const notFound = await env.call('GET', '/not-the-api');
    expect(notFound.status).toBe(404);
    expect(numberOf(notFound.headers, 'x-proxy-hold-ms')).toBe(0);
    expect(notFound.headers['x-proxy-bucket']).toBe('-');
  });

  it('names a webhook bucket by the hash of its token, never the token', async () => {
    const res = await env.call('POST', `/api/v10/webhooks/300000000000000001/${webhookToken}`, {
      auth: null,
      body: '{}',
    });
    expect(res.status).toBe(204);
    expect(res.headers['x-proxy-bucket']).toMatch(
      /^POST \/webhooks\/:id\/:token w:300000000000000001:[0-9a-f]{16}$/,
    );
    const secrets = [webhookToken, webhookToken.slice(-24), ...BOT_A.slice(4).split('.')];
    for (const name of HEADERS) {
      for (const secret of secrets) expect(String(res.headers[name])).not.toContain(secret);
    }
  });
});

describe('diagnostic headers turned off', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await startEnv({}, { env: { PROXY_DIAGNOSTIC_HEADERS: 'false' } });
  });
  afterAll(async () => env?.close());

  it("leaves them off Discord's answers and the proxy's own", async () => {
    const answers = [
      await env.call('GET', '/api/v10/users/@me'),
      await env.call('GET', '/not-the-api'),
      await env.call('GET', '/api/v10/channels/100000000000000002%2fmessages'), // an encoded separator: refused
    ];
    expect(answers.map((a) => a.status)).toEqual([200, 404, 400]);
    for (const answer of answers)
      for (const name of HEADERS) expect(answer.headers[name], name).toBeUndefined();
  });

  it('accepts only true or false', () => {
    expect(loadConfig({ PROXY_DIAGNOSTIC_HEADERS: 'false' }).diagnosticHeaders).toBe(false);
    expect(loadConfig({}).diagnosticHeaders).toBe(true);
    expect(() => loadConfig({ PROXY_DIAGNOSTIC_HEADERS: 'yes' })).toThrow(ConfigError);
  });
});
