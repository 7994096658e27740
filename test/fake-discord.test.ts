import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { snowflake } from './fake-discord/bodies.js';
import { latencySampler } from './fake-discord/latency.js';
import { BusiestWindow, maxInWindow } from './fake-discord/limits.js';
import { far, fixed, near } from './fake-discord/profiles.js';
import { FakeDiscord, type FakeDiscordOptions } from './fake-discord/server.js';

// The fake upstream is the yardstick for every proxy test, so its own behaviour is pinned here through
// real sockets: header formats to the decimal, bucket sharing, 429 shapes and invalid-request bans.

const SECONDS_3 = /^\d+\.\d{3}$/;
const HASH = /^[0-9a-f]{32}$/;
const C1 = '111111111111111111';
const C2 = '222222222222222222';
const M1 = '333333333333333333';
const WH = '444444444444444444';
const G1 = '555555555555555555';
const INTERACTION_TOKEN = 'aW50ZXJhY3Rpb246OTk5OTk5OTk5OTk5OTk5OTk5OmFiYw';

function bot(id: string): string {
  return `Bot ${Buffer.from(id).toString('base64')}.Gx1234.fake-secret`;
}

interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  raw: Buffer;
  header(name: string): string | undefined;
  json(): Record<string, unknown>;
}

interface CallOptions {
  auth?: string | null;
  body?: string | Buffer;
  type?: string;
}

function client(base: () => string) {
  return async (method: string, path: string, o: CallOptions = {}): Promise<Res> => {
    const headers: Record<string, string> = {};
    const auth = o.auth === undefined ? bot('100000000000000001') : o.auth;
    if (auth !== null) headers.authorization = auth;
    if (o.body !== undefined) headers['content-type'] = o.type ?? 'application/json';
    const res = await request(`${base()}${path}`, {
      method: method as 'GET',
      headers,
      ...(o.body === undefined ? {} : { body: o.body }),
    });
    const raw = Buffer.from(await res.body.arrayBuffer());
    const text = raw.toString('utf8');
    return {
      status: res.statusCode,
      headers: res.headers,
      text,
      raw,
      header: (name) => {
        const v = res.headers[name.toLowerCase()];
        return Array.isArray(v) ? v.join(', ') : v;
      },
      json: () => JSON.parse(text) as Record<string, unknown>,
    };
  };
}

async function withFake(
  options: FakeDiscordOptions,
  run: (fake: FakeDiscord, call: ReturnType<typeof client>) => Promise<void>,
) {
  const fake = new FakeDiscord(options);
  const url = await fake.start();
  try {
    await run(
      fake,
      client(() => url),
    );
  } finally {
    await fake.stop();
  }
}

function rateLimitHeaders(r: Res): string[] {
  return Object.keys(r.headers).filter((k) => k.startsWith('x-ratelimit'));
}

describe('fake Discord', () => {
  const fake = new FakeDiscord({
    policies: [
      { method: 'POST', template: '/channels/{id}/messages', limit: 5, windowMs: 300 },
      { method: 'PATCH', template: '/channels/{id}/messages/{id}', limit: 5, windowMs: 300 },
    ],
  });
  let url = '';
  const call = client(() => url);

  beforeAll(async () => {
    url = await fake.start();
  });
  afterAll(() => fake.stop());
  beforeEach(() => fake.reset());

  it('formats bucket headers to the millisecond, with the full window on the first request', async () => {
    const before = Date.now();
    const r = await call('GET', '/api/v10/gateway/bot');
    expect(r.status).toBe(200);
    expect(r.header('x-ratelimit-bucket')).toBe('41f9cd5d28af77da04563bcb1d67fdfd');
    expect(r.header('x-ratelimit-limit')).toBe('2');
    expect(r.header('x-ratelimit-remaining')).toBe('1');
    expect(r.header('x-ratelimit-reset-after')).toBe('5.000');
    expect(r.header('x-ratelimit-reset')).toMatch(SECONDS_3);
    const reset = Number(r.header('x-ratelimit-reset')) * 1000;
    expect(reset).toBeGreaterThanOrEqual(before + 5000 - 50);
    expect(reset).toBeLessThanOrEqual(Date.now() + 5000 + 50);
    expect(r.header('x-ratelimit-scope')).toBe('user');
    expect(r.header('via')).toBe('1.1 google');
    expect(r.json()).toMatchObject({
      url: 'wss://gateway.discord.gg',
      path: '/api/v10/gateway/bot',
      query: '',
    });

    const second = await call('GET', '/api/v10/gateway/bot');
    expect(second.header('x-ratelimit-remaining')).toBe('0');
    expect(second.header('x-ratelimit-reset-after')).toMatch(SECONDS_3);
    expect(Number(second.header('x-ratelimit-reset-after'))).toBeLessThanOrEqual(5);
    expect(second.header('x-ratelimit-reset')).toBe(r.header('x-ratelimit-reset'));
  });

  it('answers a route 429 once the bucket is spent, and serves again after the window', async () => {
    const path = `/api/v10/channels/${C1}/messages`;
    for (let i = 0; i < 5; i++) {
      const ok = await call('POST', path, { body: `{"content":"m${i}"}` });
      expect(ok.status).toBe(200);
      expect(ok.header('x-ratelimit-remaining')).toBe(String(4 - i));
      expect(ok.json()).toMatchObject({ channel_id: C1, content: `m${i}`, method: 'POST', path });
      expect(ok.json().id).toMatch(/^\d{17,20}$/);
    }
    const limited = await call('POST', path, { body: '{}' });
    expect(limited.status).toBe(429);
    expect(limited.header('retry-after')).toBe('1');
    expect(limited.header('x-ratelimit-remaining')).toBe('0');
    expect(limited.header('x-ratelimit-limit')).toBe('5');
    expect(limited.header('x-ratelimit-scope')).toBe('user');
    expect(limited.header('x-ratelimit-global')).toBeUndefined();
    expect(limited.header('x-ratelimit-bucket')).toMatch(HASH);
    const body = limited.json();
    expect(body).toMatchObject({ message: 'You are being rate limited.', global: false });
    expect(body.retry_after).toBeGreaterThan(0);
    expect(body.retry_after).toBeLessThanOrEqual(0.3);
    expect(String(body.retry_after)).toMatch(/^0(\.\d{1,3})?$/);
    expect(Number(limited.header('x-ratelimit-reset-after'))).toBeCloseTo(body.retry_after as number, 2);

    // Another channel is another bucket with the same hash.
    const other = await call('POST', `/api/v10/channels/${C2}/messages`, { body: '{}' });
    expect(other.status).toBe(200);
    expect(other.header('x-ratelimit-bucket')).toBe(limited.header('x-ratelimit-bucket'));

    await sleep(320);
    expect((await call('POST', path, { body: '{}' })).status).toBe(200);
    expect(fake.stats().rateLimited.user).toBe(1);
    expect(fake.stats().invalid).toBe(1);
  });

  it('shares one hash but not one counter between message create and edit', async () => {
    const post = await call('POST', `/api/v10/channels/${C1}/messages`, { body: '{"content":"a"}' });
    const patch = await call('PATCH', `/api/v10/channels/${C1}/messages/${M1}`, { body: '{"content":"b"}' });
    expect(post.header('x-ratelimit-bucket')).toBe(patch.header('x-ratelimit-bucket'));
    expect(post.header('x-ratelimit-remaining')).toBe('4');
    expect(patch.header('x-ratelimit-remaining')).toBe('4');
    expect(patch.json()).toMatchObject({ id: M1, content: 'b' });
  });

  it('counts every reaction verb, emoji and user on one channel against one counter', async () => {
    const base = `/api/v10/channels/${C1}/messages/${M1}/reactions`;
    const put = await call('PUT', `${base}/%F0%9F%91%8D/@me`);
    expect(put.status).toBe(204);
    expect(put.header('x-ratelimit-limit')).toBe('1');
    expect(put.header('x-ratelimit-reset-after')).toBe('0.250');
    const otherEmoji = await call('DELETE', `${base}/custom:123456789012345678/555555555555555555`);
    expect(otherEmoji.status).toBe(429);
    expect(otherEmoji.header('x-ratelimit-bucket')).toBe(put.header('x-ratelimit-bucket'));
    const otherMessage = await call('DELETE', `/api/v10/channels/${C1}/messages/${C2}/reactions`);
    expect(otherMessage.status).toBe(429);
    const otherChannel = await call('PUT', `/api/v10/channels/${C2}/messages/${M1}/reactions/x/@me`);
    expect(otherChannel.status).toBe(204);
    await sleep(260);
    expect((await call('DELETE', `${base}/%F0%9F%91%8D/@me`)).status).toBe(204);
  });

  it('hides the name/topic sublimit: its 429 shows remaining > 0 and the sublimit wait', async () => {
    const path = `/api/v10/channels/${C1}`;
    for (const body of ['{"name":"a"}', '{"topic":"b"}', '{"nsfw":true}']) {
      expect((await call('PATCH', path, { body })).status).toBe(200);
    }
    const limited = await call('PATCH', path, { body: '{"name":"c"}' });
    expect(limited.status).toBe(429);
    expect(limited.header('x-ratelimit-scope')).toBe('user');
    expect(limited.header('x-ratelimit-bucket')).toBe('9852e1a53c06ffc5a89d65fef85ca4ce');
    expect(limited.header('x-ratelimit-remaining')).toBe('7');
    expect(Number(limited.header('x-ratelimit-reset-after'))).toBeLessThanOrEqual(15);
    expect(limited.header('retry-after')).toBe('600');
    expect(limited.json().retry_after).toBeGreaterThan(599);
    expect((await call('PATCH', path, { body: '{"position":2}' })).status).toBe(200);
    expect(fake.stats().rateLimited).toMatchObject({ sublimit: 1, user: 0 });
    expect(fake.stats().invalid).toBe(1);
  });

  it('answers a shared 429 with the caller bucket and does not count it as invalid', async () => {
    const hook = (id: string, token: string) => `/api/v10/webhooks/${id}/${token}`;
    const shared = { name: 'webhook-channel', limit: 2, windowMs: 60_000, key: 'webhook' } as const;
    const policies = [
      { method: 'POST', template: '/webhooks/{id}/{token}', limit: 100, windowMs: 1000, shared },
    ];
    await withFake({ policies }, async (other, send) => {
      const anon = { auth: null, body: '{}' };
      expect((await send('POST', hook(WH, 'token-a'), anon)).status).toBe(204);
      expect((await send('POST', `${hook(WH, 'token-b')}?wait=true`, anon)).status).toBe(200);
      const limited = await send('POST', hook(WH, 'token-c'), anon);
      expect(limited.status).toBe(429);
      expect(limited.header('x-ratelimit-scope')).toBe('shared');
      expect(limited.header('x-ratelimit-remaining')).toBe('100');
      expect(limited.header('retry-after')).toBe('60');
      expect(limited.json()).toMatchObject({ message: 'The resource is being rate limited.', global: false });
      // Webhooks linked to one channel share the hidden limit.
      other.linkWebhook('777777777777777777', C1);
      other.linkWebhook('888888888888888888', C1);
      await send('POST', hook('777777777777777777', 't'), anon);
      await send('POST', hook('777777777777777777', 't'), anon);
      const sibling = await send('POST', hook('888888888888888888', 't'), anon);
      expect(sibling.header('x-ratelimit-scope')).toBe('shared');
      const s = other.stats();
      expect(s.rateLimited.shared).toBe(2);
      expect(s.invalid).toBe(0);
    });
  });

  it('picks the message-delete hash by the age of the message', async () => {
    const path = (id: string) => `/api/v10/channels/${C1}/messages/${id}`;
    const day = 24 * 3600 * 1000;
    const young = await call('DELETE', path(snowflake()));
    const mid = await call('DELETE', path(snowflake(Date.now() - day)));
    const old = await call('DELETE', path(snowflake(Date.now() - 20 * day)));
    expect([young.status, mid.status, old.status]).toEqual([204, 204, 204]);
    expect(young.header('x-ratelimit-bucket')).toBe('9a4e05a217afd885787cb9f6f7d71853');
    expect(mid.header('x-ratelimit-bucket')).toBe('c51d12acd501bc2e6c76ab191408bd45');
    expect(old.header('x-ratelimit-bucket')).toBe('b5e35274c6fd5cfec77fe9bfaf059ad6');
    expect(mid.header('x-ratelimit-limit')).toBe('3');
  });

  it('sends no X-RateLimit headers at all on unbucketed routes', async () => {
    for (const path of [
      '/api/v10/users/@me',
      '/api/v10/gateway',
      '/api/v10/voice/regions',
      '/api/applications/@me',
    ]) {
      const r = await call('GET', path);
      expect(r.status, path).toBe(200);
      expect(rateLimitHeaders(r), path).toEqual([]);
      expect(r.header('via')).toBe('1.1 google');
    }
    expect(fake.stats().byRoute).toMatchObject({ 'GET /users/@me': 1, 'GET /voice/regions': 1 });
  });

  it('answers revoked tokens with 401, deleted webhooks with 404 and forbidden routes with 403', async () => {
    const revoked = bot('100000000000000009');
    fake.revokeToken(revoked);
    const r401 = await call('GET', `/api/v10/channels/${C1}`, { auth: revoked });
    expect(r401.status).toBe(401);
    expect(r401.json()).toEqual({ message: '401: Unauthorized', code: 0 });
    expect(r401.header('via')).toBe('1.1 google');

    fake.deleteWebhook(WH);
    const r404 = await call('POST', `/api/v10/webhooks/${WH}/tok`, { auth: null, body: '{}' });
    expect(r404.status).toBe(404);
    expect(r404.json()).toEqual({ message: 'Unknown Webhook', code: 10015 });

    fake.forbid('POST', `/api/v10/channels/${C2}`);
    const r403 = await call('POST', `/api/v10/channels/${C2}/messages`, { body: '{}' });
    expect(r403.status).toBe(403);
    expect(r403.json()).toEqual({ message: 'Missing Permissions', code: 50013 });
    expect(r403.header('x-ratelimit-bucket')).toMatch(HASH);
    expect(fake.stats().invalid).toBe(2);

    const anonymous = await call('GET', `/api/v10/channels/${C1}`, { auth: null });
    expect(anonymous.status).toBe(401);
  });

  it('answers 403 with the code it was told: one member, a whole channel, a closed DM', async () => {
    fake.forbid('PUT', `/api/v10/guilds/${G1}/bans/100000000000000077`);
    fake.forbid('*', `/api/v10/channels/${C2}`, 50001);
    fake.forbid('POST', `/api/v10/channels/${C1}/messages`, 50007);
    const member = await call('PUT', `/api/v10/guilds/${G1}/bans/100000000000000077`, { body: '{}' });
    expect(member.json()).toEqual({ message: 'Missing Permissions', code: 50013 });
    const other = await call('PUT', `/api/v10/guilds/${G1}/bans/100000000000000078`, { body: '{}' });
    expect(other.status).toBe(204);
    const channel = await call('GET', `/api/v10/channels/${C2}/messages`);
    expect(channel.status).toBe(403);
    expect(channel.json()).toEqual({ message: 'Missing Access', code: 50001 });
    const dm = await call('POST', `/api/v10/channels/${C1}/messages`, { body: '{}' });
    expect(dm.json()).toEqual({ message: 'Cannot send messages to this user', code: 50007 });
    expect(fake.stats().invalid).toBe(3);
  });

  it('echoes bodies byte for byte and records what arrived', async () => {
    const bytes = Buffer.from([0, 1, 2, 250, 255, 10, 13, 0x7b]);
    const r = await call('POST', '/api/v10/__echo?a=1&b=%20', {
      body: bytes,
      type: 'application/octet-stream',
    });
    expect(r.status).toBe(200);
    expect(r.raw.equals(bytes)).toBe(true);
    expect(r.header('x-echo-path')).toBe('/api/v10/__echo');
    expect(r.header('x-echo-query')).toBe('a=1&b=%20');
    const big = await call('GET', '/api/v10/__echo?size=100000');
    expect(big.raw.length).toBe(100000);
    const rec = fake.received[0]!;
    expect(rec).toMatchObject({ method: 'POST', path: '/api/v10/__echo', query: 'a=1&b=%20', status: 200 });
    expect(rec.body.equals(bytes)).toBe(true);
    expect(rec.rawHeaders).toContain('application/octet-stream');
  });

  it('injects 5xx, resets and hangs that still count as received', async () => {
    fake.failNext(1, '502');
    fake.failNext(1, 'reset');
    fake.failNext(1, 'hang');
    const r502 = await call('GET', '/api/v10/users/@me');
    expect(r502.status).toBe(502);
    expect(r502.header('content-type')).toBe('text/html');
    await expect(call('GET', '/api/v10/users/@me')).rejects.toThrow();
    const hung = request(`${url}/api/v10/users/@me`, { signal: AbortSignal.timeout(200) });
    await expect(hung).rejects.toThrow();
    expect((await call('GET', '/api/v10/users/@me')).status).toBe(200);
    expect(fake.received.map((r) => r.status)).toEqual([502, 0, 0, 200]);
  });

  it('measures the busiest 1000 ms window per identity from arrival times', async () => {
    const a = bot('100000000000000002');
    const b = bot('100000000000000003');
    for (let i = 0; i < 3; i++) await call('GET', '/api/v10/users/@me', { auth: a });
    await sleep(1050);
    for (let i = 0; i < 4; i++) await call('GET', '/api/v10/users/@me', { auth: a });
    await call('GET', '/api/v10/users/@me', { auth: b });
    for (let i = 0; i < 5; i++) {
      await call('POST', `/interactions/1/${INTERACTION_TOKEN}/callback`, { auth: a, body: '{"type":1}' });
    }
    const s = fake.stats();
    expect(s.busiestWindow(a)).toBe(4);
    expect(s.busiestWindow(b)).toBe(1);
    expect(s.busiestWindow()).toBe(4);
    expect(s.busiestWindow('nobody')).toBe(0);
    expect(s.rateOf((r) => r.identity === a)).toBe(9);
    expect(s.countOf((r) => r.exempt)).toBe(5);
  });
});

describe('busiest-window arithmetic', () => {
  it('uses half-open windows, so arrivals exactly 1000 ms apart never share one', () => {
    const times = [0, 100, 999, 1000, 1500, 1999, 2999.5];
    const w = new BusiestWindow();
    for (const t of times) w.add(t);
    expect(w.max).toBe(3);
    expect(maxInWindow(times, 1000)).toBe(3);
    expect(maxInWindow([0, 0, 0, 999.9], 1000)).toBe(4);
    expect(maxInWindow([], 1000)).toBe(0);
  });
});

describe('fake Discord global limit', () => {
  it('answers a global 429 without per-route headers once the sliding second is full', async () => {
    const big = '200000000000000000';
    await withFake({ globalLimit: 5, globalOverrides: { [big]: 20 } }, async (fake, call) => {
      for (let i = 0; i < 5; i++)
        expect((await call('GET', `/api/v10/channels/${C1}/messages`)).status).toBe(200);
      const limited = await call('GET', `/api/v10/channels/${C1}/messages`);
      expect(limited.status).toBe(429);
      expect(limited.header('x-ratelimit-global')).toBe('true');
      expect(limited.header('x-ratelimit-scope')).toBe('global');
      expect(limited.header('via')).toBe('1.1 google');
      expect(limited.header('retry-after')).toBe('1');
      expect(rateLimitHeaders(limited).sort()).toEqual(['x-ratelimit-global', 'x-ratelimit-scope']);
      const body = limited.json();
      expect(body).toMatchObject({ global: true, message: 'You are being rate limited.' });
      expect(body.retry_after).toBeGreaterThan(0.3);
      expect(body.retry_after).toBeLessThanOrEqual(1);

      // Exempt interaction traffic neither counts nor is refused.
      const callback = await call('POST', `/api/v10/interactions/1/${INTERACTION_TOKEN}/callback`, {
        body: '{}',
      });
      expect(callback.status).toBe(204);
      const followup = await call('POST', `/api/v10/webhooks/1/${INTERACTION_TOKEN}?wait=true`, {
        body: '{}',
      });
      expect(followup.status).toBe(200);
      expect(followup.header('x-ratelimit-bucket')).toMatch(HASH);

      // Other identities have their own window; a large bot has its own limit.
      for (let i = 0; i < 10; i++)
        expect((await call('GET', '/api/v10/gateway', { auth: bot(big) })).status).toBe(200);
      expect((await call('GET', '/api/v10/gateway', { auth: null })).status).toBe(200);

      await sleep((body.retry_after as number) * 1000 + 20);
      expect((await call('GET', `/api/v10/channels/${C1}/messages`)).status).toBe(200);
      expect(fake.stats().rateLimited.global).toBe(1);
      expect(fake.stats().busiestWindow(bot('100000000000000001'))).toBe(6);
    });
  });

  it('spreads requests evenly after the burst in GCRA mode', async () => {
    await withFake({ globalLimit: 5, globalMode: 'gcra' }, async (_fake, call) => {
      for (let i = 0; i < 5; i++) expect((await call('GET', '/api/v10/gateway')).status).toBe(200);
      const limited = await call('GET', '/api/v10/gateway');
      expect(limited.status).toBe(429);
      expect(limited.json().retry_after).toBeLessThanOrEqual(0.2);
      await sleep(210);
      expect((await call('GET', '/api/v10/gateway')).status).toBe(200);
      expect((await call('GET', '/api/v10/gateway')).status).toBe(429);
    });
  });
});

describe('fake Discord Cloudflare layer', () => {
  it('bans the IP after the invalid-request threshold with form A, without Via', async () => {
    const ban = { threshold: 3, windowMs: 10_000, banMs: 60_000 };
    await withFake({ invalidBan: ban }, async (fake, call) => {
      const revoked = bot('100000000000000007');
      fake.revokeToken(revoked);
      for (let i = 0; i < 3; i++)
        expect((await call('GET', '/api/v10/gateway/bot', { auth: revoked })).status).toBe(401);
      const banned = await call('GET', '/api/v10/gateway/bot');
      expect(banned.status).toBe(429);
      expect(banned.header('via')).toBeUndefined();
      expect(banned.header('retry-after')).toBeUndefined();
      expect(rateLimitHeaders(banned)).toEqual([]);
      const body = banned.json();
      expect(body.code).toBe(0);
      expect(body.message).toMatch(/blocked from accessing our API temporarily/);
      expect(body).not.toHaveProperty('retry_after');
      expect(fake.stats()).toMatchObject({ invalid: 3, rateLimited: { cloudflare: 1 } });
    });
  });

  it('serves form B as an HTML 1015 page with a configured Retry-After', async () => {
    await withFake({ invalidBan: { form: 'B', retryAfter: 30 } }, async (fake, call) => {
      fake.banNow(200);
      const banned = await call('GET', '/api/v10/users/@me');
      expect(banned.status).toBe(429);
      expect(banned.header('content-type')).toMatch(/^text\/html/);
      expect(banned.text).toBe('error code: 1015');
      expect(banned.header('retry-after')).toBe('30');
      expect(banned.header('via')).toBeUndefined();
      await sleep(220);
      expect((await call('GET', '/api/v10/users/@me')).status).toBe(200);
    });
  });
});

describe('fake Discord formatting options', () => {
  it('applies clock skew, two decimals and docs-literal scope', async () => {
    const options: FakeDiscordOptions = { clockSkewMs: 60_000, decimals: 2, scopeOnSuccess: false };
    await withFake(options, async (_fake, call) => {
      const r = await call('GET', '/api/v9/gateway/bot');
      expect(r.header('x-ratelimit-reset-after')).toBe('5.00');
      expect(r.header('x-ratelimit-reset')).toMatch(/^\d+\.\d{2}$/);
      const skewed = Number(r.header('x-ratelimit-reset')) * 1000 - Date.now();
      expect(skewed).toBeGreaterThan(64_000);
      expect(skewed).toBeLessThan(66_000);
      expect(Date.parse(r.header('date') ?? '') - Date.now()).toBeGreaterThan(58_000);
      expect(r.header('x-ratelimit-scope')).toBeUndefined();
      await call('GET', '/api/v9/gateway/bot');
      expect((await call('GET', '/api/v9/gateway/bot')).header('x-ratelimit-scope')).toBe('user');
    });
  });

  it('holds responses for the simulated latency and computes headers when they leave', async () => {
    await withFake({ latency: { kind: 'fixed', ms: 80 } }, async (_fake, call) => {
      const started = performance.now();
      const r = await call('GET', '/api/v10/gateway/bot');
      expect(performance.now() - started).toBeGreaterThanOrEqual(79);
      expect(Number(r.header('x-ratelimit-reset-after'))).toBeLessThanOrEqual(4.92);
      expect(Number(r.header('x-envoy-upstream-service-time'))).toBe(80);
    });
  });
});

describe('fake Discord transit', () => {
  const pins = `/api/v10/channels/${C1}/pins`;

  /** Waits, at most ~2 s, until `n` requests have arrived at the fake. */
  async function arrivals(fake: FakeDiscord, n: number): Promise<void> {
    for (let i = 0; i < 200 && fake.received.length < n; i++) await sleep(10);
  }

  it('samples each request its own transit, so requests arrive in another order than they were read', async () => {
    const transit = { kind: 'lognormal', medianGetMs: 40, medianWriteMs: 40, sigma: 1, capMs: 400 } as const;
    await withFake({ transit }, async (fake, call) => {
      const sends: Promise<Res>[] = [];
      for (let i = 0; i < 40; i++) {
        sends.push(call('GET', `/api/v10/users/@me?i=${i}`));
        await sleep(1);
      }
      const answers = await Promise.all(sends);
      expect(answers.map((a) => a.status)).toEqual(Array(40).fill(200));
      const rec = fake.received;
      expect(rec).toHaveLength(40);
      const readOrder = [...rec].sort((a, b) => a.readAt - b.readAt).map((r) => r.query);
      expect(rec.map((r) => r.query)).not.toEqual(readOrder);
      // `received` is in arrival order, which is the order decisions were made in.
      for (let i = 1; i < rec.length; i++) expect(rec[i]!.at).toBeGreaterThanOrEqual(rec[i - 1]!.at);
      for (const r of rec) expect(r.at).toBeGreaterThanOrEqual(r.readAt);
      expect(Math.max(...rec.map((r) => r.at - r.readAt))).toBeGreaterThan(40);
    });
  });

  it('decides at arrival: a window opens when its first request arrives, not when it was sent', async () => {
    const policies = [{ method: 'GET', template: '/channels/{id}/pins', limit: 1, windowMs: 600 }];
    await withFake({ transit: { kind: 'fixed', ms: 150 }, policies }, async (fake, call) => {
      const first = await call('GET', pins);
      const answeredAt = performance.now();
      expect(first.status).toBe(200);
      // The window opened on arrival and the answer left at once, so it shows the whole window; a fake
      // that decided on receipt and only held the answer would show 0.450.
      expect(first.header('x-ratelimit-reset-after')).toBe('0.600');
      // Sent at once, this one arrives at least 150 ms into the window.
      const early = await call('GET', pins);
      expect(early.status).toBe(429);
      expect(early.json().retry_after).toBeLessThanOrEqual(0.45);
      // Sent 100 ms before the window ends by the first answer's headers; it arrives 50 ms after the end.
      await sleep(Math.max(0, answeredAt + 500 - performance.now()));
      const late = await call('GET', pins);
      expect(late.status).toBe(200);
      expect(late.header('x-ratelimit-reset-after')).toBe('0.600');
      const [a, e, l] = fake.received;
      for (const r of [a!, e!, l!]) expect(r.at - r.readAt).toBeGreaterThanOrEqual(149);
      expect(e!.at - a!.at).toBeGreaterThanOrEqual(149);
      expect(l!.at - a!.at).toBeGreaterThanOrEqual(600);
      expect(fake.received.map((r) => r.status)).toEqual([200, 429, 200]);
    });
  });

  it('still decides a request whose client left during the transit, and only drops the answer', async () => {
    const policies = [{ method: 'GET', template: '/channels/{id}/pins', limit: 2, windowMs: 60_000 }];
    await withFake({ transit: { kind: 'fixed', ms: 300 }, policies }, async (fake, call) => {
      const authorization = bot('100000000000000001');
      const gone = request(`${fake.url}${pins}`, {
        headers: { authorization },
        signal: AbortSignal.timeout(50),
      });
      await expect(gone).rejects.toThrow();
      expect(fake.received).toHaveLength(0);
      await arrivals(fake, 1);
      expect(fake.received.map((r) => r.status)).toEqual([200]);
      // The departed request used a slot, as it would have at Discord.
      const next = await call('GET', pins);
      expect(next.header('x-ratelimit-remaining')).toBe('0');
    });
  });

  it('stop() drops requests still in transit instead of deciding them later', async () => {
    const fake = new FakeDiscord({ transit: { kind: 'fixed', ms: 300 } });
    const url = await fake.start();
    const authorization = bot('100000000000000001');
    const inFlight = request(`${url}/api/v10/users/@me`, { headers: { authorization } }).then(
      () => 'answered',
      () => 'failed',
    );
    await sleep(100);
    await fake.stop();
    expect(await inFlight).toBe('failed');
    await sleep(400);
    expect(fake.received).toHaveLength(0);
    expect(fake.stats().total).toBe(0);
  });
});

describe('fake Discord distance profiles', () => {
  it('near decides and answers at once; fixed() holds requests there and answers back', async () => {
    await withFake({ ...near }, async (fake, call) => {
      const r = await call('GET', '/api/v10/gateway/bot');
      expect(r.header('x-envoy-upstream-service-time')).toBe('0');
      expect(r.header('x-ratelimit-reset-after')).toBe('5.000');
      expect(fake.received[0]!.at).toBe(fake.received[0]!.readAt);
    });
    await withFake({ ...fixed(100, 50) }, async (fake, call) => {
      const r = await call('GET', '/api/v10/gateway/bot');
      expect(r.header('x-envoy-upstream-service-time')).toBe('50');
      expect(Number(r.header('x-ratelimit-reset-after'))).toBeLessThanOrEqual(4.95);
      const rec = fake.received[0]!;
      expect(rec.at - rec.readAt).toBeGreaterThanOrEqual(99);
    });
  });

  it('far delays both ways with per-request samples, within the caps', async () => {
    await withFake({ ...far }, async (fake, call) => {
      const answers = await Promise.all(
        Array.from({ length: 20 }, (_, i) => call('GET', `/api/v10/users/@me?i=${i}`)),
      );
      const service = answers.map((a) => Number(a.header('x-envoy-upstream-service-time')));
      expect(Math.min(...service)).toBeGreaterThan(0);
      expect(Math.max(...service)).toBeLessThanOrEqual(600);
      expect(new Set(service).size).toBeGreaterThan(1);
      for (const r of fake.received) expect(r.at).toBeGreaterThan(r.readAt);
    });
  });

  it('caps lognormal samples at capMs around the configured median', () => {
    const sample = latencySampler(far.transit);
    const xs = Array.from({ length: 4000 }, () => sample('GET')).sort((a, b) => a - b);
    expect(xs[xs.length - 1]).toBeLessThanOrEqual(400);
    expect(xs[2000]).toBeGreaterThan(34);
    expect(xs[2000]).toBeLessThan(46);
    // Uncapped, the default cap is 20 × the median.
    const wide = latencySampler({ kind: 'lognormal', medianGetMs: 10, medianWriteMs: 10, sigma: 3 });
    expect(Math.max(...Array.from({ length: 4000 }, () => wide('GET')))).toBeLessThanOrEqual(200);
  });
});

describe('fake Discord header-less routes and short Retry-After', () => {
  const pins = `/api/v10/channels/${C1}/pins`;

  it('limits a header-less route per identity and major, and its 429 carries only Retry-After', async () => {
    const policies = [
      {
        method: 'POST',
        template: '/guilds/{id}/emojis',
        limit: 2,
        windowMs: 60_000,
        headers: false,
        shared: null,
      },
    ];
    await withFake({ policies }, async (fake, call) => {
      const emojis = (guild: string) => `/api/v10/guilds/${guild}/emojis`;
      for (let i = 0; i < 2; i++) {
        const ok = await call('POST', emojis(C1), { body: '{}' });
        expect(ok.status).toBe(200);
        expect(rateLimitHeaders(ok)).toEqual([]);
      }
      const limited = await call('POST', emojis(C1), { body: '{}' });
      expect(limited.status).toBe(429);
      expect(rateLimitHeaders(limited)).toEqual([]);
      expect(limited.header('retry-after')).toBe('60');
      expect(limited.header('via')).toBe('1.1 google');
      const body = limited.json();
      expect(Object.keys(body).sort()).toEqual(['global', 'message', 'retry_after']);
      expect(body).toMatchObject({ message: 'You are being rate limited.', global: false });
      expect(body.retry_after).toBeGreaterThan(59);
      expect(body.retry_after).toBeLessThanOrEqual(60);
      // Counted per guild and per identity, as any route bucket.
      expect((await call('POST', emojis(C2), { body: '{}' })).status).toBe(200);
      const otherBot = await call('POST', emojis(C1), { body: '{}', auth: bot('100000000000000002') });
      expect(otherBot.status).toBe(200);
      expect(fake.stats()).toMatchObject({ invalid: 1, rateLimited: { user: 1 } });

      // An override of a seeded route keeps its limit and only drops the headers.
      fake.setPolicy({ method: 'DELETE', template: '/guilds/{id}/emojis/{id}', headers: false });
      const deleted = await call('DELETE', `/api/v10/guilds/${C1}/emojis/${M1}`);
      expect(deleted.status).toBe(204);
      expect(rateLimitHeaders(deleted)).toEqual([]);
    });
  });

  it('can send a Retry-After shorter than the body retry_after (#7394), so header-only clients come back early', async () => {
    const policies = [
      { method: 'GET', template: '/channels/{id}/pins', limit: 1, windowMs: 3000, shortRetryAfter: 0.5 },
    ];
    await withFake({ policies }, async (fake, call) => {
      expect((await call('GET', pins)).status).toBe(200);
      const limited = await call('GET', pins);
      expect(limited.status).toBe(429);
      expect(limited.header('x-ratelimit-scope')).toBe('user');
      expect(limited.json().retry_after).toBeGreaterThan(2);
      expect(limited.header('retry-after')).toBe('1');
      await sleep(1000 + 20);
      const early = await call('GET', pins);
      expect(early.status).toBe(429);
      expect(Number(early.header('retry-after'))).toBeLessThan(early.json().retry_after as number);
      expect(fake.stats().invalid).toBe(2);
      // Other routes keep the ceiling of the real wait.
      await call('GET', '/api/v10/gateway/bot');
      await call('GET', '/api/v10/gateway/bot');
      expect((await call('GET', '/api/v10/gateway/bot')).header('retry-after')).toBe('5');
    });
  });

  it('shortens Retry-After on every Discord 429 with the global option, global ones included', async () => {
    await withFake({ globalLimit: 1, shortRetryAfter: 0 }, async (_fake, call) => {
      expect((await call('GET', '/api/v10/gateway')).status).toBe(200);
      const limited = await call('GET', '/api/v10/gateway');
      expect(limited.status).toBe(429);
      expect(limited.header('x-ratelimit-global')).toBe('true');
      expect(limited.header('retry-after')).toBe('0');
      expect(limited.json().retry_after).toBeGreaterThan(0.5);
    });
    expect(() => new FakeDiscord({ shortRetryAfter: 2 })).toThrow(/0\.\.1/);
  });
});

describe('fake Discord unknown messages', () => {
  it('answers a DELETE of an unknown message 404 with another hash and counter than the 204s', async () => {
    const gone = snowflake(Date.now() - 24 * 3600 * 1000);
    const later = '555555555555555555';
    await withFake({ unknownMessages: [gone] }, async (fake, call) => {
      const message = (id: string) => `/api/v10/channels/${C1}/messages/${id}`;
      const ok = await call('DELETE', message(M1));
      expect(ok.status).toBe(204);
      expect(ok.header('x-ratelimit-bucket')).toBe('b5e35274c6fd5cfec77fe9bfaf059ad6');
      const missing = await call('DELETE', message(gone));
      expect(missing.status).toBe(404);
      expect(missing.json()).toEqual({ message: 'Unknown Message', code: 10008 });
      expect(missing.header('x-ratelimit-bucket')).toBe('9a4e05a217afd885787cb9f6f7d71853');
      expect(missing.header('x-ratelimit-limit')).toBe('5');
      expect(missing.header('x-ratelimit-remaining')).toBe('4');
      // The 404s spend their own counter: the sixth is refused while deletes of real messages go on.
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) statuses.push((await call('DELETE', message(gone))).status);
      expect(statuses).toEqual([404, 404, 404, 404, 429]);
      const still = await call('DELETE', message(M1));
      expect(still.status).toBe(204);
      expect(still.header('x-ratelimit-remaining')).toBe('28');
      expect(fake.stats()).toMatchObject({ invalid: 1, rateLimited: { user: 1 } });

      // Added at run time; other message routes, webhook messages included, answer 404 as well.
      fake.deleteMessage(later);
      const get = await call('GET', message(later));
      expect(get.status).toBe(404);
      expect(get.json()).toEqual({ message: 'Unknown Message', code: 10008 });
      const hook = `/api/v10/webhooks/${WH}/token/messages/${later}`;
      expect((await call('PATCH', hook, { auth: null, body: '{}' })).status).toBe(404);
      // reset() forgets run-time deletions but keeps the option's ids.
      fake.reset();
      expect((await call('GET', message(later))).status).toBe(200);
      expect((await call('DELETE', message(gone))).status).toBe(404);
    });
  });
});

describe('fake Discord long blocks', () => {
  it('keeps a resource closed for a shared 429 of an hour, past the caller bucket windows', async () => {
    const hour = 3_600_000;
    const shared = { name: 'guild-prune', limit: 1, windowMs: hour, key: 'major' } as const;
    const policies = [
      { method: 'POST', template: '/guilds/{id}/prune', limit: 10, windowMs: 500, shared },
      { method: 'GET', template: '/guilds/{id}/prune', limit: 1, windowMs: hour },
    ];
    await withFake({ policies }, async (fake, call) => {
      const prune = (guild: string) => `/api/v10/guilds/${guild}/prune`;
      expect((await call('POST', prune(C1), { body: '{}' })).status).toBe(200);
      const blocked = await call('POST', prune(C1), { body: '{}' });
      expect(blocked.status).toBe(429);
      expect(blocked.header('x-ratelimit-scope')).toBe('shared');
      expect(blocked.header('retry-after')).toBe('3600');
      expect(blocked.header('x-ratelimit-remaining')).toBe('9');
      expect(blocked.json()).toMatchObject({ message: 'The resource is being rate limited.', global: false });
      expect(blocked.json().retry_after).toBeGreaterThan(3599);
      // Once the caller's own 500 ms bucket has reset, the resource is still closed, to anyone.
      await sleep(550);
      const still = await call('POST', prune(C1), { body: '{}' });
      expect(still.status).toBe(429);
      expect(still.header('x-ratelimit-scope')).toBe('shared');
      expect(still.header('x-ratelimit-reset-after')).toBe('0.500');
      expect(Number(still.header('retry-after'))).toBeGreaterThanOrEqual(3599);
      const other = await call('POST', prune(C1), { body: '{}', auth: bot('100000000000000002') });
      expect(other.header('x-ratelimit-scope')).toBe('shared');
      expect((await call('POST', prune(C2), { body: '{}' })).status).toBe(200);

      // A route bucket with an hour's window answers user 429s of an hour as well.
      expect((await call('GET', prune(C1))).status).toBe(200);
      const user = await call('GET', prune(C1));
      expect(user.header('x-ratelimit-scope')).toBe('user');
      expect(user.header('retry-after')).toBe('3600');
      expect(user.header('x-ratelimit-reset-after')).toMatch(/^3599\.\d{3}$|^3600\.000$/);
      expect(fake.stats()).toMatchObject({ invalid: 1, rateLimited: { shared: 3, user: 1 } });
    });
  });
});

describe('fake Discord at run time', () => {
  it('changes its answer latency when told, and reports it as X-Envoy-Upstream-Service-Time', async () => {
    await withFake({ latency: { kind: 'fixed', ms: 120 } }, async (fake, call) => {
      const slow = await call('GET', '/api/v10/users/@me');
      expect(slow.header('x-envoy-upstream-service-time')).toBe('120');
      fake.setLatency({ kind: 'fixed', ms: 5 });
      const fast = await call('GET', '/api/v10/users/@me');
      expect(fast.header('x-envoy-upstream-service-time')).toBe('5');
    });
  });

  it('counts answers without a 429 per identity, keyed by a shortened hash', async () => {
    await withFake({}, async (fake, call) => {
      const url = fake.url;
      await call('GET', '/api/v10/users/@me', { auth: bot('100000000000000009') });
      await call('GET', '/api/v10/users/@me', { auth: bot('100000000000000009') });
      await call('GET', '/api/v10/users/@me', { auth: bot('100000000000000008') });
      const res = await request(`${url}/__fake/stats`);
      const text = await res.body.text();
      const byIdentity = (JSON.parse(text) as { okByIdentity: Record<string, number> }).okByIdentity;
      expect(Object.values(byIdentity).sort()).toEqual([1, 2]);
      for (const key of Object.keys(byIdentity)) expect(key).toMatch(/^[0-9a-f]{12}$/);
    });
  });
});
