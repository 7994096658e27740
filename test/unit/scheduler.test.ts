/**
 * The scheduler on fake time: vitest's fake timers replace setTimeout and performance.now, which the scheduler's
 * default clock and the memory store's read at each call, so these tests state the exact millisecond at which a
 * request is admitted or refused, and a busy machine cannot stretch them.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ClientLink } from '../../src/client-link.js';
import type { Clock, Timer } from '../../src/limiter/clock.js';
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

interface Outcome {
  ok: boolean;
  reason?: HoldError['reason'];
  /** Fake milliseconds since the test's start when the request was admitted or refused. */
  at: number;
}

let t0 = 0;
/** How and when (on the fake clock) a held request ended; `settled` says whether it has yet. */
function outcome(p: Promise<Admission>): Promise<Outcome> & { settled: boolean } {
  const tracked = p.then(
    () => ({ ok: true, at: performance.now() - t0 }),
    (e: unknown) => ({ ok: false, reason: (e as HoldError).reason, at: performance.now() - t0 }),
  ) as Promise<Outcome> & { settled: boolean };
  tracked.settled = false;
  void tracked.then(() => {
    tracked.settled = true;
  });
  return tracked;
}

/** Runs the fake clock up to `ms` after the test's start, settling promises between timers. */
async function advanceTo(ms: number): Promise<void> {
  await vi.advanceTimersByTimeAsync(t0 + ms - performance.now());
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

describe('Scheduler on fake time', () => {
  beforeEach(() => {
    vi.useFakeTimers();
    t0 = performance.now();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('admits in the same turn when the store decides at once, and asks again through the queue when it says wait', async () => {
    const store = new MemoryStore(options);
    const scheduler = new Scheduler(store, { maxHoldMs: 10_000 });
    const admitted: Admission[] = [];
    const refused: unknown[] = [];
    const waiter = { admitted: (a: Admission) => admitted.push(a), refused: (e: unknown) => refused.push(e) };
    scheduler.wait(req({ routeKey: 'GET /users/@me', major: '' }), waiter);
    // No microtask has run: the in-process decision came back as it is, and so did the admission.
    expect(admitted).toHaveLength(1);
    expect(scheduler.held).toBe(0);

    await exhausted(store, req(), 300);
    scheduler.wait(req(), waiter);
    expect(admitted).toHaveLength(1);
    expect(scheduler.held).toBe(1);
    await advanceTo(300);
    expect(admitted).toHaveLength(2);
    expect(refused).toEqual([]);
    scheduler.close();
    await store.close();
  });

  it('answers at once when the wait is longer than the hold time allows', async () => {
    const store = new MemoryStore(options);
    const scheduler = new Scheduler(store, { maxHoldMs: 100 });
    await exhausted(store, req(), 5000);
    const result = outcome(acquire(scheduler, req()));
    await vi.advanceTimersByTimeAsync(0);
    // Refused without waiting any time at all, with the bucket's full wait as its retry-after.
    expect(await result).toEqual({ ok: false, reason: 'hold_timeout', at: 0 });
    const error = await acquire(scheduler, req()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HoldError);
    expect((error as HoldError).retryAfterMs).toBe(5000);
    expect(scheduler.held).toBe(0);
  });

  it('admits a held request at its bucket reset plus the margin, not a millisecond before', async () => {
    const store = new MemoryStore({ ...options, resetMarginMs: 15 });
    const scheduler = new Scheduler(store, { maxHoldMs: 5000 });
    await exhausted(store, req(), 300);
    const held = outcome(acquire(scheduler, req()));
    await advanceTo(314);
    expect(held.settled).toBe(false);
    expect(scheduler.held).toBe(1);
    await advanceTo(315);
    expect(held.settled).toBe(true);
    expect(await held).toEqual({ ok: true, at: 315 });
    expect(scheduler.held).toBe(0);
  });

  it('removes a held request whose client goes away, and gives its turn to the next', async () => {
    const store = new MemoryStore(options);
    const scheduler = new Scheduler(store, { maxHoldMs: 5000 });
    await exhausted(store, req(), 150);
    const client = new ClientLink();
    const first = outcome(acquire(scheduler, req(), { client }));
    const second = outcome(acquire(scheduler, req()));
    await advanceTo(10);
    expect(scheduler.held).toBe(2);
    expect(client.held).not.toBeNull();
    client.leave();
    expect(await first).toEqual({ ok: false, reason: 'aborted', at: 10 });
    expect(client.held).toBeNull();
    expect(scheduler.held).toBe(1);
    await advanceTo(149);
    expect(second.settled).toBe(false);
    await advanceTo(150);
    expect(second.settled).toBe(true);
    // The second request takes the reset the first was waiting for, at that reset.
    expect(await second).toEqual({ ok: true, at: 150 });
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
    await advanceTo(5);
    client.leave();
    await expect(held).rejects.toMatchObject({ reason: 'aborted' });
    expect(learned).toEqual([]);
    release?.();
    await vi.advanceTimersByTimeAsync(0);
    // The unknown bucket's probe was taken for nobody: it is given back at once (no time has passed), not after
    // the probe timeout.
    expect(performance.now() - t0).toBe(5);
    expect(learned).toEqual([expect.objectContaining({ probe: true, unsent: true })]);
    expect(await memory.admit(req())).toMatchObject({ ok: true, probe: true });
    await memory.close();
  });

  it('asks for several heads of a busy queue per store round trip, in order', async () => {
    // A store 10 ms away: a queue that asked one head at a time would admit 100 per second.
    const memory = new MemoryStore(options);
    const unbucketed = req({ routeKey: 'GET /gateway', major: '-' });
    const probe = await memory.admit(unbucketed);
    if (!probe.ok) throw new Error('probe refused');
    await memory.learn({ ...unbucketed, bucket: probe.bucket, probe: true, unbucketed: true });
    let inFlight = 0;
    let most = 0;
    const far: LimiterStore = Object.create(memory) as LimiterStore;
    far.admit = async (input) => {
      inFlight += 1;
      most = Math.max(most, inFlight);
      await new Promise((resolve) => setTimeout(resolve, 10));
      inFlight -= 1;
      return memory.admit(input);
    };
    const scheduler = new Scheduler(far, { maxHoldMs: 5000 });
    const held = Array.from({ length: 40 }, () => outcome(acquire(scheduler, unbucketed)));
    await advanceTo(100);
    const results = await Promise.all(held);
    expect(results.every((r) => r.ok)).toBe(true);
    // 8 on the fast path and the queue's first head at 0 ms, then 2, 4, 8, 16 and the last one per round trip of
    // 10 ms: the last of 40 at 60 ms (one head at a time, it would be 330 ms).
    expect(most).toBe(16);
    expect(Math.max(...results.map((r) => r.at))).toBe(60);
  });

  it('ends only the held request whose exact target is forbidden, not the queue behind it', async () => {
    const store = new MemoryStore(options);
    const scheduler = new Scheduler(store, { maxHoldMs: 5000 });
    const ban = (member: string) =>
      req({ routeKey: 'PUT /guilds/:id/bans/:id', major: 'g:1', target: `/${member}` });
    // A bucket of 2 per window, empty for the next 100 ms: everything queues behind it.
    const probe = await store.admit(ban('1'));
    if (!probe.ok) throw new Error('probe refused');
    await store.learn({
      ...ban('1'),
      bucket: probe.bucket,
      probe: true,
      hash: 'h',
      limit: 2,
      remaining: 0,
      resetAfterMs: 100,
    });
    await store.mark(ban('2'), 'forbidden', 60_000, 50013);
    const held = ['2', '3', '2', '4'].map((member) => outcome(acquire(scheduler, ban(member))));
    await advanceTo(300);
    const results = await Promise.all(held);
    // The forbidden ones end as their turn comes; the others go at the reset.
    expect(results).toEqual([
      { ok: false, reason: 'known_bad', at: 0 },
      { ok: true, at: 100 },
      { ok: false, reason: 'known_bad', at: 100 },
      { ok: true, at: 100 },
    ]);
  });

  it('asks the store once per queue, not once per held request', async () => {
    const store = counting(new MemoryStore(options));
    const scheduler = new Scheduler(store, { maxHoldMs: 5000 });
    await exhausted(store, req(), 300);
    store.admits = 0;
    const held = Array.from({ length: 5000 }, () => outcome(acquire(scheduler, req())));
    await vi.advanceTimersByTimeAsync(0);
    expect(scheduler.held).toBe(5000);
    // A few asks on arrival (the fast path lets 8 be in flight per queue), then only the head asks, at the reset:
    // no polling while the bucket is empty.
    const onArrival = store.admits;
    expect(onArrival).toBeLessThan(12);
    await advanceTo(299);
    expect(store.admits).toBe(onArrival);
    scheduler.close();
    const results = await Promise.all(held);
    expect(results.filter((r) => r.reason === 'shutting_down' && r.at === 299).length).toBe(5000);
  });

  it('keeps a saturated identity to about one store call per admission across many channels', async () => {
    const margin = 20;
    const store = counting(new MemoryStore({ ...options, globalWindowMarginMs: margin }));
    const scheduler = new Scheduler(store, { maxHoldMs: 5000 });
    const unbucketed = (i: number) => req({ routeKey: 'GET /users/:id', major: `c:${i}`, globalLimit: 10 });
    // Learn that the route is unbucketed so only the global window limits it.
    for (let i = 0; i < 40; i++) {
      const probe = await store.admit(unbucketed(i));
      if (probe.ok) await store.learn({ ...unbucketed(i), ...probe, unbucketed: true });
    }
    await advanceTo(1000 + margin);
    t0 = performance.now();
    store.admits = 0;
    const admittedAt: number[] = [];
    const all = Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        acquire(scheduler, unbucketed(i)).then((admission) => {
          admittedAt.push(performance.now() - t0);
          // Answered at once: the global slot counts a window from now.
          return store.learn({ ...unbucketed(i), ...admission });
        }),
      ),
    );
    let done = false;
    void all.then(() => {
      done = true;
    });
    await advanceTo(3 * (1000 + margin));
    expect(done).toBe(true);
    await all;
    // 40 requests at 10/s: ten at once, then ten each time the window of the previous ten ends, to the millisecond.
    const window = 1000 + margin;
    expect(admittedAt).toEqual([0, window, 2 * window, 3 * window].flatMap((at) => Array(10).fill(at)));
    for (const t of admittedAt)
      expect(admittedAt.filter((u) => u >= t && u < t + 1000).length).toBeLessThanOrEqual(10);
    expect(store.admits).toBeLessThan(40 * 3);
  });

  it('refuses at once beyond its held-request caps, in all and per identity', async () => {
    const store = new MemoryStore(options);
    const scheduler = new Scheduler(store, { maxHoldMs: 5000, maxHeld: 5, maxHeldPerIdentity: 3 });
    await exhausted(store, req(), 2000);
    const held = [1, 2, 3].map(() => acquire(scheduler, req()).catch((e: unknown) => e));
    await vi.advanceTimersByTimeAsync(0);
    await expect(acquire(scheduler, req())).rejects.toMatchObject({
      reason: 'overloaded',
      retryAfterMs: 1000,
    });
    const other = req({ identity: 'other' });
    await exhausted(store, other, 2000);
    const otherHeld = [1, 2].map(() => acquire(scheduler, other).catch((e: unknown) => e));
    await vi.advanceTimersByTimeAsync(0);
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
    // The head waits for the reset; behind it, arrival order is not deadline order.
    const head = outcome(acquire(scheduler, req()));
    const long = outcome(acquire(scheduler, req(), { maxHoldMs: 400 }));
    const middle = outcome(acquire(scheduler, req(), { maxHoldMs: 250 }));
    const short = outcome(acquire(scheduler, req(), { maxHoldMs: 100 }));
    await advanceTo(99);
    expect([head, long, middle, short].map((p) => p.settled)).toEqual([false, false, false, false]);
    await advanceTo(700);
    expect([head, long, middle, short].map((p) => p.settled)).toEqual([true, true, true, true]);
    expect(await Promise.all([head, long, middle, short])).toEqual([
      { ok: true, at: 700 },
      { ok: false, reason: 'hold_timeout', at: 400 },
      { ok: false, reason: 'hold_timeout', at: 250 },
      { ok: false, reason: 'hold_timeout', at: 100 },
    ]);
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
      await vi.advanceTimersByTimeAsync(5);
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

describe('Scheduler with a clock of its own', () => {
  it('takes the time and its timers from the clock it is given, not from the process', async () => {
    // A manual clock far from performance.now(): a scheduler that read the process's time would see its requests'
    // deadlines long past, and one that used the global timers would leave `pending` empty.
    let now = 1e9;
    type ManualTimer = Timer & { at: number; callback: () => void; unrefd: boolean };
    const pending: ManualTimer[] = [];
    const clock: Clock = {
      now: () => now,
      setTimeout(callback, ms) {
        const timer: ManualTimer = {
          at: now + ms,
          callback,
          unrefd: false,
          unref() {
            timer.unrefd = true;
            return timer;
          },
        };
        pending.push(timer);
        return timer;
      },
      clearTimeout(timer: Timer) {
        const i = pending.indexOf(timer as ManualTimer);
        if (i >= 0) pending.splice(i, 1);
      },
    };
    const store = new MemoryStore(options, () => now);
    const scheduler = new Scheduler(store, { maxHoldMs: 1000 }, clock);
    await exhausted(store, req(), 300);
    let admitted = false;
    scheduler.wait(req(), { admitted: () => (admitted = true), refused: () => {} });
    await new Promise((resolve) => setImmediate(resolve));
    // The queue's wake-up at the reset and the hold deadline; only the deadline timer may let the process exit.
    expect(pending.map(({ at, unrefd }) => ({ at: at - 1e9, unrefd })).sort((a, b) => a.at - b.at)).toEqual([
      { at: 300, unrefd: false },
      { at: 1000, unrefd: true },
    ]);
    now += 300;
    pending.find((timer) => timer.at === 1e9 + 300)!.callback();
    await new Promise((resolve) => setImmediate(resolve));
    expect(admitted).toBe(true);
    expect(scheduler.held).toBe(0);
    scheduler.close();
    await store.close();
  });
});
