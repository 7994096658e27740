/**
 * The inspector API on the admin port, in both store modes: /state shows the replica, the identities and the
 * buckets with held requests (limit, remaining, reset, why they wait), bounded by ?top; /state/identity answers
 * for the token in Authorization; no token ever appears in either; and neither is served on the public port.
 */
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { IdentityDetail, State } from '../../src/inspect/state.js';
import { BEARER, BOT_A, BOT_B, startEnv, type TestEnv } from '../helpers/env.js';

const CHANNEL = '100000000000000001';
const webhookToken = `${'k'.repeat(20)}Inspector_Webhook-Token${'7'.repeat(25)}`;

/** A token, without its scheme, and each of its dot-separated (base64) segments: none may appear anywhere. */
function secretsOf(authorization: string): string[] {
  const bare = authorization.replace(/^(Bot|Bearer) /, '');
  return [authorization, bare, ...bare.split('.').filter((segment) => segment.length >= 6)];
}
const SECRETS = [...secretsOf(BOT_A), ...secretsOf(BOT_B), ...secretsOf(BEARER), webhookToken];

const MODES = [
  { name: 'memory', store: 'memory', env: (): Record<string, string> => ({}) },
  {
    name: 'Redis',
    store: 'redis',
    env: (): Record<string, string> => ({
      REDIS_URL: inject('redisUrl'),
      REDIS_KEY_PREFIX: `inspect${Math.random().toString(36).slice(2)}:`,
    }),
  },
] as const;

describe.each(MODES)('inspector API ($name)', (mode) => {
  let env: TestEnv;

  async function admin(path: string, headers: Record<string, string> = {}) {
    const res = await request(`${env.proxy.adminUrl}${path}`, { headers });
    const text = await res.body.text();
    return { status: res.statusCode, headers: res.headers, text, json: () => JSON.parse(text) as unknown };
  }
  const state = async (query = ''): Promise<State> => (await admin(`/state${query}`)).json() as State;

  beforeAll(async () => {
    env = await startEnv(
      { policies: [{ method: 'POST', template: '/channels/{id}/messages', limit: 2, windowMs: 1500 }] },
      { env: mode.env() },
    );
  });
  afterAll(async () => env?.close());

  it('describes the replica: store, Redis health, Cloudflare pause, invalid budget, held requests', async () => {
    const res = await admin('/state');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    const body = res.json() as State;
    expect(body).toMatchObject({
      top: 20,
      replica: {
        store: mode.store,
        redisUp: mode.store === 'redis' ? true : null,
        cloudflarePauseMs: 0,
        invalidRequests: { count: 0, budget: 5000 },
        held: 0,
        maxHeld: 20000,
      },
      identities: [],
      buckets: [],
      omitted: { identities: 0, buckets: 0 },
    });
  });

  it('shows the bucket holding requests (limit, remaining, reset, why) and the identity holding them', async () => {
    await state(); // looking starts the recent-traffic counts
    const post = () =>
      env.call('POST', `/api/v10/channels/${CHANNEL}/messages`, { body: '{"content":"hi"}' });
    expect((await post()).status).toBe(200); // learns the bucket: 2 per 1.5 s, 1 left
    // One goes now; four wait for the reset, then two more for the next one.
    const burst = Promise.all(Array.from({ length: 5 }, post));
    await until(async () => (await state()).replica.held === 4);

    const during = await state();
    const bucket = during.buckets.find((b) => b.route === 'POST /channels/:id/messages');
    expect(bucket).toMatchObject({
      major: `c:${CHANNEL}`,
      sublimit: '*',
      limit: 2,
      remaining: 0,
      held: 4,
      waitingFor: 'bucket',
    });
    expect(bucket?.hash).toMatch(/^[0-9a-f]{32}$/);
    expect(bucket?.resetMs).toBeGreaterThan(0);
    expect(bucket?.resetMs).toBeLessThanOrEqual(1500 + 100);
    expect(bucket?.waitMs).toBeGreaterThan(0);
    expect(during.buckets[0]).toEqual(bucket); // the most held first
    expect(during.replica.held).toBe(4);
    const identity = during.identities.find((i) => i.identity === bucket?.identity);
    expect(identity).toMatchObject({ held: 4, globalLimit: 50 });
    expect(identity?.identity).toMatch(/^[0-9a-f]{16}$/);
    expect(identity?.globalUsed).toBeGreaterThanOrEqual(2);
    expect(identity?.requests).toBe(6);

    expect((await burst).map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    const after = await state();
    const done = after.buckets.find((b) => b.route === 'POST /channels/:id/messages');
    // Still listed for its recent traffic, with nothing held any more.
    expect(done).toMatchObject({ held: 0, waitingFor: null, waitMs: 0, limit: 2 });
    expect(after.replica.held).toBe(0);
    expect(fakeRateLimited()).toBe(0);
  });

  it('bounds both lists with ?top (default 20, at most 200) and refuses a malformed one', async () => {
    await state();
    const auths = [BOT_A, BOT_B, BEARER];
    for (let i = 0; i < 30; i++) {
      const channel = String(200000000000000000n + BigInt(i));
      expect((await env.call('GET', `/api/v10/channels/${channel}`, { auth: auths[i % 3]! })).status).toBe(
        200,
      );
    }
    const five = await state('?top=5');
    expect(five.top).toBe(5);
    expect(five.buckets).toHaveLength(5);
    expect(five.omitted.buckets).toBeGreaterThanOrEqual(25);
    expect(five.buckets.every((b) => b.route === 'GET /channels/:id')).toBe(true); // the most recent first
    const one = await state('?top=1');
    expect(one.identities).toHaveLength(1);
    expect(one.omitted.identities).toBeGreaterThanOrEqual(2);
    expect((await state()).buckets).toHaveLength(20);
    const many = await state('?top=100000');
    expect(many.top).toBe(200);
    expect(many.buckets.length).toBeGreaterThanOrEqual(31);
    expect(many.buckets.length).toBeLessThanOrEqual(200);
    for (const query of ['?top=abc', '?top=-1', '?top=1.5']) {
      const bad = await admin(`/state${query}`);
      expect(bad.status, query).toBe(400);
      expect(bad.json()).toEqual({ message: expect.any(String), code: 50035 });
    }
  });

  it('answers /state/identity for the token in Authorization: its buckets, global window, pause and marks', async () => {
    const missing = await admin('/state/identity');
    expect(missing.status).toBe(400);
    expect(missing.json()).toEqual({ message: expect.stringMatching(/Authorization/), code: 50035 });

    const mine = (await admin('/state/identity', { authorization: BOT_A })).json() as IdentityDetail;
    expect(mine).toMatchObject({ kind: 'bot', held: 0, globalLimit: 50, pausedMs: 0, marks: [] });
    const listed = (await state('?top=200')).buckets.find((b) => b.route === 'POST /channels/:id/messages');
    expect(mine.identity).toBe(listed?.identity);
    expect(mine.buckets.find((b) => b.route === 'POST /channels/:id/messages')).toMatchObject({
      major: `c:${CHANNEL}`,
      limit: 2,
      identity: mine.identity,
    });
    expect(mine.buckets.every((b) => b.identity === mine.identity)).toBe(true);

    env.fake.revokeToken(BOT_B);
    expect((await env.call('GET', '/api/v10/users/@me', { auth: BOT_B })).status).toBe(401);
    await until(async () => {
      const revoked = (await admin('/state/identity', { authorization: BOT_B })).json() as IdentityDetail;
      return revoked.marks.some((m) => m.scope === 'revoked' && m.ms > 0);
    });
    const other = (await admin('/state/identity', { authorization: BOT_B })).json() as IdentityDetail;
    expect(other.identity).not.toBe(mine.identity);
    expect((await state()).replica.invalidRequests.count).toBeGreaterThanOrEqual(1);
  });

  it('never shows a token, a token segment or a webhook token in any answer', async () => {
    await state();
    expect(
      (
        await env.call('POST', `/api/v10/webhooks/300000000000000001/${webhookToken}`, {
          auth: null,
          body: '{}',
        })
      ).status,
    ).toBe(204);
    await env.call('GET', '/api/v10/users/@me', { auth: BEARER });
    const texts = [
      (await admin('/state?top=200')).text,
      (await admin('/state/identity', { authorization: BOT_A })).text,
      (await admin('/state/identity', { authorization: BOT_B })).text,
      (await admin('/state/identity', { authorization: BEARER })).text,
    ];
    const webhook = (JSON.parse(texts[0]!) as State).buckets.find(
      (b) => b.route === 'POST /webhooks/:id/:token',
    );
    expect(webhook?.major).toMatch(/^w:300000000000000001:[0-9a-f]{16}$/);
    for (const text of texts) {
      for (const secret of SECRETS) expect(text.includes(secret), `an answer holds ${secret}`).toBe(false);
    }
  });

  it('is served on the admin port only', async () => {
    for (const path of ['/state', '/state/identity', '/']) {
      const res = await env.call('GET', path);
      expect(res.status, path).toBe(404);
      expect(res.text, path).not.toMatch(/replica|inspector/);
    }
    const page = await admin('/');
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toMatch(/^text\/html/);
    expect(page.text).toContain('<title>discord-ratelimit-proxy · inspector</title>');
  });

  function fakeRateLimited(): number {
    const limited = env.fake.stats().rateLimited;
    return Object.values(limited).reduce((sum, n) => sum + n, 0);
  }
});

async function until(check: () => Promise<boolean>, timeoutMs = 3000): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > end) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
