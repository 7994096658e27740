/**
 * Reading what the processes under test say about themselves: the proxy's Prometheus text on its admin port,
 * Redis's INFO, and the fake Discord's counters.
 */
import type { Redis } from 'ioredis';
import { request } from 'undici';

export interface Sample {
  readonly name: string;
  readonly labels: string;
  readonly value: number;
}

export async function scrape(adminUrl: string): Promise<Sample[]> {
  const res = await request(`${adminUrl}/metrics`, { headersTimeout: 10_000, bodyTimeout: 10_000 });
  const text = await res.body.text();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    const key = line.slice(0, space);
    const brace = key.indexOf('{');
    samples.push({
      name: brace === -1 ? key : key.slice(0, brace),
      labels: brace === -1 ? '' : key.slice(brace),
      value: Number(line.slice(space + 1)),
    });
  }
  return samples;
}

/** Sum of the samples with this name whose labels contain every given fragment (e.g. 'op="admit"'). */
export function metric(samples: readonly Sample[], name: string, ...fragments: string[]): number {
  let sum = 0;
  let found = false;
  for (const s of samples) {
    if (s.name !== name || !fragments.every((f) => s.labels.includes(f))) continue;
    sum += s.value;
    found = true;
  }
  return found ? sum : Number.NaN;
}

/** Every distinct value of one label among the samples of a metric. */
export function labelValues(samples: readonly Sample[], name: string, label: string): string[] {
  const values = new Set<string>();
  const re = new RegExp(`${label}="([^"]*)"`);
  for (const s of samples) {
    if (s.name !== name) continue;
    const m = re.exec(s.labels);
    if (m?.[1] !== undefined) values.add(m[1]);
  }
  return [...values];
}

export interface RedisSnapshot {
  /** cmdstat_<name> → calls. */
  readonly calls: Record<string, number>;
  readonly usedMemory: number;
  readonly keys: number;
}

export async function redisSnapshot(redis: Redis): Promise<RedisSnapshot> {
  const [commandstats, memory, keys] = await Promise.all([
    redis.info('commandstats'),
    redis.info('memory'),
    redis.dbsize(),
  ]);
  const calls: Record<string, number> = {};
  for (const m of commandstats.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls[m[1]!] = Number(m[2]);
  const usedMemory = Number(/^used_memory:(\d+)/m.exec(memory)?.[1] ?? Number.NaN);
  return { calls, usedMemory, keys };
}

/** Calls per command between two snapshots, without the benchmark's own INFO/DBSIZE calls. */
export function commandDelta(before: RedisSnapshot, after: RedisSnapshot): Record<string, number> {
  const delta: Record<string, number> = {};
  for (const [name, calls] of Object.entries(after.calls)) {
    if (name === 'info' || name === 'dbsize' || name === 'memory' || name === 'flushall') continue;
    const d = calls - (before.calls[name] ?? 0);
    if (d > 0) delta[name] = d;
  }
  return delta;
}

export interface FakeStats {
  total: number;
  byStatus: Record<string, number>;
  rateLimited: Record<'user' | 'global' | 'shared' | 'sublimit' | 'cloudflare', number>;
  invalid: number;
  byRoute: Record<string, number>;
  busiestWindow: number;
  busiest: Record<string, number>;
  /** Answered without a 429, per identity (shortened hash). */
  okByIdentity: Record<string, number>;
}

export async function fakeStats(fakeUrl: string): Promise<FakeStats> {
  const res = await request(`${fakeUrl}/__fake/stats`, { headersTimeout: 10_000, bodyTimeout: 10_000 });
  return (await res.body.json()) as FakeStats;
}

export async function fakeControl(fakeUrl: string, action: string, body?: unknown): Promise<void> {
  const res = await request(`${fakeUrl}/__fake/${action}`, {
    method: 'POST',
    body: body === undefined ? '' : JSON.stringify(body),
  });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`fake control ${action} failed: ${text}`);
}

export function limited(stats: FakeStats): number {
  const r = stats.rateLimited;
  return r.user + r.global + r.shared + r.sublimit + r.cloudflare;
}
