/**
 * The invalid-request budget shared fairly (src/budget.ts): past the soft line only identities with a clean record
 * are served; at the hard line nobody is. Driven by the store's own counts and an injected clock.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { InvalidBudget } from '../../src/budget.js';
import { MemoryStore } from '../../src/limiter/memory.js';
import { createMetrics } from '../../src/metrics.js';

const OPTIONS = { resetMarginMs: 0, globalWindowMarginMs: 0, probeTimeoutMs: 1000 };

describe('the invalid-request budget, shared fairly', () => {
  const open: { budget: InvalidBudget; store: MemoryStore }[] = [];
  afterEach(async () => {
    for (const { budget, store } of open.splice(0)) {
      budget.close();
      await store.close();
    }
  });

  function make(limit: number, store = new MemoryStore(OPTIONS)) {
    let now = 1_000_000;
    const metrics = createMetrics();
    const budget = new InvalidBudget(store, metrics, limit, 0.5, () => now);
    open.push({ budget, store });
    const spend = async (identity: string, n: number) => {
      for (let i = 0; i < n; i++) budget.answered(identity, true);
      await budget.record(0);
    };
    return { budget, store, metrics, spend, advance: (ms: number) => (now += ms) };
  }

  it('serves everyone below the soft line, then only clean records, then nobody at the hard line', async () => {
    const { budget, spend, metrics } = make(20);
    budget.answered('clean', false);
    await spend('junk-1', 9);
    expect(budget.strained).toBe(false);
    expect(budget.allows('junk-2')).toBe(true);

    await spend('junk-1', 1);
    expect(budget.strained).toBe(true);
    expect(budget.allows('clean')).toBe(true);
    // Never seen succeeding, here or elsewhere: refused.
    expect(await budget.allows('junk-2')).toBe(false);
    expect(budget.allows('junk-1')).toBe(false);
    expect(budget.standing('junk-1')).toBe('offender');

    await spend('junk-3', 10);
    expect(budget.exhausted).toBe(true);
    expect(budget.allows('clean')).toBe(false);
    const refusals = await metrics.registry.getSingleMetricAsString('discord_proxy_budget_refusals_total');
    expect(refusals).toContain('standing="offender"');
    expect(refusals).toContain('standing="clean"');
    const spent = await metrics.registry.getSingleMetricAsString('discord_proxy_invalid_answers_total');
    // junk-1's first six answers were spent while it was unproven, the rest as an offender.
    expect(spent).toMatch(/standing="unproven"} 12/);
    expect(spent).toMatch(/standing="offender"} 8/);
  });

  it('keeps a busy token with a few invalid answers clean, and one that mostly fails an offender', () => {
    const { budget } = make(20);
    for (let i = 0; i < 200; i++) budget.answered('busy', false);
    for (let i = 0; i < 10; i++) budget.answered('busy', true);
    expect(budget.standing('busy')).toBe('clean');
    for (let i = 0; i < 2; i++) budget.answered('broken', false);
    for (let i = 0; i < 6; i++) budget.answered('broken', true);
    expect(budget.standing('broken')).toBe('offender');
    expect(budget.standing('never-seen')).toBe('unproven');
    expect(budget.standing('none')).toBe('anonymous');
  });

  it('trusts a success another replica saw, through the store', async () => {
    const store = new MemoryStore(OPTIONS);
    const here = make(20, store);
    const there = make(20, store);
    there.budget.answered('clean', false);
    await new Promise((resolve) => setTimeout(resolve, 0));
    await here.spend('junk', 10);
    expect(here.budget.strained).toBe(true);
    expect(await here.budget.allows('clean')).toBe(true);
    expect(await here.budget.allows('junk')).toBe(false);
  });

  it('starts a record over after the window, and an identity that succeeded stays proven', async () => {
    const { budget, advance } = make(20);
    budget.answered('t', false);
    for (let i = 0; i < 8; i++) budget.answered('t', true);
    expect(budget.standing('t')).toBe('offender');
    advance(600_001);
    budget.answered('t', true);
    expect(budget.standing('t')).toBe('clean');
  });
});
