/**
 * admit and forward, for one request: wait for admission, forward, and decide whether Discord's answer goes back to
 * the client or the request goes round again (learning from each answer is learn.ts's).
 *
 * What may go round again follows one rule: never send twice what Discord may have done once. A 429 means Discord
 * did nothing, and a failed connect means it never saw the request, so those are retried for every method; a
 * timeout, a broken connection or a 5xx may hide a completed request, so only idempotent methods are retried.
 *
 * The common case, a request that waits for its bucket, is held by its record (request.ts) alone, which the
 * scheduler calls back: not by promises and suspended async functions, which keep every local of the exchange alive
 * per held request (with ten thousand held, a large share of the replica's memory).
 */
import type { AbortSource } from './client-link.js';
import { classifyResponse, parseRateLimitHeaders, retryAfterMs } from './discord/headers.js';
import type { ResponseKind } from './discord/types.js';
import { failure, holdFailure, type ProxyAnswer, UPSTREAM_FAILURES } from './errors.js';
import { answerFacts, knownBad, type LearnContext, learn, on429 } from './learn.js';
import { type Clock, realClock } from './limiter/clock.js';
import type { Admission, HoldError } from './limiter/scheduler.js';
import { ABORTED, type Outcome, type ProxyRequest } from './request.js';
import { type Upstream, UpstreamError } from './upstream.js';

export interface RelayContext extends LearnContext {
  readonly upstream: Upstream;
  readonly maxRetries: number;
  readonly cloudflareCooldownMs: number;
  /** The time retries back off with; a parameter so that a test can assert the exact delays. */
  readonly clock?: Clock;
  /** 0 ≤ x < 1: where in its range a backoff falls (Math.random by default; a test can fix it). */
  readonly random?: () => number;
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS']);
const RETRY_BASE_MS = 100;

/**
 * admit: the hold starts. The request waits for the invalid-request budget (rarely: a promise only past its soft
 * line, for an identity this replica has not seen succeed), then for the scheduler, which calls the record back:
 * `admitted()` or `refused()` below. `front`: a retry, ahead of newer requests of its queue.
 */
export function admit(ctx: RelayContext, req: ProxyRequest, front = false): void {
  req.heldAt = performance.now();
  if (req.gone) {
    go(ctx, req, ABORTED);
    return;
  }
  const allowed = ctx.budget.allows(req.admit.identity);
  if (typeof allowed === 'boolean') hold(ctx, req, allowed, front);
  else
    allowed.then(
      (ok) => hold(ctx, req, ok, front),
      (error: unknown) => req.steps.fail(req, error),
    );
}

function hold(ctx: RelayContext, req: ProxyRequest, allowed: boolean, front: boolean): void {
  if (!allowed) {
    go(ctx, req, overBudget(ctx));
    return;
  }
  const maxHoldMs = Math.max(1, req.deadline - req.heldAt);
  ctx.scheduler.wait(req.admit, req, { client: req, maxHoldMs, front });
}

/** The hold ends with an admission: forward (or, for a retry, go on with the exchange). */
export function admitted(ctx: RelayContext, req: ProxyRequest, admission: Admission): void {
  const waited = performance.now() - req.heldAt;
  req.holdMs += waited;
  ctx.metrics.hold.observe({ route: req.template }, waited / 1000);
  req.trace?.held(req.heldAt, 'admitted');
  // Held requests were checked when they arrived; the budget may have filled while they waited.
  if (!ctx.budget.stillAllows(req.admit.identity)) {
    learn(ctx, req, admission, { unsent: true });
    go(ctx, req, overBudget(ctx));
  } else go(ctx, req, admission);
}

/** The hold ends with a refusal: the proxy's own answer (or nothing, for a client that left). */
export function refused(ctx: RelayContext, req: ProxyRequest, error: HoldError): void {
  req.holdMs += performance.now() - req.heldAt;
  req.trace?.held(req.heldAt, error.reason);
  if (error.reason === 'aborted') {
    go(ctx, req, ABORTED);
    return;
  }
  if (error.reason === 'known_bad') ctx.metrics.shortCircuits.inc({ reason: error.waitReason ?? 'unknown' });
  go(ctx, req, generated(holdFailure(error)));
}

/** Where a hold's end leads: the retry that waited for it, the exchange, or the reply. */
function go(ctx: RelayContext, req: ProxyRequest, held: Admission | Outcome): void {
  try {
    const next = req.next;
    if (next) {
      req.next = undefined;
      next(held);
    } else if ('kind' in held) req.steps.reply(req, held);
    else
      forward(ctx, req, held).then(
        (outcome) => req.steps.reply(req, outcome),
        (error: unknown) => req.steps.fail(req, error),
      );
  } catch (error) {
    // The scheduler calls waiters from its own loop: nothing may be thrown back into it.
    req.steps.fail(req, error);
  }
}

/** admit() for the exchange's later attempts, which are rare enough to wait in a promise. */
function holdAgain(ctx: RelayContext, req: ProxyRequest): Promise<Admission | Outcome> {
  return new Promise((resolve) => {
    req.next = resolve;
    admit(ctx, req, true);
  });
}

/**
 * forward: from the first admission on, send, learn (learn.ts), and go round again while the rules allow. Each
 * attempt starts at `sentAt` and ends when Discord's response headers arrive or the send fails.
 */
async function forward(ctx: RelayContext, req: ProxyRequest, first: Admission): Promise<Outcome> {
  const replayable = req.body === null || Buffer.isBuffer(req.body);
  const idempotent = IDEMPOTENT.has(req.method);
  let admission = first;
  for (let attempt = 0; ; attempt++) {
    if (attempt > 0) {
      req.retries = attempt;
      const held = await holdAgain(ctx, req);
      if ('kind' in held) return held;
      admission = held;
    }
    const canRetry = replayable && attempt < ctx.maxRetries;
    const sentAt = performance.now();

    let response: Awaited<ReturnType<Upstream['send']>>;
    try {
      response = await ctx.upstream.send({
        method: req.method,
        path: req.url,
        headers: req.headers,
        body: req.body,
        signal: req,
      });
    } catch (error) {
      req.upstreamMs += performance.now() - sentAt;
      req.trace?.attempt(attempt, sentAt, undefined, error);
      // A failed connect never reached Discord: its slots are free again at once.
      const unsent = error instanceof UpstreamError && error.kind === 'connect';
      learn(ctx, req, admission, { unsent });
      if (!(error instanceof UpstreamError)) throw error;
      if (error.kind === 'aborted') return ABORTED;
      ctx.metrics.upstreamErrors.inc({ kind: error.kind });
      if (canRetry && (error.kind === 'connect' || idempotent)) {
        ctx.metrics.retries.inc({ reason: error.kind });
        await backoff(ctx, attempt, req);
        continue;
      }
      return generated(failure(UPSTREAM_FAILURES[error.kind]));
    }
    const upstreamTime = performance.now() - sentAt;
    req.upstreamMs += upstreamTime;
    ctx.metrics.upstreamDuration.observe({ route: req.template }, upstreamTime / 1000);
    const status = response.statusCode;
    req.trace?.attempt(attempt, sentAt, status);
    const rl = parseRateLimitHeaders(response.headers);
    // Discord's own time on the request, which the request cannot have spent on its way there.
    const served = Math.min(rl.serviceMs ?? 0, upstreamTime);

    if (status === 401 || status === 403 || status === 404) {
      // Small JSON errors whose code says how narrowly they will repeat: read whole, then marked.
      learn(ctx, req, admission, answerFacts(rl, status, admission), served);
      const text = await readSmall(response.body, response.headers['content-length']);
      if (text !== undefined) {
        knownBad(ctx, req, status, errorCode(parseJson(text, headerValue(response.headers['content-type']))));
        return { kind: 'upstream', status, headers: response.headers, body: text };
      }
      knownBad(ctx, req, status, undefined);
      return { kind: 'upstream', status, headers: response.headers, body: response.body };
    }
    if (status !== 429) {
      learn(ctx, req, admission, answerFacts(rl, status, admission), served);
      if (status < 300) ctx.budget.answered(req.admit.identity, false);
      if (status >= 500 && canRetry && idempotent) {
        ctx.metrics.retries.inc({ reason: `status_${status}` });
        await response.body.dump().catch(() => undefined);
        await backoff(ctx, attempt, req);
        continue;
      }
      return { kind: 'upstream', status, headers: response.headers, body: response.body };
    }

    // A 429 body is small (JSON, or Cloudflare's HTML page): read it whole to tell which 429 this is.
    const text = Buffer.from(await response.body.arrayBuffer());
    const contentType = headerValue(response.headers['content-type']);
    const json = parseJson(text, contentType);
    const kind = classifyResponse(status, rl, contentType, json);
    const waitMs = retryAfterMs(rl, json);
    ctx.metrics.upstream429.inc({ scope: kind === 'route' ? 'user' : (kind as Exclude<ResponseKind, 'ok'>) });
    // Discord does not count shared-scope 429s against the IP (docs/discord-ratelimits.md §4).
    if (kind !== 'shared') ctx.budget.answered(req.admit.identity, true);
    if (kind === 'cloudflare') {
      learn(ctx, req, admission, {}, served);
      const pausedMs = await ctx.store.pauseAll(waitMs ?? ctx.cloudflareCooldownMs);
      ctx.log.error({ pausedMs }, 'Cloudflare ban from Discord: all upstream traffic paused');
      return generated(failure('cloudflare_cooldown', pausedMs));
    }
    await on429(ctx, req, admission, kind, rl, waitMs, served);
    const fits = performance.now() + (waitMs ?? 0) < req.deadline;
    if (canRetry && fits) {
      ctx.metrics.retries.inc({ reason: `429_${kind}` });
      continue;
    }
    return { kind: 'upstream', status, headers: response.headers, body: text };
  }
}

function generated(answer: ProxyAnswer): Outcome {
  return { kind: 'generated', answer };
}

function overBudget(ctx: RelayContext): Outcome {
  return generated(failure('invalid_budget', ctx.budget.retryAfterMs));
}

/** Discord's JSON error code, when the body has one. */
function errorCode(json: Record<string, unknown> | null): number | undefined {
  const code = json?.code;
  return typeof code === 'number' && Number.isInteger(code) ? code : undefined;
}

/** Error bodies are a few hundred bytes; one that says it is larger (or streams) is passed through unread. */
const SMALL_BODY_BYTES = 16 * 1024;

async function readSmall(
  body: { arrayBuffer(): Promise<ArrayBuffer> },
  length: string | string[] | undefined,
): Promise<Buffer | undefined> {
  const declared = Number(headerValue(length));
  if (!(declared >= 0 && declared <= SMALL_BODY_BYTES)) return undefined;
  return Buffer.from(await body.arrayBuffer());
}

/** The wait before attempt `attempt + 1`: exponential, jittered by half either way. */
export function backoffMs(attempt: number, random: () => number = Math.random): number {
  return RETRY_BASE_MS * 2 ** attempt * (0.5 + random());
}

/** Waits backoffMs(), or less if the client leaves meanwhile. */
export function backoff(
  ctx: Pick<RelayContext, 'clock' | 'random'>,
  attempt: number,
  client: AbortSource,
): Promise<void> {
  const clock = ctx.clock ?? realClock;
  const ms = backoffMs(attempt, ctx.random);
  return new Promise((resolve) => {
    if (client.aborted) return resolve();
    const stop = () => {
      clock.clearTimeout(timer);
      resolve();
    };
    const timer = clock.setTimeout(() => {
      client.removeListener('abort', stop);
      resolve();
    }, ms);
    client.once('abort', stop);
  });
}

export function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function parseJson(text: Buffer, contentType: string | undefined): Record<string, unknown> | null {
  if (!contentType?.includes('json')) return null;
  try {
    const parsed: unknown = JSON.parse(text.toString('utf8'));
    return typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
