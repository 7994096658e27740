/**
 * One identity's global window in process: the admissions that still count against its `limit` per window.
 *
 * An admission counts while in flight (its request may still be on its way to Discord) and, once answered, until
 * a window after it reached Discord at the latest (docs/discord-ratelimits.md §6.1). A request may go while fewer
 * than `limit` count, so it cannot reach Discord within a window of the arrival of `limit` others, however long any
 * of them spent in transit. The Redis scripts keep the same window in a sorted set (lua/admit.lua).
 *
 * Kept as a map of the requests in flight and a min-heap of when answered ones stop counting, so an admission costs
 * O(log n) even with a large bot's limit of thousands per second.
 */
export class GlobalWindow {
  /** In flight: slot id → when it stops counting unanswered (a request whose replica crashed never reports back). */
  private readonly inflight = new Map<string, number>();
  /** Answered: when each stops counting (min-heap). */
  private readonly answered: number[] = [];
  touched = 0;

  /** How long until one more request may go, ms (0: now). */
  wait(limit: number, now: number, windowMs: number): number {
    const answered = this.answered;
    while (answered.length > 0 && answered[0]! <= now) popMin(answered);
    if (this.inflight.size + answered.length < limit) return 0;
    // Full: only now is it worth looking for requests in flight that will never report back.
    for (const [slot, until] of this.inflight) if (until <= now) this.inflight.delete(slot);
    if (this.inflight.size + answered.length < limit) return 0;
    // When the soonest to stop counting is still in flight, its end is unknown but at least a window away (its
    // answer could come now): the caller asks again then.
    return answered.length > 0 ? Math.min(answered[0]! - now, windowMs) : windowMs;
  }

  /** How many admissions count now. */
  count(now: number): number {
    while (this.answered.length > 0 && this.answered[0]! <= now) popMin(this.answered);
    return this.inflight.size + this.answered.length;
  }

  /** How many count now, without changing anything (for the inspector; O(n), never on a request's path). */
  used(now: number): number {
    let n = 0;
    for (const until of this.inflight.values()) if (until > now) n += 1;
    for (const until of this.answered) if (until > now) n += 1;
    return n;
  }

  take(slot: string, timeoutAt: number): void {
    this.inflight.set(slot, timeoutAt);
  }

  /** The request answered (`until`: when it stops counting) or never left (undefined: at once). */
  end(slot: string, until: number | undefined): void {
    if (!this.inflight.delete(slot) || until === undefined) return;
    const heap = this.answered;
    let i = heap.push(until) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]! <= until) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = until;
  }
}

function popMin(heap: number[]): void {
  const last = heap.pop()!;
  if (heap.length === 0) return;
  let i = 0;
  for (;;) {
    const left = 2 * i + 1;
    if (left >= heap.length) break;
    const right = left + 1;
    const child = right < heap.length && heap[right]! < heap[left]! ? right : left;
    if (heap[child]! >= last) break;
    heap[i] = heap[child]!;
    i = child;
  }
  heap[i] = last;
}
