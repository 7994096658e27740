/**
 * Limiter state in Redis, so any number of replicas act as one. The rules are bucket-rules.ts, implemented again
 * in lua/*.lua and held to MemoryStore's behaviour by the shared contract suite.
 *
 * Key layout (P = options.prefix, I = identity, itself a keyed hash of the token):
 *   P{I}:pause                          STRING, PX = remaining global-429 pause of the identity
 *   P{I}:sub:<routeKey>|<major>|<tag>   STRING, PX = remaining sublimit delay
 *   P{I}:subs                           STRING, PX = the identity's longest sublimit delay: while absent, admit
 *                                       reads no sublimit key
 *   P{I}:route:<routeKey>               STRING: bucket hash ("" = not bucketed), PX = keyTtlMs after last learned
 *   P{I}:gslots                         ZSET: the identity's admissions that still count in its global window
 *   P{I}:bucket:<hash>|<major>          HASH: one bucket's state (unknown buckets: <hash> = "unk:<routeKey>")
 *   P{I}:ok                             STRING, PX: the identity got a success within the invalid window
 *   P{I}:bad                            HASH: known-bad marks (see MarkScope), each "<expiry>:<code>"
 *   Pcloudflare                         STRING, PX = remaining egress-wide Cloudflare pause
 *   Pinvalid                            HASH: invalid responses of this egress per 10 s slot
 * Every key of one identity carries the {I} hash tag, so the scripts run unchanged on Redis Cluster; only the
 * Cloudflare key lives elsewhere (see `cloudflareUntil`).
 *
 * Time is Redis's: the scripts read TIME and pauses are PTTLs, so replicas whose clocks disagree still agree.
 * Redis errors reject the returned promises; deciding what to do without Redis is the caller's job.
 */
import { readFileSync } from 'node:fs';
import type { Cluster, Redis } from 'ioredis';
import { Batcher } from './batch.js';
import type { BucketState } from './bucket-rules.js';
import { type Clock, realClock } from './clock.js';
import {
  type BucketRef,
  type BucketView,
  type IdentityView,
  type MarkView,
  markPlace,
  viewBucket,
} from './inspection.js';
import { type Grant, type LeaseOutcome, Leases, type Want } from './leases.js';
import {
  type Admission,
  type AdmitInput,
  type AdmitResult,
  GLOBAL_WINDOW_MS,
  INVALID_SLOT_MS,
  INVALID_WINDOW_MS,
  type LearnInput,
  type LimiterStore,
  type MarkAt,
  type MarkScope,
  PROBE_POLL_MS,
  STALLED_WINDOW_MS,
  type StoreOptions,
  type WaitReason,
} from './types.js';

export interface RedisStoreOptions extends StoreOptions {
  /** Starts every key; must not contain "{" or "}", which would move the identity's hash tag. */
  readonly prefix: string;
  /**
   * TTL safety net for every key, ms (default 600000, MemoryStore's sweep age): a bucket lives this long after
   * its last reset, block or probe ends; a route's hash this long after it was last learned.
   */
  readonly keyTtlMs?: number;
  /**
   * How often another replica's Cloudflare pause is picked up, ms (default 500; 0 turns polling off, leaving
   * pauseAll() and cloudflarePause() as the only refreshes).
   */
  readonly cloudflarePollMs?: number;
  /** close() quits the client (default false: whoever created a shared client closes it). */
  readonly ownsClient?: boolean;
  /** Most requests of one identity per script call (default 64; 1 sends each request on its own). */
  readonly batchMax?: number;
  /**
   * How long global slots taken ahead of demand for a busy identity may be spent here, ms (default 200; 0: never
   * take any slot or place ahead). See leases.ts. At most a quarter of probeTimeoutMs, so a leased admission is
   * answered while it counts.
   */
  readonly leaseMs?: number;
  /**
   * How long bucket places taken ahead of demand for a queue may be spent here, ms (default 1000; at least
   * leaseMs, at most a quarter of probeTimeoutMs). See leases.ts.
   */
  readonly placeLeaseMs?: number;
  /**
   * How long the learn of an answer nobody here waits for, and a lease's background ask for more, may wait to go
   * with later ones, ms (default 20; 0: each turn's go at once). See learn() and refill().
   */
  readonly learnLingerMs?: number;
  /** The clock of the leases, of the learns' linger and of the cached Cloudflare pause (tests set it). */
  readonly clock?: Clock;
  /** Times each admit and learn script call (one round trip, however many requests it carries). */
  readonly onCall?: (op: 'admit' | 'learn', seconds: number) => void;
  /** Counts what happens to leased admissions (metrics.ts leased). */
  readonly onLease?: (outcome: LeaseOutcome, n: number) => void;
}

const DEFAULT_KEY_TTL_MS = 10 * 60_000;
const DEFAULT_CLOUDFLARE_POLL_MS = 500;
const DEFAULT_LEASE_MS = 200;
const DEFAULT_PLACE_LEASE_MS = 1000;
const DEFAULT_LEARN_LINGER_MS = 20;

/** The scripts' reason codes, in order from 1 (lua/admit.lua). */
const REASONS: readonly WaitReason[] = [
  'bucket',
  'probe',
  'blocked',
  'sublimit',
  'global',
  'paused',
  'revoked',
  'gone',
  'forbidden',
];
/** Fields of the known-bad marks hash, by scope (lua/admit.lua). */
const MARK_FIELD: Record<MarkScope, (at: MarkAt) => string> = {
  revoked: () => 'r',
  unauthorized: (at) => `u:${at.routeKey}`,
  gone: (at) => `g:${at.major}`,
  closed: (at) => `c:${at.major}`,
  forbidden: (at) => `f:${at.routeKey}|${at.major}|${at.target ?? ''}`,
};

type Arg = string | number;
/** An answer waiting to be learned, and when it came (the store's clock). */
interface Answer {
  readonly input: LearnInput;
  readonly at: number;
}
interface ScriptCommands {
  drlpAdmit(...args: Arg[]): Promise<unknown>;
  drlpLearn(...args: Arg[]): Promise<unknown>;
  drlpAdmitNow(...args: Arg[]): Promise<unknown>;
  drlpLearnNow(...args: Arg[]): Promise<unknown>;
  drlpPause(key: string, ms: number): Promise<unknown>;
  drlpMark(key: string, field: string, ms: number, code: number): Promise<unknown>;
  drlpInvalid(key: string, add: number, slotMs: number, slots: number): Promise<unknown>;
}

function script(file: string): { lua: string; numberOfKeys?: number } {
  const lua = readFileSync(new URL(`./lua/${file}`, import.meta.url), 'utf8');
  const keys = /-(\d+)\.lua$/.exec(file)?.[1];
  return keys === undefined ? { lua } : { lua, numberOfKeys: Number(keys) };
}

const ADMIT = script('admit.lua');
const LEARN = script('learn.lua');
const SCRIPTS = {
  // numkeys is passed with each call: one call carries as many requests as arrived together.
  drlpAdmit: ADMIT,
  drlpLearn: LEARN,
  // The same two scripts under names the client does not auto-pipeline (BATCHED_SCRIPTS).
  drlpAdmitNow: ADMIT,
  drlpLearnNow: LEARN,
  drlpPause: script('pause-1.lua'),
  drlpMark: script('mark-1.lua'),
  drlpInvalid: script('invalid-1.lua'),
} as const;

/**
 * The names under which a batch (batch.ts) goes to the socket at once. A turn's batches of one token, the common
 * case at low load, would gain nothing from the client's auto-pipelining but wait one more turn for it; the batches
 * of several tokens sent in one turn keep the auto-pipelined names, which write them all in one go.
 */
export const BATCHED_SCRIPTS: readonly (keyof typeof SCRIPTS)[] = ['drlpAdmitNow', 'drlpLearnNow'];

// defineCommand keeps one SCRIPT LOAD/EVALSHA cache per client; stores sharing a client share it.
const registered = new WeakSet<Redis | Cluster>();

function registerScripts(redis: Redis | Cluster): ScriptCommands {
  if (!registered.has(redis)) {
    for (const [name, definition] of Object.entries(SCRIPTS)) redis.defineCommand(name, definition);
    registered.add(redis);
  }
  return redis as unknown as ScriptCommands;
}

function clientKeyPrefix(redis: Redis | Cluster): string {
  const options = redis.options as { keyPrefix?: string; redisOptions?: { keyPrefix?: string } };
  return options.keyPrefix || options.redisOptions?.keyPrefix || '';
}

export class RedisStore implements LimiterStore {
  private readonly scripts: ScriptCommands;
  private readonly prefix: string;
  private readonly keyTtlMs: number;
  private readonly windowMs: number;
  private readonly cloudflareKey: string;
  /**
   * The Cloudflare pause, cached in process (monotonic clock). Its key cannot share a slot with every identity,
   * so admit cannot read it in the same script without a second round trip. Instead: pauseAll() sets this at
   * once, so this replica stops immediately; other replicas pick the pause up on their next poll, within
   * cloudflarePollMs plus one round trip (500 ms by default). They are hitting the same banned egress, so each
   * also stops as soon as its own requests come back banned.
   */
  private cloudflareUntil = 0;
  private polling = false;
  private readonly admits: Batcher<AdmitInput, AdmitResult>;
  private readonly learns: Batcher<Answer, void>;
  private readonly leases: Leases | undefined;
  /** The admits that are a lease's background refill (leases.ts), not a request's. */
  private readonly refills = new WeakSet<AdmitInput>();
  /** Refills on their way, which close() waits for so that what they bring is given back too. */
  private readonly refilling = new Set<Promise<unknown>>();
  private readonly clock: Clock;
  private readonly poller: NodeJS.Timeout | undefined;

  constructor(
    private readonly redis: Redis | Cluster,
    private readonly options: RedisStoreOptions,
  ) {
    if (/[{}]/.test(options.prefix)) throw new Error('RedisStore prefix must not contain "{" or "}"');
    // The bucket key is built inside the admit script, where ioredis cannot add its own prefix.
    if (clientKeyPrefix(redis) !== '')
      throw new Error('RedisStore needs a client without keyPrefix; use options.prefix');
    this.scripts = registerScripts(redis);
    this.clock = options.clock ?? realClock;
    const maxBatch = options.batchMax ?? 64;
    // Refills (leases.ts) linger like learns: nobody waits for them, and the identity's next admit call takes them.
    this.admits = new Batcher((identity, inputs, alone) => this.admitBatch(identity, inputs, alone), {
      maxBatch,
      lingerMs: options.learnLingerMs ?? DEFAULT_LEARN_LINGER_MS,
      clock: this.clock,
    });
    this.learns = new Batcher((identity, inputs, alone) => this.learnBatch(identity, inputs, alone), {
      maxBatch,
      lingerMs: options.learnLingerMs ?? DEFAULT_LEARN_LINGER_MS,
      clock: this.clock,
    });
    const leaseMs = Math.min(options.leaseMs ?? DEFAULT_LEASE_MS, options.probeTimeoutMs / 4);
    const placeMs = Math.min(
      Math.max(options.placeLeaseMs ?? DEFAULT_PLACE_LEASE_MS, leaseMs),
      options.probeTimeoutMs / 4,
    );
    if (leaseMs > 0)
      this.leases = new Leases(
        this.clock,
        leaseMs,
        placeMs,
        (input, admission) => this.giveBack(input, admission),
        (input) => this.refill(input),
        options.onLease,
      );
    this.prefix = options.prefix;
    this.keyTtlMs = Math.ceil(options.keyTtlMs ?? DEFAULT_KEY_TTL_MS);
    if (!(this.keyTtlMs > 0)) throw new Error('RedisStore keyTtlMs must be a positive number of ms');
    this.windowMs = GLOBAL_WINDOW_MS + options.globalWindowMarginMs;
    this.cloudflareKey = `${options.prefix}cloudflare`;
    const pollMs = options.cloudflarePollMs ?? DEFAULT_CLOUDFLARE_POLL_MS;
    if (pollMs > 0) {
      this.poller = setInterval(() => this.poll(), pollMs);
      this.poller.unref();
      this.poll(); // a replica that starts during a ban must not wait a poll to learn of it
    }
  }

  /** Global slots and bucket places this replica holds ahead of demand, unspent (leases.ts). */
  get leased(): { slots: number; places: number } {
    return this.leases?.held ?? { slots: 0, places: 0 };
  }

  /** At once from this replica's lease or its cached Cloudflare pause; otherwise one share of a script call. */
  admit(input: AdmitInput): AdmitResult | Promise<AdmitResult> {
    const cloudflareMs = this.cloudflareUntil - this.clock.now();
    if (cloudflareMs > 0) return { ok: false, reason: 'cloudflare', waitMs: cloudflareMs };
    const leased = this.leases?.take(input);
    if (leased) return leased;
    // The identity's lingering answers go in the same turn, right after this admit: Redis, woken for the admit
    // anyway, runs both, and the admit's answer does not wait for the learn script.
    const admitted = this.admits.add(input.identity, input);
    this.learns.hurry(input.identity);
    return admitted;
  }

  /** One admit script run for every request of one identity that asked in the same turn (lua/admit.lua). */
  private async admitBatch(
    identity: string,
    inputs: readonly AdmitInput[],
    alone: boolean,
  ): Promise<AdmitResult[]> {
    const base = this.identityBase(identity);
    const keys: string[] = [`${base}pause`, `${base}gslots`, `${base}bad`, `${base}subs`];
    const args: Arg[] = [
      `${base}bucket:`,
      this.windowMs,
      this.options.probeTimeoutMs,
      this.keyTtlMs,
      PROBE_POLL_MS,
      STALLED_WINDOW_MS,
    ];
    // How many places and slots more each request asks for, for its queue's and identity's leases (none for most).
    const wants = inputs.map((input) => this.leases?.want(input, this.refills.has(input)) ?? NO_WANT);
    for (let i = 0; i < inputs.length; i++) {
      const input = inputs[i]!;
      keys.push(
        `${base}sub:${input.routeKey}|${input.major}|${input.sublimit}`,
        `${base}route:${input.routeKey}`,
      );
      const want = wants[i]!;
      args.push(input.routeKey, input.major, input.globalLimit, input.target ?? '', want.places, want.slots);
    }
    const sentAt = this.clock.now();
    let replies: unknown;
    try {
      const call = alone ? this.scripts.drlpAdmitNow : this.scripts.drlpAdmit;
      replies = await call.call(this.scripts, keys.length, ...keys, ...args);
      this.options.onCall?.('admit', (this.clock.now() - sentAt) / 1000);
      if (!Array.isArray(replies) || replies.length !== inputs.length)
        throw new Error('unexpected reply from the admit script');
    } catch (error) {
      for (let i = 0; i < inputs.length; i++) if (wanting(wants[i]!)) this.leases?.failed(inputs[i]!);
      throw error;
    }
    return (replies as unknown[]).map((reply, i) => {
      const input = inputs[i]!;
      const result = admitResult(identity, reply);
      const refill = this.refills.has(input);
      if (!wanting(wants[i]!) && !refill) return result;
      // Nobody waits for a refill: its own admission goes to the leases with the rest.
      if (result.ok) this.leases?.granted(input, result, leaseGrant(reply), sentAt, refill);
      else this.leases?.failed(input);
      return result;
    });
  }

  /** Asks for a queue's next lease in the background, once half of the last one is spent (leases.ts). */
  private refill(input: AdmitInput): void {
    const ask = { ...input };
    this.refills.add(ask);
    const cloudflare = this.cloudflareRemaining() > 0;
    const sent = cloudflare
      ? Promise.reject(new Error('paused'))
      : this.admits.add(input.identity, ask, true);
    const asked: Promise<void> = sent.then(
      () => {
        this.refilling.delete(asked);
      },
      () => {
        this.refilling.delete(asked);
        this.leases?.failed(ask);
      },
    );
    this.refilling.add(asked);
  }

  /** Ends an admission taken for a lease and never spent (its global slot and bucket place are free again). */
  private giveBack(input: AdmitInput, admission: Admission): void {
    const { identity, routeKey, major } = input;
    const { bucket, probe, window, slot } = admission;
    this.learn({ identity, routeKey, major, bucket, probe, window, slot, unsent: true }).catch(() => {
      // Unreachable Redis: the admission stops counting at its in-flight timeout instead.
    });
  }

  /**
   * Ends an admission with what its answer taught. Most answers only confirm what Redis already counted: a request
   * of a known route, neither a probe nor a 429, that ends its place in flight. When nobody here waits on its
   * identity (`input.unhurried`), such an answer may linger up to `learnLingerMs` to go with later ones, so that
   * a steady stream of answers costs a learn call per linger instead of one per turn. Its times are kept exact: the
   * script is told how long ago the answer came (serviceMs, resetAfterMs), so a lingered answer ends its global
   * slot and dates its bucket's window as one sent at once would. What lingers is the moment other replicas see
   * the place free: an in-flight count that stays up to `learnLingerMs` longer, never a place given twice.
   * Probes, 429s and give-backs go at the end of their turn, as every answer does while requests of the identity
   * are held here; and an admit call of the identity takes its lingering answers along, right after it (admit()).
   */
  learn(input: LearnInput): Promise<void> {
    // Every kind of 429 comes with one of these: what this replica leased for the identity may no longer hold.
    const limited = input.blockMs !== undefined || input.sublimitDelay || input.limitedWithoutHeaders;
    if (limited) this.leases?.drop(input.identity);
    const linger = input.unhurried === true && !limited && !input.probe && !input.unsent;
    return this.learns.add(input.identity, { input, at: this.clock.now() }, linger);
  }

  /** One learn script run for every answer of one identity gathered together (lua/learn.lua). */
  private async learnBatch(
    identity: string,
    answers: readonly Answer[],
    alone: boolean,
  ): Promise<undefined[]> {
    const base = this.identityBase(identity);
    const args: Arg[] = [this.options.resetMarginMs, this.keyTtlMs, this.keyTtlMs, this.windowMs, base];
    const now = this.clock.now();
    for (const { input, at } of answers) {
      // The script dates the answer by Redis's clock when it runs: one that waited here is that much older.
      const age = now - at;
      // The bucket admit() gave, as its key's suffix; an id of another identity names no key of this one.
      const admitted = input.bucket?.startsWith(`${identity}|`)
        ? input.bucket.slice(identity.length + 1)
        : '';
      const target = input.hash ? `${input.hash}|${input.major}` : admitted;
      const fields = [
        oneLine(input.routeKey),
        oneLine(input.major),
        admitted,
        input.sublimitDelay?.tag ?? '',
        input.hash ? 'h' : input.limitedWithoutHeaders ? '!' : input.unbucketed ? 'u' : '',
        oneLine(input.hash || ''),
        admitted ? (input.probe ? 'p' : 'c') : '',
        target ? (target === admitted && !input.probe ? 's' : 'o') : '',
        fact(input.sublimitDelay?.ms),
        fact(input.limit),
        fact(input.remaining),
        fact(input.resetAfterMs === undefined ? undefined : input.resetAfterMs - age),
        fact(input.blockMs),
        input.window ?? 0,
        input.slot ?? '',
        input.unsent ? '1' : '',
        (input.serviceMs ?? 0) + age,
      ].join('\n');
      args.push(fields);
    }
    const call = alone ? this.scripts.drlpLearnNow : this.scripts.drlpLearn;
    await call.call(this.scripts, 2, `${base}gslots`, `${base}subs`, ...args);
    this.options.onCall?.('learn', (this.clock.now() - now) / 1000);
    return answers.map(() => undefined);
  }

  async pauseIdentity(identity: string, ms: number): Promise<void> {
    this.leases?.drop(identity);
    await this.scripts.drlpPause(`${this.identityBase(identity)}pause`, ms);
  }

  async pauseAll(ms: number): Promise<number> {
    // The ban is real whether or not Redis hears of it: this replica stops first, then tells the others.
    this.noteCloudflare(ms);
    this.noteCloudflare(Number(await this.scripts.drlpPause(this.cloudflareKey, ms)));
    return this.cloudflareRemaining();
  }

  async cloudflarePause(): Promise<number> {
    this.noteCloudflare(await this.redis.pttl(this.cloudflareKey));
    return this.cloudflareRemaining();
  }

  async mark(at: MarkAt, scope: MarkScope, ms: number, code: number): Promise<void> {
    this.leases?.drop(at.identity);
    await this.scripts.drlpMark(`${this.identityBase(at.identity)}bad`, MARK_FIELD[scope](at), ms, code);
  }

  async countInvalid(count: number): Promise<number> {
    const slots = INVALID_WINDOW_MS / INVALID_SLOT_MS;
    return Number(
      await this.scripts.drlpInvalid(`${this.options.prefix}invalid`, count, INVALID_SLOT_MS, slots),
    );
  }

  async vouch(identity: string): Promise<void> {
    await this.redis.set(`${this.identityBase(identity)}ok`, '1', 'PX', INVALID_WINDOW_MS);
  }

  async vouched(identity: string): Promise<boolean> {
    return (await this.redis.exists(`${this.identityBase(identity)}ok`)) === 1;
  }

  async close(): Promise<void> {
    if (this.poller) clearInterval(this.poller);
    // Unspent leased admissions go back before the client closes, so other replicas need not wait them out; a
    // refill still on its way is sent and waited for first, so that what it brings goes back too.
    await this.admits.flush();
    await Promise.allSettled([...this.refilling]);
    this.leases?.close();
    await this.learns.flush();
    if (this.options.ownsClient) await this.redis.quit();
  }

  // Inspection (src/limiter/inspection.ts): read-only, never called on a request's path. Only the keys of the
  // buckets and identities asked about are read (a bounded list), one round of commands per step, which the
  // client's auto-pipelining sends together.

  async inspectBuckets(refs: readonly BucketRef[]): Promise<(BucketView | null)[]> {
    const [now, mapped] = await Promise.all([
      this.redisNow(),
      Promise.all(
        refs.map((ref) => this.redis.get(`${this.identityBase(ref.identity)}route:${ref.routeKey}`)),
      ),
    ]);
    const fields = await Promise.all(
      refs.map((ref, i) => {
        const hash = mapped[i];
        if (hash === '') return null;
        const suffix = `${hash === null || hash === undefined || hash === '!' ? `unk:${ref.routeKey}` : hash}|${ref.major}`;
        return this.redis.hmget(`${this.identityBase(ref.identity)}bucket:${suffix}`, ...BUCKET_FIELDS);
      }),
    );
    return refs.map((_ref, i) => {
      const hash = mapped[i];
      if (hash === '') return viewBucket(null, undefined, now);
      const state = bucketState(fields[i] ?? null);
      if (!state && (hash === null || hash === undefined)) return null;
      return viewBucket(hash === null || hash === undefined || hash === '!' ? 'unknown' : hash, state, now);
    });
  }

  async inspectIdentities(identities: readonly string[]): Promise<IdentityView[]> {
    const now = await this.redisNow();
    return Promise.all(
      identities.map(async (identity) => {
        const base = this.identityBase(identity);
        const [used, paused] = await Promise.all([
          this.redis.zcount(`${base}gslots`, `(${now}`, '+inf'),
          this.redis.pttl(`${base}pause`),
        ]);
        return { globalUsed: Number(used), pausedMs: Math.max(0, Number(paused)) };
      }),
    );
  }

  inspectCloudflare(): number {
    return this.cloudflareRemaining();
  }

  async inspectMarks(identity: string): Promise<MarkView[]> {
    const [now, all] = await Promise.all([
      this.redisNow(),
      this.redis.hgetall(`${this.identityBase(identity)}bad`),
    ]);
    const marks: MarkView[] = [];
    for (const [field, value] of Object.entries(all)) {
      // Values "<expiry>:<code>"; fields as in MARK_FIELD: "r", "u:<routeKey>", "g:<major>", "c:<major>",
      // "f:<routeKey>|<major>|<target>".
      const [expiry = '', code] = value.split(':');
      const ms = Math.ceil(Number(expiry) - now);
      if (!(ms > 0)) continue;
      const place = markPlace([field.slice(0, 1), ...field.slice(2).split('|')]);
      if (place) marks.push({ ...place, code: Number(code), ms });
    }
    return marks;
  }

  /** Redis keeps no list of an identity's buckets short of a SCAN; the failover store answers from memory. */
  knownBuckets(_identity: string, _max: number): BucketRef[] {
    return [];
  }

  /** Redis's clock, ms: the scripts' times are Redis's. */
  private async redisNow(): Promise<number> {
    const [seconds, micros] = await this.redis.time();
    return Number(seconds) * 1000 + Number(micros) / 1000;
  }

  private identityBase(identity: string): string {
    return `${this.prefix}{${identity}}:`;
  }

  private noteCloudflare(remainingMs: number): void {
    if (remainingMs > 0)
      this.cloudflareUntil = Math.max(this.cloudflareUntil, this.clock.now() + remainingMs);
  }

  private cloudflareRemaining(): number {
    return Math.max(0, this.cloudflareUntil - this.clock.now());
  }

  private poll(): void {
    // One poll at a time: against a Redis that hangs, polls must not pile up behind each other.
    if (this.polling) return;
    this.polling = true;
    this.redis.pttl(this.cloudflareKey).then(
      (ms) => {
        this.polling = false;
        this.noteCloudflare(ms);
      },
      // Nobody awaits the poll; a Redis failure surfaces in the next admit(), which the caller handles.
      () => {
        this.polling = false;
      },
    );
  }
}

/** A bucket hash's fields (lua/admit-5.lua), in the order bucketState() reads them. */
const BUCKET_FIELDS = ['l', 'r', 't', 'f', 'b', 'p', 'w', 'i', 'u'] as const;

function bucketState(f: (string | null)[] | null): BucketState | undefined {
  if (!f || f.every((v) => v === null)) return undefined;
  const n = (v: string | null | undefined) => (v === null || v === undefined ? 0 : Number(v));
  const state: BucketState = {
    remaining: n(f[1]),
    resetAt: n(f[2]),
    fresh: f[3] === '1',
    blockedUntil: n(f[4]),
    probeUntil: n(f[5]),
    window: n(f[6]),
    inflight: n(f[7]),
    inflightUntil: n(f[8]),
  };
  if (f[0] !== null && f[0] !== undefined) state.limit = Number(f[0]);
  return state;
}

/**
 * A learn field from outside the proxy (route key, major parameter, bucket hash) without the script's field
 * separator. None can hold one (lua/learn.lua says why); if one ever did, it would shift every field after it, and
 * an exception here would fail the learns of every answer batched with it.
 */
function oneLine(value: string): string {
  return value.includes('\n') ? value.replaceAll('\n', ' ') : value;
}

/** An absent (or non-finite) header value; Lua would read "nan" as a number and poison the bucket with it. */
function fact(value: number | undefined): number | '' {
  return value !== undefined && Number.isFinite(value) ? value : '';
}

const NO_WANT: Want = { places: 0, slots: 0 };

function wanting(want: Want): boolean {
  return want.places > 0 || want.slots > 0;
}

/** What an admitted request's reply granted beyond its own admission (lua/admit.lua: a count, then slot ids). */
function leaseGrant(reply: unknown): Grant {
  if (!Array.isArray(reply) || reply.length <= 5) return { places: 0, slots: [] };
  return { places: Number(reply[5]) || 0, slots: reply.slice(6).map(String) };
}

function admitResult(identity: string, reply: unknown): AdmitResult {
  if (!Array.isArray(reply) || reply.length < 3) throw new Error('unexpected reply from the admit script');
  const [ok, detail, value] = reply as [unknown, unknown, unknown];
  if (ok === 1) {
    const suffix = String(detail);
    return {
      ok: true,
      bucket: suffix === '' ? null : `${identity}|${suffix}`,
      probe: value === 1,
      window: Number(reply[3] ?? 0),
      slot: String(reply[4] ?? ''),
    };
  }
  const reason = REASONS[Number(detail) - 1];
  if (reason === undefined) throw new Error(`unexpected wait reason ${String(detail)} from the admit script`);
  const code = reply[3];
  return code === undefined || code === null
    ? { ok: false, reason, waitMs: Number(value) }
    : { ok: false, reason, waitMs: Number(value), code: Number(code) };
}
