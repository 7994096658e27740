/**
 * One behaviour, two homes for the state: every LimiterStore must pass this suite. Its waits are small windows
 * passed with `sleep`: real time for the Redis store, which decides with Redis's own clock; a store whose clock the
 * suite can move (the memory store) passes a `sleep` that moves it, so its run does not depend on the machine's load.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AdmitInput, AdmitResult, LimiterStore, StoreOptions } from '../../src/limiter/types.js';

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
/** A learn input that ends this admission, before any facts of its answer are added. */
function answer(req: AdmitInput, admission: AdmitResult) {
  if (!admission.ok) throw new Error('not admitted');
  const { bucket, probe, window, slot } = admission;
  return { ...at(req), bucket, probe, window, slot };
}
const realSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export function storeContract(
  name: string,
  make: (options: StoreOptions) => Promise<LimiterStore>,
  /** Lets `ms` pass for the stores `make` builds. */
  sleep: (ms: number) => Promise<void> = realSleep,
): void {
  describe(`${name} store contract`, () => {
    let store: LimiterStore;
    beforeEach(async () => {
      seq += 1;
      store = await make(CONTRACT_OPTIONS);
    });
    afterEach(async () => {
      await store.close();
    });

    /** Admits until the store says wait; returns how many went. `answered`: each is answered at once. */
    async function drain(req: AdmitInput, max = 100, answered = false): Promise<number> {
      for (let n = 0; n < max; n++) {
        const admission = await store.admit(req);
        if (!admission.ok) return n;
        if (answered) await store.learn(answer(req, admission));
      }
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
      await store.learn({ ...answer(req, probe), hash: 'h', limit: 2, remaining: 2, resetAfterMs: 80 });
      const old1 = await store.admit(req);
      const old2 = await store.admit(req);
      if (!old1.ok || !old2.ok) throw new Error('window refused');
      expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'bucket' });
      await sleep(110);
      // The window is over, but both of its requests are still in flight and may land in the next one.
      expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'bucket' });
      // A late answer from the old window frees its slot, and says nothing about the new window's end, even
      // long after the old window ended (Discord then says "resets in 0").
      await store.learn({ ...answer(req, old1), hash: 'h', limit: 2, remaining: 0, resetAfterMs: 0 });
      // (Before the next local reset that answer was the current window's: it ended "in 0" plus the margin.)
      await sleep(CONTRACT_OPTIONS.resetMarginMs + 5);
      const fresh = await store.admit(req);
      expect(fresh).toMatchObject({ ok: true, probe: false });
      if (!fresh.ok) throw new Error('unreachable');
      expect(fresh.window).not.toBe(old1.window);
      // One slot: old2 is still in flight.
      expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'bucket' });
      await store.learn({ ...answer(req, old2), hash: 'h', limit: 2, remaining: 0, resetAfterMs: 0 });
      // Read as this window's, that answer would have ended it at once and let two more go.
      await sleep(30);
      expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'bucket' });
      // The first answer of the new window sets its end.
      await store.learn({ ...answer(req, fresh), hash: 'h', limit: 2, remaining: 1, resetAfterMs: 200 });
      const wait = await store.admit(req);
      expect(wait).toMatchObject({ ok: false, reason: 'bucket' });
      if (!wait.ok) expect(wait.waitMs).toBeGreaterThan(150);
    });

    it('reopens a short window when its first answer says it ends in a few ms (short windows stall)', async () => {
      // Reactions: 1 per 250 ms, with a round trip nearly as long: answers say the window ends in ~20 ms.
      const req = input({ routeKey: 'PUT /channels/:id/messages/:id/reactions/:reaction/@me' });
      const probe = await store.admit(req);
      if (!probe.ok) throw new Error('probe refused');
      await store.learn({ ...answer(req, probe), hash: 'r', limit: 1, remaining: 0, resetAfterMs: 20 });
      await sleep(30);
      for (let round = 0; round < 3; round++) {
        const sent = await store.admit(req);
        expect(sent).toMatchObject({ ok: true, probe: false });
        if (!sent.ok) throw new Error('unreachable');
        expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'bucket' });
        await store.learn({ ...answer(req, sent), hash: 'r', limit: 1, remaining: 0, resetAfterMs: 20 });
        const wait = await store.admit(req);
        expect(wait).toMatchObject({ ok: false, reason: 'bucket' });
        if (!wait.ok) expect(wait.waitMs).toBeLessThanOrEqual(20 + CONTRACT_OPTIONS.resetMarginMs);
        await sleep(30);
      }
    });

    it('sends a route limited without rate-limit headers one request at a time (a 429 without headers is forgotten)', async () => {
      const req = input({ routeKey: 'POST /guilds/:id/emojis', major: 'g:1' });
      const probe = await store.admit(req);
      if (!probe.ok) throw new Error('probe refused');
      await store.learn({ ...answer(req, probe), unbucketed: true });
      const a = await store.admit(req);
      const b = await store.admit(req);
      expect(a).toMatchObject({ ok: true, bucket: null });
      expect(b).toMatchObject({ ok: true, bucket: null });
      // b drew a 429 with only Retry-After: the route waits, then goes one at a time.
      await store.learn({ ...answer(req, a), unbucketed: true });
      await store.learn({
        ...answer(req, b),
        sublimitDelay: { tag: req.sublimit, ms: 100 },
        limitedWithoutHeaders: true,
      });
      expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'sublimit' });
      await sleep(110);
      const next = await store.admit(req);
      expect(next).toMatchObject({ ok: true, probe: true });
      expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'probe' });
      // A header-less success does not make it unbucketed again.
      await store.learn({ ...answer(req, next), unbucketed: true });
      expect(await store.admit(req)).toMatchObject({ ok: true, probe: true });
      expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'probe' });
    });

    it('gives an admission that never left its slots back at once', async () => {
      const req = input({ globalLimit: 1 });
      const probe = await store.admit(req);
      if (!probe.ok) throw new Error('probe refused');
      // The probe's client went away before it was sent: another request may probe at once.
      await store.learn({ ...answer(req, probe), unsent: true });
      const again = await store.admit(req);
      expect(again).toMatchObject({ ok: true, probe: true });
      if (!again.ok) throw new Error('unreachable');
      await store.learn({ ...answer(req, again), hash: 'h', limit: 1, remaining: 1, resetAfterMs: 5000 });
      // That one was sent and answered: its global slot counts a full window past the answer.
      const global = await store.admit(req);
      expect(global).toMatchObject({ ok: false, reason: 'global' });
      if (!global.ok) expect(global.waitMs).toBeGreaterThan(900);
    });

    it('gives a bucket place back for an admission that never left, within the window it was counted in', async () => {
      const req = input();
      const probe = await store.admit(req);
      if (!probe.ok) throw new Error('probe refused');
      await store.learn({ ...answer(req, probe), hash: 'h', limit: 3, remaining: 3, resetAfterMs: 5000 });
      const first = await store.admit(req);
      const second = await store.admit(req);
      if (!first.ok || !second.ok) throw new Error('refused');
      await store.learn({ ...answer(req, first), unsent: true });
      // Three places: `second` holds one, `first`'s came back.
      expect(await drain(req)).toBe(2);
      // An answered one gives nothing back, and neither does an unsent one twice over the limit.
      await store.learn({ ...answer(req, second), limit: 3, remaining: 0, resetAfterMs: 5000 });
      expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'bucket' });
    });

    it('gives no bucket place back for an unsent admission of an earlier window', async () => {
      const req = input({ globalLimit: 0 });
      const probe = await store.admit(req);
      if (!probe.ok) throw new Error('probe refused');
      // The window ends RESET_MARGIN_MS (5 ms) after this answer; `old` then stays in flight for the in-flight
      // timeout (300 ms), however slow the machine, from its admission.
      await store.learn({ ...answer(req, probe), hash: 'h', limit: 2, remaining: 2, resetAfterMs: 0 });
      const old = await store.admit(req);
      if (!old.ok) throw new Error('refused');
      await sleep(20);
      // A new window, handed out less `old`, still in flight: one place.
      const fresh = await store.admit(req);
      expect(fresh).toMatchObject({ ok: true });
      if (!fresh.ok || fresh.window === old.window) throw new Error('expected a new window');
      expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'bucket' });
      // `old` never left, but its window is over: the new window does not get a place back for it...
      await store.learn({ ...answer(req, old), unsent: true });
      expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'bucket' });
      // ...while `fresh`, unsent in its own window, does.
      await store.learn({ ...answer(req, fresh), unsent: true });
      expect(await store.admit(req)).toMatchObject({ ok: true });
    });

    it('keeps an unanswered request in its global window until its answer, then a full window', async () => {
      const req = input({ routeKey: 'GET /users/@me', major: '-', globalLimit: 2 });
      const probe = await store.admit(req);
      if (!probe.ok) throw new Error('probe refused');
      await store.learn({ ...answer(req, probe), unbucketed: true, unsent: true });
      const slow = await store.admit(req);
      const quick = await store.admit(req);
      if (!slow.ok || !quick.ok) throw new Error('refused');
      await store.learn(answer(req, quick));
      const windowMs = 1000 + CONTRACT_OPTIONS.globalWindowMarginMs;
      await sleep(windowMs + 20);
      // `quick` stopped counting a window after its answer; `slow` may still be on its way to Discord.
      expect(await store.admit(req)).toMatchObject({ ok: true });
      const wait = await store.admit(req);
      expect(wait).toMatchObject({ ok: false, reason: 'global' });
      await store.learn(answer(req, slow));
      const after = await store.admit(req);
      expect(after).toMatchObject({ ok: false, reason: 'global' });
      if (!after.ok) expect(after.waitMs).toBeGreaterThan(windowMs - 100);
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
      expect(await drain(req, 100, true)).toBe(4);
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
      // A 403 50013 on banning one member: that member only.
      const banA = input({
        identity: req.identity,
        routeKey: 'PUT /guilds/:id/bans/:id',
        major: 'g:1',
        target: '/77',
      });
      const banB = { ...banA, target: '/78' };
      await store.mark(banA, 'forbidden', 200, 50013);
      expect(await store.admit(banA)).toMatchObject({ ok: false, reason: 'forbidden', code: 50013 });
      expect(await store.admit(banB)).toMatchObject({ ok: true });
      expect(await store.admit({ ...banA, major: 'g:2' })).toMatchObject({ ok: true });

      // A 403 50001 on a channel: every route on that channel, for this token only.
      const channelA = input({ identity: req.identity, major: 'c:1' });
      const otherRoute = { ...channelA, routeKey: 'GET /channels/:id', target: '' };
      await store.mark(channelA, 'closed', 200, 50001);
      expect(await store.admit(otherRoute)).toMatchObject({ ok: false, reason: 'forbidden', code: 50001 });
      expect(await store.admit({ ...channelA, major: 'c:2' })).toMatchObject({ ok: true });
      expect(await store.admit({ ...otherRoute, identity: `${req.identity}-other` })).toMatchObject({
        ok: true,
      });

      // A webhook that is gone: every route of that webhook, not its neighbours.
      const webhook = input({
        identity: req.identity,
        routeKey: 'POST /webhooks/:id/:token',
        major: 'w:9:abc',
      });
      await store.mark(webhook, 'gone', 200, 10015);
      expect(
        await store.admit({ ...webhook, routeKey: 'PATCH /webhooks/:id/:token/messages/:id', target: '/5' }),
      ).toMatchObject({ ok: false, reason: 'gone', code: 10015 });
      expect(await store.admit({ ...webhook, major: 'w:8:abc' })).toMatchObject({ ok: true });

      // A route that needs a token, called without one: that route only.
      const anonymous = input({ identity: 'none', routeKey: 'GET /channels/:id', major: 'c:3' });
      await store.mark(anonymous, 'unauthorized', 200, 0);
      expect(await store.admit({ ...anonymous, major: 'c:4' })).toMatchObject({
        ok: false,
        reason: 'revoked',
      });
      expect(
        await store.admit({ ...anonymous, routeKey: 'POST /webhooks/:id/:token', major: 'w:1:x' }),
      ).toMatchObject({
        ok: true,
      });

      await store.mark(req, 'revoked', 300, 0);
      const revoked = await store.admit(req);
      expect(revoked).toMatchObject({ ok: false, reason: 'revoked', code: 0 });
      if (!revoked.ok) expect(revoked.waitMs).toBeGreaterThan(200);
      expect(await store.admit({ ...req, identity: `${req.identity}-other` })).toMatchObject({ ok: true });
      await sleep(350);
      expect(await store.admit(banA)).toMatchObject({ ok: true });
      expect(await store.admit(otherRoute)).toMatchObject({ ok: true });
      expect(await store.admit(req)).toMatchObject({ ok: true });
    });

    it('remembers which identities were seen succeeding', async () => {
      const identity = `vouch${seq++}`;
      expect(await store.vouched(identity)).toBe(false);
      await store.vouch(identity);
      expect(await store.vouched(identity)).toBe(true);
      expect(await store.vouched(`${identity}-other`)).toBe(false);
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
  });
}
