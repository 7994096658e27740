/**
 * Gathers the calls made within one turn of the event loop, per group (an identity: its keys share one Redis
 * Cluster slot), and runs each group as one call. Under load the answers of many requests arrive in the same
 * turn, so a hot token costs one script run per batch instead of one per request: fewer commands for Redis to
 * parse and run, fewer replies and promises for Node. At low load a batch is one call, sent after the current
 * I/O callbacks (setImmediate): well under a millisecond later.
 *
 * A call nobody waits for may linger (`add(…, true)`): its group then stays gathered across turns, for at most
 * `lingerMs` after its oldest call, so that a steady stream of such calls costs one round trip per `lingerMs`
 * instead of one per turn. Any call that does not linger sends its whole group at the end of its turn, and so
 * do a full batch and `hurry`.
 */
import type { Clock, Timer } from './clock.js';

interface Pending<T, R> {
  items: T[];
  settle: Settle<R>[];
  /** When the group must be sent (this clock): its oldest lingering call's deadline, or -∞ once one does not. */
  due: number;
}

export interface BatcherOptions {
  /** Bounds one script run, so a huge batch does not keep Redis from everyone else (default 64). */
  readonly maxBatch?: number;
  /** How long a lingering call may wait for others, ms (default 0: none lingers). */
  readonly lingerMs?: number;
  /** The clock of the linger deadlines. */
  readonly clock?: Clock;
}

export class Batcher<T, R> {
  private readonly groups = new Map<string, Pending<T, R>>();
  private scheduled = false;
  private timer: Timer | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private readonly maxBatch: number;
  private readonly lingerMs: number;
  private readonly clock: Clock | undefined;

  constructor(
    /**
     * Runs one group's batch; resolves with one result per item, in order. `alone`: it is sent by itself (the turn's
     * only group, or a batch sent early because it is full), not together with other groups' batches.
     */
    private readonly run: (group: string, items: readonly T[], alone: boolean) => Promise<readonly R[]>,
    options: BatcherOptions = {},
  ) {
    this.maxBatch = options.maxBatch ?? 64;
    this.clock = options.clock;
    this.lingerMs = this.clock ? (options.lingerMs ?? 0) : 0;
  }

  add(group: string, item: T, linger = false): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      let pending = this.groups.get(group);
      const due = linger && this.clock ? this.clock.now() + this.lingerMs : Number.NEGATIVE_INFINITY;
      if (!pending) {
        pending = { items: [], settle: [], due };
        this.groups.set(group, pending);
      } else if (due < pending.due) pending.due = due;
      pending.items.push(item);
      pending.settle.push({ resolve, reject });
      if (pending.items.length >= this.maxBatch) {
        this.groups.delete(group);
        this.send(group, pending.items, pending.settle, true);
      } else if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => void this.flushDue());
      }
    });
  }

  /** Sends a group that lingers with this turn's batches, if one is gathered. */
  hurry(group: string): void {
    const pending = this.groups.get(group);
    if (!pending || pending.due === Number.NEGATIVE_INFINITY) return;
    pending.due = Number.NEGATIVE_INFINITY;
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => void this.flushDue());
    }
  }

  /** Sends everything gathered now, lingering or not; resolves when those calls have settled, whichever way. */
  flush(): Promise<void> {
    return this.sendWhere(() => true);
  }

  /** The end of a turn, or a linger deadline: sends the groups that are due, and waits for the next deadline. */
  private flushDue(): Promise<void> {
    this.scheduled = false;
    const now = this.clock?.now() ?? 0;
    return this.sendWhere((pending) => pending.due <= now);
  }

  private sendWhere(due: (pending: Pending<T, R>) => boolean): Promise<void> {
    const ready: [string, Pending<T, R>][] = [];
    let next = Number.POSITIVE_INFINITY;
    for (const entry of this.groups) {
      if (due(entry[1])) ready.push(entry);
      else next = Math.min(next, entry[1].due);
    }
    for (const [group] of ready) this.groups.delete(group);
    this.arm(next);
    const alone = ready.length === 1;
    return Promise.all(ready.map(([group, p]) => this.send(group, p.items, p.settle, alone))).then(
      () => undefined,
    );
  }

  /** One timer, for the soonest deadline of the groups left lingering. */
  private arm(at: number): void {
    if (at === this.timerAt || !this.clock) return;
    if (this.timer) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = at;
    if (at === Number.POSITIVE_INFINITY) return;
    this.timer = this.clock.setTimeout(
      () => {
        this.timer = undefined;
        this.timerAt = Number.POSITIVE_INFINITY;
        void this.flushDue();
      },
      Math.max(0, at - this.clock.now()),
    );
    this.timer.unref();
  }

  private send(group: string, items: T[], settle: Settle<R>[], alone: boolean): Promise<void> {
    return this.run(group, items, alone).then(
      (results) => {
        for (let i = 0; i < settle.length; i++) {
          if (i >= results.length) settle[i]!.reject(new Error('a batched call got no result'));
          else settle[i]!.resolve(results[i]!);
        }
      },
      (error: unknown) => {
        for (const s of settle) s.reject(error);
      },
    );
  }
}

interface Settle<R> {
  resolve(value: R): void;
  reject(error: unknown): void;
}
