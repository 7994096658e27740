/**
 * The inspector on the admin port (never the public one): the live page at `/`, its data at `/state`, and one
 * token's own view at `/state/identity` for a bot developer who knows the token but not its hash.
 */
import { readFileSync } from 'node:fs';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Identity } from '../discord/types.js';
import { failure } from '../errors.js';
import { type Inspector, parseTop } from '../inspect/state.js';

// Read once at start-up: the page is static, and a missing file should fail the start, not the first visit.
const PAGE = readFileSync(new URL('../inspect/page.html', import.meta.url), 'utf8');

export interface InspectorRouteOptions {
  readonly inspector: Inspector;
  readonly identify: (authorization: string | undefined) => Identity;
}

export function registerInspector(app: FastifyInstance, opts: InspectorRouteOptions): void {
  const { inspector, identify } = opts;
  app.get('/', async (_request, reply) => {
    reply.header('content-type', 'text/html; charset=utf-8').header('cache-control', 'no-store');
    return PAGE;
  });
  app.get<{ Querystring: { top?: string } }>('/state', async (request, reply) => {
    const top = parseTop(request.query.top);
    if (top === undefined) return badRequest(reply, 'top must be a whole number (1-200).');
    reply.header('cache-control', 'no-store');
    return inspector.state(top);
  });
  app.get<{ Querystring: { top?: string } }>('/state/identity', async (request, reply) => {
    const top = parseTop(request.query.top);
    if (top === undefined) return badRequest(reply, 'top must be a whole number (1-200).');
    const authorization = request.headers.authorization;
    if (authorization === undefined || authorization.trim() === '') {
      return badRequest(reply, 'Send the token to look up in the Authorization header, as for Discord.');
    }
    reply.header('cache-control', 'no-store');
    return inspector.identity(identify(authorization), top);
  });
}

function badRequest(reply: FastifyReply, message: string) {
  const answer = failure('bad_query', undefined, message);
  return reply.code(answer.status).headers(answer.headers).send(answer.body);
}
