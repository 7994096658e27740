import { describe, expect, it } from 'vitest';
import { GlobalWindow } from '../../src/limiter/global-window.js';

describe('GlobalWindow', () => {
  it('frees answered slots at their own time, whatever order the answers came in', () => {
    const w = new GlobalWindow();
    for (const slot of ['a', 'b', 'c']) w.take(slot, 10_000);
    expect(w.wait(3, 0, 1000)).toBe(1000); // all three in flight: at least a window
    w.end('b', 1300);
    w.end('a', 1500);
    w.end('c', 1100);
    expect(w.wait(3, 1000, 1000)).toBe(100);
    expect(w.wait(3, 1100, 1000)).toBe(0);
    w.take('d', 10_000);
    expect(w.wait(3, 1100, 1000)).toBe(200);
    expect(w.wait(3, 1300, 1000)).toBe(0);
  });

  it('forgets a slot that never left, and one whose answer never came once its timeout passes', () => {
    const w = new GlobalWindow();
    w.take('a', 5000);
    w.take('b', 5000);
    w.end('a', undefined);
    expect(w.wait(2, 0, 1000)).toBe(0);
    w.take('c', 5000);
    expect(w.wait(2, 4999, 1000)).toBe(1000);
    expect(w.wait(2, 5000, 1000)).toBe(0);
  });

  it('keeps many thousands of slots in order', () => {
    const w = new GlobalWindow();
    const n = 5000;
    for (let i = 0; i < n; i++) w.take(String(i), 1e9);
    // Answered in a scrambled order, each at its own time 1..n.
    for (let i = 0; i < n; i++) w.end(String((i * 7919) % n), ((i * 7919) % n) + 1);
    expect(w.wait(n, 0, 1e6)).toBe(1);
    for (let t = 1; t <= n; t += 997) {
      expect(w.wait(n - t, t, 1e6)).toBe(1); // n - t still count, the next stops at t + 1
      expect(w.wait(n - t + 1, t, 1e6)).toBe(0);
    }
  });
});
