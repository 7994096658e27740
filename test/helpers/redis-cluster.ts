import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, inject } from 'vitest';
import { freePort, type RedisProcess, startRedis } from './redis-server.js';

const run = promisify(execFile);

export interface RedisClusterProcess {
  readonly nodes: readonly { host: string; port: number }[];
  stop(): Promise<void>;
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A free port whose cluster bus port (port + 10000) is free as well. */
async function freeClusterPort(taken: Set<number>): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await freePort();
    if (port + 10_000 > 65_535 || taken.has(port) || taken.has(port + 10_000)) continue;
    if (await portIsFree(port + 10_000)) return port;
  }
  throw new Error('no free port pair for a Redis Cluster node');
}

async function clusterInfo(port: number): Promise<string> {
  const { stdout } = await run('redis-cli', ['-p', String(port), 'cluster', 'info']);
  return stdout;
}

async function waitForClusterOk(ports: readonly number[], masters: number): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const infos = await Promise.all(ports.map(clusterInfo));
    const ok = infos.every(
      (info) =>
        info.includes('cluster_state:ok') &&
        info.includes('cluster_slots_assigned:16384') &&
        info.includes(`cluster_known_nodes:${masters}`),
    );
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`Redis Cluster did not converge:\n${infos.join('\n')}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Starts a throwaway Redis Cluster of `masters` masters (no replicas, no persistence) on free loopback ports, with
 * its node files in a temporary directory, and waits until every node reports the cluster healthy.
 */
export async function startRedisCluster(masters = 3): Promise<RedisClusterProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'redis-cluster-'));
  const servers: RedisProcess[] = [];
  const stop = async () => {
    await Promise.all(servers.map((server) => server.stop()));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const taken = new Set<number>();
    for (let i = 0; i < masters; i++) {
      const port = await freeClusterPort(taken);
      taken.add(port).add(port + 10_000);
      servers.push(
        await startRedis(port, [
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          join(dir, `nodes-${port}.conf`),
          '--dir',
          dir,
        ]),
      );
    }
    const ports = servers.map((server) => server.port);
    await run('redis-cli', [
      '--cluster',
      'create',
      ...ports.map((port) => `127.0.0.1:${port}`),
      '--cluster-replicas',
      '0',
      '--cluster-yes',
    ]);
    await waitForClusterOk(ports, masters);
    return { nodes: ports.map((port) => ({ host: '127.0.0.1', port })), stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** A shared store replicas can run on: its name in test titles and the proxy environment that selects it. */
export interface SharedStore {
  readonly name: string;
  env(): Record<string, string>;
}

/**
 * The two shared stores multi-replica tests run on: one Redis (the suite's own) and a three-master Redis Cluster,
 * which this starts before the calling file's tests and stops after them. For `describe.each`; the environments are
 * read when a test runs.
 */
export function sharedStores(): readonly SharedStore[] {
  let cluster: RedisClusterProcess | undefined;
  beforeAll(async () => {
    cluster = await startRedisCluster(3);
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
  });
  return [
    { name: 'one Redis', env: () => ({ REDIS_URL: inject('redisUrl') }) },
    {
      name: 'a Redis Cluster',
      env: () => {
        if (!cluster) throw new Error('the Redis Cluster is not started');
        return { REDIS_CLUSTER_NODES: cluster.nodes.map((n) => `${n.host}:${n.port}`).join(',') };
      },
    },
  ];
}
