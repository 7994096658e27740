/**
 * FailoverStore on a manual clock: when the local window starts admitting after Redis fails, and when Redis is
 * tried again, to the millisecond. (The failover against a real Redis that stops is test/integration/redis-failover.)
 */
import { afterEach, describe, expect, it } from 'vitest';
import { FailoverStore } from '../../src/limiter/failover.js';
import { MemoryStore } from '../../src/limiter/memory.js';
import type { AdmitInput, LimiterStore } from '../../src/limiter/types.js';

const req: AdmitInput = {
  identity: 'bot',
  routeKey: 'GET /users/@me',
  major: '-',
  globalLimit: 30,
  sublimit: '*',
};

/** A shared store that is down until `up` is set, and counts the calls that reached it. */
function sharedStore(fallback: MemoryStore) {
  const state = { up: false, calls: 0 };
  const call = <T>(answer: () => Promise<T>): Promise<T> => {
    state.calls += 1;
    return state.up ? answer() : Promise.reject(new Error('ECONNREFUSED'));
  };
  const store: LimiterStore = {
    admit: (input) => call(async () => fallback.admit(input)),
    learn: () => call(async () => {}),
    pauseIdentity: () => call(async () => {}),
    pauseAll: () => call(async () => 0),
    cloudflarePause: () => call(async () => 0),
    mark: () => call(async () => {}),
    countInvalid: () => call(async () => 0),
    vouch: () => call(async () => {}),
    vouched: () => call(async () => false),
    close: async () => {},
  };
  return { store, state };
}

describe('FailoverStore', () => {
  it("passes the shared store's decisions made at once (a lease) through as they are, and takes none as Redis being back", async () => {
    let now = 1_000_000;
    const options = { resetMarginMs: 0, globalWindowMarginMs: 20, probeTimeoutMs: 1000 };
    const local = new MemoryStore(options, () => now);
    const answers = new MemoryStore(options, () => now);
    let mode: 'at once' | 'promise' | 'down' = 'at once';
    const shared = Object.create(answers) as LimiterStore;
    shared.admit = (input) =>
      mode === 'at once'
        ? answers.admit(input)
        : mode === 'promise'
          ? Promise.resolve(answers.admit(input))
          : Promise.reject(new Error('ECONNREFUSED'));
    const failover = new FailoverStore(
      shared,
      local,
      { fallbackReplicas: 3, globalWindowMs: 1020, recoveryIntervalMs: 1000 },
      { now: () => now },
    );
    const first = failover.admit(req);
    expect(first).not.toBeInstanceOf(Promise);
    expect(first).toMatchObject({ ok: true });
    mode = 'promise';
    const second = failover.admit({ ...req, major: 'm2' });
    expect(second).toBeInstanceOf(Promise);
    expect(await second).toMatchObject({ ok: true });

    mode = 'down';
    await failover.admit({ ...req, major: 'm3' });
    expect(failover.healthy).toBe(false);
    // The next try of Redis is answered from a lease: no round trip, so still no sign that Redis is back.
    now += 1000;
    mode = 'at once';
    expect(failover.admit({ ...req, major: 'm4' })).toMatchObject({ ok: true });
    expect(failover.healthy).toBe(false);
    // A round trip that succeeds is.
    now += 1000;
    mode = 'promise';
    expect(await failover.admit({ ...req, major: 'm5' })).toMatchObject({ ok: true });
    expect(failover.healthy).toBe(true);
    await Promise.all([local.close(), answers.close()]);
  });

  it('holds local admissions for one global window after Redis fails, then admits a share, and retries Redis on time', async () => {
    let now = 5_000_000;
    const started = now;
    const local = new MemoryStore(
      { resetMarginMs: 0, globalWindowMarginMs: 20, probeTimeoutMs: 1000 },
      () => now,
    );
    const answers = new MemoryStore(
      { resetMarginMs: 0, globalWindowMarginMs: 20, probeTimeoutMs: 1000 },
      () => now,
    );
    const { store: shared, state } = sharedStore(answers);
    const modes: string[] = [];
    const failover = new FailoverStore(
      shared,
      local,
      {
        fallbackReplicas: 3,
        globalWindowMs: 1020,
        recoveryIntervalMs: 1000,
        onModeChange: (mode) => modes.push(mode),
      },
      { now: () => now },
    );

    // Redis fails: what it admitted in the last window is unknown, so the local window waits one full window.
    expect(await failover.admit(req)).toEqual({ ok: false, reason: 'global', waitMs: 1020 });
    expect(modes).toEqual(['local']);
    expect(state.calls).toBe(1);
    now = started + 1019;
    expect(await failover.admit(req)).toEqual({ ok: false, reason: 'global', waitMs: 1 });
    // Redis was tried again at +1000 by the admission above (one per interval) and is still down.
    expect(state.calls).toBe(2);

    now = started + 1020;
    // From then on the replica admits its share of the limit, 30 / 3 = 10 per window, without asking Redis.
    let admitted = 0;
    for (let i = 0; i < 20; i++) if ((await failover.admit({ ...req, major: `m${i}` })).ok) admitted += 1;
    expect(admitted).toBe(10);
    expect(state.calls).toBe(2);

    // The next try is one interval after the last failure (+1019 + 1000), not before.
    state.up = true;
    now = started + 2018;
    await failover.admit(req);
    expect(state.calls).toBe(2);
    now = started + 2019;
    expect(await failover.admit({ ...req, major: 'back' })).toMatchObject({ ok: true });
    expect(state.calls).toBe(3);
    expect(modes).toEqual(['local', 'redis']);
    expect(failover.healthy).toBe(true);
    await failover.close();
  });
});

const OPTIONS = { resetMarginMs: 0, globalWindowMarginMs: 0, probeTimeoutMs: 5000 };

function unreliable(store: MemoryStore): { store: LimiterStore; down: boolean } {
  const state = { down: false, store: undefined as unknown as LimiterStore };
  state.store = new Proxy(store, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver);
      if (typeof value !== 'function') return value;
      // Every answer of a store across the network is a promise (admit() of the memory store is not).
      return (...args: unknown[]) =>
        state.down
          ? Promise.reject(new Error('connection lost'))
          : key === 'admit'
            ? Promise.resolve(value.apply(target, args))
            : value.apply(target, args);
    },
  });
  return state;
}

describe('FailoverStore: back on Redis after deciding locally', () => {
  const stores: MemoryStore[] = [];
  afterEach(async () => {
    for (const s of stores.splice(0)) await s.close();
  });

  it('asks the shared window for less while local admissions it never saw still count', async () => {
    let now = 0;
    const clock = () => now;
    const sharedMemory = new MemoryStore(OPTIONS, clock);
    const local = new MemoryStore(OPTIONS, clock);
    stores.push(sharedMemory, local);
    const shared = unreliable(sharedMemory);
    const failover = new FailoverStore(
      shared.store,
      local,
      { fallbackReplicas: 1, globalWindowMs: 1000, recoveryIntervalMs: 0 },
      { now: clock },
    );
    const req = (i: number): AdmitInput => ({
      identity: 'bot',
      routeKey: 'GET /gateway',
      major: `c:${i}`,
      globalLimit: 4,
      sublimit: '*',
    });
    const end = async (input: AdmitInput, result: Awaited<ReturnType<LimiterStore['admit']>>) => {
      if (!result.ok) throw new Error('not admitted');
      await failover.learn({
        ...input,
        bucket: result.bucket,
        probe: result.probe,
        slot: result.slot,
        unbucketed: true,
      });
    };

    shared.down = true;
    expect(await failover.admit(req(0))).toMatchObject({ ok: false, reason: 'global' });
    expect(failover.healthy).toBe(false);
    // After a window of caution, the local window decides: three of four go.
    now += 1000;
    for (let i = 1; i <= 3; i++) {
      const result = await failover.admit(req(i));
      expect(result.ok).toBe(true);
      await end(req(i), result);
    }

    // Redis is back, empty of those three: it may be asked for one more, not four.
    shared.down = false;
    const first = await failover.admit(req(4));
    expect(first.ok).toBe(true);
    expect(failover.healthy).toBe(true);
    await end(req(4), first);
    expect(await failover.admit(req(5))).toMatchObject({ ok: false, reason: 'global' });

    // A window after the local answers they stop counting, and the shared window alone decides.
    now += 1000;
    const later = await failover.admit(req(6));
    expect(later.ok).toBe(true);
  });
});
