/**
 * The inspector's live page in a real headless browser (Debian's chromium, driven by playwright-core): it loads
 * from the admin port, shows a bucket once traffic goes through the proxy, and follows it without a reload.
 */
import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEnv, type TestEnv } from '../helpers/env.js';

const CHROMIUM = '/usr/bin/chromium';
const CHANNEL = '100000000000000001';
const ROUTE = 'POST /channels/:id/messages';

describe('inspector page', () => {
  let env: TestEnv;
  let browser: Browser;

  beforeAll(async () => {
    env = await startEnv({
      policies: [{ method: 'POST', template: '/channels/{id}/messages', limit: 2, windowMs: 1500 }],
    });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
    });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await env?.close();
  });

  it('shows a bucket after traffic and follows its held requests and remaining without a reload', async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    await page.goto(`${env.proxy.adminUrl}/`);
    await page.waitForSelector('#live.ok', { timeout: 10_000 });
    expect(await page.textContent('#store')).toBe('in process');
    expect(await page.textContent('#budget')).toBe('0 / 5000');
    // Set once: a reload would lose it.
    await page.evaluate(() => {
      (globalThis as Record<string, unknown>).loadedOnce = true;
    });

    const post = () =>
      env.call('POST', `/api/v10/channels/${CHANNEL}/messages`, { body: '{"content":"hi"}' });
    expect((await post()).status).toBe(200); // learns the bucket: 2 per 1.5 s
    // One goes now, five wait for the next resets.
    const burst = Promise.all(Array.from({ length: 6 }, post));

    const row = page.locator(`#buckets tbody tr[data-route="${ROUTE}"]`);
    await row.waitFor({ timeout: 5000 });
    expect(await row.getAttribute('data-major')).toBe(`c:${CHANNEL}`);
    const held = async () => Number(await row.getAttribute('data-held'));
    await expect.poll(held, { timeout: 3000, interval: 100 }).toBeGreaterThan(0);
    expect(await row.textContent()).toContain('/ 2'); // the remaining / limit bar
    expect(await row.textContent()).toContain('bucket'); // why they wait
    expect(Number(await page.textContent('#held'))).toBeGreaterThan(0);

    expect((await burst).every((res) => res.status === 200)).toBe(true);
    // The same row, redrawn by polling: nothing held any more, and the bucket fills up again after its reset.
    await expect.poll(held, { timeout: 3000, interval: 100 }).toBe(0);
    await expect
      .poll(async () => Number(await row.getAttribute('data-remaining')), { timeout: 4000, interval: 100 })
      .toBe(2);
    expect(await page.evaluate(() => (globalThis as Record<string, unknown>).loadedOnce)).toBe(true);
    expect(errors).toEqual([]);
    await page.close();
  }, 60_000);
});
