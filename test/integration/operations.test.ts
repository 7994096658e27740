/**
 * What an operator relies on: /metrics with bounded series and every signal the dashboards and alerts use,
 * health endpoints on the admin port only, and request logs that carry timings but never a token.
 */
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { INTERACTION_TOKEN_PREFIX } from '../fake-discord/policies.js';
import { BEARER, BOT_A, BOT_B, startEnv, type TestEnv } from '../helpers/env.js';

const HIGH_GLOBAL = 100_000;

async function get(url: string): Promise<{ status: number; text: string; type: string | undefined }> {
  const res = await request(url);
  return { status: res.statusCode, text: await res.body.text(), type: res.headers['content-type'] as string };
}

const metricsText = async (env: TestEnv): Promise<string> =>
  (await get(`${env.proxy.adminUrl}/metrics`)).text;
const proxySamples = (text: string): string[] =>
  text.split('\n').filter((l) => l.startsWith('discord_proxy_'));
const labelsOf = (sample: string): string => sample.slice(0, sample.lastIndexOf(' '));

/** Sends `count` requests built by `path(i)` with `workers` in parallel; returns how many got each status. */
async function drive(
  env: TestEnv,
  count: number,
  workers: number,
  path: (i: number) => string,
): Promise<Record<number, number>> {
  const statuses: Record<number, number> = {};
  let next = 0;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      for (let i = next++; i < count; i = next++) {
        const res = await env.call('GET', path(i));
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      }
    }),
  );
  return statuses;
}

describe('metrics', () => {
  let env: TestEnv;
  beforeAll(async () => {
    // Channels are spread across one token: lift both global limits so the run measures series, not pacing.
    env = await startEnv(
      {
        globalLimit: HIGH_GLOBAL,
        recordBodies: false,
        maxRecords: 1000,
        policies: [{ method: 'GET', template: '/channels/{id}/messages/{id}', unbucketed: true }],
      },
      { env: { GLOBAL_RATE_LIMIT: String(HIGH_GLOBAL) } },
    );
  });
  afterAll(async () => env.close());

  it('exports every signal operators need from start-up, labelled counters already at 0', async () => {
    const text = await metricsText(env);
    for (const name of [
      'discord_proxy_held_requests',
      'discord_proxy_global_pauses_total',
      'discord_proxy_invalid_requests_window',
      'discord_proxy_invalid_request_budget',
      'discord_proxy_redis_errors_total',
      'discord_proxy_redis_up',
      'discord_proxy_ready',
      'discord_proxy_cloudflare_cooldown',
      'process_cpu_seconds_total',
      'process_resident_memory_bytes',
      'nodejs_eventloop_lag_seconds',
    ]) {
      expect(text, name).toMatch(new RegExp(`^${name} `, 'm'));
    }
    // Declared before their first sample: shown as # TYPE lines even with no series yet.
    for (const name of [
      'discord_proxy_requests_total counter',
      'discord_proxy_request_duration_seconds histogram',
      'discord_proxy_hold_seconds histogram',
      'discord_proxy_upstream_duration_seconds histogram',
      'discord_proxy_redis_duration_seconds histogram',
    ]) {
      expect(text).toContain(`# TYPE ${name}`);
    }
    // increase() needs a sample before the first event to count it: these series exist at 0 from the start.
    for (const scope of ['user', 'global', 'shared', 'sublimit', 'cloudflare']) {
      expect(text).toContain(`discord_proxy_upstream_429_total{scope="${scope}"} 0`);
    }
    for (const reason of ['hold_timeout', 'cloudflare_cooldown', 'upstream_unreachable', 'shutting_down']) {
      expect(text).toContain(`discord_proxy_generated_responses_total{reason="${reason}"} 0`);
    }
    for (const kind of ['connect', 'timeout', 'socket']) {
      expect(text).toContain(`discord_proxy_upstream_errors_total{kind="${kind}"} 0`);
    }
  });

  it('keeps the series count flat over 10,000 distinct channels, with no raw id in any label', async () => {
    const channel = (i: number) => String(500_000_000_000_000_000n + BigInt(i));
    const path = (i: number) => `/api/v10/channels/${channel(i)}/messages/${channel(i + 20_000)}`;
    const startedAt = performance.now();
    expect(await drive(env, 1000, 64, path)).toEqual({ 200: 1000 });
    const afterThousand = proxySamples(await metricsText(env));
    expect(await drive(env, 9000, 64, (i) => path(i + 1000))).toEqual({ 200: 9000 });
    const elapsed = performance.now() - startedAt;
    const samples = proxySamples(await metricsText(env));

    expect(samples.length).toBeLessThan(1000);
    expect(samples.length).toBe(afterThousand.length);
    for (const sample of samples) expect(labelsOf(sample)).not.toMatch(/\d{17,20}/);
    expect(samples).toContain(
      'discord_proxy_requests_total{method="GET",route="/channels/:id/messages/:id",status="200"} 10000',
    );
    // A run-away here is a regression in the hot path, not in the metrics; it bounds the test's own time too.
    expect(elapsed).toBeLessThan(45_000);
  }, 60_000);

  it('caps the route label when clients invent path words', async () => {
    const words = 600;
    const word = (i: number) => `zz${i.toString(36)}x`;
    expect(await drive(env, words, 32, (i) => `/api/v10/${word(i)}`)).toEqual({ 200: words });
    const routes = new Set(
      proxySamples(await metricsText(env))
        .filter((s) => s.startsWith('discord_proxy_requests_total{'))
        .map((s) => /route="([^"]*)"/.exec(s)?.[1]),
    );
    expect(routes.has('other')).toBe(true);
    expect(routes.size).toBeLessThanOrEqual(513);
  });
});

describe('admin port', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await startEnv();
  });
  afterAll(async () => env.close());

  it('serves /metrics, /healthz and /readyz on the admin port and none of them on the public port', async () => {
    const metrics = await get(`${env.proxy.adminUrl}/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.type).toMatch(/^text\/plain; version=0\.0\.4/);
    expect((await get(`${env.proxy.adminUrl}/healthz`)).status).toBe(200);
    const ready = await get(`${env.proxy.adminUrl}/readyz`);
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.text)).toEqual({ status: 'ready' });
    for (const path of ['/metrics', '/healthz', '/readyz']) {
      const res = await env.call('GET', path);
      expect(res.status, path).toBe(404);
      expect(res.text, path).not.toContain('discord_proxy_');
    }
  });

  it('turns /readyz to 503 during a Cloudflare cool-down and says so in the metrics', async () => {
    env.fake.banNow(60_000);
    const res = await env.call('GET', '/api/v10/channels/100000000000000009/messages');
    expect(res.status).toBe(429);
    expect(res.headers['x-proxy-generated']).toBe('true');
    const ready = await get(`${env.proxy.adminUrl}/readyz`);
    expect(ready.status).toBe(503);
    expect(JSON.parse(ready.text).reason).toMatch(/Cloudflare cool-down/);
    const text = await metricsText(env);
    expect(text).toMatch(/^discord_proxy_ready 0$/m);
    expect(text).toMatch(/^discord_proxy_cloudflare_cooldown 1$/m);
    expect(text).toContain('discord_proxy_upstream_429_total{scope="cloudflare"} 1');
    expect(text).toContain('discord_proxy_generated_responses_total{reason="cloudflare_cooldown"} 1');
  });
});

describe('request logs', () => {
  const logs: string[] = [];
  let env: TestEnv;
  const webhookToken = `${'w'.repeat(20)}Secret_Webhook-Token${'9'.repeat(28)}`;
  const deletedToken = `${'d'.repeat(30)}DeletedWebhookToken${'8'.repeat(19)}`;
  const interactionToken = `${INTERACTION_TOKEN_PREFIX}${'i'.repeat(60)}SecretInteraction`;
  const secrets = [BOT_A, BOT_B, BEARER, webhookToken, deletedToken, interactionToken].flatMap((value) => [
    value,
    // The token without its scheme, and its secret tail alone: redaction must not rely on the prefix.
    value.replace(/^(Bot|Bearer) /, ''),
    value.slice(-24),
  ]);

  beforeAll(async () => {
    env = await startEnv(
      {},
      { logSink: logs, env: { LOG_LEVEL: 'trace', REQUEST_LOG_LEVEL: 'info', BODY_LIMIT_BYTES: '1024' } },
    );
  });
  afterAll(async () => env.close());

  it('logs one JSON line per request with its timings and never a token or webhook token', async () => {
    const sent: Array<[string, string, Parameters<TestEnv['call']>[2]]> = [
      ['GET', '/api/v10/users/@me', { auth: BOT_A }],
      ['POST', '/api/v10/channels/100000000000000001/messages', { auth: BOT_A, body: '{"content":"a"}' }],
      ['POST', '/api/v10/channels/100000000000000001/messages', { auth: BOT_B, body: '{"content":"b"}' }],
      ['GET', '/api/v10/users/@me', { auth: BEARER }],
      ['POST', `/api/v10/webhooks/200000000000000001/${webhookToken}?wait=true`, { auth: null, body: '{}' }],
      [
        'GET',
        `/api/v10/webhooks/200000000000000001/${webhookToken}/messages/300000000000000001`,
        { auth: null },
      ],
      ['POST', `/api/v10/webhooks/200000000000000002/${deletedToken}`, { auth: null, body: '{}' }],
      [
        'POST',
        `/api/v10/interactions/400000000000000001/${interactionToken}/callback`,
        { auth: null, body: '{}' },
      ],
      // Errors: a revoked token, a body over the limit, a broken upstream connection, a bad percent-encoding.
      ['GET', '/api/v10/channels/100000000000000002', { auth: BOT_B }],
      ['POST', '/api/v10/channels/100000000000000003/messages', { auth: BOT_A, body: 'x'.repeat(2048) }],
      ['POST', '/api/v10/channels/100000000000000004/messages', { auth: BOT_A, body: '{"content":"c"}' }],
      ['GET', `/api/v10/webhooks/200000000000000001/${webhookToken}%zz`, { auth: null }],
    ];
    env.fake.deleteWebhook('200000000000000002');
    const statuses: number[] = [];
    for (const [method, path, init] of sent) {
      if (init?.auth === BOT_B && path.endsWith('100000000000000002')) env.fake.revokeToken(BOT_B);
      if (path.includes('100000000000000004')) env.fake.failNext(1, 'reset');
      if (init?.body?.length === 2048) init.headers = { 'content-length': '2048' };
      statuses.push((await env.call(method, path, init)).status);
    }
    // Discord's 401 and 404 pass through; the proxy makes the 413 and the 502 (a POST is not sent twice), and
    // Fastify answers the malformed URL with 400 before any route runs.
    expect(statuses).toEqual([200, 200, 200, 200, 200, 200, 404, 204, 401, 413, 502, 400]);
    await new Promise((resolve) => setTimeout(resolve, 50));

    const text = logs.join('');
    for (const secret of secrets) expect(text.includes(secret), `a log line holds ${secret}`).toBe(false);

    const lines = logs.flatMap((chunk) => chunk.split('\n')).filter((line) => line !== '');
    const parsed = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    const requests = parsed.filter((line) => line.msg === 'request');
    expect(requests).toHaveLength(sent.length - 1);
    for (const line of requests) {
      expect(line).toMatchObject({
        reqId: expect.any(String),
        method: expect.any(String),
        route: expect.stringMatching(/^(\/|-$)/),
        status: expect.any(Number),
        holdMs: expect.any(Number),
        upstreamMs: expect.any(Number),
      });
    }
    expect(requests.map((line) => line.route)).toEqual(
      expect.arrayContaining(['/webhooks/:id/:token', '/interactions/:id/:token/callback', '/users/@me']),
    );
  });
});
