/**
 * The record of one request, from receive to reply: what every step of `receive → identify → classify → admit →
 * forward → learn → reply` needs, in one object. Each step fills in what it learns (the identity, the route, the
 * admission input, time held and time upstream) and the next reads it there, instead of values passed from call to
 * call.
 *
 * It is also the only object a held request costs the proxy of its own: the scheduler calls it back (`Waiter`), and
 * undici and the scheduler learn from it that the client left (`ClientLink`). A replica may hold ten thousand
 * requests, so it has no closures or promises of its own; the steps after admission live in modules that take it as
 * a parameter, reached through `steps`, one object shared by every request.
 */

import type { ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { ClientLink } from './client-link.js';
import type { Identity, RouteInfo } from './discord/types.js';
import type { ProxyAnswer } from './errors.js';
import type { Admission, HoldError, Waiter } from './limiter/scheduler.js';
import type { AdmitInput } from './limiter/types.js';
import type { RequestTrace } from './tracing/types.js';

/** What became of a request once the proxy is done with it; its times are on the record. */
export type Outcome =
  | {
      readonly kind: 'upstream';
      readonly status: number;
      readonly headers: Record<string, string | string[] | undefined>;
      readonly body: Readable | Buffer;
    }
  | { readonly kind: 'generated'; readonly answer: ProxyAnswer }
  | { readonly kind: 'aborted' };

export const ABORTED: Outcome = { kind: 'aborted' };

/**
 * The steps a request is called back into after it is admitted or refused, one object for all requests
 * (routes/proxy.ts builds it): relay.ts owns admission and forwarding, reply.ts the reply.
 */
export interface RequestSteps {
  /** The scheduler admitted it: the hold ends, forward (relay.ts). */
  admitted(req: ProxyRequest, admission: Admission): void;
  /** The scheduler refused it: the hold ends, reply with the proxy's answer (relay.ts). */
  refused(req: ProxyRequest, error: HoldError): void;
  /** Write the outcome to the client, log and count it (reply.ts). Called once. */
  reply(req: ProxyRequest, outcome: Outcome): void;
  /** The proxy itself failed on this request (a bug); must not throw (reply.ts). */
  fail(req: ProxyRequest, error: unknown): void;
}

/** A body counted as it streams; `exceeded` once it passed BODY_LIMIT_BYTES. */
export interface LimitedBody {
  readonly stream: Readable;
  readonly exceeded: boolean;
}

const NO_ADMIT: AdmitInput = {
  identity: '',
  routeKey: '',
  major: '',
  target: '',
  globalLimit: 0,
  sublimit: '',
};

export class ProxyRequest extends ClientLink implements Waiter {
  // receive
  /** The upstream request headers: flat [name, value, …], hop-by-hop headers dropped. */
  headers: string[] = [];
  body: Buffer | Readable | null = null;
  limited: LimitedBody | undefined = undefined;
  // identify
  identity: Identity | undefined = undefined;
  // classify
  /** Route template for labels and logs; `-` until classified. */
  template = '-';
  /** Set once classified: X-Proxy-Bucket, and what marks a known-bad answer applies to. */
  route: RouteInfo | undefined = undefined;
  // admit
  admit: AdmitInput = NO_ADMIT;
  /** performance.now() after which the request must not be held any longer. */
  deadline = 0;
  /** performance.now() when the current hold began. */
  heldAt = 0;
  /** Time held before being sent, over all attempts. */
  holdMs = 0;
  /** For a retry's hold: where its admission goes instead of a new exchange (relay.ts). */
  next: ((held: Admission | Outcome) => void) | undefined = undefined;
  // forward
  /** Times sent again (X-Proxy-Retries). */
  retries = 0;
  /** Time waiting for Discord's response headers, over all attempts. */
  upstreamMs = 0;
  // every step
  /** Set while tracing is on (tracing/): the request's spans. */
  trace: RequestTrace | undefined = undefined;

  constructor(
    readonly steps: RequestSteps,
    readonly res: ServerResponse,
    readonly method: string,
    /** Path and query exactly as the client sent them. */
    readonly url: string,
    readonly startedAt: number,
  ) {
    super();
    res.on('close', () => {
      if (!res.writableFinished) this.leave();
    });
  }

  admitted(admission: Admission): void {
    this.steps.admitted(this, admission);
  }

  refused(error: HoldError): void {
    this.steps.refused(this, error);
  }
}
