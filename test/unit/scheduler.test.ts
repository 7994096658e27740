import { describe, expect, it } from 'vitest';
import { ClientLink } from '../../src/client-link.js';
import { MemoryStore } from '../../src/limiter/memory.js';
import { type Admission, HoldError, Scheduler, type WaitOptions } from '../../src/limiter/scheduler.js';
import type { AdmitInput, LimiterStore } from '../../src/limiter/types.js';

const options = { resetMarginMs: 0, globalWindowMarginMs: 0, probeTimeoutMs: 1000 };

function counting(store: LimiterStore): LimiterStore & { admits: number } {
  const wrapped = Object.create(store) as LimiterStore & { admits: number };
  wrapped.admits = 0;
  wrapped.admit = (input) => {
    wrapped.admits += 1;
    return store.admit(input);
  };
  return wrapped;
}

/** The scheduler's callback API as a promise: admitted resolves, refused rejects. */
function acquire(scheduler: Scheduler, input: AdmitInput, opts: WaitOptions = {}): Promise<Admission> {
  return new Promise((resolve, reject) =>
    scheduler.wait(input, { admitted: resolve, refused: reject }, opts),
  );
}

const req = (over: Partial<AdmitInput> = {}): AdmitInput => ({
  identity: 'bot',
  routeKey: 'POST /channels/:id/messages',
  major: 'c:1',
  globalLimit: 50,
  sublimit: '*',
  ...over,
});

async function exhausted(store: LimiterStore, input: AdmitInput, resetAfterMs: number): Promise<void> {
  const probe = await store.admit(input);
  if (!probe.ok) throw new Error('probe refused');
  await store.learn({
    ...input,
    bucket: probe.bucket,
    probe: true,
    hash: 'h',
    limit: 1,
    remaining: 0,
    resetAfterMs,
  });
}

describe('Scheduler', () => {
  it('answers at once when the wait is longer than the hold time allows', async () => {
    const store = new MemoryStore(options);
    const scheduler = new Scheduler(store, { maxHoldMs: 100 });
    await exhausted(store, req(), 5000);
    const started = performance.now();
    const error = await acquire(scheduler, req()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HoldError);
    expect((error as HoldError).reason).toBe('hold_timeout');
    expect((error as HoldError).retryAfterMs).toBeGreaterThan(4000);
    expect(performance.now() - started).toBeLessThan(50);
    expect(scheduler.held).toBe(0);
  });

  it('removes a held request whose client goes away, and gives its turn to the next', async () => {
    const store = new MemoryStore(options);
    const scheduler = new Scheduler(store, { maxHoldMs: 5000 });
    await exhausted(store, req(), 150);
    const client = new ClientLink();
    const first = acquire(scheduler, req(), { client });
    const second = acquire(scheduler, req());
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(scheduler.held).toBe(2);
    expect(client.held).not.toBeNull();
    client.leave();
    await expect(first).rejects.toMatchObject({ reason: 'aborted' });
    expect(client.held).toBeNull();
    expect(scheduler.held).toBe(1);
    await expect(second).resolves.toMatchObject({ ok: true });
    expect(scheduler.held).toBe(0);
  });

  it('gives back an admission whose client left while the store decided (an admission lost when the client leaves)', async () => {
    const memory = new MemoryStore(options);
    let release: (() => void) | undefined;
    const slow: LimiterStore = Object.create(memory);
    slow.admit = async (input) => {
      await new Promise<void>((resolve) => {
        release = resolve;
      });
      return memory.admit(input);
    };
    const learned: unknown[] = [];
    slow.learn = (input) => {
      learned.push(input);
      return memory.learn(input);
    };
    const scheduler = new Scheduler(slow, { maxHoldMs: 5000 });
    const client = new ClientLink();
    const held = acquire(scheduler, req(), { client, front: true });
    await new Promise((resolve) => setTimeout(resolve, 5));
    client.leave();
    await expect(held).rejects.toMatchObject({ reason: 'aborted' });
    release?.();
    await new Promise((resolve) => setTimeout(resolve, 5));
    // The unknown bucket's probe was taken for nobody: it is given back at once, not after the probe timeout.
    expect(learned).toEqual([expect.objectContaining({ probe: true, unsent: true })]);
    expect(await memory.admit(req())).toMatchObject({ ok: true, probe: true });
    await memory.close();
  });

  it('asks the store once per queue, not once per held request', async () => {
    const store = counting(new MemoryStore(options));
    const scheduler = new Scheduler(store, { maxHoldMs: 5000 });
    await exhausted(store, req(), 300);
    store.admits = 0;
    const held = Array.from({ length: 5000 }, () => acquire(scheduler, req()).catch((e: unknown) => e));
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(scheduler.held).toBe(5000);
    // A few asks on arrival (the fast path lets 8 be in flight per queue), then only the head asks.
    expect(store.admits).toBeLessThan(12);
    scheduler.close();
    const results = await Promise.all(held);
    expect(
      results.filter((r) => r instanceof HoldError && r.reason === 'shutting_down').length,
    ).toBeGreaterThan(4990);
  });

  it('keeps a saturated identity to about one store call per admission across many channels', async () => {
    // The margin absorbs the delay between an admission and the moment this test sees its promise resolve.
    const store = counting(new MemoryStore({ ...options, globalWindowMarginMs: 50 }));
    const scheduler = new Scheduler(store, { maxHoldMs: 5000 });
    const unbucketed = (i: number) => req({ routeKey: 'GET /users/:id', major: `c:${i}`, globalLimit: 10 });
    // Learn that the route is unbucketed so only the global window limits it.
    for (let i = 0; i < 40; i++) {
      const probe = await store.admit(unbucketed(i));
      if (probe.ok) await store.learn({ ...unbucketed(i), ...probe, unbucketed: true });
    }
    await new Promise((resolve) => setTimeout(resolve, 1050));
    store.admits = 0;
    const admittedAt: number[] = [];
    const started = performance.now();
    await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        acquire(scheduler, unbucketed(i)).then((admission) => {
          admittedAt.push(performance.now() - started);
          // Answered at once: the global slot counts a window from now.
          return store.learn({ ...unbucketed(i), ...admission });
        }),
      ),
    );
    // 40 requests at 10/s: four windows; every window of 1000 ms holds at most 10.
    for (const t of admittedAt)
      expect(admittedAt.filter((u) => u >= t && u < t + 1000).length).toBeLessThanOrEqual(10);
    expect(store.admits).toBeLessThan(40 * 3);
  });

  it('refuses at once beyond its held-request caps, in all and per identity', async () => {
    const store = new MemoryStore(options);
    const scheduler = new Scheduler(store, { maxHoldMs: 5000, maxHeld: 5, maxHeldPerIdentity: 3 });
    await exhausted(store, req(), 2000);
    const held = [1, 2, 3].map(() => acquire(scheduler, req()).catch((e: unknown) => e));
    await new Promise((resolve) => setTimeout(resolve, 10));
    await expect(acquire(scheduler, req())).rejects.toMatchObject({ reason: 'overloaded' });
    const other = req({ identity: 'other' });
    await exhausted(store, other, 2000);
    const otherHeld = [1, 2].map(() => acquire(scheduler, other).catch((e: unknown) => e));
    await new Promise((resolve) => setTimeout(resolve, 10));
    const third = req({ identity: 'third' });
    await exhausted(store, third, 2000);
    await expect(acquire(scheduler, third)).rejects.toMatchObject({ reason: 'overloaded' });
    // Caps bound what is held: a request that can go at once is never refused by them.
    await expect(acquire(scheduler, req({ identity: 'fourth' }))).resolves.toMatchObject({ ok: true });
    expect(scheduler.held).toBe(5);
    scheduler.close();
    await Promise.all([...held, ...otherHeld]);
    expect(scheduler.held).toBe(0);
  });

  it('ends each held request at its own deadline, whatever its place in the queue', async () => {
    const store = new MemoryStore(options);
    const scheduler = new Scheduler(store, { maxHoldMs: 5000 });
    await exhausted(store, req(), 700);
    const started = performance.now();
    const endedAt = (p: Promise<unknown>) =>
      p.then(
        () => ({ ok: true, ms: performance.now() - started }),
        (e: unknown) => ({ ok: false, reason: (e as HoldError).reason, ms: performance.now() - started }),
      );
    // The head waits for the reset; behind it, arrival order is not deadline order.
    const head = endedAt(acquire(scheduler, req()));
    const long = endedAt(acquire(scheduler, req(), { maxHoldMs: 400 }));
    const middle = endedAt(acquire(scheduler, req(), { maxHoldMs: 250 }));
    const short = endedAt(acquire(scheduler, req(), { maxHoldMs: 100 }));
    const results = await Promise.all([long, middle, short]);
    expect(await head).toMatchObject({ ok: true });
    expect(results.map((r) => r.ok)).toEqual([false, false, false]);
    expect(results.map((r) => (r as { reason: string }).reason)).toEqual([
      'hold_timeout',
      'hold_timeout',
      'hold_timeout',
    ]);
    for (const [result, hold] of [
      [results[0]!, 400],
      [results[1]!, 250],
      [results[2]!, 100],
    ] as const) {
      expect(result.ms).toBeGreaterThanOrEqual(hold - 2);
      expect(result.ms).toBeLessThan(hold + 60);
    }
    expect(scheduler.held).toBe(0);
  });

  it('keeps deadlines of requests that already left from piling up', async () => {
    const store = new MemoryStore(options);
    const scheduler = new Scheduler(store, { maxHoldMs: 20_000 });
    await exhausted(store, req(), 10_000);
    const deadlines = (scheduler as unknown as { deadlines: { heap: unknown[] } }).deadlines;
    for (let round = 0; round < 20; round++) {
      const clients = Array.from({ length: 500 }, () => new ClientLink());
      const held = clients.map((client) => acquire(scheduler, req(), { client }).catch((e: unknown) => e));
      await new Promise((resolve) => setTimeout(resolve, 5));
      for (const client of clients) client.leave();
      await Promise.all(held);
    }
    expect(scheduler.held).toBe(0);
    // 10,000 requests came and went; what stays listed is bounded by a compaction, not by their number.
    expect(deadlines.heap.length).toBeLessThan(600);
    // A client that left before its request was queued is not held at all.
    const gone = new ClientLink();
    gone.leave();
    await expect(acquire(scheduler, req(), { client: gone })).rejects.toMatchObject({ reason: 'aborted' });
    expect(scheduler.held).toBe(0);
    scheduler.close();
  });
});
