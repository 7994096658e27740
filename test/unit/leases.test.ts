/**
 * Leases (src/limiter/leases.ts) on fake timers: how much a queue asks for ahead of demand, when it asks for the
 * next grant, exactly how long an unspent admission may be spent, and that every one not spent is given back once.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { realClock } from '../../src/limiter/clock.js';
import { LEASE_MAX, Leases } from '../../src/limiter/leases.js';
import type { Admission, AdmitInput } from '../../src/limiter/types.js';

const LEASE_MS = 200;
const input = (major = 'c:1', identity = 'id'): AdmitInput => ({
  identity,
  routeKey: 'GET /channels/:id/messages',
  major,
  globalLimit: 50,
  sublimit: '*',
});
const admissions = (n: number, from = 1): Admission[] =>
  Array.from({ length: n }, (_, i) => ({
    ok: true,
    bucket: 'b',
    probe: false,
    window: 3,
    slot: `s${from + i}`,
  }));

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
    (_input, admission) => given.push(admission.slot),
    (one) => refills.push(one),
  );
});
afterEach(() => {
  leases.close();
  vi.useRealTimers();
});

/** One request that finds no lease and goes to Redis; returns how many more it asked for. */
function miss(one = input()): number {
  expect(leases.take(one)).toBeUndefined();
  return leases.want(one);
}
/** A queue that asked `2n` times and was granted `n` admissions (slots from `from`) by an ask sent at `sentAt`. */
function leased(n: number, one = input(), from = 1, sentAt = 0): void {
  for (let i = 0; i < 2 * n; i++) leases.take(one);
  expect(miss(one)).toBe(n);
  leases.granted(one, admissions(n, from), sentAt);
}

describe('leases', () => {
  it('asks for nothing for a queue asked less than twice a period, then for half of what it asked for besides', () => {
    expect(miss()).toBe(0);
    expect(miss()).toBe(0); // two asks in one period: the other one is not enough
    vi.advanceTimersByTime(LEASE_MS);
    expect(miss()).toBe(1); // two in the period before, one (this) now
    leases.failed(input());
    vi.advanceTimersByTime(2 * LEASE_MS); // two periods on: the old demand is forgotten
    expect(miss()).toBe(0);
    // Four more asks in the same period, none leased: the next ask wants half of the four others.
    for (let i = 0; i < 3; i++) expect(leases.take(input())).toBeUndefined();
    expect(miss()).toBe(2);
    // That ask is out: others of the queue ask for nothing more meanwhile.
    expect(miss()).toBe(0);
    leases.failed(input());
    // 7 asks in this period so far; the previous period had none.
    expect(miss()).toBe(3);
  });

  it('counts the period before too, and never asks for more than LEASE_MAX', () => {
    for (let i = 0; i < 2 * LEASE_MAX + 10; i++) leases.take(input());
    vi.advanceTimersByTime(LEASE_MS); // the next period: 138 asks in the one before
    expect(miss()).toBe(LEASE_MAX);
    leases.granted(input(), [], 0);
    vi.advanceTimersByTime(2 * LEASE_MS); // two periods on: the old demand is forgotten
    expect(miss()).toBe(0);
  });

  it('spends the oldest first, until exactly leaseMs after its ask was sent, then gives the rest back', () => {
    leased(3);
    vi.advanceTimersByTime(5); // the answer came back 5 ms after the ask was sent at 0
    expect(leases.take(input())?.slot).toBe('s1');
    vi.advanceTimersByTime(LEASE_MS - 6); // 199 ms after the ask: still valid
    expect(leases.take(input())?.slot).toBe('s2');
    vi.advanceTimersByTime(1); // 200 ms after: over
    expect(leases.take(input())).toBeUndefined();
    expect(given).toEqual(['s3']);
    expect(leases.held).toBe(0);
  });

  it('asks for the next grant in the background once half of the last one is spent, and only once', () => {
    leased(4);
    expect(leases.take(input())?.slot).toBe('s1');
    expect(refills).toEqual([]);
    expect(leases.take(input())?.slot).toBe('s2'); // 2 of 4 left: half
    expect(refills).toHaveLength(1);
    expect(leases.take(input())?.slot).toBe('s3');
    expect(refills).toHaveLength(1);
    // The refill goes to Redis: it wants half of the queue's demand (12 asks in this period) less the one still held.
    expect(leases.want(refills[0]!, true)).toBe(5);
    vi.advanceTimersByTime(10);
    leases.granted(refills[0]!, admissions(6, 10), 10);
    // Oldest first: what is left of the first grant, then the refill's, valid until 10 + leaseMs.
    expect(leases.take(input())?.slot).toBe('s4');
    expect(leases.take(input())?.slot).toBe('s10');
    vi.advanceTimersByTime(LEASE_MS - 1); // 209: the refill's are still valid
    expect(leases.take(input())?.slot).toBe('s11');
    vi.advanceTimersByTime(1);
    expect(leases.take(input())).toBeUndefined();
    expect(given).toEqual(['s12', 's13', 's14', 's15']);
  });

  it('gives back what ran out unspent on its own, within one period, and forgets idle queues', () => {
    leased(4);
    expect(leases.held).toBe(4);
    vi.advanceTimersByTime(LEASE_MS);
    expect(given).toEqual(['s1', 's2', 's3', 's4']);
    vi.advanceTimersByTime(3 * LEASE_MS);
    // Idle for two periods: forgotten, so its next ask starts from no demand.
    expect(vi.getTimerCount()).toBe(0);
    expect(miss()).toBe(0);
  });

  it("drops an identity's leases at once, and only that identity's; grants of asks sent before go back", () => {
    leased(2, input('c:1', 'a'), 1);
    leased(2, input('c:1', 'b'), 10);
    vi.advanceTimersByTime(5);
    // An ask of `a` sent now, answered after the drop below.
    for (let i = 0; i < 4; i++) leases.take(input('c:2', 'a'));
    expect(miss(input('c:2', 'a'))).toBe(2);
    vi.advanceTimersByTime(1);
    leases.drop('a');
    expect(given).toEqual(['s1', 's2']);
    leases.granted(input('c:2', 'a'), admissions(2, 20), 5);
    expect(given).toEqual(['s1', 's2', 's20', 's21']);
    expect(leases.take(input('c:1', 'a'))).toBeUndefined();
    expect(leases.take(input('c:2', 'a'))).toBeUndefined();
    expect(leases.take(input('c:1', 'b'))?.slot).toBe('s10');
    // An ask sent after the drop leases again.
    vi.advanceTimersByTime(1);
    expect(leases.want(input('c:1', 'a'))).toBeGreaterThan(0);
    leases.granted(input('c:1', 'a'), admissions(1, 30), 7);
    expect(leases.take(input('c:1', 'a'))?.slot).toBe('s30');
  });

  it('keeps queues apart: another channel does not spend this one’s admissions', () => {
    leased(2, input('c:1'));
    expect(leases.take(input('c:2'))).toBeUndefined();
    expect(leases.take(input('c:1'))).toBeDefined();
  });

  it('gives back an answer for a queue it no longer knows, and everything at close', () => {
    leases.granted(input('c:9'), admissions(2), 0);
    expect(given).toEqual(['s1', 's2']);
    leased(2, input(), 5);
    leases.close();
    expect(given).toEqual(['s1', 's2', 's5', 's6']);
    expect(vi.getTimerCount()).toBe(0);
  });
});
