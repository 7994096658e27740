/**
 * Graceful shutdown of the real entry point (`node --import tsx src/main.ts`) on a real SIGTERM sent by PID:
 * requests already at Discord finish, requests still held get the proxy's 503 at the deadline, a call hanging
 * at Discord is cut and answered, new connections are refused, and the process exits 0 soon after.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeDiscord } from '../fake-discord/server.js';
import { BOT_A } from '../helpers/env.js';
import { freePort } from '../helpers/redis-server.js';

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
const SHUTDOWN_MS = 1500;
const LATENCY_MS = 500;
/** Held requests wait for a bucket that resets long after the deadline. */
const WINDOW_MS = 10_000;
const HELD_CHANNEL = '300000000000000001';

interface Spawned {
  child: ChildProcess;
  output: string[];
  exited: Promise<{ code: number | null; at: number }>;
}

async function spawnProxy(env: Record<string, string>): Promise<Spawned> {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN], {
    env: { ...process.env, HOST: '127.0.0.1', ADMIN_HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  child.stdout?.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  const exited = new Promise<{ code: number | null; at: number }>((resolve) =>
    child.once('exit', (code) => resolve({ code, at: performance.now() })),
  );
  const deadline = Date.now() + 20_000;
  while (!output.join('').includes('proxy ready')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`proxy did not start:\n${output.join('')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { child, output, exited };
}

interface Timed {
  status: number;
  generated: string | undefined;
  body: string;
  at: number;
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 3000): Promise<void> {
  const end = performance.now() + ms;
  while (!(await check())) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('graceful shutdown on SIGTERM', () => {
  let fake: FakeDiscord;
  let proxy: Spawned;
  let upstream: string;
  let port: number;
  let adminPort: number;
  const client = new Agent({ connections: 64, keepAliveTimeout: 10_000 });

  beforeAll(async () => {
    fake = new FakeDiscord({
      latency: { kind: 'fixed', ms: LATENCY_MS },
      policies: [{ method: 'POST', template: '/channels/{id}/messages', limit: 1, windowMs: WINDOW_MS }],
    });
    upstream = await fake.start();
    port = await freePort();
    adminPort = await freePort();
    proxy = await spawnProxy({
      PORT: String(port),
      ADMIN_PORT: String(adminPort),
      UPSTREAM_URL: upstream,
      SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_MS),
      REQUEST_LOG_LEVEL: 'info',
    });
  });

  afterAll(async () => {
    if (proxy?.child.exitCode === null) proxy.child.kill('SIGKILL');
    await client.close();
    await fake?.stop();
  });

  const call = (method: string, path: string, body?: string): Promise<Timed> =>
    request(`http://127.0.0.1:${port}${path}`, {
      method: method as 'GET',
      headers: { authorization: BOT_A, 'content-type': 'application/json' },
      body: body ?? null,
      dispatcher: client,
    }).then(async (res) => ({
      status: res.statusCode,
      generated: res.headers['x-proxy-generated'] as string | undefined,
      body: await res.body.text(),
      at: performance.now(),
    }));

  it('drains, answers what is left with 503, refuses new connections and exits 0', async () => {
    // One message empties the held channel's bucket for WINDOW_MS.
    expect((await call('POST', `/api/v10/channels/${HELD_CHANNEL}/messages`, '{"content":"a"}')).status).toBe(
      200,
    );
    const held = Array.from({ length: 3 }, (_, i) =>
      call('POST', `/api/v10/channels/${HELD_CHANNEL}/messages`, `{"content":"held ${i}"}`),
    );
    const inFlight = Array.from({ length: 4 }, (_, i) =>
      call('GET', `/api/v10/channels/30000000000000010${i}/messages/400000000000000001`),
    );
    await until('in-flight requests at the fake', () => fake.stats().total >= 5);
    // The next request to reach Discord never gets an answer: only the shutdown can end it.
    fake.failNext(1, 'hang');
    const hanging = call('GET', '/api/v10/channels/300000000000000200/messages/400000000000000001');
    await until('the hanging request at the fake', () => fake.stats().total >= 6);
    // A raw keep-alive socket with a held request on it; a second request is pipelined after the signal.
    const raw = await rawHeldSocket(port);

    const signalledAt = performance.now();
    process.kill(proxy.child.pid!, 'SIGTERM');

    await until('/readyz to turn 503', async () => {
      const res = await request(`http://127.0.0.1:${adminPort}/readyz`).catch(() => null);
      const text = await res?.body.text();
      return res?.statusCode === 503 && (text ?? '').includes('shutting down');
    });
    await until('new connections to be refused', async () => {
      const fresh = new Agent();
      const error = await request(`http://127.0.0.1:${port}/api/v10/gateway`, { dispatcher: fresh }).then(
        (res) => res.body.dump().then(() => null),
        (e: { code?: string }) => e,
      );
      await fresh.close();
      return error?.code === 'ECONNREFUSED';
    });
    raw.socket.write(
      'GET /api/v10/channels/300000000000000300/messages HTTP/1.1\r\nhost: proxy\r\nauthorization: x\r\n\r\n',
    );

    // Already at Discord when the signal came: they finish normally, before the deadline's 503s.
    const heldAnswers = await Promise.all(held);
    const firstRefusal = Math.min(...heldAnswers.map((res) => res.at));
    for (const res of await Promise.all(inFlight)) {
      expect(res.status).toBe(200);
      expect(res.at).toBeLessThan(firstRefusal);
    }
    // Held past the deadline: the proxy's own 503, not before SHUTDOWN_MS after the signal (timers never fire
    // early). The upper bound only catches a hang; the exact deadline is asserted on fake timers in
    // test/unit/relay-time.test.ts.
    for (const res of heldAnswers) {
      expect(res.status).toBe(503);
      expect(res.generated).toBe('true');
      expect(JSON.parse(res.body)).toMatchObject({ code: 990006 });
      expect(res.at - signalledAt).toBeGreaterThan(SHUTDOWN_MS - 100);
      expect(res.at - signalledAt).toBeLessThan(SHUTDOWN_MS + 5000);
    }
    // Cut at the deadline; the GET's retry meets the closed scheduler and is answered 503 as well.
    const cut = await hanging;
    expect(cut.status).toBe(503);
    expect(cut.generated).toBe('true');

    const { code, at } = await proxy.exited;
    expect(code).toBe(0);
    // Exit code 0 already says main.ts's backstop (SHUTDOWN_TIMEOUT_MS + 5 s) did not have to end it.
    expect(at - signalledAt).toBeLessThan(SHUTDOWN_MS + 5000);

    // The raw socket got its held request's 503 with `connection: close`, then the socket closed; the request
    // pipelined behind it was refused, never forwarded.
    const replies = await raw.closed;
    expect(replies).toMatch(/^HTTP\/1\.1 503 /);
    expect(replies).toMatch(/\r\nx-proxy-generated: true\r\n/i);
    expect(replies).toMatch(/\r\nconnection: close\r\n/i);
    expect(fake.received.some((r) => r.path.includes('300000000000000300'))).toBe(false);
    const log = proxy.output.join('');
    expect(log).toContain('request refused: shutting down');
    expect(log).toContain('shutdown complete');
    // Every answer went out by itself: no connection had to be cut after the deadline.
    expect(log).not.toContain('closing connections that are still open');
  });

  it('on SIGINT exits as soon as the requests in flight are done, long before the deadline', async () => {
    fake.reset();
    const ownPort = await freePort();
    const patient = await spawnProxy({
      PORT: String(ownPort),
      ADMIN_PORT: String(await freePort()),
      UPSTREAM_URL: upstream,
      SHUTDOWN_TIMEOUT_MS: '20000',
    });
    try {
      const calls = Array.from({ length: 2 }, (_, i) =>
        request(
          `http://127.0.0.1:${ownPort}/api/v10/channels/30000000000000050${i}/messages/400000000000000001`,
          {
            headers: { authorization: BOT_A },
            dispatcher: client,
          },
        ).then(async (res) => ({ status: res.statusCode, text: await res.body.text() })),
      );
      await until('requests at the fake', () => fake.stats().total >= 2);
      const signalledAt = performance.now();
      process.kill(patient.child.pid!, 'SIGINT');
      expect((await Promise.all(calls)).map((res) => res.status)).toEqual([200, 200]);
      const { code, at } = await patient.exited;
      expect(code).toBe(0);
      // Long before the 20 s deadline: the log says the deadline never came, and the bound leaves a busy machine room.
      expect(at - signalledAt).toBeLessThan(10_000);
      expect(patient.output.join('')).not.toContain('shutdown deadline');
    } finally {
      if (patient.child.exitCode === null) patient.child.kill('SIGKILL');
    }
  });
});

/** Opens a socket, sends a POST that the proxy holds, and collects everything until the proxy closes it. */
async function rawHeldSocket(port: number): Promise<{ socket: Socket; closed: Promise<string> }> {
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const body = '{"content":"raw"}';
  socket.write(
    `POST /api/v10/channels/${HELD_CHANNEL}/messages HTTP/1.1\r\nhost: proxy\r\nauthorization: ${BOT_A}\r\n` +
      `content-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
  );
  let received = '';
  socket.on('data', (chunk: Buffer) => {
    received += chunk.toString();
  });
  const closed = new Promise<string>((resolve) => socket.once('close', () => resolve(received)));
  socket.on('error', () => undefined);
  return { socket, closed };
}
