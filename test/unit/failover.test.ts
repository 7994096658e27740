/**
 * FailoverStore on a manual clock: when the local window starts admitting after Redis fails, and when Redis is
 * tried again, to the millisecond. (The failover against a real Redis that stops is test/integration/redis-failover.)
 */
import { describe, expect, it } from 'vitest';
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
    admit: (input) => call(() => fallback.admit(input)),
    learn: () => call(async () => {}),
    pauseIdentity: () => call(async () => {}),
    pauseAll: () => call(async () => 0),
    cloudflarePause: () => call(async () => 0),
    mark: () => call(async () => {}),
    countInvalid: () => call(async () => 0),
    close: async () => {},
  };
  return { store, state };
}

describe('FailoverStore', () => {
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
