/**
 * What the Redis scripts cost Redis per proxied request, without HTTP, the fake or the load generator in the way:
 * a RedisStore admits and learns rounds of requests of one hot token against a redis-server of its own, and Redis's
 * own accounting (INFO commandstats, INFO cpu) says how much time the scripts took. Usage:
 *   npx tsx bench/scripts-cost.ts [--rounds 400] [--batch 64] [--channels 50] [--lease-ms 0]
 * Prints µs of script time per request (admit + learn) and commands run inside the scripts per request. Leases are
 * off unless --lease-ms says otherwise: every request is then decided by an admit script, which is what this
 * measures; with leases most requests are decided by none (and a refill's run costs what its grant holds).
 */
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { RedisStore } from '../src/limiter/redis.js';
import type { AdmitInput } from '../src/limiter/types.js';
import { freePort } from '../test/helpers/redis-server.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '400' },
    batch: { type: 'string', default: '64' },
    channels: { type: 'string', default: '50' },
    'lease-ms': { type: 'string', default: '0' },
  },
});
const rounds = Number(values.rounds);
const batch = Number(values.batch);
const channels = Number(values.channels);
const leaseMs = Number(values['lease-ms']);

interface Stats {
  scriptUsec: number;
  scriptCalls: number;
  innerCalls: number;
  cpuMs: number;
}

async function stats(redis: Redis): Promise<Stats> {
  const text = `${await redis.info('commandstats')}\n${await redis.info('cpu')}`;
  let scriptUsec = 0;
  let scriptCalls = 0;
  let innerCalls = 0;
  for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) {
    const [, name, calls, usec] = m;
    if (name === 'evalsha' || name === 'eval') {
      scriptUsec += Number(usec);
      scriptCalls += Number(calls);
    } else if (name !== 'info' && name !== 'script') innerCalls += Number(calls);
  }
  const cpu = (k: string) => Number(new RegExp(`^${k}:([\\d.]+)`, 'm').exec(text)?.[1] ?? 0);
  return { scriptUsec, scriptCalls, innerCalls, cpuMs: (cpu('used_cpu_user') + cpu('used_cpu_sys')) * 1000 };
}

async function main(): Promise<void> {
  const port = await freePort();
  const server = spawn('redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  const redis = new Redis({ port, lazyConnect: true });
  redis.on('error', () => {}); // refused connects while the server starts; a real failure rejects below
  try {
    for (let i = 0; i < 50; i++) {
      try {
        await redis.connect();
        break;
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    const store = new RedisStore(redis, {
      prefix: 'bench:',
      resetMarginMs: 5,
      globalWindowMarginMs: 20,
      probeTimeoutMs: 10_000,
      cloudflarePollMs: 0,
      leaseMs,
    });
    const input = (i: number): AdmitInput => ({
      identity: 'hot',
      routeKey: 'POST /channels/:id/messages',
      major: `c:${i % channels}`,
      globalLimit: 1_000_000,
      sublimit: '*',
    });
    // Learn every bucket first, so the measured rounds are the steady state of a known, roomy bucket.
    const run = async (): Promise<number> => {
      const inputs = Array.from({ length: batch }, (_, i) => input(i));
      const admitted = await Promise.all(inputs.map((one) => store.admit(one)));
      await Promise.all(
        admitted.map((a, i) => {
          if (!a.ok) return undefined;
          return store.learn({
            ...inputs[i]!,
            bucket: a.bucket,
            probe: a.probe,
            window: a.window,
            slot: a.slot,
            hash: 'abcdef',
            limit: 1_000_000,
            remaining: 999_000,
            resetAfterMs: 60_000,
            serviceMs: 5,
          });
        }),
      );
      return admitted.filter((a) => a.ok).length;
    };
    for (let i = 0; i < 5; i++) await run();
    const before = await stats(redis);
    let requests = 0;
    for (let i = 0; i < rounds; i++) requests += await run();
    const after = await stats(redis);
    const per = (n: number) => (n / requests).toFixed(2);
    console.log(
      `${requests} requests in batches of ${batch} over ${channels} channels: ` +
        `${per(after.scriptUsec - before.scriptUsec)} µs of script time/req, ` +
        `${per(after.cpuMs * 1000 - before.cpuMs * 1000)} µs of Redis CPU/req, ` +
        `${per(after.scriptCalls - before.scriptCalls)} script calls/req, ` +
        `${per(after.innerCalls - before.innerCalls)} commands inside scripts/req`,
    );
    await store.close();
  } finally {
    redis.disconnect();
    server.kill();
  }
}

await main();
