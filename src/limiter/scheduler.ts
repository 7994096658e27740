/**
 * Holds requests in process until the store admits them.
 *
 * Requests with the same identity, route, major parameter and sublimit tag line up in one FIFO queue, and only the
 * request at the head asks the store; the rest wait behind it without any I/O. Queues whose head is stopped by the
 * identity's global window (or a global pause) wait in that identity's gate, which wakes them one at a time, so a
 * saturated token costs about one store call per admitted request however many channels are waiting.
 */
import { type Clock, realClock, type Timer } from './clock.js';
import {
  type Admission,
  type AdmitInput,
  type AdmitResult,
  KNOWN_BAD,
  type LimiterStore,
  pending,
  type WaitReason,
} from './types.js';

export type { Admission };

/** Why a held request was answered without being forwarded. */
export class HoldError extends Error {
  constructor(
    readonly reason:
      | 'hold_timeout'
      | 'cloudflare'
      | 'known_bad'
      | 'aborted'
      | 'store_error'
      | 'shutting_down'
      | 'overloaded',
    /** How long the client should wait before trying again, when known. */
    readonly retryAfterMs: number,
    readonly waitReason?: WaitReason,
    options?: ErrorOptions,
    /** For 'known_bad': the code of Discord's answer that set the mark, which the proxy's answer repeats. */
    readonly code?: number,
  ) {
    super(`request not admitted: ${reason}`, options);
    this.name = 'HoldError';
  }
}

/**
 * The client a held request waits for. The scheduler drops the request when the client goes away, through
 * `held` rather than an AbortSignal: a signal (with its event target, listener and maps) per held request is a
 * large share of what holding ten thousand of them costs.
 */
export interface HeldFor {
  readonly gone: boolean;
  /** Set while the request is held; its `clientGone()` is called once if the client goes away. */
  held: { clientGone(): void } | null;
}

/**
 * Who waits for an admission. The scheduler calls exactly one of the two, once, possibly synchronously from
 * `wait()` itself; neither may throw. An object the caller already has rather than a promise: a replica may hold
 * ten thousand requests, and a promise with its resolving functions and continuations costs each of them
 * several hundred bytes.
 */
export interface Waiter {
  admitted(admission: Admission): void;
  refused(error: HoldError): void;
}

export interface WaitOptions {
  readonly client?: HeldFor;
  readonly maxHoldMs?: number;
  /** Ahead of newer requests of its queue (a retried request). */
  readonly front?: boolean;
}

/**
 * One held request. A class, not an object of closures: thousands can be held at once, and methods on the
 * prototype cost nothing per ticket.
 */
class Ticket {
  done = false;
  queue: Queue | undefined = undefined;

  constructor(
    private readonly scheduler: Scheduler,
    readonly input: AdmitInput,
    readonly deadline: number,
    readonly client: HeldFor | undefined,
    private waiter: Waiter | undefined,
  ) {}

  resolve(admission: Admission): void {
    const waiter = this.waiter;
    if (this.end()) waiter?.admitted(admission);
  }

  reject(error: HoldError): void {
    const waiter = this.waiter;
    if (!this.end()) return;
    waiter?.refused(error);
    if (this.queue) this.scheduler.sweep(this.queue);
  }

  clientGone(): void {
    this.reject(new HoldError('aborted', 0));
  }

  /**
   * Marks the ticket done and lets go of its waiter: an ended ticket may stay listed (in its queue until a sweep,
   * in the deadline heap until compaction) and must not keep the request alive meanwhile.
   */
  private end(): boolean {
    if (this.done) return false;
    this.done = true;
    this.waiter = undefined;
    if (this.client?.held === this) this.client.held = null;
    this.scheduler.released(this);
    return true;
  }
}

interface Queue {
  readonly key: string;
  readonly identity: string;
  /** The first request's input: every request of a queue has the same identity, route, major and tag. */
  readonly input: AdmitInput;
  /** Why the head last had to wait, and until when (the scheduler's clock): what the inspector shows. */
  reason: WaitReason | undefined;
  until: number;
  readonly items: Ticket[];
  head: number;
  /** Tickets that ended while queued (aborted, timed out) since the last sweep; some may still be in items. */
  dead: number;
  running: boolean;
  timer?: Timer | undefined;
  /** Currently parked in its identity's gate. */
  gated: boolean;
  /** Running because the gate woke it: the gate's next queue goes when this one stops. */
  woken: boolean;
  /** How many heads the next round asks for: doubles while every one is admitted, back to 1 on a wait. */
  ahead: number;
}

interface Gate {
  readonly waiting: Queue[];
  timer?: Timer | undefined;
  /** A queue woken by the gate is still running; the next one goes when it stops. */
  active: boolean;
}

export interface SchedulerOptions {
  readonly maxHoldMs: number;
  /** Beyond this many held requests in all, new ones are refused at once instead of growing memory. */
  readonly maxHeld?: number;
  /** The same per identity, so one runaway token cannot take every slot. */
  readonly maxHeldPerIdentity?: number;
  readonly onHeldChange?: (delta: number) => void;
}

export class Scheduler {
  private readonly queues = new Map<string, Queue>();
  private readonly gates = new Map<string, Gate>();
  private heldCount = 0;
  private readonly heldBy = new Map<string, number>();
  /** Fast-path asks in flight, per queue key. */
  private readonly asking = new Map<string, number>();
  private readonly deadlines: DeadlineHeap;
  private closing = false;

  constructor(
    private readonly store: LimiterStore,
    private readonly options: SchedulerOptions,
    private readonly clock: Clock = realClock,
  ) {
    this.deadlines = new DeadlineHeap(clock);
  }

  /**
   * Called with every new request (not retries) while set: the inspector sets it only while someone looks, so
   * that nobody pays for it otherwise (src/inspect/recent.ts).
   */
  watch: ((key: string, input: AdmitInput) => void) | undefined = undefined;

  get held(): number {
    return this.heldCount;
  }

  /** Held requests of one identity. */
  heldOf(identity: string): number {
    return this.heldBy.get(identity) ?? 0;
  }

  /** Identities with held requests, and how many each. */
  heldByIdentity(): ReadonlyMap<string, number> {
    return this.heldBy;
  }

  /**
   * Every queue that holds requests, with how many and why its head waits. O(held requests): for the inspector,
   * never on a request's path.
   */
  snapshot(): QueueView[] {
    const now = this.clock.now();
    const views: QueueView[] = [];
    for (const queue of this.queues.values()) {
      let held = 0;
      for (let i = queue.head; i < queue.items.length; i++) if (!queue.items[i]!.done) held += 1;
      if (held === 0) continue;
      views.push({
        key: queue.key,
        input: queue.input,
        held,
        reason: queue.reason,
        waitMs: Math.max(0, Math.ceil(queue.until - now)),
      });
    }
    return views;
  }

  /**
   * Tells `waiter` when the request may go upstream (admitted), or that it will not (refused with a HoldError):
   * its hold time ran out, the client went away, or everything is paused by a Cloudflare ban.
   */
  wait(input: AdmitInput, waiter: Waiter, opts: WaitOptions = {}): void {
    if (this.closing) {
      waiter.refused(new HoldError('shutting_down', 0));
      return;
    }
    // Fast path: with nobody of its queue waiting, a request asks the store at once, without a ticket, and only
    // joins (or starts) the queue when it has to wait. A few such asks may be in flight per queue, so a busy route
    // is not serialised behind one round trip; a burst beyond that queues at once, so it costs the store a few
    // calls and not one per request.
    const key = queueKey(input);
    if (this.watch && !opts.front) this.watch(key, input);
    const asking = this.asking.get(key) ?? 0;
    if (opts.front || asking >= FAST_ASKS || this.queues.has(key)) {
      this.enqueue(key, input, waiter, opts);
      return;
    }
    let decided: AdmitResult | Promise<AdmitResult>;
    try {
      decided = this.store.admit(input);
    } catch {
      this.enqueue(key, input, waiter, opts);
      return;
    }
    if (!pending(decided)) {
      // Decided at once (in process, or a lease): admitted in this turn; anything else is for the queue.
      if (decided?.ok === true) waiter.admitted(decided);
      else this.enqueue(key, input, waiter, opts);
      return;
    }
    this.asking.set(key, asking + 1);
    const done = () => {
      const left = (this.asking.get(key) ?? 1) - 1;
      if (left > 0) this.asking.set(key, left);
      else this.asking.delete(key);
    };
    decided.then(
      (result) => {
        done();
        // Anything but an admission (a wait, or nonsense from a broken store) goes through the queue, which
        // knows how to answer each.
        if (result?.ok === true) waiter.admitted(result);
        else this.enqueue(key, input, waiter, opts);
      },
      () => {
        done();
        this.enqueue(key, input, waiter, opts);
      },
    );
  }

  private enqueue(key: string, input: AdmitInput, waiter: Waiter, opts: WaitOptions): void {
    const refusal = this.closing
      ? new HoldError('shutting_down', 0)
      : opts.client?.gone
        ? new HoldError('aborted', 0)
        : undefined;
    if (refusal) {
      waiter.refused(refusal);
      return;
    }
    const ofIdentity = this.heldBy.get(input.identity) ?? 0;
    if (
      this.heldCount >= (this.options.maxHeld ?? Number.POSITIVE_INFINITY) ||
      ofIdentity >= (this.options.maxHeldPerIdentity ?? Number.POSITIVE_INFINITY)
    ) {
      waiter.refused(new HoldError('overloaded', 1000));
      return;
    }
    const maxHold = Math.min(opts.maxHoldMs ?? this.options.maxHoldMs, this.options.maxHoldMs);
    const ticket = new Ticket(this, input, this.clock.now() + maxHold, opts.client, waiter);
    let queue = this.queues.get(key);
    if (!queue) {
      queue = {
        key,
        identity: input.identity,
        input,
        reason: undefined,
        until: 0,
        items: [],
        head: 0,
        dead: 0,
        running: false,
        gated: false,
        woken: false,
        ahead: 1,
      };
      this.queues.set(key, queue);
    }
    ticket.queue = queue;
    if (opts.front) queue.items.splice(queue.head, 0, ticket);
    else queue.items.push(ticket);
    this.heldCount += 1;
    this.heldBy.set(input.identity, ofIdentity + 1);
    this.options.onHeldChange?.(1);
    if (opts.client) opts.client.held = ticket;
    this.deadlines.add(ticket);
    if (!queue.running && !queue.gated && !queue.timer) void this.pump(queue);
  }

  /** A response for this queue's route arrived: its head may be able to go now instead of at its timer. */
  wake(input: AdmitInput): void {
    const queue = this.queues.get(queueKey(input));
    if (!queue || queue.running || queue.gated) return;
    if (queue.timer) {
      this.clock.clearTimeout(queue.timer);
      queue.timer = undefined;
    }
    void this.pump(queue);
  }

  /** Refuses new requests and answers every held one with `shutting_down`. */
  close(): void {
    this.closing = true;
    for (const queue of this.queues.values()) {
      if (queue.timer) this.clock.clearTimeout(queue.timer);
      for (let i = queue.head; i < queue.items.length; i++)
        queue.items[i]!.reject(new HoldError('shutting_down', 0));
    }
    for (const gate of this.gates.values()) if (gate.timer) this.clock.clearTimeout(gate.timer);
    this.deadlines.clear();
  }

  /** Bookkeeping when a ticket ends, whichever way (called by the ticket). */
  released(ticket: Ticket): void {
    this.heldCount -= 1;
    const ofIdentity = (this.heldBy.get(ticket.input.identity) ?? 1) - 1;
    if (ofIdentity > 0) this.heldBy.set(ticket.input.identity, ofIdentity);
    else this.heldBy.delete(ticket.input.identity);
    this.options.onHeldChange?.(-1);
    this.deadlines.ended();
  }

  private nextTicket(queue: Queue): Ticket | undefined {
    while (queue.head < queue.items.length) {
      const ticket = queue.items[queue.head]!;
      if (!ticket.done) return ticket;
      queue.head += 1;
    }
    return undefined;
  }

  /**
   * Drops ended tickets from a waiting queue. Without this, requests aborted or timed out behind a long reset stay
   * in the queue (with everything their closures hold, several KB each) until the head moves past them: hold/abort
   * cycles on an exhausted bucket grow memory until its reset, beyond any cap on held requests. A sweep runs once
   * the ended tickets are at least half of what the queue holds, so a queue never keeps more ended tickets than
   * live ones (+1), and each ended ticket pays for its own removal: amortised O(1).
   */
  sweep(queue: Queue): void {
    queue.dead += 1;
    // close() walks the items by index while rejecting them: leave them in place then.
    if (this.closing || queue.dead * 2 < queue.items.length - queue.head) return;
    let kept = 0;
    for (let i = queue.head; i < queue.items.length; i++) {
      const ticket = queue.items[i]!;
      if (!ticket.done) queue.items[kept++] = ticket;
    }
    queue.items.length = kept;
    queue.head = 0;
    queue.dead = 0;
  }

  private compact(queue: Queue): void {
    // Shifting one by one is O(n) per admission; drop the consumed prefix in one go instead.
    if (queue.head > 1024 && queue.head * 2 > queue.items.length) {
      queue.items.splice(0, queue.head);
      queue.head = 0;
    }
  }

  /**
   * Asks the store for the queue's head requests until one has to wait. While every head asked is admitted, the
   * next round asks for twice as many, up to MOST_AHEAD (with Redis they go as one batched script call, decided in
   * order), so a flowing queue admits several requests per round trip instead of one; after a wait it asks for
   * one again, so a queue behind an empty bucket costs one ask per wake. Admissions are interchangeable within a
   * queue (same identity, route, major parameter and sublimit tag): each goes to whoever is at the head when it
   * comes back.
   */
  private async pump(queue: Queue): Promise<void> {
    queue.running = true;
    try {
      for (;;) {
        const asked = this.heads(queue);
        if (asked.length === 0) break;
        const results = await Promise.all(asked.map((ticket) => this.ask(ticket)));
        let next: Next = 'ask';
        const flowing = results.every((r) => !(r instanceof Error) && r.ok);
        queue.ahead = flowing ? Math.min(queue.ahead * 2, MOST_AHEAD) : 1;
        for (let i = 0; i < results.length; i++) {
          const result = results[i]!;
          // Once the queue must wait, the answers decided after that one are not used: given back at once.
          if (next !== 'ask') {
            if (!(result instanceof Error) && result.ok) this.giveBack(asked[i]!.input, result);
            continue;
          }
          next = this.apply(queue, asked[i]!, result);
        }
        if (next === 'stop') break;
        if (next === 'waits') return;
      }
      // Empty: forget the queue so that 100k distinct channels do not stay in memory.
      if (this.nextTicket(queue) === undefined) this.queues.delete(queue.key);
    } finally {
      queue.running = false;
      if (queue.woken && !queue.gated) {
        queue.woken = false;
        const gate = this.gates.get(queue.identity);
        if (gate) gate.active = false;
        this.advanceGate(queue.identity);
      }
    }
  }

  /** The live tickets at the head of the queue, at most `queue.ahead`. */
  private heads(queue: Queue): Ticket[] {
    const heads: Ticket[] = [];
    for (let i = queue.head; i < queue.items.length && heads.length < queue.ahead; i++) {
      const ticket = queue.items[i]!;
      if (!ticket.done) heads.push(ticket);
    }
    return heads;
  }

  private async ask(ticket: Ticket): Promise<AdmitResult | Error> {
    try {
      const result = await this.store.admit(ticket.input);
      if (typeof result?.ok !== 'boolean') throw new TypeError(`the store answered ${String(result)}`);
      return result;
    } catch (error) {
      return error instanceof Error ? error : new Error(String(error));
    }
  }

  /**
   * Applies one answer of the store to the queue: 'ask' when the next head may ask, 'waits' when the queue now
   * waits (a timer or the identity's gate will pump it), 'stop' when nobody is left to ask for.
   */
  private apply(queue: Queue, ticket: Ticket, result: AdmitResult | Error): Next {
    if (result instanceof Error) {
      if (!ticket.done) ticket.reject(new HoldError('store_error', 1000, undefined, { cause: result }));
      return 'ask';
    }
    // The request asked for may have gone away meanwhile; the next of this queue has the same inputs, so an
    // admission passes to it instead of being wasted.
    const taker = this.nextTicket(queue);
    if (!taker) {
      if (result.ok) this.giveBack(ticket.input, result);
      return 'stop';
    }
    if (result.ok) {
      queue.head += 1;
      taker.resolve(result);
      this.compact(queue);
      return 'ask';
    }
    // A 403 mark may be about this request's exact target only (another member, another message): it ends this
    // request, and the next asks for itself.
    if (result.reason === 'forbidden') {
      if (!ticket.done)
        ticket.reject(new HoldError('known_bad', result.waitMs, result.reason, undefined, result.code));
      return 'ask';
    }
    // Waiting would not help: everything is banned, or Discord already said these requests fail.
    const final =
      result.reason === 'cloudflare' ? 'cloudflare' : KNOWN_BAD.has(result.reason) ? 'known_bad' : null;
    if (final) {
      for (let t: Ticket | undefined = taker; t; t = this.nextTicket(queue)) {
        t.reject(new HoldError(final, result.waitMs, result.reason, undefined, result.code));
      }
      return 'stop';
    }
    // What the inspector shows of this queue: why its head waits, and until when.
    const until = this.clock.now() + result.waitMs;
    queue.reason = result.reason;
    queue.until = until;
    // Nobody whose hold ends before the wait is over should sit in the queue until then.
    if (until > taker.deadline) {
      taker.reject(new HoldError('hold_timeout', result.waitMs, result.reason));
      return 'ask';
    }
    if (result.reason === 'global' || result.reason === 'paused') {
      this.park(queue, result.waitMs);
      return 'waits';
    }
    queue.timer = this.clock.setTimeout(
      () => {
        queue.timer = undefined;
        void this.pump(queue);
      },
      Math.max(1, Math.ceil(result.waitMs)),
    );
    return 'waits';
  }

  /**
   * Ends an admission nobody is left to use (its client went away while the store decided): kept, it would hold
   * its slots until the in-flight timeout, and an unknown bucket's probe would close the route that long.
   */
  private giveBack(input: AdmitInput, admission: Admission): void {
    const { identity, routeKey, major } = input;
    const { bucket, probe, window, slot } = admission;
    this.store
      .learn({ identity, routeKey, major, bucket, probe, window, slot, unsent: true })
      .then(() => this.wake(input))
      .catch(() => {
        // Unreachable store: the slots expire with the in-flight timeout instead.
      });
  }

  private park(queue: Queue, waitMs: number): void {
    let gate = this.gates.get(queue.identity);
    if (!gate) {
      gate = { waiting: [], active: false };
      this.gates.set(queue.identity, gate);
    }
    queue.gated = true;
    queue.woken = false;
    gate.waiting.push(queue);
    gate.active = false;
    // The newest wait is the most accurate one: it was computed after every earlier admission.
    if (gate.timer) this.clock.clearTimeout(gate.timer);
    const identity = queue.identity;
    const timerGate = gate;
    gate.timer = this.clock.setTimeout(
      () => {
        timerGate.timer = undefined;
        this.advanceGate(identity);
      },
      Math.max(1, Math.ceil(waitMs)),
    );
  }

  /** Wakes the next parked queue of an identity, unless a wait is pending or a woken queue is still running. */
  private advanceGate(identity: string): void {
    const gate = this.gates.get(identity);
    if (!gate || gate.timer || gate.active) return;
    const next = gate.waiting.shift();
    if (!next) {
      this.gates.delete(identity);
      return;
    }
    next.gated = false;
    next.woken = true;
    gate.active = true;
    void this.pump(next);
  }
}

/** One queue of held requests, as the inspector sees it. */
export interface QueueView {
  /** identity|routeKey|major|sublimit tag. */
  readonly key: string;
  readonly input: AdmitInput;
  readonly held: number;
  /** Why its head last had to wait (undefined: it has not asked yet). */
  readonly reason: WaitReason | undefined;
  /** Until the head asks again, ms (0: asking now, or woken by an answer). */
  readonly waitMs: number;
}

/** Fast-path asks allowed in flight per queue before newcomers queue behind them. */
const FAST_ASKS = 8;
/**
 * Most heads a flowing queue asks for at once: Redis's default batch, so one hot queue (an unbucketed route, a
 * roomy bucket) admits a batch per round trip instead of being held to a few per round trip. The doubling from one
 * keeps a queue behind a full bucket from asking for more than it can get.
 */
const MOST_AHEAD = 64;

/** What a queue does after one answer of the store (see Scheduler.apply). */
type Next = 'ask' | 'waits' | 'stop';

/**
 * Hold deadlines of every held request, earliest first, behind one timer: a timer per held request would cost a
 * Timeout object and a closure each. Tickets that end early stay in the heap (small, see Ticket.end) until their
 * deadline comes up or, once they are the majority, a compaction drops them all.
 */
class DeadlineHeap {
  private readonly heap: Ticket[] = [];
  private dead = 0;
  private timer: Timer | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private expiring = false;

  constructor(private readonly clock: Clock) {}

  add(ticket: Ticket): void {
    const heap = this.heap;
    let i = heap.push(ticket) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]!.deadline <= ticket.deadline) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = ticket;
    if (ticket.deadline < this.timerAt) this.arm(ticket.deadline);
  }

  /** A ticket ended; it stays in the heap, dead, until it comes up or a compaction drops it. */
  ended(): void {
    // A ticket ending because its deadline came has already left the heap.
    if (this.expiring) return;
    this.dead += 1;
    if (this.dead > 64 && this.dead * 2 > this.heap.length) this.compact();
  }

  clear(): void {
    if (this.timer) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    this.heap.length = 0;
    this.dead = 0;
  }

  private arm(at: number): void {
    if (this.timer) this.clock.clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = this.clock.setTimeout(() => this.expire(), Math.max(1, Math.ceil(at - this.clock.now())));
    // Held requests keep their sockets (and so the process) alive; dead entries alone must not.
    this.timer.unref();
  }

  private expire(): void {
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    const now = this.clock.now();
    this.expiring = true;
    for (let top = this.heap[0]; top && top.deadline <= now + 1; top = this.heap[0]) {
      this.pop();
      if (top.done) this.dead -= 1;
      else top.reject(new HoldError('hold_timeout', 0));
    }
    this.expiring = false;
    const next = this.heap[0];
    if (next) this.arm(next.deadline);
  }

  private pop(): void {
    const heap = this.heap;
    const last = heap.pop()!;
    if (heap.length === 0) return;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && heap[right]!.deadline < heap[left]!.deadline ? right : left;
      if (heap[child]!.deadline >= last.deadline) break;
      heap[i] = heap[child]!;
      i = child;
    }
    heap[i] = last;
  }

  private compact(): void {
    const live = this.heap.filter((ticket) => !ticket.done);
    live.sort((a, b) => a.deadline - b.deadline); // a sorted array is a valid heap
    this.heap.length = 0;
    for (const ticket of live) this.heap.push(ticket);
    this.dead = 0;
  }
}

export function queueKey(input: AdmitInput): string {
  return `${input.identity}|${input.routeKey}|${input.major}|${input.sublimit}`;
}
