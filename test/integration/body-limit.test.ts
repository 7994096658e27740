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
