/**
 * The admin side, on its own port so that metrics and health never leak to whoever can reach the public port.
 */
import type { FastifyInstance } from 'fastify';
import type { Metrics } from '../metrics.js';

export interface Readiness {
  /** Null when ready; otherwise why not, in a few words. */
  check(): Promise<string | null>;
}

export function registerAdmin(app: FastifyInstance, metrics: Metrics, readiness: Readiness): void {
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    const problem = await readiness.check();
    metrics.ready.set(problem === null ? 1 : 0);
    if (problem !== null) return reply.code(503).send({ status: 'not ready', reason: problem });
    return { status: 'ready' };
  });
  app.get('/metrics', async (_request, reply) => {
    await readiness.check().then((problem) => metrics.ready.set(problem === null ? 1 : 0));
    reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });
}
