/**
 * BODY_LIMIT_BYTES holds for bodies that declare their length and for chunked ones that do not.
 */
import { Readable } from 'node:stream';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectGenerated } from '../helpers/assertions.js';
import { BOT_A, startEnv, type TestEnv } from '../helpers/env.js';

const LIMIT = 4096;
const path = '/api/v10/channels/500000000000000001/messages';

describe('request body limit', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await startEnv({}, { env: { BODY_LIMIT_BYTES: String(LIMIT) } });
  });
  afterAll(async () => env.close());

  async function send(body: Buffer | Readable, headers: Record<string, string> = {}) {
    const res = await request(`${env.proxy.url}${path}`, {
      method: 'POST',
      headers: { authorization: BOT_A, 'content-type': 'application/octet-stream', ...headers },
      body,
      dispatcher: env.client,
    });
    const text = await res.body.text();
    return { status: res.statusCode, headers: res.headers, json: () => JSON.parse(text) as unknown };
  }

  it('refuses a declared length above the limit before reading it', async () => {
    env.fake.reset();
    expectGenerated(await send(Buffer.alloc(LIMIT + 1, 1)), 413);
    expect(env.fake.received).toHaveLength(0);
  });

  it('stops a chunked body at the limit and keeps serving', async () => {
    env.fake.reset();
    const chunks = Array.from({ length: 10 }, () => Buffer.alloc(1024, 2));
    expectGenerated(await send(Readable.from(chunks)), 413);
    // Whatever reached the fake before the cut is no complete request of more than the limit.
    for (const r of env.fake.received) expect(r.body.length).toBeLessThanOrEqual(LIMIT);
    const ok = await send(Buffer.from('{"content":"after"}'), { 'content-type': 'application/json' });
    expect(ok.status).toBe(200);
  });

  it('forwards a chunked body under the limit byte for byte', async () => {
    env.fake.reset();
    const bytes = Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 256));
    const res = await send(Readable.from([bytes.subarray(0, 1000), bytes.subarray(1000)]));
    expect(res.status).toBe(200);
    const received = env.fake.received.find((r) => r.method === 'POST');
    expect(received?.body.equals(bytes)).toBe(true);
  });
});

async function metric(adminUrl: string, name: string): Promise<number | undefined> {
  const text = await (await request(`${adminUrl}/metrics`)).body.text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

describe('held bodies under a byte bound', () => {
  let env: TestEnv;
  const BODY = 40_000;
  beforeAll(async () => {
    env = await startEnv(
      {},
      { env: { HELD_BODY_LIMIT_BYTES: String(2 * BODY + 1000), RETRY_BODY_LIMIT_BYTES: String(BODY * 1.5) } },
    );
  });
  afterAll(async () => env.close());

  it('keeps at most HELD_BODY_LIMIT_BYTES in memory; the rest wait in their sockets and all arrive intact', async () => {
    await env.fake.setPolicy({
      method: 'POST',
      template: '/channels/{id}/messages',
      limit: 1,
      windowMs: 1500,
    });
    const post = (body: Buffer) =>
      request(`${env.proxy.url}${path}`, {
        method: 'POST',
        headers: { authorization: BOT_A, 'content-type': 'application/octet-stream' },
        body,
        dispatcher: env.client,
      }).then(async (res) => ({ status: res.statusCode, text: await res.body.text() }));
    expect((await post(Buffer.from('{}'))).status).toBe(200);

    // One request per 1.5 s window: these four are held, and only two bodies fit under the bound.
    const bodies = [1, 2, 3, 4].map((n) => Buffer.alloc(BODY, n));
    const answers = Promise.all(bodies.map(post));
    const until = performance.now() + 5000;
    while (
      (await metric(env.proxy.adminUrl, 'discord_proxy_held_requests')) !== 4 &&
      performance.now() < until
    ) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(await metric(env.proxy.adminUrl, 'discord_proxy_held_requests')).toBe(4);
    expect(await metric(env.proxy.adminUrl, 'discord_proxy_held_body_bytes')).toBe(2 * BODY);

    for (const res of await answers) expect(res.status).toBe(200);
    const arrived = env.fake.received.filter((r) => r.method === 'POST' && r.body.length === BODY);
    expect(arrived).toHaveLength(4);
    for (const body of bodies) expect(arrived.some((r) => r.body.equals(body))).toBe(true);
    expect(env.fake.stats().byStatus['429'] ?? 0).toBe(0);
    expect(await metric(env.proxy.adminUrl, 'discord_proxy_held_body_bytes')).toBe(0);
  }, 20_000);
});
