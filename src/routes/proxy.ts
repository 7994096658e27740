/**
 * The public side, and the one place a request's path reads top to bottom, in the README's order:
 *
 *   receive   handle(), receive() here: the target and method checks of security.ts, the proxy secret, headers
 *   identify  Parts.identify, discord/identity.ts: the Authorization value → the identity whose limits apply
 *   classify  classify(), discord/classify.ts: route key, major parameter, exempt or not; then the body is read
 *   admit     admit(), relay.ts → Scheduler.wait(): the record is held until the scheduler calls it back
 *   forward   forward(), relay.ts → Upstream.send(); retries go back through admit
 *   learn     learn(), on429(), knownBad(), learn.ts: each answer ends its admission in the store
 *   reply     reply(), reply.ts: Discord's answer or the proxy's own, logged and counted
 *
 * Each request is one record (request.ts) that every step reads and fills in. The handler takes the raw socket
 * streams over from Fastify (hijack): bodies are forwarded as the bytes that arrived and answers are written as the
 * bytes Discord sent, without Fastify's serialisation in between.
 */
import type { IncomingMessage } from 'node:http';
import { type Readable, Transform } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { classify, normalizeApiPath, sublimitTag } from '../discord/classify.js';
import type { Identity } from '../discord/types.js';
import { type FailureKind, failure } from '../errors.js';
import type { HeldBodies } from '../held-bodies.js';
import { admit, admitted, headerValue, type RelayContext, refused } from '../relay.js';
import { answer, failed, type ReplyContext, reply } from '../reply.js';
import { type LimitedBody, ProxyRequest, type RequestSteps } from '../request.js';
import { ALLOWED_METHODS, checkTarget } from '../security.js';
import type { RequestTracer } from '../tracing/types.js';

export interface ProxyRouteOptions {
  readonly relay: RelayContext;
  readonly reply: ReplyContext;
  readonly identify: (authorization: string | undefined) => Identity;
  readonly tokenHash: (value: string) => string;
  readonly globalLimitFor: (identity: Identity) => number;
  readonly maxHoldMs: number;
  readonly bodyLimitBytes: number;
  readonly retryBodyLimitBytes: number;
  readonly heldBodies: HeldBodies;
  /** Set when PROXY_AUTH_TOKEN is: checks a client's Proxy-Authorization header in constant time. */
  readonly proxyAuth?: ((presented: string | undefined) => boolean) | undefined;
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

export function registerProxy(app: FastifyInstance, opts: ProxyRouteOptions): void {
  // The steps after admission, one object for every request: no closure per request.
  const steps: RequestSteps = {
    admitted: (req, admission) => admitted(opts.relay, req, admission),
    refused: (req, error) => refused(opts.relay, req, error),
    reply: (req, outcome) => reply(opts.reply, req, outcome),
    fail: (req, error) => failed(opts.reply, req, error),
  };
  // Bodies are not parsed: they are forwarded byte for byte from the raw request stream.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, _payload, done) => done(null, undefined));
  app.all('/api/*', (request, reply) => handle(opts, steps, request, reply));
  app.setNotFoundHandler((request, fastifyReply) => {
    fastifyReply.hijack();
    const raw = request.raw;
    const req = new ProxyRequest(
      steps,
      fastifyReply.raw,
      raw.method ?? '-',
      raw.url ?? '',
      performance.now(),
    );
    const problem = checkTarget(req.url);
    const answered =
      problem && problem !== 'not-api'
        ? failure('bad_target', undefined, `Refused request target (${problem}).`)
        : failure('not_found');
    answer(opts.reply, req, answered);
  });
}

/**
 * One request, from receive to admit; the scheduler calls the record back for the rest. Not async on purpose:
 * nothing here waits in a suspended frame, and Fastify gets no promise to track for a hijacked reply.
 */
function handle(
  opts: ProxyRouteOptions,
  steps: RequestSteps,
  request: FastifyRequest,
  fastifyReply: FastifyReply,
) {
  fastifyReply.hijack();
  const raw = request.raw;
  // The request's record: created here, answered once by reply.ts.
  const req = new ProxyRequest(
    steps,
    fastifyReply.raw,
    raw.method ?? 'GET',
    raw.url ?? '/',
    performance.now(),
  );
  try {
    // receive
    const path = receive(opts, raw, req);
    if (path === undefined) return;
    // identify
    req.identity = opts.identify(headerValue(raw.headers.authorization));
    // classify
    const route = classify(req.method, path, Date.now(), opts.tokenHash);
    req.template = route.template;
    req.route = route;
    // From the route as classified, never the raw URL (a webhook's token is in its path).
    req.trace = opts.tracer?.start(raw.headers, req.method, route, req.startedAt);
    // receive, continued: the body, then admit (or the answer to a body that is too large)
    readBodyThenAdmit(opts, raw, req);
  } catch (error) {
    failed(opts.reply, req, error);
  }
}

/**
 * receive: refuses what is never forwarded (nothing but Discord's methods, paths under /api/ and unambiguous targets
 * ever reaches UPSTREAM_URL) and keeps the headers to forward. Returns the API path, or undefined once answered.
 */
function receive(opts: ProxyRouteOptions, raw: IncomingMessage, req: ProxyRequest): string | undefined {
  const { method, url } = req;
  if (!ALLOWED_METHODS.has(method)) return refuse(opts, req, 'method_not_allowed');
  const problem = checkTarget(url);
  if (problem) {
    return problem === 'not-api'
      ? refuse(opts, req, 'not_found')
      : refuse(opts, req, 'bad_target', `Refused request target (${problem}).`);
  }
  if (opts.proxyAuth && !opts.proxyAuth(headerValue(raw.headers['proxy-authorization']))) {
    return refuse(opts, req, 'proxy_unauthorized');
  }
  const queryAt = url.indexOf('?');
  const path = normalizeApiPath(queryAt === -1 ? url : url.slice(0, queryAt));
  if (path === null) return refuse(opts, req, 'not_found');
  const headers = forwardHeaders(raw.rawHeaders);
  if (headers === null) {
    // Which one would Discord read? Neither is charged nor forwarded: refused before it is identified, and
    // labelled with its route template like every other answer on an API path.
    req.template = classify(method, path, Date.now(), opts.tokenHash).template;
    return refuse(opts, req, 'two_authorizations');
  }
  req.headers = headers;
  return path;
}

function refuse(opts: ProxyRouteOptions, req: ProxyRequest, kind: FailureKind, message?: string): undefined {
  answer(opts.reply, req, failure(kind, undefined, message));
  return undefined;
}

/**
 * Reads a small body whole so that a 429 can be retried (large uploads, and any body once the held bodies reach
 * their byte bound, wait in the client's socket and stream through once), then admits the request.
 */
function readBodyThenAdmit(opts: ProxyRouteOptions, raw: IncomingMessage, req: ProxyRequest): void {
  const declared =
    raw.headers['content-length'] === undefined ? undefined : Number(raw.headers['content-length']);
  if (declared !== undefined && (!Number.isSafeInteger(declared) || declared > opts.bodyLimitBytes)) {
    answer(opts.reply, req, failure('body_too_large'));
    return;
  }
  // A chunked body declares no length: count it as it streams, and stop it at BODY_LIMIT_BYTES.
  const buffered = declared !== undefined && declared > 0;
  if (!buffered && raw.headers['transfer-encoding'] !== undefined) {
    req.limited = limitBody(raw, opts.bodyLimitBytes);
    req.body = req.limited.stream;
  }
  if (!buffered) {
    admitWith(opts, raw, req);
    return;
  }
  if (declared > opts.retryBodyLimitBytes || !opts.heldBodies.take(declared, req.res)) {
    req.body = raw;
    admitWith(opts, raw, req);
    return;
  }
  readBody(raw, declared).then((body) => {
    // undefined: the client went away while sending its body.
    if (body === undefined) return;
    try {
      req.body = body;
      admitWith(opts, raw, req);
    } catch (error) {
      failed(opts.reply, req, error);
    }
  });
}

/** Builds the admission input from what identify and classify found (and the body, for sublimits), then admits. */
function admitWith(opts: ProxyRouteOptions, raw: IncomingMessage, req: ProxyRequest): void {
  const identity = req.identity!;
  const route = req.route!;
  const requested = Number(raw.headers[MAX_HOLD_HEADER]);
  const maxHold = requested > 0 ? Math.min(requested, opts.maxHoldMs) : opts.maxHoldMs;
  req.deadline = req.startedAt + maxHold;
  req.admit = {
    identity: identity.key,
    routeKey: route.routeKey,
    major: route.major,
    target: route.target,
    globalLimit: route.exempt ? 0 : opts.globalLimitFor(identity),
    sublimit: sublimitTag(
      route.routeKey,
      Buffer.isBuffer(req.body) ? req.body : undefined,
      headerValue(raw.headers['content-type']),
    ),
  };
  // admit → forward → learn → reply: relay.ts, learn.ts and reply.ts, through the record's callbacks.
  admit(opts.relay, req);
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

/** Passes a body through while counting it; past `limit` bytes the stream fails and `exceeded` is set. */
function limitBody(req: IncomingMessage, limit: number): LimitedBody {
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
