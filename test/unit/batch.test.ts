/**
 * The Batcher (src/limiter/batch.ts) on fake timers: which calls go together, and exactly when a lingering group
 * is sent (its oldest call's deadline, a call that does not linger, hurry, a full batch, flush).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Batcher } from '../../src/limiter/batch.js';
import { realClock } from '../../src/limiter/clock.js';

const LINGER_MS = 20;

let sent: { group: string; items: number[]; alone: boolean; at: number }[];
let batcher: Batcher<number, string>;
beforeEach(() => {
  vi.useFakeTimers({ now: 0 });
  sent = [];
  batcher = new Batcher(
    async (group, items, alone) => {
      sent.push({ group, items: [...items], alone, at: Date.now() });
      return items.map((n) => `${group}:${n}`);
    },
    { maxBatch: 4, lingerMs: LINGER_MS, clock: realClock },
  );
});
afterEach(() => {
  vi.useRealTimers();
});

/** Runs the current turn's end (setImmediate) and what it settles. */
const endOfTurn = () => vi.advanceTimersByTimeAsync(0);

describe('Batcher', () => {
  it("sends one turn's calls as one batch per group, each caller getting its own result", async () => {
    const results = Promise.all([batcher.add('a', 1), batcher.add('a', 2), batcher.add('b', 3)]);
    await endOfTurn();
    expect(await results).toEqual(['a:1', 'a:2', 'b:3']);
    expect(sent).toEqual([
      { group: 'a', items: [1, 2], alone: false, at: 0 },
      { group: 'b', items: [3], alone: false, at: 0 },
    ]);
  });

  it("marks a turn's only group as alone", async () => {
    void batcher.add('a', 1);
    await endOfTurn();
    expect(sent).toEqual([{ group: 'a', items: [1], alone: true, at: 0 }]);
  });

  it('keeps lingering calls together across turns until exactly the linger after the oldest', async () => {
    const first = batcher.add('a', 1, true);
    await endOfTurn();
    await vi.advanceTimersByTimeAsync(5);
    const second = batcher.add('a', 2, true);
    await endOfTurn();
    await vi.advanceTimersByTimeAsync(LINGER_MS - 5 - 1);
    expect(sent).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(sent).toEqual([{ group: 'a', items: [1, 2], alone: true, at: LINGER_MS }]);
    expect(await Promise.all([first, second])).toEqual(['a:1', 'a:2']);
  });

  it('sends a lingering group at the end of the turn of a call that does not linger', async () => {
    void batcher.add('a', 1, true);
    void batcher.add('b', 2, true);
    await vi.advanceTimersByTimeAsync(3);
    void batcher.add('a', 3);
    await endOfTurn();
    expect(sent).toEqual([{ group: 'a', items: [1, 3], alone: true, at: 3 }]);
    // The other group keeps its own deadline.
    await vi.advanceTimersByTimeAsync(LINGER_MS - 3);
    expect(sent.map((s) => [s.group, s.at])).toEqual([
      ['a', 3],
      ['b', LINGER_MS],
    ]);
  });

  it('sends a lingering group at the end of the turn it is hurried in, and nothing for a group not gathered', async () => {
    void batcher.add('a', 1, true);
    await vi.advanceTimersByTimeAsync(7);
    batcher.hurry('b');
    batcher.hurry('a');
    await endOfTurn();
    expect(sent).toEqual([{ group: 'a', items: [1], alone: true, at: 7 }]);
    await vi.advanceTimersByTimeAsync(LINGER_MS);
    expect(sent).toHaveLength(1);
  });

  it('sends a full batch at once, lingering or not', async () => {
    for (let i = 1; i <= 4; i++) void batcher.add('a', i, true);
    expect(sent).toEqual([{ group: 'a', items: [1, 2, 3, 4], alone: true, at: 0 }]);
    await vi.advanceTimersByTimeAsync(LINGER_MS);
    expect(sent).toHaveLength(1);
  });

  it('flush sends lingering groups too', async () => {
    const one = batcher.add('a', 1, true);
    await batcher.flush();
    expect(await one).toBe('a:1');
    expect(sent).toEqual([{ group: 'a', items: [1], alone: true, at: 0 }]);
  });

  it('never lingers without a clock', async () => {
    const plain = new Batcher<number, number>(async (_group, items) => {
      sent.push({ group: 'plain', items: [...items], alone: true, at: Date.now() });
      return items;
    });
    void plain.add('a', 1, true);
    await endOfTurn();
    expect(sent).toEqual([{ group: 'plain', items: [1], alone: true, at: 0 }]);
  });

  it('rejects every call of a batch whose run failed, and only those', async () => {
    const failing = new Batcher<number, number>(async (group, items) => {
      if (group === 'bad') throw new Error('down');
      return items;
    });
    const bad = expect(failing.add('bad', 1)).rejects.toThrow('down');
    const good = failing.add('good', 2);
    await endOfTurn();
    await bad;
    expect(await good).toBe(2);
  });
});
