/**
 * Three real proxy processes sharing one real Redis act as one proxy: every assertion is about what the fake
 * Discord (its own process) counted, with clients spread over the replicas directly and through HAProxy.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { BOT_A, BOT_B, clientFor, runWorkers } from '../helpers/env.js';
import { type FakeProcess, startFakeProcess } from '../helpers/fake-process.js';
import { type ProxyProcess, startProxyProcess } from '../helpers/proxy-process.js';
import { freePort } from '../helpers/redis-server.js';

const channel = (i: number) => String(200000000000000000n + BigInt(i));
const snowflakeNow = () => String((BigInt(Date.now() - 1420070400000 - 60_000) << 22n) + 1n);
let prefixSeq = 0;
// These tests run three proxies, the fake, Redis and the load on two cores: a process can wait tens of ms for a
// core between admission and sending. They run with the default GLOBAL_WINDOW_MARGIN_MS: a request counts in its
// token's window until its answer, so time spent waiting for a core is covered without a margin of its own.

async function startHaproxy(backends: ProxyProcess[]): Promise<{ url: string; stop(): Promise<void> }> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'drlp-haproxy-'));
  const servers = backends.map((b, i) => `  server r${i} ${new URL(b.url).host}`).join('\n');
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(
    file,
    `global\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n` +
      `frontend fe\n  bind 127.0.0.1:${port}\n  default_backend proxies\n` +
      `backend proxies\n  balance roundrobin\n  http-reuse safe\n${servers}\n`,
  );
  const child = spawn('haproxy', ['-f', file, '-db'], { stdio: 'ignore' });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    try {
      const res = await fetch(`${url}/api/v10/gateway`);
      await res.arrayBuffer();
      break;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return {
    url,
    stop: () =>
      new Promise<void>((resolve) => {
        rmSync(dir, { recursive: true, force: true });
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

describe('three replicas sharing one Redis', () => {
  let fake: FakeProcess;
  let replicas: ProxyProcess[] = [];
  let clients: ReturnType<typeof clientFor>[] = [];

  async function startReplicas(env: Record<string, string> = {}, faketimes: (string | undefined)[] = []) {
    const prefix = `replicas${prefixSeq++}:`;
    replicas = await Promise.all(
      [0, 1, 2].map((i) => {
        const faketime = faketimes[i];
        return startProxyProcess(
          {
            UPSTREAM_URL: fake.url,
            REDIS_URL: inject('redisUrl'),
            REDIS_KEY_PREFIX: prefix,
            ...env,
          },
          faketime ? { faketime } : {},
        );
      }),
    );
    clients = replicas.map((r) => clientFor(r.url));
  }
  async function stopReplicas() {
    await Promise.all(clients.map((c) => c.client.close()));
    await Promise.all(replicas.map((r) => r.kill()));
    replicas = [];
    clients = [];
  }
  /** Worker w always talks to replica w % 3, like a bot cluster whose workers each keep one connection. */
  const callVia = (worker: number) => clients[worker % clients.length]!.call;

  beforeAll(async () => {
    fake = await startFakeProcess(['--latency', 'fixed:15']);
    await startReplicas();
  });
  afterAll(async () => {
    await stopReplicas();
    await fake?.stop();
  });

  it('gets zero 429s for a hot bucket hit through all replicas', async () => {
    await fake.control('reset');
    await fake.policy({ method: 'POST', template: '/channels/{id}/messages', limit: 5, windowMs: 500 });
    await runWorkers(40, 3000, async (worker) => {
      const res = await callVia(worker)('POST', `/api/v10/channels/${channel(1)}/messages`, { body: '{}' });
      expect(res.status).toBe(200);
    });
    const stats = await fake.stats();
    expect(stats.rateLimited.user + stats.rateLimited.global).toBe(0);
    expect(stats.total).toBeGreaterThanOrEqual(25);
  });

  it('keeps the global window of one token within its limit across replicas and 200 channels', async () => {
    await fake.control('reset');
    await fake.policy({ method: 'POST', template: '/channels/{id}/messages', limit: 5, windowMs: 5000 });
    await runWorkers(60, 4000, async (worker, i) => {
      const res = await callVia(worker)(
        'POST',
        `/api/v10/channels/${channel(1000 + ((worker * 7 + i) % 200))}/messages`,
        {
          body: '{}',
        },
      );
      expect(res.status).toBe(200);
    });
    const stats = await fake.stats();
    expect(stats.rateLimited.global + stats.rateLimited.user).toBe(0);
    expect(stats.busiestWindow).toBeLessThanOrEqual(50);
    expect(stats.busiestWindow).toBeGreaterThanOrEqual(45);
  });

  it('sends one probe for an unknown bucket whose first requests arrive at every replica', async () => {
    await fake.control('reset');
    await fake.policy({ method: 'GET', template: '/channels/{id}/pins', limit: 5, windowMs: 1000 });
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        callVia(i)('GET', `/api/v10/channels/${channel(7)}/pins`, { auth: BOT_B }),
      ),
    );
    expect(results.map((r) => r.status)).toEqual(results.map(() => 200));
    const stats = await fake.stats();
    expect(stats.rateLimited.user).toBe(0);
  });

  it('shares one reaction bucket per channel across replicas', async () => {
    await fake.control('reset');
    const message = snowflakeNow();
    await runWorkers(12, 2500, async (worker, i) => {
      const emoji = ['%F0%9F%91%8D', '%E2%9D%A4', 'blob:123456789012345678'][(worker + i) % 3]!;
      const path = `/api/v10/channels/${channel(9)}/messages/${message}/reactions/${emoji}/@me`;
      const res = await callVia(worker)(i % 2 ? 'DELETE' : 'PUT', path);
      expect(res.status).toBeLessThan(300);
    });
    const stats = await fake.stats();
    expect(stats.rateLimited.user + stats.rateLimited.shared).toBe(0);
    expect(stats.total).toBeGreaterThanOrEqual(8);
  });

  it('gets zero 429s for a hot bucket through HAProxy in front of the replicas', async () => {
    await fake.control('reset');
    await fake.policy({ method: 'POST', template: '/channels/{id}/messages', limit: 5, windowMs: 500 });
    const lb = await startHaproxy(replicas);
    const viaLb = clientFor(lb.url);
    try {
      await runWorkers(40, 3000, async () => {
        const res = await viaLb.call('POST', `/api/v10/channels/${channel(2)}/messages`, { body: '{}' });
        expect(res.status).toBe(200);
      });
    } finally {
      await viaLb.client.close();
      await lb.stop();
    }
    const stats = await fake.stats();
    expect(stats.rateLimited.user + stats.rateLimited.global).toBe(0);
    expect(stats.total).toBeGreaterThanOrEqual(20);
  });

  it('keeps the survivors correct when a replica is killed with SIGKILL mid-load', async () => {
    await fake.control('reset');
    await fake.policy({ method: 'POST', template: '/channels/{id}/messages', limit: 5, windowMs: 500 });
    let failedOver = 0;
    let killed = false;
    const load = runWorkers(30, 4000, async (worker) => {
      // Workers of the killed replica see their call fail and move to a survivor, as behind a load balancer.
      const via = worker % 3 === 0 && killed ? 1 : worker % 3;
      try {
        const res = await clients[via]!.call('POST', `/api/v10/channels/${channel(3)}/messages`, {
          body: '{}',
        });
        expect(res.status).toBe(200);
      } catch (error) {
        if (via !== 0) throw error;
        failedOver += 1;
      }
    });
    await new Promise((resolve) => setTimeout(resolve, 1500));
    killed = true;
    await replicas[0]!.kill('SIGKILL');
    await load;
    const stats = await fake.stats();
    expect(stats.rateLimited.user + stats.rateLimited.global).toBe(0);
    // The survivors went on using the bucket after the kill (5 per 500 ms for 2.5 s more).
    expect(stats.total).toBeGreaterThanOrEqual(30);
    expect(failedOver).toBeLessThanOrEqual(10);
    await stopReplicas();
    await startReplicas();
  });
});

describe('a probe held by a replica that dies', () => {
  it('expires, so another replica can probe the bucket', async () => {
    const fake = await startFakeProcess(['--latency', 'none']);
    const env = {
      UPSTREAM_URL: fake.url,
      REDIS_URL: inject('redisUrl'),
      REDIS_KEY_PREFIX: `probe${prefixSeq++}:`,
      // The probe lock lives for the upstream timeout plus a second.
      UPSTREAM_TIMEOUT_MS: '1500',
    };
    const [a, b] = await Promise.all([startProxyProcess(env), startProxyProcess(env)]);
    const clientA = clientFor(a.url);
    const clientB = clientFor(b.url);
    try {
      // A's probe never gets an answer, and A dies holding the probe.
      await fake.control('fail', 'n=1&kind=hang');
      const stuck = clientA.call('GET', `/api/v10/channels/${channel(50)}`).catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 300));
      await a.kill('SIGKILL');
      await stuck;
      const started = performance.now();
      const res = await clientB.call('GET', `/api/v10/channels/${channel(50)}`);
      const waited = performance.now() - started;
      expect(res.status).toBe(200);
      // B waited for the dead probe's lock to expire (2.5 s from A's admission), not forever.
      expect(waited).toBeGreaterThan(1000);
      expect(waited).toBeLessThan(6000);
      expect((await fake.stats()).total).toBe(2);
    } finally {
      await clientA.client.close();
      await clientB.client.close();
      await b.kill();
      await fake.stop();
    }
  });
});

describe('replicas whose clocks disagree by ±2 s', () => {
  it('still get zero 429s, because Redis decides with its own clock', async () => {
    const fake = await startFakeProcess(['--latency', 'fixed:10']);
    await fake.policy({ method: 'POST', template: '/channels/{id}/messages', limit: 5, windowMs: 500 });
    const prefix = `skew${prefixSeq++}:`;
    const env = {
      UPSTREAM_URL: fake.url,
      REDIS_URL: inject('redisUrl'),
      REDIS_KEY_PREFIX: prefix,
    };
    const replicas = await Promise.all([
      startProxyProcess(env, { faketime: '+2s' }),
      startProxyProcess(env),
      startProxyProcess(env, { faketime: '-2s' }),
    ]);
    const clients = replicas.map((r) => clientFor(r.url));
    try {
      await runWorkers(30, 3000, async (worker, i) => {
        const client = clients[worker % 3]!;
        const target = worker < 15 ? channel(60) : channel(100 + ((worker * 5 + i) % 100));
        const res = await client.call('POST', `/api/v10/channels/${target}/messages`, {
          body: '{}',
          auth: BOT_A,
        });
        expect(res.status).toBe(200);
      });
      const stats = await fake.stats();
      expect(stats.rateLimited.user + stats.rateLimited.global).toBe(0);
      expect(stats.busiestWindow).toBeLessThanOrEqual(50);
    } finally {
      await Promise.all(clients.map((c) => c.client.close()));
      await Promise.all(replicas.map((r) => r.kill()));
      await fake.stop();
    }
  });
});

describe('signals seen by one replica reach the others', () => {
  let fake: FakeProcess;
  let a: ProxyProcess;
  let b: ProxyProcess;
  let clientA: ReturnType<typeof clientFor>;
  let clientB: ReturnType<typeof clientFor>;
  beforeAll(async () => {
    // Discord's global limit for this token is lower than the proxy was told: the proxy meets a global 429.
    fake = await startFakeProcess(['--latency', 'none', '--global', '3']);
    const env = {
      UPSTREAM_URL: fake.url,
      REDIS_URL: inject('redisUrl'),
      REDIS_KEY_PREFIX: `signals${prefixSeq++}:`,
      CLOUDFLARE_COOLDOWN_MS: '3000',
      // A 429 goes back to the client, so that only B's request competes for the window after the pause.
      MAX_RETRIES: '0',
    };
    [a, b] = await Promise.all([startProxyProcess(env), startProxyProcess(env)]);
    clientA = clientFor(a.url);
    clientB = clientFor(b.url);
  });
  afterAll(async () => {
    await clientA?.client.close();
    await clientB?.client.close();
    await Promise.all([a?.kill(), b?.kill()]);
    await fake?.stop();
  });

  it('pauses the token on every replica after a global 429 on one', async () => {
    const path = (i: number) => `/api/v10/users/${channel(500 + i)}`;
    // Four at once through A: Discord takes three and answers the fourth with a global 429.
    const burst = Promise.all(
      Array.from({ length: 4 }, (_, i) => clientA.call('GET', path(i), { auth: BOT_B })),
    );
    const deadline = performance.now() + 5000;
    while ((await fake.stats()).rateLimited.global === 0 && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    expect((await fake.stats()).rateLimited.global).toBe(1);
    // B has seen nothing itself. Sent now, it would meet a full window; through Redis it waits for the pause,
    // which ends when Discord's window has room again.
    const started = performance.now();
    const res = await clientB.call('GET', path(99), { auth: BOT_B });
    expect(res.status).toBe(200);
    expect(performance.now() - started).toBeGreaterThan(300);
    expect((await burst).map((r) => r.status).sort()).toEqual([200, 200, 200, 429]);
    expect((await fake.stats()).rateLimited.global).toBe(1);
  });

  it('stops every replica within a second of a Cloudflare ban seen by one', async () => {
    await fake.control('reset');
    await fake.control('ban', 'ms=60000');
    const banned = await clientA.call('GET', '/api/v10/gateway', { auth: BOT_A });
    expect(banned.status).toBe(429);
    expect(banned.headers['x-proxy-generated']).toBe('true');
    // Each replica polls the egress-wide pause every 500 ms.
    await new Promise((resolve) => setTimeout(resolve, 700));
    const before = (await fake.stats()).total;
    const res = await clientB.call('GET', '/api/v10/gateway', { auth: BOT_B });
    expect(res.status).toBe(429);
    expect(res.headers['x-proxy-generated']).toBe('true');
    expect(res.json()).toMatchObject({ retry_after: expect.any(Number) });
    expect((await fake.stats()).total).toBe(before);
    expect(await b.ready()).toBe(503);
  });
});
