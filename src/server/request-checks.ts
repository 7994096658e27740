/**
 * The first look at every request on the public port, before the proxy's route: requests arriving while the replica
 * shuts down, and HTTP versions and Host headers no Discord client sends. Every response is tracked for the drain.
 */
import type { FastifyReply, onRequestHookHandler } from 'fastify';
import type { Logger } from 'pino';
import { failure, type ProxyAnswer } from '../errors.js';
import type { Drain } from './drain.js';
import type { EarlyAnswers } from './early-answers.js';

export interface RequestChecks {
  readonly drain: Drain;
  readonly early: EarlyAnswers;
  readonly log: Logger;
  readonly requestLogLevel: string;
  /** True once shutdown has begun. */
  readonly stopping: () => boolean;
}

export function requestChecks(checks: RequestChecks): onRequestHookHandler {
  const { drain, early, log } = checks;
  return (request, reply, done) => {
    drain.track(request.raw, reply.raw);
    if (checks.stopping()) {
      // The proxy's own 503, which client libraries tell apart by its header, instead of Fastify's generic one.
      const answer = failure('shutting_down');
      const route = early.count(request.raw.method, request.raw.url, answer);
      const level = checks.requestLogLevel as 'info';
      log[level](
        { reqId: request.id, method: request.method, route, status: answer.status, holdMs: 0, upstreamMs: 0 },
        'request refused: shutting down',
      );
      return send(reply, answer);
    }
    // RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400 (Host itself is never forwarded). Node's
    // parser takes a request line without a version for HTTP/0.9, which no Discord client speaks.
    const version = request.raw.httpVersion;
    const problem =
      version !== '1.1' && version !== '1.0'
        ? 'bad_http_version'
        : version === '1.1' && request.raw.headers.host === undefined
          ? 'missing_host'
          : undefined;
    if (problem) {
      const answer = failure(problem);
      early.count(request.raw.method, request.raw.url, answer);
      return send(reply, answer);
    }
    done();
  };
}

function send(reply: FastifyReply, answer: ProxyAnswer): void {
  reply
    .code(answer.status)
    .headers({ ...answer.headers, connection: 'close', 'content-type': 'application/json' })
    .send(JSON.stringify(answer.body));
}
