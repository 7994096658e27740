/**
 * One behaviour, two homes for the state: every LimiterStore must pass this suite. It runs on real time with
 * small windows, because the Redis store decides with Redis's own clock.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AdmitInput, LimiterStore, StoreOptions } from '../../src/limiter/types.js';

export const CONTRACT_OPTIONS: StoreOptions = {
  resetMarginMs: 5,
  globalWindowMarginMs: 20,
  probeTimeoutMs: 300,
};

let seq = 0;
function input(overrides: Partial<AdmitInput> = {}): AdmitInput {
  return {
    identity: `id${seq}`,
    routeKey: 'POST /channels/:id/messages',
    major: 'c:1',
    globalLimit: 50,
    sublimit: '*',
    ...overrides,
  };
}
/** The fields of an admit input that also identify a learn input. */
function at(req: AdmitInput) {
  return { identity: req.identity, routeKey: req.routeKey, major: req.major };
}
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function storeContract(name: string, make: (options: StoreOptions) => Promise<LimiterStore>): void {
  describe(`${name} store contract`, () => {
    let store: LimiterStore;
    beforeEach(async () => {
      seq += 1;
      store = await make(CONTRACT_OPTIONS);
    });
    afterEach(async () => {
      await store.close();
    });

    /** Admits until the store says wait; returns how many went. */
    async function drain(req: AdmitInput, max = 100): Promise<number> {
      for (let n = 0; n < max; n++) if (!(await store.admit(req)).ok) return n;
      return max;
    }

    it('sends one probe to an unknown bucket and holds the rest until its headers arrive', async () => {
      const req = input();
      const first = await store.admit(req);
      expect(first).toMatchObject({ ok: true, probe: true });
      expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'probe' });
      if (!first.ok) throw new Error('unreachable');
      await store.learn({
        ...at(req),
        bucket: first.bucket,
        probe: true,
        hash: 'h1',
        limit: 3,
        remaining: 2,
        resetAfterMs: 300,
      });
      expect(await drain(req)).toBe(2);
      const wait = await store.admit(req);
      expect(wait).toMatchObject({ ok: false, reason: 'bucket' });
      if (!wait.ok) expect(wait.waitMs).toBeGreaterThan(200);
    });

    it('opens a new window after the reset and learns its end from the first answer', async () => {
      const req = input();
      const probe = await store.admit(req);
      if (!probe.ok) throw new Error('probe refused');
      await store.learn({
        ...at(req),
        bucket: probe.bucket,
        probe: true,
        hash: 'h',
        limit: 2,
        remaining: 0,
        resetAfterMs: 80,
      });
      expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'bucket' });
      await sleep(110);
      const admitted = await store.admit(req);
      expect(admitted).toMatchObject({ ok: true, probe: false });
      expect(await drain(req)).toBe(1);
      // A late answer from the old window says nothing about the new one, even long after that window ended
      // (Discord then says "resets in 0").
      await sleep(120);
      await store.learn({
        ...at(req),
        bucket: null,
        probe: false,
        hash: 'h',
        limit: 2,
        remaining: 0,
        resetAfterMs: 0,
      });
      // Read as a new window, it would end in a few ms and let two more go at once.
      await sleep(30);
      expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'bucket' });
      // The first answer of the new window sets its end.
      await store.learn({
        ...at(req),
        bucket: null,
        probe: false,
        hash: 'h',
        limit: 2,
        remaining: 1,
        resetAfterMs: 200,
      });
      const wait = await store.admit(req);
      expect(wait).toMatchObject({ ok: false, reason: 'bucket' });
      if (!wait.ok) expect(wait.waitMs).toBeGreaterThan(150);
    });

    it('shares one bucket between routes with the same hash, per major parameter', async () => {
      const a = input({ routeKey: 'PUT /channels/:id/messages/:id/reactions/:reaction' });
      const b = input({ routeKey: 'DELETE /channels/:id/messages/:id/reactions/:reaction' });
      for (const req of [a, b]) {
        const probe = await store.admit(req);
        if (!probe.ok) throw new Error('probe refused');
        await store.learn({
          ...at(req),
          bucket: probe.bucket,
          probe: true,
          hash: 'react',
          limit: 4,
          remaining: 3,
          resetAfterMs: 500,
        });
      }
      // Both answers described one counter: three slots left in all, not six.
      expect((await drain(a)) + (await drain(b))).toBe(3);
      const otherChannel = { ...a, major: 'c:2' };
      expect(await store.admit(otherChannel)).toMatchObject({ ok: true, probe: true });
    });

    it('lets unbucketed routes through without a bucket', async () => {
      const req = input({ routeKey: 'GET /users/@me', major: '-' });
      const probe = await store.admit(req);
      if (!probe.ok) throw new Error('probe refused');
      await store.learn({ ...at(req), bucket: probe.bucket, probe: true, unbucketed: true });
      for (let i = 0; i < 10; i++) expect(await store.admit(req)).toMatchObject({ ok: true, bucket: null });
    });

    it('keeps every global window within the limit and leaves exempt traffic alone', async () => {
      const req = input({ routeKey: 'GET /users/@me', major: '-', globalLimit: 5 });
      const probe = await store.admit(req);
      if (!probe.ok) throw new Error('probe refused');
      await store.learn({ ...at(req), bucket: probe.bucket, probe: true, unbucketed: true });
      expect(await drain(req)).toBe(4);
      const wait = await store.admit(req);
      expect(wait).toMatchObject({ ok: false, reason: 'global' });
      if (!wait.ok) {
        expect(wait.waitMs).toBeGreaterThan(900);
        expect(wait.waitMs).toBeLessThanOrEqual(1000 + CONTRACT_OPTIONS.globalWindowMarginMs);
      }
      const exempt = input({
        routeKey: 'POST /interactions/:id/:token/callback',
        major: '-',
        globalLimit: 0,
      });
      expect(await store.admit(exempt)).toMatchObject({ ok: true });
    });

    it('does not use a bucket slot for a request the global window turns away', async () => {
      const req = input({ globalLimit: 1 });
      const probe = await store.admit(req);
      if (!probe.ok) throw new Error('probe refused');
      await store.learn({
        ...at(req),
        bucket: probe.bucket,
        probe: true,
        hash: 'h',
        limit: 5,
        remaining: 4,
        resetAfterMs: 5000,
      });
      expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'global' });
      await sleep(1000 + CONTRACT_OPTIONS.globalWindowMarginMs + 10);
      expect(await drain({ ...req, globalLimit: 100 })).toBe(4);
    });

    it('pauses one identity after a global 429 and everything after a Cloudflare ban', async () => {
      const req = input({ routeKey: 'GET /users/@me', major: '-' });
      const other = { ...req, identity: `${req.identity}-other` };
      await store.pauseIdentity(req.identity, 200);
      expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'paused' });
      expect(await store.admit({ ...req, globalLimit: 0 })).toMatchObject({ ok: true });
      expect(await store.admit(other)).toMatchObject({ ok: true });
      expect(await store.cloudflarePause()).toBe(0);
      const paused = await store.pauseAll(300);
      expect(paused).toBeGreaterThan(250);
      expect(await store.admit(other)).toMatchObject({ ok: false, reason: 'cloudflare' });
      expect(await store.cloudflarePause()).toBeGreaterThan(200);
    });

    it('delays only matching requests after a sublimit and the whole bucket after a shared 429', async () => {
      const named = input({ routeKey: 'PATCH /channels/:id', sublimit: 'name-topic' });
      const other = { ...named, sublimit: 'other' };
      const probe = await store.admit(named);
      if (!probe.ok) throw new Error('probe refused');
      await store.learn({
        ...at(named),
        bucket: probe.bucket,
        probe: true,
        hash: 'patch',
        limit: 10,
        remaining: 9,
        resetAfterMs: 5000,
        sublimitDelay: { tag: 'name-topic', ms: 300 },
      });
      expect(await store.admit(named)).toMatchObject({ ok: false, reason: 'sublimit' });
      expect(await store.admit(other)).toMatchObject({ ok: true });
      await store.learn({ ...at(other), bucket: null, probe: false, hash: 'patch', blockMs: 300 });
      expect(await store.admit(other)).toMatchObject({ ok: false, reason: 'blocked' });
    });

    it('lets another request probe when a probe never reports back', async () => {
      const req = input();
      expect(await store.admit(req)).toMatchObject({ ok: true, probe: true });
      expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'probe' });
      await sleep(CONTRACT_OPTIONS.probeTimeoutMs + 50);
      expect(await store.admit(req)).toMatchObject({ ok: true, probe: true });
    });

    it('follows a route whose bucket hash changes', async () => {
      const req = input({ routeKey: 'DELETE /channels/:id/messages/:id' });
      const probe = await store.admit(req);
      if (!probe.ok) throw new Error('probe refused');
      await store.learn({
        ...at(req),
        bucket: probe.bucket,
        probe: true,
        hash: 'old',
        limit: 1,
        remaining: 0,
        resetAfterMs: 5000,
      });
      expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'bucket' });
      // The same route answers with another hash: its requests now count against that bucket.
      await store.learn({
        ...at(req),
        bucket: null,
        probe: false,
        hash: 'new',
        limit: 5,
        remaining: 4,
        resetAfterMs: 5000,
      });
      expect(await drain(req)).toBe(4);
    });

    it('answers known-bad requests until their mark expires, each as narrowly as it was set', async () => {
      const req = input({ routeKey: 'GET /users/@me', major: '-' });
      const channelA = input({
        identity: req.identity,
        routeKey: 'POST /channels/:id/messages',
        major: 'c:1',
      });
      const channelB = { ...channelA, major: 'c:2' };
      const otherRoute = { ...channelA, routeKey: 'GET /channels/:id' };
      await store.mark(at(channelA), 'forbidden', 200);
      expect(await store.admit(channelA)).toMatchObject({ ok: false, reason: 'forbidden' });
      expect(await store.admit(channelB)).toMatchObject({ ok: true });
      expect(await store.admit(otherRoute)).toMatchObject({ ok: true });

      const webhook = input({
        identity: req.identity,
        routeKey: 'POST /webhooks/:id/:token',
        major: 'w:9:abc',
      });
      await store.mark(at(webhook), 'gone', 200);
      expect(
        await store.admit({ ...webhook, routeKey: 'PATCH /webhooks/:id/:token/messages/:id' }),
      ).toMatchObject({
        ok: false,
        reason: 'gone',
      });

      await store.mark(at(req), 'revoked', 300);
      const revoked = await store.admit(req);
      expect(revoked).toMatchObject({ ok: false, reason: 'revoked' });
      if (!revoked.ok) expect(revoked.waitMs).toBeGreaterThan(200);
      expect(await store.admit({ ...req, identity: `${req.identity}-other` })).toMatchObject({ ok: true });
      await sleep(350);
      expect(await store.admit(channelA)).toMatchObject({ ok: true });
      expect(await store.admit(req)).toMatchObject({ ok: true });
    });

    it('counts invalid responses in a sliding window', async () => {
      const before = await store.countInvalid(0);
      expect(await store.countInvalid(3)).toBe(before + 3);
      expect(await store.countInvalid(2)).toBe(before + 5);
      expect(await store.countInvalid(0)).toBe(before + 5);
    });

    it('keeps one probe per major parameter while another major parameter teaches the hash', async () => {
      const a = input({ major: 'c:1' });
      const b = input({ identity: a.identity, major: 'c:2' });
      const probeA = await store.admit(a);
      const probeB = await store.admit(b);
      expect(probeA).toMatchObject({ ok: true, probe: true });
      expect(probeB).toMatchObject({ ok: true, probe: true });
      if (!probeA.ok) throw new Error('unreachable');
      await store.learn({
        ...at(a),
        bucket: probeA.bucket,
        probe: true,
        hash: 'h',
        limit: 1,
        remaining: 0,
        resetAfterMs: 5000,
      });
      // c:2's own probe is still out: a second request there waits for it instead of probing again.
      expect(await store.admit(b)).toMatchObject({ ok: false, reason: 'probe' });
    });

    it('keeps admissions with a window pad that much further apart', async () => {
      const req = input({ routeKey: 'GET /users/@me', major: '-', globalLimit: 1 });
      const probe = await store.admit(req);
      if (!probe.ok) throw new Error('probe refused');
      await store.learn({ ...at(req), bucket: probe.bucket, probe: true, unbucketed: true });
      const plain = await store.admit(req);
      const padded = await store.admit({ ...req, windowPadMs: 400 });
      expect(plain).toMatchObject({ ok: false, reason: 'global' });
      expect(padded).toMatchObject({ ok: false, reason: 'global' });
      if (!plain.ok && !padded.ok) expect(padded.waitMs - plain.waitMs).toBeGreaterThan(380);
    });
  });
}
