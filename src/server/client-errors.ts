/**
 * Requests that never reach a route, refused in Discord's error shape like every other refusal: what Node's HTTP
 * parser gives up on, an Expect the proxy does not support, a target the router cannot decode. Also the Node
 * server's own limits (header size, timeouts), since those are what produce most of these refusals.
 */
import {
  createServer,
  type IncomingMessage,
  type RequestListener,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config.js';
import { failure, PARSER_FAILURES, type ProxyAnswer } from '../errors.js';
import { writeAnswer } from '../reply.js';
import type { EarlyAnswers } from './early-answers.js';

/**
 * The public server. Slow or oversized headers are a cheap way to hold sockets: Node drops them before Fastify
 * sees them. With a serverFactory Fastify applies none of its own timeouts, so they are all set here. Node only
 * looks for expired requests every connectionsCheckingInterval (30 s by default), which would stretch a 10 s
 * headers timeout to 40 s.
 */
export function publicServerFactory(config: Config, early: EarlyAnswers) {
  // Keep-alive sockets from bot workers are long-lived; a slow client must not hold one forever. Node counts this
  // until the whole request has arrived, and a large upload only streams once it leaves the hold.
  const requestTimeoutMs = Math.max(
    config.maxHoldMs + config.upstreamTimeoutMs + 5000,
    config.headersTimeoutMs,
  );
  return (handler: RequestListener): Server => {
    const server = createServer(
      {
        maxHeaderSize: config.maxHeaderBytes,
        headersTimeout: config.headersTimeoutMs,
        requestTimeout: requestTimeoutMs,
        connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(config.headersTimeoutMs / 4))),
        // Host is refused in request-checks.ts, with an answer in Discord's shape instead of Node's bare 400.
        requireHostHeader: false,
      },
      handler,
    );
    server.keepAliveTimeout = config.keepAliveTimeoutMs;
    // Node's own answer to an unknown Expect is a bare 417; give it the same shape as every other refusal.
    server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
      const answer = failure('expectation_failed');
      early.count(req.method, req.url, answer);
      res.shouldKeepAlive = false;
      writeAnswer(res, answer);
    });
    return server;
  };
}

/**
 * What Node's HTTP parser refuses (malformed request lines and headers, oversized or slow headers) never reaches a
 * route: answer it in Discord's error shape too, then close the connection.
 */
export function clientErrorHandler(early: EarlyAnswers) {
  return (error: Error & { code?: string }, socket: Socket): void => {
    if (error.code === 'ECONNRESET' || socket.destroyed) return;
    // A request whose answer is still due owns the socket: anything written now would be read as that answer
    // (a pipelined request after a complete one broke the parser). The connection just closes then.
    const pending = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
    const owned = pending && (pending.headersSent || pending.req?.complete === true);
    if (socket.writable && !owned) {
      const answer = failure((error.code && PARSER_FAILURES[error.code]) || 'malformed');
      early.count(undefined, undefined, answer);
      socket.write(rawAnswer(answer));
    }
    socket.destroy(error);
  };
}

/** Targets the router cannot even decode (bad percent-encoding) get the proxy's 400, not Fastify's. */
export function frameworkErrors(early: EarlyAnswers) {
  return (error: FastifyError, request: FastifyRequest, reply: FastifyReply): void => {
    const answer =
      error.code === 'FST_ERR_BAD_URL'
        ? failure('bad_target', undefined, 'Refused request target (bad-encoding).')
        : failure('bad_target');
    early.count(request.raw.method, undefined, answer);
    reply.hijack();
    writeAnswer(reply.raw, answer);
  };
}

/** An answer written straight to a socket that has no usable HTTP response (the parser gave up on it). */
function rawAnswer(answer: ProxyAnswer): string {
  const payload = JSON.stringify(answer.body);
  const headers = Object.entries(answer.headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('');
  return (
    `HTTP/1.1 ${answer.status} ${STATUS_CODES[answer.status] ?? ''}\r\n${headers}` +
    `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(payload)}\r\nconnection: close\r\n\r\n${payload}`
  );
}
