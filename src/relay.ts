/**
 * One request's way through the proxy once it is classified: wait for admission, forward, learn from the answer,
 * and decide whether Discord's answer goes back to the client or the request goes round again.
 *
 * What may go round again follows one rule: never send twice what Discord may have done once. A 429 means Discord
 * did nothing, and a failed connect means it never saw the request, so those are retried for every method; a
 * timeout, a broken connection or a 5xx may hide a completed request, so only idempotent methods are retried.
 */
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { InvalidBudget } from './budget.js';
import type { AbortSource, ClientLink } from './client-link.js';
import { classifyResponse, parseRateLimitHeaders, retryAfterMs } from './discord/headers.js';
import { markFor } from './discord/marks.js';
import type { RateLimitHeaders, ResponseKind } from './discord/types.js';
import { answers, knownBadAnswer, type ProxyAnswer } from './errors.js';
import type { Admission, HoldError, Scheduler, Waiter } from './limiter/scheduler.js';
import type { AdmitInput, LearnInput, LimiterStore } from './limiter/types.js';
import type { Metrics } from './metrics.js';
import type { RequestTrace } from './tracing/types.js';
import { type Upstream, UpstreamError } from './upstream.js';

export interface RelayContext {
  readonly store: LimiterStore;
  readonly scheduler: Scheduler;
  readonly upstream: Upstream;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly maxRetries: number;
  readonly cloudflareCooldownMs: number;
  readonly budget: InvalidBudget;
  /** How long requests known to fail are answered by the proxy itself, by kind. */
  readonly marks: { readonly revokedMs: number; readonly goneMs: number; readonly forbiddenMs: number };
}

export interface Outgoing {
  readonly method: string;
  readonly url: string;
  readonly headers: string[];
  readonly body: Buffer | Readable | null;
  readonly admit: AdmitInput;
  /** Route template, for metrics. */
  readonly template: string;
  /** The request carries a token: a 401 means that token is revoked. */
  readonly authorized: boolean;
  /** A webhook route with a token: a 404 means the webhook is gone. */
  readonly webhookWithToken: boolean;
  readonly client: RelayClient;
  /** performance.now() after which the request must not be held any longer. */
  readonly deadline: number;
}

/** The client side of one request, as relay sees it: whether it is still there, and where the outcome goes. */
export interface RelayClient extends ClientLink {
  /** Called once with the outcome. */
  settle(outcome: RelayOutcome): void;
  /** Called instead when the relay itself failed (a bug); must not throw. */
  fail(error: unknown): void;
  /** Times the request was sent again so far (X-Proxy-Retries); the relay keeps it up to date. */
  retries?: number;
  /** The request's spans while tracing is on; the relay adds each hold and upstream attempt. */
  readonly trace?: RequestTrace | undefined;
}

export type RelayOutcome =
  | {
      readonly kind: 'upstream';
      readonly status: number;
      readonly headers: Record<string, string | string[] | undefined>;
      readonly body: Readable | Buffer;
      readonly holdMs: number;
      readonly upstreamMs: number;
    }
  | {
      readonly kind: 'generated';
      readonly answer: ProxyAnswer;
      readonly holdMs: number;
      readonly upstreamMs: number;
    }
  | { readonly kind: 'aborted'; readonly holdMs: number; readonly upstreamMs: number };

const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS']);
const RETRY_BASE_MS = 100;

/** Admitted to go upstream, after this much time held in all. */
interface Admitted {
  readonly admission: Admission;
  readonly holdMs: number;
}

/**
 * Runs one request through the proxy and gives the outcome to `out.client.settle` (or, if the relay itself
 * failed, the error to `out.client.fail`).
 *
 * The common case, a request that waits for its bucket, is held by one small object the scheduler calls back
 * (a Hold), not by promises and suspended async functions: those keep every local of the exchange alive per held
 * request, and with ten thousand held that was a large share of the replica's memory.
 */
export function relay(ctx: RelayContext, out: Outgoing): void {
  startHold(ctx, out, 0, 0, 0, undefined);
}

/** Waits for admission, then goes on with `next`, or (first attempt) with the exchange. */
function startHold(
  ctx: RelayContext,
  out: Outgoing,
  attempt: number,
  holdMs: number,
  upstreamMs: number,
  next: ((held: Admitted | RelayOutcome) => void) | undefined,
): void {
  const hold = new Hold(ctx, out, holdMs, upstreamMs, next);
  if (out.client.gone) {
    hold.go({ kind: 'aborted', holdMs, upstreamMs });
    return;
  }
  const wait = (allowed: boolean) => {
    if (!allowed) hold.go(overBudget(ctx, holdMs, upstreamMs));
    else {
      const maxHoldMs = Math.max(1, out.deadline - hold.heldAt);
      ctx.scheduler.wait(out.admit, hold, { client: out.client, maxHoldMs, front: attempt > 0 });
    }
  };
  const allowed = ctx.budget.allows(out.admit.identity);
  // A promise only past the budget's soft line, for an identity this replica has not seen succeed.
  if (typeof allowed === 'boolean') wait(allowed);
  else allowed.then(wait, (error: unknown) => out.client.fail(error));
}

/** One wait for admission, called back by the scheduler. */
class Hold implements Waiter {
  readonly heldAt = performance.now();

  constructor(
    private readonly ctx: RelayContext,
    private readonly out: Outgoing,
    /** Held before this wait (earlier attempts). */
    private readonly holdMs: number,
    private readonly upstreamMs: number,
    private readonly next: ((held: Admitted | RelayOutcome) => void) | undefined,
  ) {}

  admitted(admission: Admission): void {
    const { ctx, out } = this;
    const waited = performance.now() - this.heldAt;
    ctx.metrics.hold.observe({ route: out.template }, waited / 1000);
    out.client.trace?.held(this.heldAt, 'admitted');
    // Held requests were checked when they arrived; the budget may have filled while they waited.
    if (!ctx.budget.stillAllows(out.admit.identity)) {
      learn(ctx, out.admit, admission, { unsent: true });
      this.go(overBudget(ctx, this.holdMs + waited, this.upstreamMs));
    } else this.go({ admission, holdMs: this.holdMs + waited });
  }

  refused(error: HoldError): void {
    this.out.client.trace?.held(this.heldAt, error.reason);
    const holdMs = this.holdMs + performance.now() - this.heldAt;
    const upstreamMs = this.upstreamMs;
    if (error.reason === 'aborted') {
      this.go({ kind: 'aborted', holdMs, upstreamMs });
      return;
    }
    if (error.reason === 'known_bad')
      this.ctx.metrics.shortCircuits.inc({ reason: error.waitReason ?? 'unknown' });
    this.go({ kind: 'generated', answer: holdAnswer(error), holdMs, upstreamMs });
  }

  go(held: Admitted | RelayOutcome): void {
    const { ctx, out } = this;
    try {
      if (this.next) this.next(held);
      else if ('kind' in held) out.client.settle(held);
      else
        exchange(ctx, out, held).then(
          (outcome) => out.client.settle(outcome),
          (error: unknown) => out.client.fail(error),
        );
    } catch (error) {
      // The scheduler calls waiters from its own loop: nothing may be thrown back into it.
      out.client.fail(error);
    }
  }
}

/** startHold() for the exchange's later attempts, which are rare enough to wait in a promise. */
function holdAgain(
  ctx: RelayContext,
  out: Outgoing,
  attempt: number,
  holdMs: number,
  upstreamMs: number,
): Promise<Admitted | RelayOutcome> {
  return new Promise((resolve) => startHold(ctx, out, attempt, holdMs, upstreamMs, resolve));
}

/** From the first admission on: forward, learn, and go round again while the rules allow. */
async function exchange(ctx: RelayContext, out: Outgoing, first: Admitted): Promise<RelayOutcome> {
  const replayable = out.body === null || Buffer.isBuffer(out.body);
  const idempotent = IDEMPOTENT.has(out.method);
  let { admission, holdMs } = first;
  let upstreamMs = 0;
  for (let attempt = 0; ; attempt++) {
    if (attempt > 0) {
      out.client.retries = attempt;
      const held = await holdAgain(ctx, out, attempt, holdMs, upstreamMs);
      if ('kind' in held) return held;
      ({ admission, holdMs } = held);
    }
    const canRetry = replayable && attempt < ctx.maxRetries;
    const sentAt = performance.now();

    let response: Awaited<ReturnType<Upstream['send']>>;
    try {
      response = await ctx.upstream.send({
        method: out.method,
        path: out.url,
        headers: out.headers,
        body: out.body,
        signal: out.client,
      });
    } catch (error) {
      upstreamMs += performance.now() - sentAt;
      out.client.trace?.attempt(attempt, sentAt, undefined, error);
      // A failed connect never reached Discord: its slots are free again at once.
      const unsent = error instanceof UpstreamError && error.kind === 'connect';
      learn(ctx, out.admit, admission, { unsent });
      if (!(error instanceof UpstreamError)) throw error;
      if (error.kind === 'aborted') return { kind: 'aborted', holdMs, upstreamMs };
      ctx.metrics.upstreamErrors.inc({ kind: error.kind });
      if (canRetry && (error.kind === 'connect' || idempotent)) {
        ctx.metrics.retries.inc({ reason: error.kind });
        await backoff(attempt, out.client);
        continue;
      }
      const answer =
        error.kind === 'timeout'
          ? answers.upstreamTimeout()
          : error.kind === 'socket'
            ? answers.upstreamBroken()
            : answers.upstreamUnreachable();
      return { kind: 'generated', answer, holdMs, upstreamMs };
    }
    const upstreamTime = performance.now() - sentAt;
    upstreamMs += upstreamTime;
    ctx.metrics.upstreamDuration.observe({ route: out.template }, upstreamTime / 1000);
    const status = response.statusCode;
    out.client.trace?.attempt(attempt, sentAt, status);
    const rl = parseRateLimitHeaders(response.headers);
    // Discord's own time on the request, which the request cannot have spent on its way there.
    const served = Math.min(rl.serviceMs ?? 0, upstreamTime);

    if (status === 401 || status === 403 || status === 404) {
      // Small JSON errors whose code says how narrowly they will repeat: read whole, then marked.
      learn(ctx, out.admit, admission, answerFacts(rl, status, admission), served);
      const text = await readSmall(response.body, response.headers['content-length']);
      if (text !== undefined) {
        knownBad(ctx, out, status, errorCode(parseJson(text, headerValue(response.headers['content-type']))));
        return { kind: 'upstream', status, headers: response.headers, body: text, holdMs, upstreamMs };
      }
      knownBad(ctx, out, status, undefined);
      return { kind: 'upstream', status, headers: response.headers, body: response.body, holdMs, upstreamMs };
    }
    if (status !== 429) {
      learn(ctx, out.admit, admission, answerFacts(rl, status, admission), served);
      if (status < 300) ctx.budget.answered(out.admit.identity, false);
      if (status >= 500 && canRetry && idempotent) {
        ctx.metrics.retries.inc({ reason: `status_${status}` });
        await response.body.dump().catch(() => undefined);
        await backoff(attempt, out.client);
        continue;
      }
      return { kind: 'upstream', status, headers: response.headers, body: response.body, holdMs, upstreamMs };
    }

    // A 429 body is small (JSON, or Cloudflare's HTML page): read it whole to tell which 429 this is.
    const text = Buffer.from(await response.body.arrayBuffer());
    const contentType = headerValue(response.headers['content-type']);
    const json = parseJson(text, contentType);
    const kind = classifyResponse(status, rl, contentType, json);
    const waitMs = retryAfterMs(rl, json);
    ctx.metrics.upstream429.inc({ scope: kind === 'route' ? 'user' : (kind as Exclude<ResponseKind, 'ok'>) });
    // Discord does not count shared-scope 429s against the IP (docs/discord-ratelimits.md §4).
    if (kind !== 'shared') ctx.budget.answered(out.admit.identity, true);
    if (kind === 'cloudflare') {
      learn(ctx, out.admit, admission, {}, served);
      const pausedMs = await ctx.store.pauseAll(waitMs ?? ctx.cloudflareCooldownMs);
      ctx.log.error({ pausedMs }, 'Cloudflare ban from Discord: all upstream traffic paused');
      return { kind: 'generated', answer: answers.cloudflare(pausedMs), holdMs, upstreamMs };
    }
    await on429(ctx, out.admit, admission, kind, rl, waitMs, served);
    const fits = performance.now() + (waitMs ?? 0) < out.deadline;
    if (canRetry && fits) {
      ctx.metrics.retries.inc({ reason: `429_${kind}` });
      continue;
    }
    return { kind: 'upstream', status, headers: response.headers, body: text, holdMs, upstreamMs };
  }
}

function overBudget(ctx: RelayContext, holdMs: number, upstreamMs: number): RelayOutcome {
  return { kind: 'generated', answer: answers.invalidBudget(ctx.budget.retryAfterMs), holdMs, upstreamMs };
}

/** Applies a 429 to the shared state so that no other request runs into it. */
async function on429(
  ctx: RelayContext,
  admit: AdmitInput,
  admission: Admission,
  kind: ResponseKind,
  rl: RateLimitHeaders,
  waitMs: number | undefined,
  served: number,
): Promise<void> {
  const wait = waitMs ?? 1000;
  switch (kind) {
    case 'global':
      ctx.metrics.globalPauses.inc();
      await ctx.store.pauseIdentity(admit.identity, wait);
      learn(ctx, admit, admission, {}, served);
      return;
    case 'shared':
      // Someone else's use of a shared resource: delay this bucket, keep its counters
      // (docs/discord-ratelimits.md §1.5).
      learn(ctx, admit, admission, { hash: rl.bucket, blockMs: wait }, served);
      return;
    case 'sublimit':
      learn(
        ctx,
        admit,
        admission,
        { ...bucketFacts(rl, 429), sublimitDelay: { tag: admit.sublimit, ms: wait } },
        served,
      );
      return;
    default:
      if (rl.bucket === undefined && rl.limit === undefined) {
        // A route whose answers carry no rate-limit headers has a limit after all
        // (docs/discord-ratelimits.md §6.4): with no bucket to block, hold this route on this major parameter for
        // the wait, as a sublimit would, and send its requests one at a time from now on.
        learn(
          ctx,
          admit,
          admission,
          { sublimitDelay: { tag: admit.sublimit, ms: wait }, limitedWithoutHeaders: true },
          served,
        );
        return;
      }
      learn(ctx, admit, admission, { ...bucketFacts(rl, 429), remaining: 0, blockMs: wait }, served);
  }
}

type Facts = Omit<
  LearnInput,
  'identity' | 'routeKey' | 'major' | 'bucket' | 'probe' | 'window' | 'slot' | 'serviceMs'
>;

/**
 * What an answer other than a 429 teaches. An error (a 404 on a message delete, say) can come from another bucket
 * than the route's successes (docs/discord-ratelimits.md §2.4): it must not re-map the route, and its counters
 * only apply when it names the bucket the request was admitted to.
 */
function answerFacts(rl: RateLimitHeaders, status: number, admission: Admission): Facts {
  const facts = bucketFacts(rl, status);
  if (status < 400 || rl.bucket === undefined) return facts;
  const admittedHash = admission.bucket?.split('|')[1];
  return admittedHash === rl.bucket && !admission.probe ? facts : {};
}

function bucketFacts(rl: RateLimitHeaders, status: number): Facts {
  const known = rl.limit !== undefined && rl.remaining !== undefined && rl.resetAfterMs !== undefined;
  return {
    hash: rl.bucket,
    limit: rl.limit,
    remaining: rl.remaining,
    resetAfterMs: rl.resetAfterMs,
    // Only a success proves a route has no limit; errors (5xx, 404 before auth…) may simply lack the headers.
    unbucketed: !known && rl.bucket === undefined && status >= 200 && status < 300,
  };
}

/**
 * Ends one admission in the store with what its answer taught. Learning never delays the answer; waiters of the
 * same queue are woken as soon as it has landed.
 */
function learn(
  ctx: RelayContext,
  admit: AdmitInput,
  admission: Admission,
  facts: Facts,
  serviceMs = 0,
): void {
  // A route known to be unbucketed, exempt from the global window, that answered without rate-limit facts holds
  // nothing to end and teaches nothing: skipping it saves a store call (a Redis round trip) per such request.
  if (
    admission.bucket === null &&
    !admission.probe &&
    !admission.slot &&
    facts.hash === undefined &&
    facts.limit === undefined &&
    facts.blockMs === undefined &&
    facts.sublimitDelay === undefined
  ) {
    return;
  }
  ctx.store.learn(learnInput(admit, admission, facts, serviceMs)).then(
    () => ctx.scheduler.wake(admit),
    (error: unknown) => ctx.log.warn({ err: error }, 'could not record rate-limit headers'),
  );
}

function learnInput(admit: AdmitInput, admission: Admission, facts: Facts, serviceMs: number): LearnInput {
  return {
    identity: admit.identity,
    routeKey: admit.routeKey,
    major: admit.major,
    bucket: admission.bucket,
    probe: admission.probe,
    window: admission.window,
    slot: admission.slot,
    unsent: facts.unsent ?? false,
    serviceMs,
    hash: facts.hash,
    limit: facts.limit,
    remaining: facts.remaining,
    resetAfterMs: facts.resetAfterMs,
    unbucketed: facts.unbucketed ?? false,
    blockMs: facts.blockMs,
    sublimitDelay: facts.sublimitDelay,
  };
}

/**
 * Remembers answers that will repeat, as narrowly as their code says (discord/marks.ts). 401s and 403s count
 * against the invalid-request budget, and the same request sent again would too.
 */
function knownBad(ctx: RelayContext, out: Outgoing, status: 401 | 403 | 404, code: number | undefined): void {
  if (status !== 404) ctx.budget.answered(out.admit.identity, true);
  const mark = markFor(status, code, {
    authorized: out.authorized,
    webhook: out.admit.major.startsWith('w:'),
    webhookWithToken: out.webhookWithToken,
  });
  const ms = mark === null ? 0 : ctx.marks[`${mark.duration}Ms`];
  if (mark === null || ms <= 0) return;
  ctx.store
    .mark(out.admit, mark.scope, ms, mark.code)
    .catch((error: unknown) => ctx.log.warn({ err: error }, 'could not record a known-bad answer'));
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

function holdAnswer(error: HoldError): ProxyAnswer {
  switch (error.reason) {
    case 'known_bad':
      return knownBadAnswer(error.waitReason, error.code, error.retryAfterMs);
    case 'overloaded':
      return answers.overloaded();
    case 'cloudflare':
      return answers.cloudflare(error.retryAfterMs);
    case 'store_error':
      return answers.storeUnavailable();
    case 'shutting_down':
      return answers.shuttingDown();
    default:
      return answers.holdTimeout(error.retryAfterMs || 1000);
  }
}

function backoff(attempt: number, client: AbortSource): Promise<void> {
  const ms = RETRY_BASE_MS * 2 ** attempt * (0.5 + Math.random());
  return new Promise((resolve) => {
    if (client.aborted) return resolve();
    const stop = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
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
