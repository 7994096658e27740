/**
 * MemoryStore behaviour that needs its clock under control (the shared contract in test/contract runs on real
 * time, because the Redis store decides with Redis's clock).
 */
import { describe, expect, it } from 'vitest';
import { MemoryStore } from '../../src/limiter/memory.js';

const options = { resetMarginMs: 0, globalWindowMarginMs: 0, probeTimeoutMs: 1000 };
const req = {
  identity: 'bot',
  routeKey: 'POST /guilds/:id/prune',
  major: 'g:1',
  globalLimit: 50,
  sublimit: '*',
};

describe('MemoryStore', () => {
  it('keeps a route mapped to its bucket as long as a block lasts (long blocks outlived by their mapping)', async () => {
    let now = 1_000_000;
    const store = new MemoryStore(options, () => now);
    const probe = await store.admit(req);
    if (!probe.ok) throw new Error('probe refused');
    // A shared 429 with an hour's Retry-After.
    await store.learn({ ...req, ...probe, hash: 'prune', blockMs: 3_600_000 });
    now += 11 * 60_000; // past the 10 minutes an idle mapping lives
    store.sweep();
    expect(await store.admit(req)).toEqual({ ok: false, reason: 'blocked', waitMs: 3_600_000 - 11 * 60_000 });
    now += 50 * 60_000; // past the block
    store.sweep();
    // Still the learned bucket, not an unknown one: its probe finds out the limits.
    expect(await store.admit(req)).toMatchObject({ ok: true, bucket: 'bot|prune|g:1' });
    await store.close();
  });

  it('frees a global slot a full window after its answer, not after its admission', async () => {
    let now = 0;
    const store = new MemoryStore({ ...options, globalWindowMarginMs: 50 }, () => now);
    const one = { ...req, routeKey: 'GET /users/@me', major: '-', globalLimit: 1 };
    const first = await store.admit(one);
    if (!first.ok) throw new Error('refused');
    now = 400; // the answer took 400 ms: Discord may have counted it as late as this
    await store.learn({ ...one, ...first, unbucketed: true });
    expect(await store.admit(one)).toEqual({ ok: false, reason: 'global', waitMs: 1050 });
    now = 1449;
    expect(await store.admit(one)).toEqual({ ok: false, reason: 'global', waitMs: 1 });
    now = 1450;
    expect(await store.admit(one)).toMatchObject({ ok: true });
    await store.close();
  });

  it("counts a global slot from when the request reached Discord at the latest: the answer less Discord's service time", async () => {
    let now = 0;
    const store = new MemoryStore({ ...options, globalWindowMarginMs: 20 }, () => now);
    const one = { ...req, routeKey: 'GET /users/@me', major: '-', globalLimit: 1 };
    const first = await store.admit(one);
    if (!first.ok) throw new Error('refused');
    now = 400; // 40 ms there, 300 ms at Discord (X-Envoy-Upstream-Service-Time), the rest on the way back
    await store.learn({ ...one, ...first, unbucketed: true, serviceMs: 300 });
    expect(await store.admit(one)).toEqual({ ok: false, reason: 'global', waitMs: 100 + 1020 - 400 });
    now = 1120;
    expect(await store.admit(one)).toMatchObject({ ok: true });
    await store.close();
  });

  it('keeps an unanswered slot counting until its timeout and a window', async () => {
    let now = 0;
    const store = new MemoryStore(options, () => now);
    const one = { ...req, routeKey: 'GET /users/@me', major: '-', globalLimit: 1 };
    const probe = await store.admit(one);
    if (!probe.ok) throw new Error('refused');
    await store.learn({ ...one, ...probe, unbucketed: true, unsent: true });
    expect(await store.admit(one)).toMatchObject({ ok: true });
    // Its end is unknown: at least a window, the caller asks again then.
    expect(await store.admit(one)).toEqual({ ok: false, reason: 'global', waitMs: 1000 });
    now = 1999;
    expect(await store.admit(one)).toMatchObject({ ok: false, reason: 'global' });
    now = 2000;
    expect(await store.admit(one)).toMatchObject({ ok: true });
    await store.close();
  });
});
