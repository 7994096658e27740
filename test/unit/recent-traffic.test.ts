import { describe, expect, it } from 'vitest';
import { RecentTraffic, rate } from '../../src/inspect/recent.js';
import type { AdmitInput } from '../../src/limiter/types.js';

const input = (identity: string, major = 'c:1'): AdmitInput => ({
  identity,
  routeKey: 'GET /channels/:id',
  major,
  globalLimit: 50,
  sublimit: '*',
});

describe('RecentTraffic', () => {
  it('counts requests per identity and per queue', () => {
    const recent = new RecentTraffic(8);
    for (let i = 0; i < 5; i++) recent.note('a|q1', input('a'));
    recent.note('a|q2', input('a', 'c:2'));
    recent.note('b|q1', input('b'));
    expect(recent.identities.get('a')?.requests).toBe(6);
    expect(recent.identities.get('b')?.requests).toBe(1);
    expect(recent.queues.get('a|q1')?.requests).toBe(5);
    expect(recent.queues.get('a|q2')?.input.major).toBe('c:2');
    // Six requests just now, counted over a 5 s slot.
    expect(rate(recent.identities.get('a')!, performance.now())).toBeCloseTo(6 / 5, 5);
  });

  it('never holds more than its bound, dropping the oldest first', () => {
    const recent = new RecentTraffic(100);
    for (let i = 0; i < 10_000; i++) recent.note(`id${i}|q`, input(`id${i}`));
    expect(recent.identities.size).toBe(100);
    expect(recent.queues.size).toBe(100);
    expect(recent.identities.has('id9999')).toBe(true);
    expect(recent.identities.has('id9899')).toBe(false);
  });

  it('forgets the rate of traffic older than two slots', () => {
    const recent = new RecentTraffic();
    recent.note('a|q', input('a'));
    const traffic = recent.identities.get('a')!;
    expect(rate(traffic, traffic.last + 10_001)).toBe(0);
  });
});
