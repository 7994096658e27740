/**
 * Leases (src/limiter/leases.ts) on fake timers: how much a queue asks for ahead of demand, exactly how long an
 * unspent admission may be spent, and that every one not spent is given back once.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { realClock } from '../../src/limiter/clock.js';
import { type Admission, LEASE_MAX, Leases } from '../../src/limiter/leases.js';
import type { AdmitInput } from '../../src/limiter/types.js';

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
let leases: Leases;
beforeEach(() => {
  vi.useFakeTimers({ now: 0 });
  given = [];
  leases = new Leases(realClock, LEASE_MS, (_input, admission) => given.push(admission.slot));
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

describe('leases', () => {
  it('asks for nothing for a queue asked once, then for what it asked for besides in about one period', () => {
    expect(miss()).toBe(0);
    // Four more asks in the same period, none leased: the next ask wants the four others (and itself) less one.
    for (let i = 0; i < 3; i++) expect(leases.take(input())).toBeUndefined();
    expect(miss()).toBe(4);
    // That ask is out: others of the queue ask for nothing more meanwhile.
    expect(miss()).toBe(0);
    leases.failed(input());
    // 6 asks in this period so far; the previous period had none.
    expect(miss()).toBe(6);
  });

  it('counts the period before too, and never asks for more than LEASE_MAX', () => {
    for (let i = 0; i < 100; i++) leases.take(input());
    vi.advanceTimersByTime(LEASE_MS); // the next period: 100 asks in the one before
    expect(miss()).toBe(LEASE_MAX);
    leases.granted(input(), [], 0);
    vi.advanceTimersByTime(2 * LEASE_MS); // two periods on: the old demand is forgotten
    expect(miss()).toBe(0);
  });

  it('spends what was granted until exactly leaseMs after the ask was sent, then gives the rest back', () => {
    for (let i = 0; i < 3; i++) leases.take(input());
    expect(miss()).toBe(3);
    vi.advanceTimersByTime(5); // the answer comes back 5 ms after the ask was sent at 0
    leases.granted(input(), admissions(3), 0);
    expect(leases.take(input())?.slot).toBe('s3');
    vi.advanceTimersByTime(LEASE_MS - 6); // 199 ms after the ask: still valid
    expect(leases.take(input())?.slot).toBe('s2');
    vi.advanceTimersByTime(1); // 200 ms after: over
    expect(leases.take(input())).toBeUndefined();
    expect(given).toEqual(['s1']);
    expect(leases.held).toBe(0);
  });

  it('gives back what ran out unspent on its own, within one period, and forgets idle queues', () => {
    for (let i = 0; i < 4; i++) leases.take(input());
    expect(miss()).toBe(4);
    leases.granted(input(), admissions(4), 0);
    expect(leases.held).toBe(4);
    vi.advanceTimersByTime(LEASE_MS);
    expect(given).toEqual(['s1', 's2', 's3', 's4']);
    vi.advanceTimersByTime(3 * LEASE_MS);
    // Idle for two periods: forgotten, so its next ask starts from no demand.
    expect(vi.getTimerCount()).toBe(0);
    expect(miss()).toBe(0);
  });

  it("drops an identity's leases at once, and only that identity's", () => {
    for (const identity of ['a', 'b']) {
      for (let i = 0; i < 2; i++) leases.take(input('c:1', identity));
      expect(miss(input('c:1', identity))).toBe(2);
      leases.granted(input('c:1', identity), admissions(2, identity === 'a' ? 1 : 10), 0);
    }
    leases.drop('a');
    expect(given).toEqual(['s1', 's2']);
    expect(leases.take(input('c:1', 'a'))).toBeUndefined();
    expect(leases.take(input('c:1', 'b'))?.slot).toBe('s11');
  });

  it('keeps queues apart: another channel does not spend this one’s admissions', () => {
    for (let i = 0; i < 2; i++) leases.take(input('c:1'));
    expect(miss(input('c:1'))).toBe(2);
    leases.granted(input('c:1'), admissions(2), 0);
    expect(leases.take(input('c:2'))).toBeUndefined();
    expect(leases.take(input('c:1'))).toBeDefined();
  });

  it('gives back an answer for a queue it no longer knows, and everything at close', () => {
    leases.granted(input('c:9'), admissions(2), 0);
    expect(given).toEqual(['s1', 's2']);
    for (let i = 0; i < 2; i++) leases.take(input());
    expect(miss()).toBe(2);
    leases.granted(input(), admissions(2, 5), 0);
    leases.close();
    expect(given).toEqual(['s1', 's2', 's5', 's6']);
    expect(vi.getTimerCount()).toBe(0);
  });
});
