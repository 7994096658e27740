/**
 * Leases (src/limiter/leases.ts) on fake timers: how many places and global slots a request asks for ahead of
 * demand, that an admission here needs both (a place only for exempt traffic), when the next grant is asked for,
 * exactly how long each part may be spent, and that every part not spent is given back once.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { realClock } from '../../src/limiter/clock.js';
import { type Grant, LEASE_MAX, Leases } from '../../src/limiter/leases.js';
import type { Admission, AdmitInput } from '../../src/limiter/types.js';

const LEASE_MS = 200;
const PLACE_MS = 1000;
const input = (major = 'c:1', identity = 'id', globalLimit = 50): AdmitInput => ({
  identity,
  routeKey: 'GET /channels/:id/messages',
  major,
  globalLimit,
  sublimit: '*',
});
/** The admission Redis gave a request of `one` (bucket "b|<major>", window 3, slot `slot`). */
const own = (one: AdmitInput, slot = 'own', bucket: string | null = `b|${one.major}`): Admission => ({
  ok: true,
  bucket,
  probe: false,
  window: 3,
  slot: one.globalLimit > 0 ? slot : '',
});
const grant = (places: number, slots: number, from = 1): Grant => ({
  places,
  slots: Array.from({ length: slots }, (_, i) => `s${from + i}`),
});

/** What was given back: "p:<bucket>@<window>" for a place, the slot id for a slot. */
let given: string[];
let refills: AdmitInput[];
let leases: Leases;
beforeEach(() => {
  vi.useFakeTimers({ now: 0 });
  given = [];
  refills = [];
  leases = new Leases(
    realClock,
    LEASE_MS,
    PLACE_MS,
    (_input, part) => given.push(part.slot === '' ? `p:${part.bucket}@${part.window}` : part.slot),
    (one) => refills.push(one),
  );
});
afterEach(() => {
  leases.close();
  vi.useRealTimers();
});

/** One request that finds no lease and goes to Redis; returns how much more it asked for. */
function miss(one = input()) {
  expect(leases.take(one)).toBeUndefined();
  return leases.want(one);
}
/** A queue asked `2n` times, then granted `places` places and `slots` slots (ids from `from`) by an ask sent at `sentAt`. */
function leased(places: number, slots: number, one = input(), from = 1, sentAt = 0): void {
  const n = Math.max(places, slots);
  for (let i = 0; i < 2 * n; i++) leases.take(one);
  const want = miss(one);
  expect(want.places).toBeGreaterThanOrEqual(places);
  expect(want.slots).toBeGreaterThanOrEqual(one.globalLimit > 0 ? slots : 0);
  leases.granted(one, own(one), grant(places, slots, from), sentAt);
}

describe('leases', () => {
  it('asks for half of what a pool asked for besides: slots rounded down, places up', () => {
    expect(miss()).toEqual({ places: 0, slots: 0 }); // asked once: nothing
    // Asked twice in one period: the other ask is not enough for a slot (a slot strands the whole token's window),
    // it is for a place (which strands one roomy bucket's) of exempt traffic, which needs no slot...
    const exempt = input('c:1', 'id', 0);
    expect(miss(exempt)).toEqual({ places: 0, slots: 0 });
    expect(miss(exempt)).toEqual({ places: 1, slots: 0 });
    // ...but not of a token that leases no slot: the place could not be spent.
    expect(miss()).toEqual({ places: 0, slots: 0 });
    leases.failed(input());
    vi.advanceTimersByTime(LEASE_MS);
    // Slots count per LEASE_MS: two in the period before, one now. Places count per PLACE_MS: three in this one.
    expect(miss()).toEqual({ places: 1, slots: 1 });
    leases.failed(input());
    vi.advanceTimersByTime(2 * PLACE_MS); // two periods on: the old demand is forgotten
    expect(miss()).toEqual({ places: 0, slots: 0 });
    // Four more asks in the same period, none leased: the next ask wants half of the four others.
    for (let i = 0; i < 3; i++) expect(leases.take(input())).toBeUndefined();
    expect(miss()).toEqual({ places: 2, slots: 2 });
    // That ask is out: others ask for nothing more meanwhile.
    expect(miss()).toEqual({ places: 0, slots: 0 });
    leases.failed(input());
    expect(miss()).toEqual({ places: 3, slots: 3 });
  });

  it("sizes a queue's places by the queue, and the identity's slots by all its queues", () => {
    for (let c = 1; c <= 6; c++) expect(leases.take(input(`c:${c}`))).toBeUndefined();
    // Six channels asked once each: none asked twice, but the identity asked seven times with this one.
    expect(miss(input('c:7'))).toEqual({ places: 0, slots: 3 });
  });

  it('counts the period before too, and never asks for more than LEASE_MAX', () => {
    for (let i = 0; i < 2 * LEASE_MAX + 10; i++) leases.take(input());
    // The slots' next period: 138 asks in the one before; the places' period is the same, 139 with this one.
    vi.advanceTimersByTime(LEASE_MS);
    expect(miss()).toEqual({ places: LEASE_MAX, slots: LEASE_MAX });
    leases.granted(input(), own(input()), grant(0, 0), 0);
    vi.advanceTimersByTime(2 * PLACE_MS); // two periods on: the old demand is forgotten
    expect(miss()).toEqual({ places: 0, slots: 0 });
  });

  it('admits only with a place of the queue and a slot of the identity, spending one of each', () => {
    leased(2, 1);
    expect(leases.take(input())).toEqual({ ok: true, bucket: 'b|c:1', probe: false, window: 3, slot: 's1' });
    // A place is left but no slot: the request goes to Redis, and the place stays.
    expect(leases.take(input())).toBeUndefined();
    expect(leases.held).toEqual({ places: 1, slots: 0 });
    // Another channel of the identity has no place; the identity's slots serve every channel.
    leased(0, 2, input('c:1'), 10);
    expect(leases.take(input('c:2'))).toBeUndefined();
    expect(leases.take(input('c:1'))?.slot).toBe('s10');
    expect(given).toEqual([]);
  });

  it('admits exempt traffic with a place alone', () => {
    const exempt = input('c:1', 'id', 0);
    leased(2, 0, exempt);
    expect(leases.take(exempt)).toEqual({ ok: true, bucket: 'b|c:1', probe: false, window: 3, slot: '' });
  });

  it('spends a slot until exactly leaseMs after its ask, a place until exactly placeMs, then gives them back', () => {
    leased(3, 3);
    vi.advanceTimersByTime(5); // the answer came back 5 ms after the ask was sent at 0
    expect(leases.take(input())?.slot).toBe('s1');
    vi.advanceTimersByTime(LEASE_MS - 6); // 199 ms after the ask: still valid
    expect(leases.take(input())?.slot).toBe('s2');
    vi.advanceTimersByTime(1); // 200 ms after: the slot is over, the place is not
    expect(leases.take(input())).toBeUndefined();
    expect(given).toEqual(['s3']);
    expect(leases.held).toEqual({ places: 1, slots: 0 });
    vi.advanceTimersByTime(PLACE_MS - LEASE_MS - 1); // 999 ms after the ask: the place is still held
    expect(leases.take(input())).toBeUndefined();
    expect(leases.held).toEqual({ places: 1, slots: 0 });
    vi.advanceTimersByTime(1);
    expect(leases.take(input())).toBeUndefined();
    expect(given).toEqual(['s3', 'p:b|c:1@3']);
  });

  it('keeps places of exempt traffic and of unbucketed routes only leaseMs, and gives back none of the latter', () => {
    const exempt = input('c:1', 'id', 0);
    leased(2, 0, exempt);
    const users = { ...input('-'), routeKey: 'GET /users/@me' };
    for (let i = 0; i < 4; i++) leases.take(users);
    leases.want(users);
    leases.granted(users, own(users, 'own', null), grant(2, 2, 30), 0);
    expect(leases.take(users)).toEqual({ ok: true, bucket: null, probe: false, window: 3, slot: 's30' });
    vi.advanceTimersByTime(LEASE_MS);
    expect(leases.take(exempt)).toBeUndefined();
    expect(given.sort()).toEqual(['p:b|c:1@3', 'p:b|c:1@3', 's31']);
  });

  it('asks for the next grant in the background once half of either pool is spent, and only once', () => {
    leased(8, 4);
    expect(leases.take(input())?.slot).toBe('s1');
    expect(refills).toEqual([]);
    expect(leases.take(input())?.slot).toBe('s2'); // 2 of 4 slots left: half
    expect(refills).toHaveLength(1);
    expect(leases.take(input())?.slot).toBe('s3');
    expect(refills).toHaveLength(1);
    // A request sent meanwhile (it found no slot) leaves the asking to the refill.
    expect(leases.take(input())?.slot).toBe('s4');
    expect(miss()).toEqual({ places: 0, slots: 0 });
    // The refill goes to Redis: half of the demand (22 asks in this period) less what is held, 4 places and no
    // slot. The places were not low, but no ask of theirs is out, so it asks for them too.
    expect(leases.want(refills[0]!, true)).toEqual({ places: 7, slots: 11 });
    vi.advanceTimersByTime(10);
    // Its own admission goes to the leases with the rest.
    leases.granted(refills[0]!, own(input(), 'r'), grant(7, 11, 10), 10, true);
    expect(leases.held).toEqual({ places: 4 + 1 + 7, slots: 1 + 11 });
    expect(leases.take(input())?.slot).toBe('r');
    expect(leases.take(input())?.slot).toBe('s10');
  });

  it('gives back what ran out unspent on its own, within one period, and forgets idle pools', () => {
    leased(4, 4);
    vi.advanceTimersByTime(LEASE_MS);
    expect(given).toEqual(['s1', 's2', 's3', 's4']);
    vi.advanceTimersByTime(PLACE_MS - LEASE_MS);
    expect(given).toHaveLength(8);
    vi.advanceTimersByTime(3 * PLACE_MS);
    // Idle for two periods: forgotten, so the next ask starts from no demand.
    expect(vi.getTimerCount()).toBe(0);
    expect(miss()).toEqual({ places: 0, slots: 0 });
  });

  it("drops an identity's leases at once, and only that identity's; grants of asks sent before go back", () => {
    leased(1, 2, input('c:1', 'a'), 1);
    leased(1, 2, input('c:1', 'b'), 10);
    vi.advanceTimersByTime(5);
    // An ask of `a` sent now, answered after the drop below.
    for (let i = 0; i < 4; i++) leases.take(input('c:2', 'a'));
    expect(miss(input('c:2', 'a')).places).toBe(2);
    vi.advanceTimersByTime(1);
    leases.drop('a');
    expect(given).toEqual(['p:b|c:1@3', 's1', 's2']);
    leases.granted(input('c:2', 'a'), own(input('c:2', 'a')), grant(1, 1, 20), 5);
    expect(given).toEqual(['p:b|c:1@3', 's1', 's2', 'p:b|c:2@3', 's20']);
    expect(leases.take(input('c:1', 'a'))).toBeUndefined();
    expect(leases.take(input('c:1', 'b'))?.slot).toBe('s10');
    // An ask sent after the drop leases again.
    vi.advanceTimersByTime(1);
    expect(leases.want(input('c:1', 'a')).places).toBeGreaterThan(0);
    leases.granted(input('c:1', 'a'), own(input('c:1', 'a')), grant(1, 1, 30), 7);
    expect(leases.take(input('c:1', 'a'))?.slot).toBe('s30');
  });

  it('gives back a grant for pools it no longer knows, and everything at close', () => {
    leases.granted(input('c:9', 'z'), own(input('c:9', 'z')), grant(1, 1), 0);
    expect(given).toEqual(['p:b|c:9@3', 's1']);
    leased(1, 1, input(), 5);
    leases.close();
    expect(given).toEqual(['p:b|c:9@3', 's1', 'p:b|c:1@3', 's5']);
    expect(vi.getTimerCount()).toBe(0);
  });
});
