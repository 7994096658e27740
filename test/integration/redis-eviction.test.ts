/**
 * The proxy's keys all expire, so an eviction policy that picks among them would drop rate-limit state under
 * memory pressure. The check reads a real Redis's settings.
 */
import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { checkEviction } from '../../src/store.js';
import { type RedisProcess, startRedis } from '../helpers/redis-server.js';

function capture() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  return { log: pino({ level: 'debug' }, stream), lines };
}

describe('Redis eviction policy check', () => {
  const started: { redis: RedisProcess; client: Redis }[] = [];
  afterEach(async () => {
    for (const { redis, client } of started.splice(0)) {
      client.disconnect();
      await redis.stop();
    }
  });

  async function redisWith(args: string[]) {
    const redis = await startRedis(undefined, args);
    const client = new Redis(redis.url, { lazyConnect: true });
    await client.connect();
    started.push({ redis, client });
    return client;
  }

  it('warns when a memory limit comes with a policy that may evict expiring keys', async () => {
    const client = await redisWith(['--maxmemory', '64mb', '--maxmemory-policy', 'volatile-lru']);
    const { log, lines } = capture();
    expect(await checkEviction(client, log)).toBe('volatile-lru');
    expect(lines.join('')).toContain('noeviction');
  });

  it('stays quiet with noeviction, or without a memory limit', async () => {
    for (const args of [['--maxmemory', '64mb', '--maxmemory-policy', 'noeviction'], []]) {
      const client = await redisWith(args);
      const { log, lines } = capture();
      expect(await checkEviction(client, log)).toBeNull();
      expect(lines.filter((l) => l.includes('"level":40'))).toHaveLength(0);
    }
  });
});
