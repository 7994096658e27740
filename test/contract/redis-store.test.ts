import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createIdentifier, createTokenHasher } from '../../src/discord/identity.js';
import type { Clock } from '../../src/limiter/clock.js';
import { RedisStore, type RedisStoreOptions } from '../../src/limiter/redis.js';
import type { AdmitInput, LearnInput } from '../../src/limiter/types.js';
import { PIPELINING } from '../../src/store.js';
import { freePort } from '../helpers/redis-server.js';
import { CONTRACT_OPTIONS, storeContract } from './store-contract.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const newPrefix = () => `test:${randomUUID().slice(0, 8)}:`;

let redis: Redis;
beforeAll(() => {
  redis = new Redis(inject('redisUrl'));
});
afterAll(async () => {
  await redis.quit();
});

function makeStore(overrides: Partial<RedisStoreOptions> = {}): RedisStore {
  return new RedisStore(redis, { ...CONTRACT_OPTIONS, prefix: newPrefix(), ...overrides });
}

/** A clock that moves only when told to, firing the timers that fall due. */
function manualClock(start: number) {
  let now = start;
  const timers = new Set<{ at: number; run: () => void; unref(): void }>();
  const clock: Clock = {
    now: () => now,
    setTimeout(run, ms) {
      const timer = { at: now + ms, run, unref() {} };
      timers.add(timer);
      return timer;
    },
    clearTimeout(timer) {
      timers.delete(timer as never);
    },
  };
  return {
    clock,
    advance(ms: number) {
      now += ms;
      for (const timer of [...timers])
        if (timer.at <= now) {
          timers.delete(timer);
          timer.run();
        }
    },
  };
}

storeContract('redis', async (options) => new RedisStore(redis, { ...options, prefix: newPrefix() }));

async function keysUnder(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    keys.push(...batch);
    cursor = next;
  } while (cursor !== '0');
  return keys.sort();
}

/** Some of every kind of traffic, so that every kind of key exists afterwards. */
async function traffic(store: RedisStore, req: AdmitInput): Promise<void> {
  const probe = await store.admit(req);
  if (!probe.ok) throw new Error('probe refused');
  await store.learn({
    identity: req.identity,
    routeKey: req.routeKey,
    major: req.major,
    bucket: probe.bucket,
    probe: true,
    hash: 'abc123',
    limit: 5,
    remaining: 4,
    resetAfterMs: 1000,
    sublimitDelay: { tag: req.sublimit, ms: 5000 },
  });
  // An unknown bucket left with its probe out.
  expect(await store.admit({ ...req, routeKey: 'GET /channels/:id' })).toMatchObject({
    ok: true,
    probe: true,
  });
  await store.pauseIdentity(req.identity, 5000);
}

/** The commands clients sent while `run` ran, as MONITOR saw them (commands issued by scripts are left out). */
async function commandsSentDuring(run: () => Promise<void>): Promise<string[]> {
  const monitor = await redis.monitor();
  const marker = `end-${randomUUID()}`;
  const sent: string[] = [];
  const seenMarker = new Promise<void>((resolve) => {
    monitor.on('monitor', (_time: string, args: string[], source: string) => {
      if (args[0]?.toLowerCase() === 'echo' && args[1] === marker) resolve();
      else if (source !== 'lua') sent.push(args[0]?.toLowerCase() ?? '');
    });
  });
  try {
    await run();
    await redis.echo(marker);
    await seenMarker;
  } finally {
    monitor.disconnect();
  }
  return sent;
}

describe('redis store', () => {
  it('prefixes every key, gives each a TTL and keeps raw tokens out', async () => {
    const prefix = newPrefix();
    const store = makeStore({ prefix });
    const token = `Bot MTIzNDU2Nzg5MDEyMzQ1Njc4.${randomUUID()}`;
    const webhookToken = `wh-${randomUUID()}`;
    const identity = createIdentifier('secret')(token).key;
    const major = `w:123:${createTokenHasher('secret')(webhookToken)}`;
    await traffic(store, {
      identity,
      routeKey: 'POST /webhooks/:id/:token',
      major,
      globalLimit: 50,
      sublimit: 'name-topic',
    });
    await store.pauseAll(5000);
    await store.close();

    const keys = await keysUnder(prefix);
    const kinds = keys.map((key) => /^[^}]*\}:(\w+)/.exec(key)?.[1] ?? key.slice(prefix.length));
    expect(new Set(kinds)).toEqual(
      new Set(['bucket', 'gslots', 'pause', 'route', 'sub', 'subs', 'cloudflare']),
    );
    expect(keys.filter((key) => key.includes('}:bucket:'))).toHaveLength(2);
    for (const key of keys) {
      expect(key.startsWith(prefix)).toBe(true);
      expect(await redis.pttl(key), key).toBeGreaterThan(0);
    }
    const everything = JSON.stringify(await Promise.all(keys.map(async (key) => [key, await dump(key)])));
    for (const secret of [token, token.slice('Bot '.length), token.split('.')[1]!, webhookToken]) {
      expect(everything).not.toContain(secret);
    }
  });

  it('keeps a route mapped to its bucket as long as a block lasts (long blocks outlived by their mapping)', async () => {
    const store = makeStore({ keyTtlMs: 150 });
    const req = {
      identity: `long-${randomUUID()}`,
      routeKey: 'POST /guilds/:id/prune',
      major: 'g:1',
      globalLimit: 50,
      sublimit: '*',
    };
    const probe = await store.admit(req);
    if (!probe.ok) throw new Error('probe refused');
    const { bucket, window, slot } = probe;
    // A shared 429 blocking the bucket for far longer than a mapping lives without one.
    await store.learn({ ...req, bucket, probe: true, window, slot, hash: 'prune', blockMs: 60_000 });
    await new Promise((resolve) => setTimeout(resolve, 400));
    // Forgotten, the route would send a probe to an "unknown" bucket, skip the block and draw a 429.
    expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'blocked' });
    await store.close();
  });

  it('keeps all keys of one identity under its hash tag', async () => {
    const prefix = newPrefix();
    const store = makeStore({ prefix });
    await traffic(store, {
      identity: 'aaaa',
      routeKey: 'PATCH /channels/:id',
      major: 'c:1',
      globalLimit: 50,
      sublimit: 't',
    });
    await traffic(store, {
      identity: 'bbbb',
      routeKey: 'PATCH /channels/:id',
      major: 'c:1',
      globalLimit: 50,
      sublimit: 't',
    });
    await store.pauseAll(5000);
    await store.close();
    const tags = new Map<string, number>();
    for (const key of await keysUnder(prefix)) {
      if (key === `${prefix}cloudflare`) continue;
      // Redis Cluster hashes only what is between the first "{" and the next "}".
      const tag = /^[^{]*\{([^}]*)\}/.exec(key)?.[1];
      expect(key.startsWith(`${prefix}{${tag}}:`), key).toBe(true);
      tags.set(tag ?? '', (tags.get(tag ?? '') ?? 0) + 1);
    }
    expect([...tags.keys()].sort()).toEqual(['aaaa', 'bbbb']);
    expect(tags.get('aaaa')).toBe(tags.get('bbbb'));
  });

  it('decides each admit in exactly one round trip', async () => {
    // Without leases, which would serve most of these without asking (see "leases" below).
    const store = makeStore({ cloudflarePollMs: 0, leaseMs: 0 });
    const req: AdmitInput = {
      identity: 'rt',
      routeKey: 'GET /users/@me',
      major: '-',
      globalLimit: 1000,
      sublimit: '*',
    };
    const probe = await store.admit(req); // loads the script, so EVALSHA never falls back to EVAL below
    if (!probe.ok) throw new Error('probe refused');
    await store.learn({ ...req, bucket: probe.bucket, probe: true, unbucketed: true });

    const sent = await commandsSentDuring(async () => {
      for (let i = 0; i < 100; i++) expect(await store.admit(req)).toMatchObject({ ok: true });
    });
    await store.close();
    expect(sent).toEqual(Array(100).fill('evalsha'));
  });

  it("writes a turn's only batch at once, and the batches of several tokens in one turn through the auto-pipeline", async () => {
    // The client writes as src/store.ts makes it: auto-pipelining on, except for the names a lone batch is sent under.
    const client = new Redis(inject('redisUrl'), PIPELINING);
    const store = new RedisStore(client, {
      ...CONTRACT_OPTIONS,
      prefix: newPrefix(),
      cloudflarePollMs: 0,
      leaseMs: 0,
    });
    const req = (identity: string): AdmitInput => ({
      identity,
      routeKey: 'GET /users/@me',
      major: '-',
      globalLimit: 1000,
      sublimit: '*',
    });
    /** Admits these together; says how many calls the auto-pipeline held once this turn's batches were sent. */
    const together = async (identities: string[]): Promise<number> => {
      const admitted = Promise.all(identities.map((identity) => store.admit(req(identity))));
      // Runs after the store's own setImmediate (scheduled first), before the auto-pipeline's (scheduled by it).
      const queued = await new Promise<number>((resolve) =>
        setImmediate(() => resolve(client.autoPipelineQueueSize)),
      );
      for (const result of await admitted) expect(result).toMatchObject({ ok: true });
      return queued;
    };
    for (const identity of ['solo', 'one', 'two', 'three']) {
      const probe = await store.admit(req(identity));
      if (!probe.ok) throw new Error('probe refused');
      await store.learn({ ...req(identity), bucket: probe.bucket, probe: true, unbucketed: true });
    }
    expect(await together(['solo'])).toBe(0);
    expect(await together(['solo', 'solo'])).toBe(0);
    expect(await together(['one', 'two', 'three'])).toBe(3);
    expect(await together(['solo'])).toBe(0);
    await store.close();
    await client.quit();
  });

  it('learns in one round trip too', async () => {
    const store = makeStore({ cloudflarePollMs: 0 });
    const req: AdmitInput = {
      identity: 'lrt',
      routeKey: 'GET /channels/:id',
      major: 'c:1',
      globalLimit: 50,
      sublimit: '*',
    };
    const probe = await store.admit(req);
    if (!probe.ok) throw new Error('probe refused');
    await store.learn({ ...req, bucket: probe.bucket, probe: true, hash: 'warm' });

    const sent = await commandsSentDuring(async () => {
      await store.learn({
        ...req,
        bucket: probe.bucket,
        probe: true,
        hash: 'h',
        limit: 5,
        remaining: 4,
        resetAfterMs: 1000,
        blockMs: 100,
        sublimitDelay: { tag: 't', ms: 100 },
      });
    });
    await store.close();
    expect(sent).toEqual(['evalsha']);
  });

  it('reads and writes each bucket once per batch, and reads no sublimit key while the identity has none', async () => {
    // Without leases: the slots counted below are those of the batch's own requests.
    const store = makeStore({ cloudflarePollMs: 0, leaseMs: 0 });
    const req = (i: number): AdmitInput => ({
      identity: 'once',
      routeKey: 'POST /channels/:id/messages',
      major: `c:${i % 2}`,
      globalLimit: 1000,
      sublimit: '*',
    });
    for (const i of [0, 1]) {
      const probe = await store.admit(req(i));
      if (!probe.ok) throw new Error('probe refused');
      await store.learn({
        ...req(i),
        bucket: probe.bucket,
        probe: true,
        hash: 'h',
        limit: 100,
        remaining: 99,
        resetAfterMs: 60_000,
      });
    }

    const monitor = await redis.monitor();
    const run: string[][] = [];
    monitor.on('monitor', (_time: string, args: string[], source: string) => {
      if (source === 'lua') run.push(args.map(String));
    });
    const marker = `end-${randomUUID()}`;
    const seen = new Promise<void>((resolve) =>
      monitor.on('monitor', (_time: string, args: string[]) => {
        if (args[1] === marker) resolve();
      }),
    );
    try {
      const inputs = Array.from({ length: 32 }, (_, i) => req(i));
      const admitted = await Promise.all(inputs.map((one) => store.admit(one)));
      await Promise.all(
        admitted.map((a, i) => {
          if (!a.ok) throw new Error('refused');
          return store.learn({
            ...inputs[i]!,
            bucket: a.bucket,
            probe: a.probe,
            window: a.window,
            slot: a.slot,
            hash: 'h',
            limit: 100,
            remaining: 50,
            resetAfterMs: 60_000,
          });
        }),
      );
      await redis.echo(marker);
      await seen;
    } finally {
      monitor.disconnect();
    }
    await store.close();
    const onBuckets = (command: string) =>
      run.filter((args) => args[0]?.toLowerCase() === command && args[1]?.includes('}:bucket:')).length;
    // Two buckets, one admit run and one learn run: each bucket read once and written once by each.
    expect(onBuckets('hmget')).toBe(4);
    expect(onBuckets('hset')).toBe(4);
    expect(run.filter((args) => args[1]?.includes('}:sub:'))).toEqual([]);
    // The 32 global slots taken in one ZADD and redated in one ZADD XX.
    expect(run.filter((args) => args[0]?.toLowerCase() === 'zadd').map((args) => args.length)).toEqual([
      2 + 64,
      3 + 64,
    ]);
  });

  describe('leases', () => {
    const hot = (identity: string, overrides: Partial<AdmitInput> = {}): AdmitInput => ({
      identity,
      routeKey: 'GET /channels/:id/messages',
      major: 'c:1',
      globalLimit: 1000,
      sublimit: '*',
      ...overrides,
    });
    /** Teaches the store the route's bucket: `limit`, all of it remaining, resetting in a minute. */
    async function known(store: RedisStore, req: AdmitInput, limit: number): Promise<void> {
      const probe = await store.admit(req);
      if (!probe.ok) throw new Error('probe refused');
      const facts = { hash: 'h', limit, remaining: limit, resetAfterMs: 60_000 };
      await store.learn({ ...req, bucket: probe.bucket, probe: true, ...facts });
    }
    const inWindow = (identity: string) => redis.zcard(`${prefixOf.get(identity)}{${identity}}:gslots`);
    const inFlight = async (identity: string, major = 'c:1') =>
      Number(await redis.hget(`${prefixOf.get(identity)}{${identity}}:bucket:h|${major}`, 'i'));
    const prefixOf = new Map<string, string>();
    const storeFor = (identity: string) => {
      const prefix = prefixOf.get(identity) ?? newPrefix();
      prefixOf.set(identity, prefix);
      return makeStore({ cloudflarePollMs: 0, prefix });
    };

    it('serves a hot queue mostly from leases, and gives back exactly what it did not spend', async () => {
      const store = storeFor('lease-hot');
      const req = hot('lease-hot');
      await known(store, req, 1_000_000);
      const sent = await commandsSentDuring(async () => {
        for (let i = 0; i < 100; i++) expect(await store.admit(req)).toMatchObject({ ok: true });
      });
      // Each ask takes about half as many more as the queue asked for lately: a handful of calls for 100 admissions.
      expect(sent.length).toBeLessThanOrEqual(12);
      expect(store.leased.slots).toBeGreaterThan(0);
      expect(store.leased.places).toBeGreaterThan(0);
      // The probe's slot (ended by its answer) and the 100 spent, plus the unspent, all count in Redis...
      expect(await inWindow('lease-hot')).toBe(101 + store.leased.slots);
      expect(await inFlight('lease-hot')).toBe(100 + store.leased.places);
      await store.close();
      // ...until the store gives the unspent back.
      expect(await inWindow('lease-hot')).toBe(101);
      expect(await inFlight('lease-hot')).toBe(100);
    });

    it("serves channels asked a few times a second each from their bucket places and the token's slots", async () => {
      const time = manualClock(1000);
      const calls: string[] = [];
      const prefix = newPrefix();
      prefixOf.set('lease-spread', prefix);
      // Slots for 200 ms and places for 1 s, as by default (they need an in-flight timeout four times as long).
      const store = makeStore({
        cloudflarePollMs: 0,
        prefix,
        clock: time.clock,
        onCall: (op) => calls.push(op),
        probeTimeoutMs: 4000,
      });
      const channels = Array.from({ length: 10 }, (_, i) => hot('lease-spread', { major: `c:${i + 1}` }));
      for (const req of channels) await known(store, req, 1_000_000);
      calls.length = 0;
      // In turn, 20 ms apart for 4 s: each channel every 200 ms (once a slot lease), the token 50 times a second.
      let waited = 0;
      for (let i = 0; i < 200; i++) {
        const admitted = store.admit(channels[i % 10]!);
        if (admitted instanceof Promise) waited += 1;
        expect(await admitted).toMatchObject({ ok: true });
        time.advance(20);
      }
      // Leasing whole admissions per channel, each of these would have waited for Redis.
      // (30 and 30 when written; with places kept as briefly as slots, 200 and 200.)
      expect(waited).toBeLessThanOrEqual(50);
      expect(calls.filter((op) => op === 'admit').length).toBeLessThanOrEqual(50);
      await store.close();
      // What was not spent went back: the 200 and the probes count, in each bucket and in the window.
      for (const req of channels) expect(await inFlight('lease-spread', req.major)).toBe(20);
      expect(await inWindow('lease-spread')).toBe(210);
    });

    it('lets the background ask for the next grant linger up to learnLingerMs', async () => {
      const time = manualClock(1000);
      const calls: string[] = [];
      const prefix = newPrefix();
      prefixOf.set('lease-refill', prefix);
      const store = makeStore({
        cloudflarePollMs: 0,
        prefix,
        clock: time.clock,
        onCall: (op) => calls.push(op),
        probeTimeoutMs: 4000,
        learnLingerMs: 20,
      });
      const req = hot('lease-refill');
      await known(store, req, 1_000_000);
      const turns = async (n: number) => {
        for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
      };
      // 40 together go as one call, which asks for 20 slots and places more.
      await Promise.all(Array.from({ length: 40 }, () => store.admit(req)));
      const granted = store.leased.slots;
      expect(store.leased).toEqual({ slots: 20, places: 20 });
      calls.length = 0;
      // Spent here, turn after turn, down to half of the grant and past it: the ask for more is due, and waits.
      for (let i = 0; i < granted / 2 + 1; i++) {
        const admitted = store.admit(req);
        expect(admitted instanceof Promise).toBe(false);
        await turns(2);
      }
      // Real time passes, the store's clock does not: a refill sent at once would have come back by now.
      await sleep(50);
      expect(calls).toEqual([]);
      time.advance(20);
      for (let i = 0; i < 200 && !calls.includes('admit'); i++) await sleep(1);
      expect(calls).toEqual(['admit']);
      expect(store.leased.slots).toBeGreaterThan(granted / 2 - 1);
      await store.close();
    });

    it('leases no more than half of what the global window and a bucket have left', async () => {
      const store = storeFor('lease-half');
      const req = hot('lease-half', { globalLimit: 100 });
      await known(store, req, 1_000_000);
      // Arriving together, they go as one call, and the first asks for half as many more as came with it.
      const admitted = await Promise.all(Array.from({ length: 40 }, () => store.admit(req)));
      expect(admitted.every((a) => a.ok)).toBe(true);
      // The probe and the 40 hold 41 of the 100; the lease wants 20 slots but takes 9, up to half of the window,
      // and stops. The bucket is roomy: 20 places.
      expect(store.leased).toEqual({ slots: 9, places: 20 });
      expect(await inWindow('lease-half')).toBe(50);
      await store.close();

      const bucketed = storeFor('lease-bucket');
      const small = hot('lease-bucket');
      await known(bucketed, small, 100);
      await Promise.all(Array.from({ length: 40 }, () => bucketed.admit(small)));
      const remaining = Number(
        await redis.hget(`${prefixOf.get('lease-bucket')}{lease-bucket}:bucket:h|c:1`, 'r'),
      );
      // 60 left after the 40; the lease wants 20 places but takes 10, down to half of the bucket's limit. The
      // global window is roomy: 20 slots.
      expect(bucketed.leased).toEqual({ slots: 20, places: 10 });
      expect(remaining).toBe(50);
      await bucketed.close();
    });

    it('never takes a place from a request that came with the lease', async () => {
      const store = storeFor('lease-last');
      const req = hot('lease-last', { globalLimit: 100 });
      await known(store, req, 100);
      // 60 together: every one is decided before the lease, which then finds the window and the bucket past half
      // and takes none.
      const admitted = await Promise.all(Array.from({ length: 60 }, () => store.admit(req)));
      expect(admitted.filter((a) => a.ok)).toHaveLength(60);
      expect(store.leased).toEqual({ slots: 0, places: 0 });
      await store.close();
    });

    it('admits exactly the bucket across two replicas that lease, and each gets its share', async () => {
      const prefix = newPrefix();
      const a = makeStore({ cloudflarePollMs: 0, prefix });
      const b = makeStore({ cloudflarePollMs: 0, prefix });
      const req = hot('lease-two');
      await known(a, req, 40);
      let admitted = 0;
      const each = new Map([
        [a, 0],
        [b, 0],
      ]);
      // In turns until both are refused: every place of the window is used once, none twice.
      for (let round = 0; round < 100; round++) {
        let any = false;
        for (const store of [a, b]) {
          if ((await store.admit(req)).ok) {
            admitted += 1;
            each.set(store, (each.get(store) ?? 0) + 1);
            any = true;
          }
        }
        if (!any) break;
      }
      expect(admitted).toBe(40);
      expect(each.get(b)).toBeGreaterThanOrEqual(10);
      await Promise.all([a.close(), b.close()]);
    });

    it("drops an identity's leases at once when this replica learns of a pause, a mark or a 429", async () => {
      const cases: [string, (store: RedisStore, req: AdmitInput) => Promise<void>, string][] = [
        ['lease-pause', (store, req) => store.pauseIdentity(req.identity, 5000), 'paused'],
        ['lease-mark', (store, req) => store.mark(req, 'revoked', 5000, 0), 'revoked'],
        [
          'lease-429',
          (store, req) =>
            store.learn({ ...req, bucket: null, probe: false, sublimitDelay: { tag: '*', ms: 5000 } }),
          'sublimit',
        ],
      ];
      for (const [identity, lesson, reason] of cases) {
        const store = storeFor(identity);
        const req = hot(identity);
        await known(store, req, 1_000_000);
        for (let i = 0; i < 10; i++) await store.admit(req);
        expect(store.leased.slots, identity).toBeGreaterThan(0);
        expect(store.leased.places, identity).toBeGreaterThan(0);
        await lesson(store, req);
        expect(store.leased, identity).toEqual({ slots: 0, places: 0 });
        expect(await store.admit(req), identity).toMatchObject({ ok: false, reason });
        await store.close();
      }
    });

    it('leases nothing while the identity has a mark or a sublimit anywhere', async () => {
      const store = storeFor('lease-marked');
      const req = hot('lease-marked');
      await known(store, req, 1_000_000);
      await store.mark({ ...req, major: 'c:2' }, 'closed', 60_000, 50001);
      for (let i = 0; i < 20; i++) expect(await store.admit(req)).toMatchObject({ ok: true });
      expect(store.leased).toEqual({ slots: 0, places: 0 });
      await store.close();
    });
  });

  describe('lingering learns', () => {
    const turn = () => new Promise((resolve) => setImmediate(resolve));
    const user = (identity: string): AdmitInput => ({
      identity,
      routeKey: 'GET /users/@me',
      major: '',
      globalLimit: 50,
      sublimit: '*',
    });

    /** A store on a manual clock, its route known unbucketed, and the learn and admit calls it makes. */
    async function setUp(identity: string) {
      const time = manualClock(1000);
      const calls: string[] = [];
      const prefix = newPrefix();
      const store = makeStore({
        cloudflarePollMs: 0,
        leaseMs: 0,
        learnLingerMs: 20,
        prefix,
        clock: time.clock,
        onCall: (op) => calls.push(op),
      });
      const req = user(identity);
      const probe = await store.admit(req);
      if (!probe.ok) throw new Error('probe refused');
      await store.learn({ ...req, bucket: probe.bucket, probe: true, unbucketed: true, unhurried: true });
      calls.length = 0;
      const score = async (slot: string) => Number(await redis.zscore(`${prefix}{${identity}}:gslots`, slot));
      /** Admits one request, forgets the calls so far and returns its plain answer (a 200 that teaches nothing). */
      const admitted = async (): Promise<LearnInput> => {
        const a = await store.admit(req);
        if (!a.ok) throw new Error('refused');
        calls.length = 0;
        return { ...req, bucket: a.bucket, probe: false, slot: a.slot, window: a.window };
      };
      return { time, calls, store, req, admitted, score };
    }

    it('sends answers nobody waits for together after the linger, each dated when it came', async () => {
      const { time, calls, store, admitted, score } = await setUp('linger-dates');
      const answers = [await admitted(), await admitted(), await admitted()];
      const scores = () => Promise.all(answers.map((a) => score(a.slot ?? '')));
      const inFlight = await scores();
      const learned: Promise<void>[] = [];
      for (const answer of answers) {
        learned.push(store.learn({ ...answer, unhurried: true }));
        await turn();
        time.advance(5);
      }
      // 15 ms after the first answer: nothing sent, the slots still count as in flight.
      await turn();
      expect(calls).toEqual([]);
      expect(await scores()).toEqual(inFlight);
      time.advance(4);
      await turn();
      expect(calls).toEqual([]);
      // 20 ms after the first: one call for the three, each slot counting a window from its own answer.
      time.advance(1);
      await Promise.all(learned);
      expect(calls).toEqual(['learn']);
      const [first, second, third] = await scores();
      expect(second! - first!).toBeCloseTo(5, 6);
      expect(third! - first!).toBeCloseTo(10, 6);
      await store.close();
    });

    it('sends them with the next admit call of the identity, right after it', async () => {
      const { calls, store, req, admitted } = await setUp('linger-admit');
      const learned = store.learn({ ...(await admitted()), unhurried: true });
      await turn();
      await turn();
      expect(calls).toEqual([]);
      await store.admit(req);
      await learned;
      expect(calls).toEqual(['admit', 'learn']);
      await store.close();
    });

    it('sends probes, 429s, give-backs and answers of an identity with held requests at the end of their turn', async () => {
      const lessons: Partial<LearnInput>[] = [
        { probe: true, unhurried: true },
        { blockMs: 1000, unhurried: true },
        { sublimitDelay: { tag: '*', ms: 1000 }, unhurried: true },
        { limitedWithoutHeaders: true, unhurried: true },
        { unsent: true, unhurried: true },
        { unhurried: false },
        {},
      ];
      for (const [i, lesson] of lessons.entries()) {
        const { calls, store, admitted } = await setUp(`linger-never-${i}`);
        await store.learn({ ...(await admitted()), ...lesson });
        expect(calls, JSON.stringify(lesson)).toEqual(['learn']);
        await store.close();
      }
    });

    it('sends what lingers when the store closes', async () => {
      const { calls, store, admitted } = await setUp('linger-close');
      const learned = store.learn({ ...(await admitted()), unhurried: true });
      await turn();
      expect(calls).toEqual([]);
      await store.close();
      await learned;
      expect(calls).toEqual(['learn']);
    });
  });

  it('shows a Cloudflare pause to other replicas within a poll', async () => {
    const prefix = newPrefix();
    const pollMs = 100;
    const a = makeStore({ prefix, cloudflarePollMs: pollMs });
    const b = makeStore({ prefix, cloudflarePollMs: pollMs });
    const req: AdmitInput = {
      identity: 'cf',
      routeKey: 'GET /users/@me',
      major: '-',
      globalLimit: 0,
      sublimit: '*',
    };
    await a.pauseAll(2000);
    expect(await a.admit(req)).toMatchObject({ ok: false, reason: 'cloudflare' });
    await sleep(pollMs + 150);
    const seen = await b.admit(req);
    expect(seen).toMatchObject({ ok: false, reason: 'cloudflare' });
    if (!seen.ok) expect(seen.waitMs).toBeGreaterThan(1500);
    // A replica started during the ban knows of it after its first poll's round trip.
    const c = makeStore({ prefix, cloudflarePollMs: pollMs });
    await sleep(100);
    expect(await c.admit(req)).toMatchObject({ ok: false, reason: 'cloudflare' });
    expect(await c.cloudflarePause()).toBeGreaterThan(1500);
    await Promise.all([a.close(), b.close(), c.close()]);
  });

  it('lets a longer pause stand when a shorter one comes in', async () => {
    const prefix = newPrefix();
    const store = makeStore({ prefix });
    const req: AdmitInput = {
      identity: 'long',
      routeKey: 'GET /users/@me',
      major: '-',
      globalLimit: 50,
      sublimit: '*',
    };
    await store.pauseIdentity(req.identity, 1000);
    await store.pauseIdentity(req.identity, 10);
    expect(await store.pauseAll(1000)).toBeGreaterThan(900);
    expect(await store.pauseAll(10)).toBeGreaterThan(900);
    await sleep(30);
    expect(await store.cloudflarePause()).toBeGreaterThan(900);
    // A replica without this one's in-process copy of the Cloudflare pause reads both pauses from Redis.
    const other = makeStore({ prefix, cloudflarePollMs: 0 });
    expect(await other.admit(req)).toMatchObject({ ok: false, reason: 'paused' });
    expect(await other.cloudflarePause()).toBeGreaterThan(900);
    await Promise.all([store.close(), other.close()]);
  });

  it('shares state between replicas on the same prefix', async () => {
    const prefix = newPrefix();
    const a = makeStore({ prefix });
    const b = makeStore({ prefix });
    const req: AdmitInput = {
      identity: 'shared',
      routeKey: 'GET /users/@me',
      major: '-',
      globalLimit: 4,
      sublimit: '*',
    };
    const probe = await a.admit(req);
    if (!probe.ok) throw new Error('probe refused');
    expect(await b.admit(req)).toMatchObject({ ok: false, reason: 'probe' });
    await b.learn({ ...req, bucket: probe.bucket, probe: true, unbucketed: true });
    const results = await Promise.all([a, b, a, b, a].map((store) => store.admit(req)));
    expect(results.filter((r) => r.ok)).toHaveLength(3);
    expect(results.filter((r) => !r.ok && r.reason === 'global')).toHaveLength(2);
    await Promise.all([a.close(), b.close()]);
  });

  it('rejects when Redis is unreachable instead of guessing', async () => {
    const port = await freePort();
    const down = new Redis({
      port,
      host: '127.0.0.1',
      lazyConnect: true,
      enableOfflineQueue: false,
      retryStrategy: () => null,
    });
    const store = new RedisStore(down, { ...CONTRACT_OPTIONS, prefix: newPrefix(), cloudflarePollMs: 0 });
    const req: AdmitInput = {
      identity: 'down',
      routeKey: 'GET /users/@me',
      major: '-',
      globalLimit: 50,
      sublimit: '*',
    };
    await expect(store.admit(req)).rejects.toThrow();
    await expect(store.learn({ ...req, bucket: null, probe: false, unbucketed: true })).rejects.toThrow();
    await expect(store.pauseIdentity('down', 100)).rejects.toThrow();
    await expect(store.cloudflarePause()).rejects.toThrow();
    // The ban still stops this replica even though the others could not be told.
    await expect(store.pauseAll(1000)).rejects.toThrow();
    expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'cloudflare' });
    await store.close();
    down.disconnect();
  });

  it('leaves a shared client open on close and quits an owned one', async () => {
    const shared = makeStore();
    await shared.close();
    expect(await redis.ping()).toBe('PONG');
    const own = new Redis(inject('redisUrl'));
    await own.ping();
    const ended = new Promise((resolve) => own.once('end', resolve));
    const owning = new RedisStore(own, { ...CONTRACT_OPTIONS, prefix: newPrefix(), ownsClient: true });
    await owning.close();
    await ended;
    expect(own.status).toBe('end');
  });

  it('refuses a prefix with a hash tag and a client with its own keyPrefix', () => {
    expect(() => makeStore({ prefix: 'p{x}:' })).toThrow(/prefix/);
    const prefixed = new Redis(inject('redisUrl'), { keyPrefix: 'x:', lazyConnect: true });
    expect(() => new RedisStore(prefixed, { ...CONTRACT_OPTIONS, prefix: 'p:' })).toThrow(/keyPrefix/);
    prefixed.disconnect();
  });
});

async function dump(key: string): Promise<unknown> {
  switch (await redis.type(key)) {
    case 'hash':
      return redis.hgetall(key);
    case 'zset':
      return redis.zrange(key, 0, -1, 'WITHSCORES');
    default:
      return redis.get(key);
  }
}
