/**
 * What the orchestrator (run.ts) asks the load generator (loadgen.ts) to do, and what it gets back. The two run
 * in separate processes; this is the JSON that crosses between them.
 */

/** Which requests the workers send; see `workloads.ts` for the exact paths. */
export type WorkloadKind =
  /** GET /api/v10/users/@me with one bot token: Discord gives it no X-RateLimit-* headers. */
  | 'unbucketed'
  /** GET /api/v10/channels/{c}/messages with one bot token, round robin over 50 channels. */
  | 'bucketed'
  /** POST /api/v10/channels/{c}/messages with one bot token on a single channel. */
  | 'hot'
  /** POST /api/v10/channels/{c}/messages with one bot token over 200 channels. */
  | 'global'
  /** 1,000 bot tokens × 100 channels, a mix of reads, writes and an unbucketed route. */
  | 'mixed'
  /** GET /api/v10/channels/{c}/pins over 10 channels with one token: held behind an exhausted bucket. */
  | 'hold'
  /** PUT a reaction on one message of one channel, one token: the 1 per 250 ms reactions bucket. */
  | 'reactions'
  /** GET /api/v10/channels/{c}/messages with 20 bot tokens, 5 channels each: each token's global window binds. */
  | 'tokens20';

export interface LoadSpec {
  /** Base URLs; each request goes to the next one in turn (round robin over replicas). */
  readonly targets: readonly string[];
  readonly workload: WorkloadKind;
  /** Closed loop: this many requests in flight at all times, each worker sending its next when one ends. */
  readonly concurrency: number;
  /** Sent and discarded before the measured window opens. */
  readonly warmupMs: number;
  readonly durationMs: number;
  /**
   * After the window closes: 'drain' lets in-flight requests finish (for at most drainMs, then aborts them);
   * 'abort' aborts them at once (clients that give up while held).
   */
  readonly end: 'drain' | 'abort';
  readonly drainMs: number;
  /** Seed of the pseudo-random choices of the mixed workload, so two targets see the same sequence. */
  readonly seed: number;
}

export interface LatencySummary {
  readonly count: number;
  readonly mean: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
}

export interface LoadResult {
  /** Length of the measured window, ms, on the load generator's clock. */
  readonly windowMs: number;
  /** Responses completed inside the window, by status. */
  readonly statuses: Record<string, number>;
  /** Completed inside the window with a 2xx. */
  readonly ok: number;
  /** 2xx per second inside the window. */
  readonly throughput: number;
  /** Latency (ms) of the 2xx responses completed inside the window. */
  readonly latency: LatencySummary;
  /** Transport errors (connection refused/reset, timeouts) inside the window, by code. */
  readonly errors: Record<string, number>;
  /** Requests still in flight when the window closed. */
  readonly inFlightAtEnd: number;
  /** Of those, how many were aborted (not finished within drainMs, or end = 'abort'). */
  readonly aborted: number;
  /** Everything sent during the whole run, warm-up and drain included. */
  readonly sentTotal: number;
  /** The first answer (headers and body, truncated) of each non-2xx status seen during the run. */
  readonly samples: Record<string, string>;
}

/** Lines the load generator prints on stdout; everything else there is ignored. */
export const MARK_STARTED = 'LOADGEN:STARTED';
export const MARK_WINDOW_OPEN = 'LOADGEN:T0';
export const MARK_WINDOW_CLOSED = 'LOADGEN:T1';
export const MARK_RESULT = 'LOADGEN:RESULT ';
