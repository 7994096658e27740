import { BusiestWindow, maxInWindow } from './limits.js';
import type { ReplyKind } from './reply.js';

export interface ReceivedRequest {
  /**
   * Arrival at "Discord", performance.now() milliseconds; `received` is in this order. With a transit,
   * when it ended, which is when the limits were applied. Without one, when the request's headers
   * reached the fake; the limits are applied once its body is in, which for small bodies is at once.
   */
  readonly at: number;
  /** When the transit started, the whole request having been read; equals `at` without a transit. */
  readonly readAt: number;
  readonly method: string;
  /** As received, with /api/vN, without the query. */
  readonly path: string;
  /** Raw query string without '?', '' when absent. */
  readonly query: string;
  /** The Authorization value, or `ip:<address>` for requests without one. */
  readonly identity: string;
  readonly ip: string;
  /** Not bound by the global limit (interaction callbacks and interaction-token webhooks). */
  readonly exempt: boolean;
  /** "METHOD template", e.g. "POST /channels/{channel_id}/messages"; the key of FakeStats.byRoute. */
  readonly route: string;
  /** 0 while unanswered, and for 'hang' and 'reset' failures. */
  status: number;
  readonly rawHeaders: readonly string[];
  /** The first maxBodyBytes of the body; empty when recordBodies is off or the memory cap is reached. */
  body: Buffer;
}

export type LimitedScope = 'user' | 'global' | 'shared' | 'sublimit' | 'cloudflare';

export interface FakeStats {
  readonly total: number;
  readonly byStatus: Readonly<Record<number, number>>;
  /** 429s by cause; 'sublimit' 429s say scope "user" on the wire, 'cloudflare' ones are ban pages. */
  readonly rateLimited: Readonly<Record<LimitedScope, number>>;
  /** Requests counted toward the invalid-request limit (401, 403, and 429 except shared and ban pages). */
  readonly invalid: number;
  readonly byRoute: Readonly<Record<string, number>>;
  /** Recorded requests dropped after maxRecords. */
  readonly droppedRecords: number;
  /** Identities that sent non-exempt requests. */
  readonly identities: readonly string[];
  /** Most non-exempt requests of one identity (or of the busiest one) that arrived within any 1000 ms. */
  busiestWindow(identity?: string): number;
  /** Most recorded requests matching `filter` that arrived within any `windowMs` (default 1000). */
  rateOf(filter?: (r: ReceivedRequest) => boolean, windowMs?: number): number;
  countOf(filter: (r: ReceivedRequest) => boolean): number;
}

export interface RecorderLimits {
  readonly recordBodies: boolean;
  readonly maxRecords: number;
  readonly maxBodyBytes: number;
  readonly maxTotalBodyBytes: number;
}

const EMPTY = Buffer.alloc(0);

export class Recorder {
  received: ReceivedRequest[] = [];
  private total = 0;
  private invalid = 0;
  private dropped = 0;
  private bodyBytes = 0;
  private byStatus = new Map<number, number>();
  private byRoute = new Map<string, number>();
  private limited: Record<LimitedScope, number> = {
    user: 0,
    global: 0,
    shared: 0,
    sublimit: 0,
    cloudflare: 0,
  };
  private busiest = new Map<string, BusiestWindow>();

  constructor(private readonly limits: RecorderLimits) {}

  arrive(r: ReceivedRequest): void {
    this.total++;
    this.byRoute.set(r.route, (this.byRoute.get(r.route) ?? 0) + 1);
    if (!r.exempt) {
      let b = this.busiest.get(r.identity);
      if (!b) {
        b = new BusiestWindow();
        this.busiest.set(r.identity, b);
      }
      b.add(r.at);
    }
    if (this.received.length < this.limits.maxRecords) this.received.push(r);
    else this.dropped++;
  }

  body(r: ReceivedRequest, body: Buffer): void {
    if (!this.limits.recordBodies || body.length === 0) return;
    const kept = Math.min(
      body.length,
      this.limits.maxBodyBytes,
      this.limits.maxTotalBodyBytes - this.bodyBytes,
    );
    if (kept <= 0) return;
    this.bodyBytes += kept;
    // A copy, so a recorded slice does not pin a large request buffer in memory.
    r.body = kept === body.length ? body : Buffer.from(body.subarray(0, kept));
  }

  answered(r: ReceivedRequest, status: number, kind: ReplyKind): void {
    r.status = status;
    if (status === 0) return;
    this.byStatus.set(status, (this.byStatus.get(status) ?? 0) + 1);
    if (status === 429 && kind !== 'ok' && kind !== 'error' && kind !== 'failure') this.limited[kind]++;
  }

  countInvalid(): void {
    this.invalid++;
  }

  snapshot(): FakeStats {
    const maxes = new Map([...this.busiest].map(([id, b]) => [id, b.max]));
    const records = this.received.slice();
    return {
      total: this.total,
      byStatus: Object.fromEntries(this.byStatus),
      rateLimited: { ...this.limited },
      invalid: this.invalid,
      byRoute: Object.fromEntries(this.byRoute),
      droppedRecords: this.dropped,
      identities: [...maxes.keys()],
      busiestWindow: (identity) =>
        identity === undefined ? Math.max(0, ...maxes.values()) : (maxes.get(identity) ?? 0),
      rateOf: (filter = () => true, windowMs = 1000) =>
        maxInWindow(
          records.filter(filter).map((r) => r.at),
          windowMs,
        ),
      countOf: (filter) => records.reduce((n, r) => (filter(r) ? n + 1 : n), 0),
    };
  }

  clear(): void {
    this.received = [];
    this.total = this.invalid = this.dropped = this.bodyBytes = 0;
    this.byStatus = new Map();
    this.byRoute = new Map();
    this.limited = { user: 0, global: 0, shared: 0, sublimit: 0, cloudflare: 0 };
    this.busiest = new Map();
  }
}

export { EMPTY as EMPTY_BODY };
