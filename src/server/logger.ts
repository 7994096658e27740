/**
 * The process's logger, and the view of it Fastify gets. Both are built here so that production and tests log
 * the same way and no line Fastify writes carries a raw URL (webhook and interaction tokens live in paths).
 */
import type { FastifyBaseLogger, FastifyRequest } from 'fastify';
import { type Logger, pino } from 'pino';
import type { Config } from '../config.js';

/** `write`: where lines go instead of stdout (tests collect them). */
export function createLogger(config: Config, write?: (line: string) => void): Logger {
  const options = {
    level: config.logLevel,
    // Belt and braces: nothing logs headers, but if anything ever does, tokens are not in it.
    redact: { paths: ['*.authorization', '*.headers.authorization', 'authorization'], censor: '[redacted]' },
  };
  return write ? pino(options, { write }) : pino(options);
}

/**
 * Fastify's own error lines carry `req` with its raw URL, which holds webhook and interaction tokens; log the
 * route template instead (pino's child serializers win over the defaults Fastify adds). The cast only bridges
 * pino's generic parameters to Fastify's logger type.
 */
export function fastifyLogger(
  log: Logger,
  routeOf: (method: string | undefined, url: string | undefined) => string,
): FastifyBaseLogger {
  return log.child(
    {},
    {
      serializers: {
        req: (req: FastifyRequest) => ({ method: req.method, route: routeOf(req.method, req.url) }),
      },
    },
  ) as unknown as FastifyBaseLogger;
}
