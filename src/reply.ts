/**
 * reply: the last step of every request. Writes Discord's status, headers and body (streamed) or the proxy's own
 * answer, adds the diagnostic headers, and logs and counts the request, all from its record (request.ts).
 */
import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { failure, type ProxyAnswer } from './errors.js';
import type { Metrics } from './metrics.js';
import type { Outcome, ProxyRequest } from './request.js';

export interface ReplyContext {
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly requestLogLevel: string;
  /** PROXY_DIAGNOSTIC_HEADERS: X-Proxy-Hold-Ms, -Upstream-Ms, -Retries and -Bucket on every answer. */
  readonly diagnosticHeaders: boolean;
}

const DROP_RESPONSE_HEADERS = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
]);

let requestCounter = 0;

/** Answers the client with the outcome; a failure on the way is a bug, answered by failed(). */
export function reply(ctx: ReplyContext, req: ProxyRequest, outcome: Outcome): void {
  try {
    respond(ctx, req, outcome);
  } catch (error) {
    failed(ctx, req, error);
  }
}

function respond(ctx: ReplyContext, req: ProxyRequest, outcome: Outcome): void {
  if (req.limited?.exceeded) {
    answer(ctx, req, failure('body_too_large'));
    return;
  }
  if (outcome.kind === 'aborted') {
    ctx.log.debug({ route: req.template }, 'client went away');
    req.trace?.end({
      status: undefined,
      retries: req.retries,
      holdMs: req.holdMs,
      upstreamMs: req.upstreamMs,
    });
    return;
  }
  if (outcome.kind === 'generated') {
    answer(ctx, req, outcome.answer);
    return;
  }
  const res = req.res;
  const headers = responseHeaders(outcome.headers);
  if (ctx.diagnosticHeaders) Object.assign(headers, diagnosticHeaders(req));
  res.writeHead(outcome.status, headers);
  const done = () => logAndCount(ctx, req, outcome.status);
  if (Buffer.isBuffer(outcome.body)) res.end(outcome.body, done);
  else relayBody(outcome.body, res, done, ctx.log);
}

/** The proxy's own answer to the request (errors.ts), counted as generated. */
export function answer(ctx: ReplyContext, req: ProxyRequest, proxyAnswer: ProxyAnswer): void {
  ctx.metrics.generated.inc({ reason: proxyAnswer.reason });
  writeAnswer(req.res, proxyAnswer, ctx.diagnosticHeaders ? diagnosticHeaders(req) : undefined);
  logAndCount(ctx, req, proxyAnswer.status, proxyAnswer.reason);
}

/**
 * A bug, not a refusal: the log says what broke, and the client gets an answer in Discord's shape, or a closed
 * connection if part of Discord's answer was already on its way (a second answer would corrupt it).
 */
export function failed(ctx: ReplyContext, req: ProxyRequest, error: unknown): void {
  const res = req.res;
  req.trace?.fail(error);
  try {
    ctx.log.error({ err: error, route: req.template }, 'request failed inside the proxy');
    if (res.headersSent) res.destroy();
    else answer(ctx, req, failure('internal'));
  } catch {
    // Nothing left to answer with; the connection at least must not hang.
    res.destroy();
  }
}

export function writeAnswer(
  res: ServerResponse,
  proxyAnswer: ProxyAnswer,
  extraHeaders?: Record<string, string>,
): void {
  if (res.headersSent || res.destroyed) return;
  const payload = JSON.stringify(proxyAnswer.body);
  res.writeHead(proxyAnswer.status, {
    ...proxyAnswer.headers,
    ...extraHeaders,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
  });
  res.end(payload);
}

/**
 * Streams Discord's body to the client. stream.pipeline() would do it, but it builds and aborts an
 * AbortController per call, a measurable share of the proxy's CPU on small answers.
 */
function relayBody(body: Readable, res: ServerResponse, done: () => void, log: Logger): void {
  let settled = false;
  const settle = (error?: Error) => {
    if (settled) return;
    settled = true;
    if (error) {
      log.debug({ err: error.message }, 'response stream ended early');
      body.destroy();
      res.destroy();
    }
    done();
  };
  body.once('error', settle);
  res.once('close', () => settle(res.writableFinished ? undefined : new Error('client went away')));
  body.pipe(res);
}

/**
 * The per-request diagnostics: time held, time waiting on Discord, times sent again, and the bucket as the store
 * keys it (route key and major parameter; webhook tokens are already hashed in the major, so no token).
 */
function diagnosticHeaders(req: ProxyRequest): Record<string, string> {
  const route = req.route;
  return {
    'x-proxy-hold-ms': String(Math.round(req.holdMs)),
    'x-proxy-upstream-ms': String(Math.round(req.upstreamMs)),
    'x-proxy-retries': String(req.retries),
    'x-proxy-bucket': route ? `${route.routeKey} ${route.major}` : '-',
  };
}

function logAndCount(ctx: ReplyContext, req: ProxyRequest, status: number, generated?: string): void {
  const seconds = (performance.now() - req.startedAt) / 1000;
  req.trace?.end({ status, generated, retries: req.retries, holdMs: req.holdMs, upstreamMs: req.upstreamMs });
  const labels = { method: req.method, route: req.template, status: String(status) };
  ctx.metrics.requests.inc(labels);
  ctx.metrics.duration.observe(labels, seconds);
  const level = ctx.requestLogLevel as 'info';
  if (ctx.log.isLevelEnabled(level)) {
    requestCounter = (requestCounter + 1) % Number.MAX_SAFE_INTEGER;
    ctx.log[level](
      {
        reqId: requestCounter.toString(36),
        method: req.method,
        route: req.template,
        status,
        holdMs: Math.round(req.holdMs),
        upstreamMs: Math.round(req.upstreamMs),
        totalMs: Math.round(seconds * 1000),
        ...(generated ? { generated } : {}),
      },
      'request',
    );
  }
}

function responseHeaders(
  headers: Record<string, string | string[] | undefined>,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const name in headers) {
    const value = headers[name];
    if (value !== undefined && !DROP_RESPONSE_HEADERS.has(name)) out[name] = value;
  }
  return out;
}
