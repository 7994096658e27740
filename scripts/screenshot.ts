/**
 * `npm run screenshot`: the inspector page under load, saved as docs/inspector.png (the README shows it).
 *
 * Starts the fake Discord and the proxy in this process, opens the page in Debian's headless chromium, drives a few
 * bot tokens at buckets they overrun (so requests are held), and takes the picture once the page has followed the
 * load for a few seconds. Takes about 15 s.
 */
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { Agent, request } from 'undici';
import { FakeDiscord } from '../test/fake-discord/server.js';
import { startProxy } from '../test/helpers/proxy.js';

const OUT = new URL('../docs/inspector.png', import.meta.url);
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const LOAD_MS = 5000;

function botToken(index: number): string {
  const userId = String(500000000000000000n + BigInt(index));
  return `Bot ${Buffer.from(userId).toString('base64')}.GsHoTs.${`screenshotSecret${index}`.padEnd(38, 'x')}`;
}
const channel = (i: number) => String(700000000000000000n + BigInt(i));
const MESSAGE = String((BigInt(Date.now() - 1420070400000 - 60_000) << 22n) + 1n);

interface Load {
  readonly token: string;
  readonly workers: number;
  readonly method: 'GET' | 'POST' | 'PUT';
  readonly path: (i: number) => string;
}

const LOADS: readonly Load[] = [
  // Overruns a 5-per-2-s bucket on two channels: most of these are held.
  {
    token: botToken(1),
    workers: 24,
    method: 'POST',
    path: (i) => `/api/v10/channels/${channel(i % 2)}/messages`,
  },
  // Reactions: one bucket per channel, one per 250 ms.
  {
    token: botToken(2),
    workers: 6,
    method: 'PUT',
    path: () => `/api/v10/channels/${channel(10)}/messages/${MESSAGE}/reactions/%F0%9F%91%8D/@me`,
  },
  // Channel reads over four channels, within their limits most of the time.
  {
    token: botToken(3),
    workers: 8,
    method: 'GET',
    path: (i) => `/api/v10/channels/${channel(20 + (i % 4))}`,
  },
  // An unbucketed route: only the token's global window applies.
  { token: botToken(4), workers: 4, method: 'GET', path: () => '/api/v10/users/@me' },
];

async function main(): Promise<void> {
  const fake = new FakeDiscord({
    latency: { kind: 'fixed', ms: 40 },
    recordBodies: false,
    maxRecords: 1000,
    policies: [
      { method: 'POST', template: '/channels/{id}/messages', limit: 5, windowMs: 2000 },
      { method: 'GET', template: '/channels/{id}', limit: 5, windowMs: 1000 },
    ],
  });
  // Held requests left when the picture is taken get the proxy's 503 after half a second instead of draining.
  const proxy = await startProxy(await fake.start(), { env: { SHUTDOWN_TIMEOUT_MS: '500' } });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  const client = new Agent({ connections: 128 });
  let stop = false;
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 900 }, deviceScaleFactor: 1 });
    await page.goto(`${proxy.adminUrl}/`);
    await page.waitForSelector('#live.ok');

    const end = performance.now() + LOAD_MS;
    // Settled from the start: requests cut off by the proxy's close below must not count as unhandled rejections.
    const running = Promise.allSettled(
      LOADS.flatMap((load) =>
        Array.from({ length: load.workers }, async (_, worker) => {
          for (let i = worker; !stop && performance.now() < end + 2000; i += load.workers) {
            const res = await request(`${proxy.url}${load.path(i)}`, {
              method: load.method,
              headers: { authorization: load.token, 'content-type': 'application/json' },
              body: load.method === 'POST' ? '{"content":"screenshot"}' : null,
              dispatcher: client,
            });
            await res.body.dump();
          }
        }),
      ),
    );
    await new Promise((resolve) => setTimeout(resolve, LOAD_MS));
    await page.waitForFunction(() => {
      const held = (
        globalThis as unknown as { document: { getElementById(id: string): { textContent: string } } }
      ).document.getElementById('held').textContent;
      return Number(held) > 0;
    });
    mkdirSync(new URL('.', OUT), { recursive: true });
    await page.screenshot({ path: OUT.pathname, fullPage: true });
    console.log(`saved ${OUT.pathname}`);
    stop = true;
    await proxy.close();
    await running;
  } finally {
    stop = true;
    await browser.close();
    await proxy.close();
    await client.close();
    await fake.stop();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
