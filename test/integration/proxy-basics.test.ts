import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runWorkers, startEnv, type TestEnv } from '../helpers/env.js';

describe('proxy against the fake Discord', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await startEnv({
      policies: [{ method: 'POST', template: '/channels/{id}/messages', limit: 5, windowMs: 500 }],
    });
  });
  afterAll(async () => env.close());

  it("forwards a request and returns Discord's answer with its rate-limit headers", async () => {
    const res = await env.call('POST', '/api/v10/channels/100000000000000001/messages', {
      body: '{"content":"hi"}',
    });
    expect(res.status).toBe(200);
    expect(res.headers['x-ratelimit-limit']).toBe('5');
    expect(res.headers['x-ratelimit-bucket']).toMatch(/^[0-9a-f]{32}$/);
    expect(res.headers.via).toBe('1.1 google');
  });

  it('gets zero 429s for a hot bucket under 40 concurrent workers', async () => {
    env.fake.reset();
    const statuses: number[] = [];
    await runWorkers(40, 3000, async () => {
      const res = await env.call('POST', '/api/v10/channels/100000000000000002/messages', {
        body: '{"content":"x"}',
      });
      statuses.push(res.status);
    });
    const stats = env.fake.stats();
    expect(stats.rateLimited.user + stats.rateLimited.global).toBe(0);
    expect(statuses.every((s) => s === 200)).toBe(true);
    // 5 per ~500 ms over 3 s: the bucket was actually used, not starved.
    expect(stats.total).toBeGreaterThanOrEqual(25);
  });
});
