/**
 * The graceful stop: refuse new connections and turn /readyz to 503 at once, let held and in-flight requests finish
 * until SHUTDOWN_TIMEOUT_MS, then answer the held ones with the proxy's 503, cut upstream calls that still hang, and
 * close the upstream pool and the store. Every step is bounded, so it never takes much longer than the timeout.
 */
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { type Clock, realClock } from '../limiter/clock.js';
import type { Scheduler } from '../limiter/scheduler.js';
import type { LimiterStore } from '../limiter/types.js';
import type { Metrics } from '../metrics.js';
import type { Upstream } from '../upstream.js';
import type { Drain } from './drain.js';

/** After the deadline: time for the 503s (and retries that end in one) to reach clients before sockets are cut. */
export const FLUSH_GRACE_MS = 1000;
/** A Redis that does not answer QUIT must not keep the process from exiting. */
export const STORE_CLOSE_MS = 1000;

export interface ShutdownParts {
  readonly proxy: FastifyInstance;
  readonly admin: FastifyInstance;
  readonly drain: Drain;
  readonly scheduler: Scheduler;
  readonly upstream: Upstream;
  readonly store: LimiterStore;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly timeoutMs: number;
  /** Parts with timers of their own (the budget's refresh, the inspector's), stopped once requests are done. */
  readonly stoppables: readonly { close(): void }[];
  /** The time the deadline is counted in; a parameter so that a test can assert it exactly. */
  readonly clock?: Clock;
}

export async function shutdown(parts: ShutdownParts): Promise<void> {
  const { proxy, admin, drain, scheduler, upstream, store, metrics, log, timeoutMs } = parts;
  const clock = parts.clock ?? realClock;
  metrics.ready.set(0);
  const deadline = clock.now() + timeoutMs;
  // No new connections from here on; the admin port stays up so the load balancer sees /readyz answer 503.
  const proxyClosed = proxy
    .close()
    .catch((error: unknown) => log.warn({ err: error }, 'public server close'));
  drain.begin();
  log.info({ open: drain.size, timeoutMs }, 'draining');
  const drained = await drain.wait(deadline - clock.now());
  if (!drained) {
    log.warn(
      { open: drain.size, held: scheduler.held },
      'shutdown deadline: answering held requests with 503 and cutting upstream calls',
    );
  }
  // Held requests get 503 shutting_down; destroying the pool fails the calls still waiting on Discord, which
  // relay answers itself (a retry it attempts meets the closed scheduler and becomes a 503 too).
  scheduler.close();
  for (const part of parts.stoppables) part.close();
  const upstreamClosed = drained ? upstream.close() : upstream.destroy();
  if (!(await drain.wait(FLUSH_GRACE_MS))) {
    log.warn({ open: drain.size }, 'closing connections that are still open');
    drain.cut();
  }
  await within(clock, proxyClosed, FLUSH_GRACE_MS);
  await within(
    clock,
    upstreamClosed.catch(() => undefined),
    FLUSH_GRACE_MS,
  );
  await within(
    clock,
    store.close().catch((error: unknown) => log.warn({ err: error }, 'could not close the store')),
    STORE_CLOSE_MS,
  );
  await within(
    clock,
    admin.close().catch((error: unknown) => log.warn({ err: error }, 'admin server close')),
    FLUSH_GRACE_MS,
  );
}

/** The promise's value, or undefined once `ms` has passed. */
function within<T>(clock: Clock, promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<Clock['setTimeout']> | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = clock.setTimeout(() => resolve(undefined), ms);
  });
  return Promise.race([promise, timeout]).finally(() => {
    if (timer !== undefined) clock.clearTimeout(timer);
  });
}
