/**
 * The Redis store on a real 3-master Redis Cluster: the same scripts must run unchanged because every key of one
 * identity shares its {identity} hash tag, while identities spread over the masters.
 */
import { randomUUID } from 'node:crypto';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisStore } from '../../src/limiter/redis.js';
import type { AdmitInput } from '../../src/limiter/types.js';
import { CONTRACT_OPTIONS, storeContract } from '../contract/store-contract.js';
import { type RedisClusterProcess, startRedisCluster } from '../helpers/redis-cluster.js';

const newPrefix = () => `test:${randomUUID().slice(0, 8)}:`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let cluster: RedisClusterProcess;
let client: Cluster;

beforeAll(async () => {
  cluster = await startRedisCluster(3);
  client = new Cluster([...cluster.nodes]);
  await new Promise<void>((resolve, reject) => {
    client.once('ready', resolve);
    client.once('error', reject);
  });
}, 60_000);

afterAll(async () => {
  await client?.quit();
  await cluster?.stop();
});

storeContract(
  'redis cluster',
  async (options) => new RedisStore(client, { ...options, prefix: newPrefix() }),
);

async function keysUnder(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for (const node of client.nodes('master')) {
    let cursor = '0';
    do {
      const [next, batch] = await node.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      keys.push(...batch);
      cursor = next;
    } while (cursor !== '0');
  }
  return keys;
}

describe('redis store on a cluster', () => {
  it('keeps each identity in one slot and spreads identities over the masters', async () => {
    const prefix = newPrefix();
    const store = new RedisStore(client, { ...CONTRACT_OPTIONS, prefix });
    const identities = Array.from({ length: 12 }, (_, i) => `ident${i}`);
    for (const identity of identities) {
      const req: AdmitInput = {
        identity,
        routeKey: 'PATCH /channels/:id',
        major: 'c:1',
        globalLimit: 50,
        sublimit: 't',
      };
      const probe = await store.admit(req);
      if (!probe.ok) throw new Error('probe refused');
      await store.learn({
        ...req,
        bucket: probe.bucket,
        probe: true,
        hash: 'h',
        limit: 5,
        remaining: 4,
        resetAfterMs: 5000,
        sublimitDelay: { tag: 't', ms: 5000 },
      });
      expect(await store.admit({ ...req, routeKey: 'GET /channels/:id' })).toMatchObject({
        ok: true,
        probe: true,
      });
      await store.pauseIdentity(identity, 5000);
      expect(await store.admit(req)).toMatchObject({ ok: false, reason: 'paused' });
    }
    await store.close();

    const slotsByIdentity = new Map<string, Set<number>>();
    for (const key of await keysUnder(prefix)) {
      const identity = /\{([^}]*)\}/.exec(key)?.[1] ?? '';
      const slot = Number(await client.cluster('KEYSLOT', key));
      slotsByIdentity.set(identity, (slotsByIdentity.get(identity) ?? new Set()).add(slot));
      expect(await client.pttl(key), key).toBeGreaterThan(0);
    }
    expect([...slotsByIdentity.keys()].sort()).toEqual([...identities].sort());
    for (const slots of slotsByIdentity.values()) expect(slots.size).toBe(1);

    const mastersUsed = new Set<string>();
    for (const node of client.nodes('master')) {
      if ((await node.keys(`${prefix}*`)).length > 0)
        mastersUsed.add(`${node.options.host}:${node.options.port}`);
    }
    expect(mastersUsed.size).toBeGreaterThan(1);
  });

  it('spreads a Cloudflare pause from its own slot to every replica within a poll', async () => {
    const prefix = newPrefix();
    const pollMs = 100;
    const a = new RedisStore(client, { ...CONTRACT_OPTIONS, prefix, cloudflarePollMs: pollMs });
    const b = new RedisStore(client, { ...CONTRACT_OPTIONS, prefix, cloudflarePollMs: pollMs });
    const req: AdmitInput = {
      identity: 'cf',
      routeKey: 'GET /users/@me',
      major: '-',
      globalLimit: 50,
      sublimit: '*',
    };
    expect(await b.admit(req)).toMatchObject({ ok: true });
    expect(await a.pauseAll(2000)).toBeGreaterThan(1900);
    expect(await a.admit(req)).toMatchObject({ ok: false, reason: 'cloudflare' });
    await sleep(pollMs + 150);
    expect(await b.admit(req)).toMatchObject({ ok: false, reason: 'cloudflare' });
    expect(await b.cloudflarePause()).toBeGreaterThan(1500);
    await Promise.all([a.close(), b.close()]);
  });
});
