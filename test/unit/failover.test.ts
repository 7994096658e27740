/**
 * A replica back on Redis after an outage: the shared window never saw what it admitted locally, and those
 * requests still count at Discord. The shared store here is a real MemoryStore that can be made to fail.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { FailoverStore } from '../../src/limiter/failover.js';
import { MemoryStore } from '../../src/limiter/memory.js';
import type { AdmitInput, LimiterStore } from '../../src/limiter/types.js';

const OPTIONS = { resetMarginMs: 0, globalWindowMarginMs: 0, probeTimeoutMs: 5000 };

function unreliable(store: MemoryStore): { store: LimiterStore; down: boolean } {
  const state = { down: false, store: undefined as unknown as LimiterStore };
  state.store = new Proxy(store, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) =>
        state.down ? Promise.reject(new Error('connection lost')) : value.apply(target, args);
    },
  });
  return state;
}

describe('failover: back on Redis after deciding locally', () => {
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
    const failover = new FailoverStore(shared.store, local, {
      fallbackReplicas: 1,
      globalWindowMs: 1000,
      recoveryIntervalMs: 0,
    });
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
    const localSince = performance.now();
    while (performance.now() - localSince < 1010) await new Promise((resolve) => setTimeout(resolve, 20));
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
