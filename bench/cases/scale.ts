/**
 * Scale cases: many tokens and channels at once (`scale.mixed`), the Redis memory 100,000 buckets take
 * (`scale.buckets`), and what 10,000 requests held behind exhausted buckets cost one replica (`scale.held`).
 */
import { Redis } from 'ioredis';
import { fix, int, mb } from '../lib/format.js';
import { measure, waitFor } from '../lib/harness.js';
import { fakeControl, metric, redisSnapshot, scrape } from '../lib/observe.js';
import { rssBytes, sleep } from '../lib/procs.js';
import { progress, type Session } from '../lib/session.js';
import { botToken, channelId } from '../lib/workloads.js';

/** The token's global limit at the fake in the scale cases: the default, as in production. */
const GLOBAL_LIMIT = 50;
/** Requests held at once in `scale.held`. */
export const HELD = 10_000;

export interface MixedExtra {
  target: string;
  redisKeys?: number;
  redisUsedMemory?: number;
  rss: number[];
}

export interface BucketsResult {
  method: string;
  buckets: number;
  identities: number;
  usedMemoryDelta: number;
  bytesPerBucket: number;
  keysDelta: number;
  bucketKeyBytes: number;
  createSeconds: number;
}

export interface HeldResult {
  target: number;
  reached: number;
  secondsToHold: number;
  rssBefore: number;
  rssHeld: number;
  heapBefore: number;
  heapHeld: number;
  bytesPerHeld: number;
  upstreamArrivals: number;
  limitedAtFake: number;
  limitedByScope: Record<string, number>;
  releasedAfterAbort: boolean;
  heldAfterAbort: number;
  statuses: Record<string, number>;
}

export async function mixed(s: Session): Promise<MixedExtra[]> {
  const h = s.h;
  const extras: MixedExtra[] = [];
  const fake = await h.fake('scale', 'lognormal', GLOBAL_LIMIT);
  for (const kind of ['direct', 'proxy-memory', 'proxy-redis'] as const) {
    if (kind === 'proxy-redis') await (await h.redis()).client.flushall();
    await fakeControl(fake.url, 'reset');
    const target = await h.target(kind, fake.url);
    try {
      const run = await s.record(
        { group: 'scale-mixed', target: kind, workload: 'mixed', concurrency: 256, replicas: 1, round: 1 },
        {
          targets: target.urls,
          workload: 'mixed',
          concurrency: 256,
          warmupMs: s.windows.warmup,
          durationMs: s.windows.mixed,
          end: 'drain',
          drainMs: 3000,
          seed: 42,
        },
        target,
        fake,
      );
      const entry: MixedExtra = { target: kind, rss: run.rec.rssBytes };
      if (kind === 'proxy-redis') {
        const snap = await redisSnapshot((await h.redis()).client);
        entry.redisKeys = snap.keys;
        entry.redisUsedMemory = snap.usedMemory;
      }
      extras.push(entry);
    } finally {
      await target.stop();
    }
  }
  return extras;
}

/**
 * 100,000 buckets created directly through the RedisStore API (src/limiter/redis.ts), as the proxy would after
 * one answered request per bucket: admit (a probe of an unknown bucket), then learn its hash and limits. Over
 * HTTP this would take about a minute on this machine; the keys and values written are the same.
 */
export async function buckets(s: Session): Promise<BucketsResult> {
  const h = s.h;
  const { client, url } = await h.redis();
  const [{ RedisStore }, { classify }, { createIdentifier, createTokenHasher }] = await Promise.all([
    import('../../src/limiter/redis.js'),
    import('../../src/discord/classify.js'),
    import('../../src/discord/identity.js'),
  ]);
  await client.flushall();
  await sleep(200);
  const before = await redisSnapshot(client);
  const storeClient = new Redis(url, { maxRetriesPerRequest: 1 });
  const store = new RedisStore(storeClient, {
    prefix: 'drlp:',
    resetMarginMs: 15,
    globalWindowMarginMs: 50,
    probeTimeoutMs: 31_000,
    cloudflarePollMs: 0,
    ownsClient: true,
  });
  const secret = 'discord-ratelimit-proxy/default-key';
  const identify = createIdentifier(secret);
  const tokenHash = createTokenHasher(secret);
  const perIdentity = 100;
  const total = s.windows.buckets;
  const identities = Math.ceil(total / perIdentity);
  const started = performance.now();
  const one = async (n: number) => {
    const identity = identify(botToken(100_000 + Math.floor(n / perIdentity))).key;
    const route = classify(
      'GET',
      `/channels/${channelId(100_000 + (n % perIdentity))}/messages`,
      Date.now(),
      tokenHash,
    );
    // The global window is not what is measured here: 100 per identity keeps every admission in one window.
    const input = {
      identity,
      routeKey: route.routeKey,
      major: route.major,
      globalLimit: perIdentity,
      sublimit: '',
    };
    const admitted = await store.admit(input);
    if (!admitted.ok) throw new Error(`bucket ${n} not admitted: ${admitted.reason}`);
    await store.learn({
      identity,
      routeKey: route.routeKey,
      major: route.major,
      bucket: admitted.bucket,
      probe: admitted.probe,
      hash: 'a1b2c3d4e5f60718293a4b5c6d7e8f90',
      limit: 50,
      remaining: 49,
      resetAfterMs: 1000,
    });
  };
  try {
    // One identity's buckets in sequence, 500 identities at a time: the order in which a proxy would learn them.
    const batch = 500;
    for (let first = 0; first < identities; first += batch) {
      const ids = Array.from({ length: Math.min(batch, identities - first) }, (_, i) => first + i);
      await Promise.all(
        ids.map(async (id) => {
          for (let c = 0; c < perIdentity && id * perIdentity + c < total; c++)
            await one(id * perIdentity + c);
        }),
      );
    }
  } finally {
    await store.close();
  }
  const createSeconds = (performance.now() - started) / 1000;
  const after = await redisSnapshot(client);
  // MEMORY USAGE of a sample of the bucket hashes themselves, without per-identity keys.
  const sample: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', 'drlp:*:bucket:*', 'COUNT', 1000);
    cursor = next;
    sample.push(...keys);
  } while (cursor !== '0' && sample.length < 500);
  const usages = await Promise.all(sample.slice(0, 500).map((k) => client.memory('USAGE', k)));
  const bucketKeyBytes = usages.reduce<number>((a, b) => a + Number(b ?? 0), 0) / Math.max(1, usages.length);
  const result: BucketsResult = {
    method: 'RedisStore API (admit + learn per bucket), 100 channels per identity',
    buckets: total,
    identities,
    usedMemoryDelta: after.usedMemory - before.usedMemory,
    bytesPerBucket: (after.usedMemory - before.usedMemory) / total,
    keysDelta: after.keys - before.keys,
    bucketKeyBytes,
    createSeconds,
  };
  progress(
    `scale.buckets: ${int(total)} buckets, used_memory +${mb(after.usedMemory - before.usedMemory)}, ` +
      `${fix((after.usedMemory - before.usedMemory) / total, 0)} B/bucket, ${int(after.keys - before.keys)} keys, ` +
      `${fix(createSeconds, 1)} s`,
  );
  await client.flushall();
  return result;
}

/** 10,000 requests held behind exhausted buckets in one in-process replica: its memory while it holds them. */
export async function held(s: Session): Promise<HeldResult> {
  const h = s.h;
  const fake = await h.fake('scale', 'lognormal', GLOBAL_LIMIT);
  // One request per 20 s per channel: after each channel's first request, everything else waits. (A reset
  // further away than MAX_HOLD_MS, 30 s by default, is answered at once with a 429 instead of held.)
  await fakeControl(fake.url, 'policy', {
    method: 'GET',
    template: '/channels/{id}/pins',
    limit: 1,
    windowMs: 20_000,
  });
  await fakeControl(fake.url, 'reset');
  const target = await h.target('proxy-memory', fake.url);
  const admin = target.admins[0]!;
  const pid = target.services[0]!.pid;
  try {
    // Warm the process up first (JIT, pools, first buckets), so the delta is what holding costs.
    await measure(
      h,
      {
        targets: target.urls,
        workload: 'unbucketed',
        concurrency: 16,
        warmupMs: 0,
        durationMs: 1000,
        end: 'drain',
        drainMs: 2000,
        seed: 1,
      },
      { target, fake, redis: false },
    );
    await sleep(500);
    const base = await scrape(admin);
    const rssBefore = rssBytes(pid);
    const heapBefore = metric(base, 'nodejs_heap_size_used_bytes');
    await fakeControl(fake.url, 'reset');
    let reached = 0;
    let secondsToHold = Number.NaN;
    let rssHeld = Number.NaN;
    let heapHeld = Number.NaN;
    const started = performance.now();
    const heldNow = async () => metric(await scrape(admin), 'discord_proxy_held_requests');
    const rec = await measure(
      h,
      {
        targets: target.urls,
        workload: 'hold',
        concurrency: HELD,
        warmupMs: 0,
        durationMs: s.windows.hold,
        end: 'abort',
        drainMs: 0,
        seed: 1,
      },
      { target, fake, redis: false },
      {
        async during() {
          await waitFor(
            async () => {
              reached = await heldNow();
              return reached >= HELD;
            },
            s.windows.hold - 4000,
            200,
          );
          secondsToHold = (performance.now() - started) / 1000;
          // Let the burst of connections settle (garbage from accepting them is collected), then read.
          await sleep(3000);
          const samples = await scrape(admin);
          reached = metric(samples, 'discord_proxy_held_requests');
          heapHeld = metric(samples, 'nodejs_heap_size_used_bytes');
          rssHeld = rssBytes(pid);
        },
      },
    );
    let heldAfterAbort = Number.NaN;
    const releasedAfterAbort = await waitFor(
      async () => {
        heldAfterAbort = await heldNow();
        return heldAfterAbort === 0;
      },
      5000,
      200,
    );
    const result: HeldResult = {
      target: HELD,
      reached,
      secondsToHold,
      rssBefore,
      rssHeld,
      heapBefore,
      heapHeld,
      bytesPerHeld: (rssHeld - rssBefore) / Math.max(1, reached),
      upstreamArrivals: rec.fake.totalSinceReset,
      limitedAtFake: rec.fake.limitedSinceReset,
      limitedByScope: rec.fake.limitedSinceResetByScope,
      releasedAfterAbort,
      heldAfterAbort,
      statuses: rec.load.statuses,
    };
    progress(
      `scale.held: ${int(reached)} held after ${fix(secondsToHold, 1)} s, RSS ${mb(rssBefore)} -> ${mb(rssHeld)}, ` +
        `heap ${mb(heapBefore)} -> ${mb(heapHeld)}, ${rec.fake.totalSinceReset} reached the fake, ` +
        `released after abort: ${releasedAfterAbort} (${heldAfterAbort} left), statuses ${JSON.stringify(rec.load.statuses)}` +
        Object.entries(rec.load.samples)
          .map(([status, sample]) => `, first ${status}: ${sample}`)
          .join('') +
        (rec.crashed.length ? ` CRASHED ${rec.crashed.join(' | ')}` : ''),
    );
    return result;
  } finally {
    await target.stop();
  }
}
