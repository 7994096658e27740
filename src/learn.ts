/**
 * learn: what Discord's answer to one request teaches the shared state. Every admission ends here once (answered,
 * failed or given back unsent); a 429 is applied as its kind says, and 401/403/404 leave known-bad marks as narrowly
 * as their code says. Learning never delays the reply: the store call runs on its own, and the waiters of the same
 * queue are woken as soon as it has landed.
 */
import type { Logger } from 'pino';
import type { InvalidBudget } from './budget.js';
import { markFor } from './discord/marks.js';
import type { RateLimitHeaders, ResponseKind } from './discord/types.js';
import type { Admission, Scheduler } from './limiter/scheduler.js';
import type { LearnInput, LimiterStore } from './limiter/types.js';
import type { Metrics } from './metrics.js';
import type { ProxyRequest } from './request.js';

export interface LearnContext {
  readonly store: LimiterStore;
  readonly scheduler: Scheduler;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly budget: InvalidBudget;
  /** How long requests known to fail are answered by the proxy itself, by kind. */
  readonly marks: { readonly revokedMs: number; readonly goneMs: number; readonly forbiddenMs: number };
}

export type Facts = Omit<
  LearnInput,
  'identity' | 'routeKey' | 'major' | 'bucket' | 'probe' | 'window' | 'slot' | 'serviceMs' | 'unhurried'
>;

/**
 * Ends one admission in the store with what its answer taught (`serviceMs`: Discord's own time on the request,
 * which it cannot have spent on its way there).
 */
export function learn(
  ctx: LearnContext,
  req: ProxyRequest,
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
  const admit = req.admit;
  const unhurried = ctx.scheduler.heldOf(admit.identity) === 0;
  ctx.store.learn(learnInput(req, admission, facts, serviceMs, unhurried)).then(
    () => ctx.scheduler.wake(admit),
    (error: unknown) => ctx.log.warn({ err: error }, 'could not record rate-limit headers'),
  );
}

/**
 * What an answer other than a 429 teaches. An error (a 404 on a message delete, say) can come from another bucket
 * than the route's successes (docs/discord-ratelimits.md §2.4): it must not re-map the route, and its counters
 * only apply when it names the bucket the request was admitted to.
 */
export function answerFacts(rl: RateLimitHeaders, status: number, admission: Admission): Facts {
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

/** Applies a 429 (other than Cloudflare's) to the shared state so that no other request runs into it. */
export async function on429(
  ctx: LearnContext,
  req: ProxyRequest,
  admission: Admission,
  kind: ResponseKind,
  rl: RateLimitHeaders,
  waitMs: number | undefined,
  served: number,
): Promise<void> {
  const admit = req.admit;
  const wait = waitMs ?? 1000;
  switch (kind) {
    case 'global':
      ctx.metrics.globalPauses.inc();
      await ctx.store.pauseIdentity(admit.identity, wait);
      learn(ctx, req, admission, {}, served);
      return;
    case 'shared':
      // Someone else's use of a shared resource: delay this bucket, keep its counters
      // (docs/discord-ratelimits.md §1.5).
      learn(ctx, req, admission, { hash: rl.bucket, blockMs: wait }, served);
      return;
    case 'sublimit':
      learn(
        ctx,
        req,
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
          req,
          admission,
          { sublimitDelay: { tag: admit.sublimit, ms: wait }, limitedWithoutHeaders: true },
          served,
        );
        return;
      }
      learn(ctx, req, admission, { ...bucketFacts(rl, 429), remaining: 0, blockMs: wait }, served);
  }
}

/**
 * Remembers answers that will repeat, as narrowly as their code says (discord/marks.ts). 401s and 403s count
 * against the invalid-request budget, and the same request sent again would too.
 */
export function knownBad(
  ctx: LearnContext,
  req: ProxyRequest,
  status: 401 | 403 | 404,
  code: number | undefined,
): void {
  const admit = req.admit;
  if (status !== 404) ctx.budget.answered(admit.identity, true);
  const mark = markFor(status, code, {
    authorized: req.identity !== undefined && req.identity.kind !== 'none',
    webhook: admit.major.startsWith('w:'),
    webhookWithToken: req.route?.webhookWithToken ?? false,
  });
  const ms = mark === null ? 0 : ctx.marks[`${mark.duration}Ms`];
  if (mark === null || ms <= 0) return;
  ctx.store
    .mark(admit, mark.scope, ms, mark.code)
    .catch((error: unknown) => ctx.log.warn({ err: error }, 'could not record a known-bad answer'));
}

function learnInput(
  req: ProxyRequest,
  admission: Admission,
  facts: Facts,
  serviceMs: number,
  unhurried: boolean,
): LearnInput {
  const admit = req.admit;
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
    unhurried,
  };
}
