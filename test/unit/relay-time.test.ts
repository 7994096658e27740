/**
 * The waits outside the limiter, on fake timers: a retry's backoff, the drain's deadline and the shutdown's. Each
 * takes its clock as a parameter (realClock looks Node's timers up at each call, so vi.useFakeTimers() reaches it),
 * so these assert the exact millisecond instead of a wall-clock range that a busy machine stretches.
 */
import { EventEmitter } from 'node:events';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ClientLink } from '../../src/client-link.js';
import type { Scheduler } from '../../src/limiter/scheduler.js';
import type { LimiterStore } from '../../src/limiter/types.js';
import { createMetrics } from '../../src/metrics.js';
import { backoff, backoffMs } from '../../src/relay.js';
import { Drain } from '../../src/server/drain.js';
import { FLUSH_GRACE_MS, shutdown } from '../../src/server/shutdown.js';
import type { Upstream } from '../../src/upstream.js';

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

/** Resolves a flag when the promise settles, so a test can look at it between timer steps. */
function watch(promise: Promise<unknown>): { done: boolean } {
  const state = { done: false };
  promise.then(() => {
    state.done = true;
  });
  return state;
}

describe('retry backoff', () => {
  it('doubles from 100 ms, jittered by half either way', () => {
    expect(backoffMs(0, () => 0.5)).toBe(100);
    expect(backoffMs(1, () => 0.5)).toBe(200);
    expect(backoffMs(2, () => 0)).toBe(200);
    expect(backoffMs(2, () => 0.999)).toBeCloseTo(599.6);
  });

  it('waits exactly its delay', async () => {
    const waiting = watch(backoff({ random: () => 0.5 }, 2, new ClientLink()));
    await vi.advanceTimersByTimeAsync(399);
    expect(waiting.done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(waiting.done).toBe(true);
  });

  it('ends at once when the client leaves', async () => {
    const client = new ClientLink();
    const waiting = watch(backoff({ random: () => 0.5 }, 3, client));
    await vi.advanceTimersByTimeAsync(10);
    client.leave();
    await vi.advanceTimersByTimeAsync(0);
    expect(waiting.done).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });
});

/** A server stub with one open response, and what the drain asked of it. */
function openResponse() {
  const server = { closeIdleConnections: vi.fn(), closeAllConnections: vi.fn() };
  const res = Object.assign(new EventEmitter(), { headersSent: false, setHeader: vi.fn() });
  const req = { socket: new EventEmitter() };
  const drain = new Drain(server as unknown as Server);
  drain.track(req as unknown as IncomingMessage, res as unknown as ServerResponse);
  return { server, res, drain };
}

describe('drain', () => {
  it('gives up exactly at its deadline', async () => {
    const { drain } = openResponse();
    const result = drain.wait(1000);
    let value: boolean | undefined;
    void result.then((v) => {
      value = v;
    });
    await vi.advanceTimersByTimeAsync(999);
    expect(value).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(value).toBe(false);
  });

  it('ends as soon as the last response is done', async () => {
    const { drain, res } = openResponse();
    const result = drain.wait(1000);
    await vi.advanceTimersByTimeAsync(300);
    res.emit('close');
    expect(await result).toBe(true);
    expect(drain.size).toBe(0);
  });
});

describe('shutdown', () => {
  function parts() {
    const { drain, server } = openResponse();
    const closed = () => Promise.resolve();
    const scheduler = { close: vi.fn(), held: 1 };
    const upstream = { close: vi.fn(closed), destroy: vi.fn(closed) };
    return {
      server,
      scheduler,
      upstream,
      run: shutdown({
        proxy: { close: closed } as unknown as FastifyInstance,
        admin: { close: closed } as unknown as FastifyInstance,
        drain,
        scheduler: scheduler as unknown as Scheduler,
        upstream: upstream as unknown as Upstream,
        store: { close: closed } as unknown as LimiterStore,
        metrics: createMetrics(),
        log: pino({ level: 'silent' }),
        timeoutMs: 10_000,
        stoppables: [],
      }),
    };
  }

  it('answers what is still held exactly at SHUTDOWN_TIMEOUT_MS, then cuts what is still open after the grace', async () => {
    const { scheduler, upstream, server, run } = parts();
    const finished = watch(run);
    await vi.advanceTimersByTimeAsync(9_999);
    expect(scheduler.close).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(scheduler.close).toHaveBeenCalledTimes(1);
    // The deadline passed with a request still open: calls still waiting on Discord are cut, not awaited.
    expect(upstream.destroy).toHaveBeenCalledTimes(1);
    expect(upstream.close).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(FLUSH_GRACE_MS - 1);
    expect(server.closeAllConnections).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(server.closeAllConnections).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(0);
    expect(finished.done).toBe(true);
  });
});
