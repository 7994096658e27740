/**
 * The public side: Discord-shaped requests in, Discord's answers (or the proxy's own) out.
 *
 * The handler takes the raw socket streams over from Fastify (hijack): bodies are forwarded as the bytes that
 * arrived and answers are written as the bytes Discord sent, without Fastify's serialisation in between.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { type Readable, Transform } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { ClientLink } from '../client-link.js';
import { classify, normalizeApiPath, sublimitTag } from '../discord/classify.js';
import type { Identity, RouteInfo } from '../discord/types.js';
import { answers, type ProxyAnswer } from '../errors.js';
import type { HeldBodies } from '../held-bodies.js';
import type { Metrics } from '../metrics.js';
import {
  headerValue,
  type Outgoing,
  type RelayClient,
  type RelayContext,
  type RelayOutcome,
  relay,
} from '../relay.js';
import { ALLOWED_METHODS, checkTarget, type TargetProblem } from '../security.js';
import type { RequestTrace, RequestTracer } from '../tracing/types.js';

export interface ProxyRouteOptions {
  readonly relay: RelayContext;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly requestLogLevel: string;
  readonly identify: (authorization: string | undefined) => Identity;
  readonly tokenHash: (value: string) => string;
  readonly globalLimitFor: (identity: Identity) => number;
  readonly maxHoldMs: number;
  readonly bodyLimitBytes: number;
  readonly retryBodyLimitBytes: number;
  readonly heldBodies: HeldBodies;
  /** Set when PROXY_AUTH_TOKEN is: checks a client's Proxy-Authorization header in constant time. */
  readonly proxyAuth?: ((presented: string | undefined) => boolean) | undefined;
  /** PROXY_DIAGNOSTIC_HEADERS: X-Proxy-Hold-Ms, -Upstream-Ms, -Retries and -Bucket on every answer. */
  readonly diagnosticHeaders?: boolean;
  /** Set while tracing is on (OTLP endpoint configured): one trace per classified request. */
  readonly tracer?: RequestTracer | undefined;
}

/** A client may ask to be held for less than the configured maximum (never more). */
export const MAX_HOLD_HEADER = 'x-proxy-max-hold-ms';

// Hop-by-hop headers (RFC 9110 §7.6.1) and what only concerns the client↔proxy connection never go upstream.
const DROP_REQUEST_HEADERS = new Set([
  'host',
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
  MAX_HOLD_HEADER,
]);
const DROP_RESPONSE_HEADERS = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
]);

let requestCounter = 0;

export function registerProxy(app: FastifyInstance, opts: ProxyRouteOptions): void {
  // Bodies are not parsed: they are forwarded byte for byte from the raw request stream.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, _payload, done) => done(null, undefined));
  app.all('/api/*', (request, reply) => handle(opts, request, reply));
  app.setNotFoundHandler((request, reply) => {
    reply.hijack();
    const problem = checkTarget(request.raw.url ?? '');
    const answer = problem && problem !== 'not-api' ? targetAnswer(problem) : answers.notFound();
    finish(opts, reply.raw, request.raw.method ?? '-', '-', performance.now(), answer);
  });
}

function targetAnswer(problem: TargetProblem): ProxyAnswer {
  return problem === 'not-api'
    ? answers.notFound()
    : answers.badRequest(`Refused request target (${problem}).`);
}

/**
 * Not async on purpose: nothing here waits in a suspended frame. A held request is kept alive by one Hold object
 * the scheduler calls back (see relay.ts), and Fastify gets no promise to track for a hijacked reply.
 */
function handle(opts: ProxyRouteOptions, request: FastifyRequest, reply: FastifyReply): void {
  reply.hijack();
  const startedAt = performance.now();
  const res = reply.raw;
  try {
    accept(opts, request.raw, res, startedAt);
  } catch (error) {
    failed(opts, res, request.raw.method ?? '-', '-', startedAt, error);
  }
}

function accept(opts: ProxyRouteOptions, req: IncomingMessage, res: ServerResponse, startedAt: number) {
  const method = req.method ?? 'GET';
  const url = req.url ?? '/';
  // Nothing but Discord's methods, paths under /api/ and unambiguous targets ever reaches UPSTREAM_URL.
  if (!ALLOWED_METHODS.has(method))
    return finish(opts, res, method, '-', startedAt, answers.methodNotAllowed());
  const problem = checkTarget(url);
  if (problem) return finish(opts, res, method, '-', startedAt, targetAnswer(problem));
  if (opts.proxyAuth && !opts.proxyAuth(headerValue(req.headers['proxy-authorization']))) {
    return finish(opts, res, method, '-', startedAt, answers.unauthorized());
  }
  const queryAt = url.indexOf('?');
  const path = normalizeApiPath(queryAt === -1 ? url : url.slice(0, queryAt));
  if (path === null) return finish(opts, res, method, '-', startedAt, answers.notFound());

  const route = classify(method, path, Date.now(), opts.tokenHash);
  const headers = forwardHeaders(req.rawHeaders);
  if (headers === null) {
    // Which one would Discord read? Neither is charged nor forwarded.
    const answer = answers.badRequest('More than one Authorization header.');
    return finish(opts, res, method, route.template, startedAt, answer);
  }
  const declared =
    req.headers['content-length'] === undefined ? undefined : Number(req.headers['content-length']);
  if (declared !== undefined && (!Number.isSafeInteger(declared) || declared > opts.bodyLimitBytes)) {
    return finish(
      opts,
      res,
      method,
      route.template,
      startedAt,
      answers.badRequest('Request body too large.'),
      413,
      undefined,
      { retries: 0, route },
    );
  }
  // A chunked body declares no length: count it as it streams, and stop it at BODY_LIMIT_BYTES.
  const buffered = declared !== undefined && declared > 0;
  const limited =
    !buffered && req.headers['transfer-encoding'] !== undefined
      ? limitBody(req, opts.bodyLimitBytes)
      : undefined;
  const client = new ProxyClient(opts, res, method, route.template, startedAt, limited);
  client.route = route;
  client.trace = opts.tracer?.start(req.headers, method, route, startedAt);
  if (buffered) {
    // Small bodies are kept so that a 429 can be retried for the client; large uploads, and any body once the
    // held bodies reach their byte bound, wait in the client's socket and stream through once.
    if (declared > opts.retryBodyLimitBytes || !opts.heldBodies.take(declared, res)) {
      return forward(opts, req, url, route, headers, client, req);
    }
    readBody(req, declared).then((body) => {
      // undefined: the client went away while sending its body.
      if (body === undefined) return;
      try {
        forward(opts, req, url, route, headers, client, body);
      } catch (error) {
        client.fail(error);
      }
    });
    return;
  }
  forward(opts, req, url, route, headers, client, limited ? limited.stream : null);
}

function forward(
  opts: ProxyRouteOptions,
  req: IncomingMessage,
  url: string,
  route: ReturnType<typeof classify>,
  headers: string[],
  client: ProxyClient,
  body: Buffer | Readable | null,
): void {
  const { method, startedAt } = client;
  const identity = opts.identify(headerValue(req.headers.authorization));
  const requested = Number(req.headers[MAX_HOLD_HEADER]);
  const maxHold = requested > 0 ? Math.min(requested, opts.maxHoldMs) : opts.maxHoldMs;
  const out: Outgoing = {
    method,
    url,
    headers,
    body,
    template: route.template,
    authorized: identity.kind !== 'none',
    webhookWithToken: route.webhookWithToken,
    client,
    deadline: startedAt + maxHold,
    admit: {
      identity: identity.key,
      routeKey: route.routeKey,
      major: route.major,
      target: route.target,
      globalLimit: route.exempt ? 0 : opts.globalLimitFor(identity),
      sublimit: sublimitTag(
        route.routeKey,
        Buffer.isBuffer(body) ? body : undefined,
        headerValue(req.headers['content-type']),
      ),
    },
  };
  relay(opts.relay, out);
}

/** One forwarded request from the client's side: the relay tells it the outcome, and it answers. */
class ProxyClient extends ClientLink implements RelayClient {
  retries = 0;
  /** The classified route, for X-Proxy-Bucket. */
  route: Pick<RouteInfo, 'routeKey' | 'major'> | undefined = undefined;
  trace: RequestTrace | undefined = undefined;

  constructor(
    private readonly opts: ProxyRouteOptions,
    private readonly res: ServerResponse,
    readonly method: string,
    private readonly template: string,
    readonly startedAt: number,
    private readonly limited: ReturnType<typeof limitBody> | undefined,
  ) {
    super();
    res.on('close', () => {
      if (!res.writableFinished) this.leave();
    });
  }

  settle(outcome: RelayOutcome): void {
    try {
      this.respond(outcome);
    } catch (error) {
      this.fail(error);
    }
    this.trace?.end(outcome, this.retries);
  }

  fail(error: unknown): void {
    this.trace?.fail(error);
    failed(this.opts, this.res, this.method, this.template, this.startedAt, error);
  }

  private respond(outcome: RelayOutcome) {
    const { opts, res, method, template, startedAt } = this;
    if (this.limited?.exceeded) {
      const answer = answers.badRequest('Request body too large.');
      return finish(opts, res, method, template, startedAt, answer, 413, outcome, this);
    }
    if (outcome.kind === 'aborted') {
      opts.log.debug({ route: template }, 'client went away');
      return;
    }
    if (outcome.kind === 'generated') {
      return finish(opts, res, method, template, startedAt, outcome.answer, undefined, outcome, this);
    }
    const headers = responseHeaders(outcome.headers);
    if (opts.diagnosticHeaders) Object.assign(headers, diagnosticHeaders(outcome, this));
    res.writeHead(outcome.status, headers);
    const done = () => logAndCount(opts, method, template, outcome.status, startedAt, outcome);
    if (Buffer.isBuffer(outcome.body)) res.end(outcome.body, done);
    else relayBody(outcome.body, res, done, opts.log);
  }
}

/**
 * A bug, not a refusal: the log says what broke, and the client gets an answer in Discord's shape, or a closed
 * connection if part of Discord's answer was already on its way (a second answer would corrupt it).
 */
function failed(
  opts: ProxyRouteOptions,
  res: ServerResponse,
  method: string,
  template: string,
  startedAt: number,
  error: unknown,
): void {
  try {
    opts.log.error({ err: error, route: template }, 'request failed inside the proxy');
    if (res.headersSent) res.destroy();
    else finish(opts, res, method, template, startedAt, answers.internal());
  } catch {
    // Nothing left to answer with; the connection at least must not hang.
    res.destroy();
  }
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

function finish(
  opts: ProxyRouteOptions,
  res: ServerResponse,
  method: string,
  template: string,
  startedAt: number,
  answer: ProxyAnswer,
  status = answer.status,
  timing: { holdMs: number; upstreamMs: number } = { holdMs: 0, upstreamMs: 0 },
  diagnosed: Diagnosed = UNCLASSIFIED,
): void {
  opts.metrics.generated.inc({ reason: answer.reason });
  writeAnswer(res, answer, status, opts.diagnosticHeaders ? diagnosticHeaders(timing, diagnosed) : undefined);
  logAndCount(opts, method, template, status, startedAt, timing, answer.reason);
}

export function writeAnswer(
  res: ServerResponse,
  answer: ProxyAnswer,
  status = answer.status,
  extraHeaders?: Record<string, string>,
): void {
  if (res.headersSent || res.destroyed) return;
  const payload = JSON.stringify(answer.body);
  res.writeHead(status, {
    ...answer.headers,
    ...extraHeaders,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(payload),
  });
  res.end(payload);
}

/** What X-Proxy-Retries and X-Proxy-Bucket say about one request. */
interface Diagnosed {
  readonly retries?: number | undefined;
  readonly route: Pick<RouteInfo, 'routeKey' | 'major'> | undefined;
}

const UNCLASSIFIED: Diagnosed = { retries: 0, route: undefined };

/**
 * The per-request diagnostics: time held, time waiting on Discord, times sent again, and the bucket as the store
 * keys it (route key and major parameter; webhook tokens are already hashed in the major, so no token).
 */
function diagnosticHeaders(
  timing: { holdMs: number; upstreamMs: number },
  diagnosed: Diagnosed,
): Record<string, string> {
  const route = diagnosed.route;
  return {
    'x-proxy-hold-ms': String(Math.round(timing.holdMs)),
    'x-proxy-upstream-ms': String(Math.round(timing.upstreamMs)),
    'x-proxy-retries': String(diagnosed.retries ?? 0),
    'x-proxy-bucket': route ? `${route.routeKey} ${route.major}` : '-',
  };
}

function logAndCount(
  opts: ProxyRouteOptions,
  method: string,
  route: string,
  status: number,
  startedAt: number,
  timing: { holdMs: number; upstreamMs: number },
  generated?: string,
): void {
  const seconds = (performance.now() - startedAt) / 1000;
  const labels = { method, route, status: String(status) };
  opts.metrics.requests.inc(labels);
  opts.metrics.duration.observe(labels, seconds);
  const level = opts.requestLogLevel as 'info';
  if (opts.log.isLevelEnabled(level)) {
    requestCounter = (requestCounter + 1) % Number.MAX_SAFE_INTEGER;
    opts.log[level](
      {
        reqId: requestCounter.toString(36),
        method,
        route,
        status,
        holdMs: Math.round(timing.holdMs),
        upstreamMs: Math.round(timing.upstreamMs),
        totalMs: Math.round(seconds * 1000),
        ...(generated ? { generated } : {}),
      },
      'request',
    );
  }
}

/** The headers to send upstream, or null when the request carries more than one Authorization header. */
function forwardHeaders(raw: string[]): string[] | null {
  // Headers the client names in Connection are hop-by-hop too (RFC 9110 §7.6.1), whatever they are called.
  let named: Set<string> | undefined;
  let kept = 0;
  let authorizations = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const lower = raw[i]!.toLowerCase();
    if (!DROP_REQUEST_HEADERS.has(lower)) kept += 2;
    // Node keeps only the first in req.headers; the identity would be charged for one and Discord read another.
    if (lower === 'authorization' && ++authorizations > 1) return null;
    if (lower !== 'connection') continue;
    named ??= new Set();
    for (const option of raw[i + 1]!.split(',')) named.add(option.trim().toLowerCase());
  }
  // Sized up front: grown by push, a short list gets room for a dozen more entries, kept for as long as the
  // request is held.
  const out = new Array<string>(kept);
  let n = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (DROP_REQUEST_HEADERS.has(lower) || named?.has(lower)) continue;
    out[n++] = name;
    out[n++] = raw[i + 1]!;
  }
  out.length = n;
  return out;
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

/** Passes a body through while counting it; past `limit` bytes the stream fails and `exceeded` is set. */
function limitBody(req: IncomingMessage, limit: number): { stream: Readable; readonly exceeded: boolean } {
  let seen = 0;
  const state = { exceeded: false, stream: undefined as unknown as Readable };
  state.stream = req.pipe(
    new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        seen += chunk.length;
        if (seen > limit) {
          state.exceeded = true;
          req.unpipe();
          req.resume();
          return callback(new Error('request body too large'));
        }
        callback(null, chunk);
      },
    }),
  );
  req.once('error', (error) => state.stream.destroy(error));
  return state;
}

/** Reads a body of known length; resolves undefined if the client disconnects before sending all of it. */
function readBody(req: IncomingMessage, length: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let received = 0;
    req.on('data', (chunk: Buffer) => {
      received += chunk.length;
      chunks.push(chunk);
    });
    req.once('end', () => resolve(received === length ? Buffer.concat(chunks, received) : undefined));
    req.once('error', () => resolve(undefined));
    req.once('aborted', () => resolve(undefined));
  });
}
