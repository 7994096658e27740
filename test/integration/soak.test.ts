/**
 * Held requests release everything when their clients go away (issue 5, §6): rounds of thousands of requests held
 * on exhausted buckets, then aborted by their clients, against the proxy as its own process. After every round the
 * held gauge is back to 0 and the sockets are gone; across rounds the heap, read from the proxy's own /metrics
 * after a full garbage collection, shows no growth.
 */
import { setMaxListeners } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeDiscord } from '../fake-discord/server.js';
import { BEARER, BOT_A, BOT_B } from '../helpers/env.js';
import { type ProxyProcess, startProxyProcess } from '../helpers/proxy-process.js';

const ROUNDS = 6;
const PER_ROUND = 1500;
const CHANNELS = 10;
const TOKENS = [BOT_A, BOT_B, BEARER];
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const channel = (i: number) => String(600000000000000000n + BigInt(i));

describe('hold/abort soak', () => {
  let fake: FakeDiscord;
  let proxy: ProxyProcess;
  // Test instrumentation only: preloaded into the proxy process, a full GC on SIGUSR2, so that the heap it reports
  // next is what is really retained and not whatever garbage V8 has not collected yet.
  const dir = mkdtempSync(join(tmpdir(), 'drlp-soak-'));
  const preload = join(dir, 'gc-on-signal.cjs');
  writeFileSync(preload, "process.on('SIGUSR2', () => { globalThis.gc(); globalThis.gc(); });\n");

  beforeAll(async () => {
    // One request per channel and token per minute: everything after the first is held for the whole test.
    fake = new FakeDiscord({
      policies: [{ method: 'GET', template: '/channels/{id}', limit: 1, windowMs: 60_000 }],
    });
    const upstream = await fake.start();
    proxy = await startProxyProcess({
      UPSTREAM_URL: upstream,
      MAX_HOLD_MS: '60000',
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --expose-gc --require ${preload}`.trim(),
    });
  });
  afterAll(async () => {
    await proxy?.kill();
    await fake?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  async function metrics(): Promise<Map<string, number>> {
    const res = await request(`${proxy.adminUrl}/metrics`);
    const out = new Map<string, number>();
    for (const line of (await res.body.text()).split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      const space = line.lastIndexOf(' ');
      out.set(line.slice(0, space), Number(line.slice(space + 1)));
    }
    return out;
  }

  async function until(check: (m: Map<string, number>) => boolean, ms: number): Promise<Map<string, number>> {
    const deadline = performance.now() + ms;
    for (;;) {
      const m = await metrics();
      if (check(m) || performance.now() > deadline) return m;
      await sleep(50);
    }
  }

  /** Memory after a full collection in the proxy process (the lowest of two readings). */
  async function settledMemory(): Promise<{ heap: number; rss: number; handles: number }> {
    let heap = Number.POSITIVE_INFINITY;
    let rss = Number.POSITIVE_INFINITY;
    let handles = Number.POSITIVE_INFINITY;
    for (let i = 0; i < 2; i++) {
      await sleep(100);
      process.kill(proxy.pid, 'SIGUSR2');
      await sleep(150);
      const m = await metrics();
      heap = Math.min(heap, m.get('nodejs_heap_size_used_bytes') ?? Number.NaN);
      rss = Math.min(rss, m.get('process_resident_memory_bytes') ?? Number.NaN);
      handles = Math.min(handles, m.get('nodejs_active_handles_total') ?? Number.NaN);
    }
    return { heap, rss, handles };
  }

  it(`releases ${ROUNDS} × ${PER_ROUND} held requests aborted by their clients, without growth`, async () => {
    const started = performance.now();
    const direct = new Agent({ connections: 16 });
    for (const auth of TOKENS) {
      for (let c = 0; c < CHANNELS; c++) {
        const res = await request(`${proxy.url}/api/v10/channels/${channel(c)}`, {
          headers: { authorization: auth },
          dispatcher: direct,
        });
        await res.body.dump();
        expect(res.statusCode).toBe(200);
      }
    }
    await direct.close();
    const exhausting = TOKENS.length * CHANNELS;
    const baseline = await settledMemory();

    const rounds: { heap: number; rss: number; handles: number; heldPeak: number; ms: number }[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const roundStart = performance.now();
      const agent = new Agent({ connections: PER_ROUND + 100, pipelining: 1 });
      const controller = new AbortController();
      setMaxListeners(PER_ROUND + 10, controller.signal);
      const outcomes = Array.from({ length: PER_ROUND }, (_, i) =>
        request(`${proxy.url}/api/v10/channels/${channel(i % CHANNELS)}`, {
          headers: { authorization: TOKENS[i % TOKENS.length]!, 'x-round': String(round) },
          signal: controller.signal,
          dispatcher: agent,
        }).then(
          async (res) => {
            await res.body.dump();
            return res.statusCode;
          },
          () => 0,
        ),
      );
      const full = await until((m) => m.get('discord_proxy_held_requests') === PER_ROUND, 8000);
      const heldPeak = full.get('discord_proxy_held_requests') ?? 0;
      expect(heldPeak).toBe(PER_ROUND);

      controller.abort();
      // Every one was aborted by its client: none was answered.
      expect((await Promise.all(outcomes)).every((status) => status === 0)).toBe(true);
      await agent.destroy();
      const empty = await until((m) => m.get('discord_proxy_held_requests') === 0, 5000);
      expect(empty.get('discord_proxy_held_requests')).toBe(0);
      rounds.push({ ...(await settledMemory()), heldPeak, ms: performance.now() - roundStart });
    }

    const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MB`;
    process.stdout.write(
      `soak: baseline heap ${mb(baseline.heap)}, rss ${mb(baseline.rss)}, handles ${baseline.handles}\n` +
        rounds
          .map(
            (r, i) =>
              `  round ${i}: ${r.heldPeak} held, ${r.ms.toFixed(0)} ms; heap ${mb(r.heap)}, rss ${mb(r.rss)}, handles ${r.handles}`,
          )
          .join('\n') +
        `\n  total ${((performance.now() - started) / 1000).toFixed(1)} s\n`,
    );

    // Nothing held was ever sent, and nothing met a 429.
    expect(fake.received).toHaveLength(exhausting);
    expect(fake.stats().rateLimited.user).toBe(0);
    // Every socket of every round is closed again.
    for (const r of rounds) expect(r.handles).toBeLessThanOrEqual(baseline.handles + 5);
    // No growth: after the first round (which warms up code and pools) the retained heap stays flat. A leak of
    // what one held request holds (a few KB) would add several MB per round of ${PER_ROUND}.
    const first = rounds[0]!;
    const last = rounds[rounds.length - 1]!;
    expect(last.heap).toBeLessThan(first.heap * 1.2);
    const half = Math.floor(ROUNDS / 2);
    const avg = (xs: typeof rounds) => xs.reduce((sum, r) => sum + r.heap, 0) / xs.length;
    expect(avg(rounds.slice(half))).toBeLessThan(avg(rounds.slice(0, half)) * 1.1);
    // Freed memory is not always returned to the system; RSS only has to stay in the same range.
    expect(last.rss).toBeLessThan(first.rss * 1.5);
    // The proxy still answers and still holds: the buckets are as exhausted as before.
    const after = await request(`${proxy.url}/api/v10/channels/${channel(CHANNELS + 1)}`, {
      headers: { authorization: BOT_A },
    });
    expect(after.statusCode).toBe(200);
    await after.body.dump();
    // Bounded by the test's own timeout, not by a wall-clock assertion: a loaded machine may take longer.
  }, 60_000);
});
