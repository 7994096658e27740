import { createHash } from 'node:crypto';
import { SEEDS } from './seeds.js';

// Route policies of the fake Discord: which bucket a request lands in (docs/discord-ratelimits.md §2, §7.1).

export type CounterScope = 'hash' | 'route';

/** A hidden limit on top of a route bucket, tripped by the body (PATCH /channels/{id} name/topic, #2190). */
export interface SublimitSpec {
  /** Requests with the same name, identity and major share the counter. */
  name: string;
  limit: number;
  windowMs: number;
  /** Top-level JSON body keys; the sublimit applies when any of them is present. */
  bodyKeys: readonly string[];
}

/** A limit shared by every caller of a resource (scope "shared" 429, not counted as invalid). */
export interface SharedSpec {
  name: string;
  limit: number;
  windowMs: number;
  /** 'major': the request's top-level resource; 'webhook': the webhook's linked channel, else its id. */
  key: 'major' | 'webhook';
  code?: number;
  message?: string;
}

export interface PolicyOverride {
  method: string;
  /** Path template without /api/vN; `{anything}` or `:anything` segments are parameters. */
  template: string;
  /** Hash group name: routes with the same group share an X-RateLimit-Bucket (md5 of the name). */
  group?: string;
  hash?: string;
  counter?: CounterScope;
  limit?: number;
  windowMs?: number;
  /** No X-RateLimit-* headers and no route limit at all (docs/discord-ratelimits.md §1.3). */
  unbucketed?: boolean;
  /** Not bound by the global limit (interaction callbacks, docs/discord-ratelimits.md §3). */
  exempt?: boolean;
  /** Served without an Authorization header (webhook tokens, interaction callbacks, invites). */
  authOptional?: boolean;
  sublimits?: readonly SublimitSpec[];
  /** null removes a seeded shared limit. */
  shared?: SharedSpec | null;
  successStatus?: 200 | 204;
  /**
   * false: the route is limited as usual (limit and windowMs per identity and major) but answers carry
   * no X-RateLimit-* headers, and its 429s only Retry-After and the JSON body. Emoji routes are limited
   * per guild and their headers "may be inaccurate" (D-RL:21).
   */
  headers?: boolean;
  /**
   * Retry-After on this route's 429s reports this fraction (0–1) of the real wait, floored to whole
   * seconds, while the body's retry_after keeps the real wait (#7394). Overrides the global option.
   */
  shortRetryAfter?: number;
}

/** Which canned success body a route answers with. */
export type BodyKind =
  | 'generic'
  | 'message'
  | 'webhook-execute'
  | 'gateway'
  | 'gateway-bot'
  | 'user-me'
  | 'echo';

export interface Seed extends PolicyOverride {
  body?: BodyKind;
  /** DELETE message: the hash and limit depend on the message's age (docs/discord-ratelimits.md §2.4). */
  byMessageAge?: true;
  /** Set once an override gave the age-hashed route its own limit/window, which then applies to all ages. */
  ageLimitPinned?: true;
}

export interface Bucketing {
  readonly hash: string;
  /** Counter identity within (identity, major): the hash, or hash + route when counter is 'route'. */
  readonly counterKey: string;
  readonly limit: number;
  readonly windowMs: number;
}

export interface Policy {
  readonly method: string;
  readonly template: string;
  /** "METHOD template", the key of FakeStats.byRoute. */
  readonly routeKey: string;
  readonly bucket: Bucketing | null;
  /** Message delete: buckets for <10 s, 10 s–14 d and >14 d old messages. */
  readonly ageBuckets: readonly [Bucketing, Bucketing, Bucketing] | null;
  readonly exempt: boolean;
  readonly authOptional: boolean;
  readonly sublimits: readonly SublimitSpec[];
  readonly shared: SharedSpec | null;
  readonly successStatus: 200 | 204;
  readonly body: BodyKind;
  /** false: no X-RateLimit-* headers on any answer of the route, 429s included. */
  readonly headers: boolean;
  readonly shortRetryAfter: number | null;
  /** The merged spec, so a later override can be layered on top. */
  readonly spec: Seed;
}

export const INTERACTION_TOKEN_PREFIX = 'aW50ZXJhY3Rpb246';

// Hashes reported for the three message-delete sub-buckets (#8330); limits are the 2026 reports.
const AGE_BUCKETS: readonly (readonly [string, number, number])[] = [
  ['9a4e05a217afd885787cb9f6f7d71853', 5, 1000],
  ['c51d12acd501bc2e6c76ab191408bd45', 3, 1000],
  ['b5e35274c6fd5cfec77fe9bfaf059ad6', 30, 4000],
];

export function groupHash(group: string): string {
  return createHash('md5').update(group).digest('hex');
}

/** `{channel_id}`, `{id}` and `:id` all denote one parameter, so overrides need not spell names exactly. */
export function normalizeTemplate(template: string): string {
  const segs = template.split('/');
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i]!;
    if (s.startsWith('{') || s.startsWith(':')) segs[i] = '{}';
  }
  return segs.join('/');
}

function bucketing(
  hash: string,
  counter: CounterScope,
  routeId: string,
  limit: number,
  windowMs: number,
): Bucketing {
  return { hash, counterKey: counter === 'route' ? `${hash} ${routeId}` : hash, limit, windowMs };
}

export function compilePolicy(spec: Seed): Policy {
  const method = spec.method.toUpperCase();
  const routeId = `${method} ${normalizeTemplate(spec.template)}`;
  const hash = spec.hash ?? groupHash(spec.group ?? routeId);
  const counter = spec.counter ?? 'hash';
  const bucketed = spec.unbucketed !== true;
  if (bucketed && (spec.limit === undefined || spec.windowMs === undefined)) {
    throw new Error(`policy ${routeId}: a bucketed route needs limit and windowMs`);
  }
  const limit = spec.limit ?? 0;
  const windowMs = spec.windowMs ?? 0;
  const pinned = spec.ageLimitPinned === true;
  const ageBuckets =
    spec.byMessageAge && bucketed
      ? (AGE_BUCKETS.map(([h, l, w]) =>
          bucketing(h, 'hash', routeId, pinned ? limit : l, pinned ? windowMs : w),
        ) as [Bucketing, Bucketing, Bucketing])
      : null;
  return {
    method,
    template: spec.template,
    routeKey: `${method} ${spec.template}`,
    bucket: bucketed ? bucketing(hash, counter, routeId, limit, windowMs) : null,
    ageBuckets,
    exempt: spec.exempt === true,
    authOptional: spec.authOptional === true,
    sublimits: spec.sublimits ?? [],
    shared: spec.shared ?? null,
    successStatus: spec.successStatus ?? (method === 'DELETE' ? 204 : 200),
    body: spec.body ?? 'generic',
    headers: spec.headers !== false,
    shortRetryAfter: retryFactor(spec.shortRetryAfter, routeId),
    spec,
  };
}

/** A Retry-After fraction, checked once here so a typo cannot make the header longer than the wait. */
export function retryFactor(factor: number | null | undefined, where: string): number | null {
  if (factor === undefined || factor === null) return null;
  if (!(factor >= 0 && factor <= 1)) throw new Error(`${where}: shortRetryAfter must be within 0..1`);
  return factor;
}

/** Layers an override on a policy's spec; a null shared removes the seeded one. */
export function mergeSpec(base: Seed | undefined, o: PolicyOverride): Seed {
  // The seeded spelling of the template stays, so FakeStats.byRoute keys do not change under overrides.
  const merged: Seed = { ...base, ...o, template: base?.template ?? o.template };
  if (o.shared === null) delete merged.shared;
  if (o.unbucketed === undefined && (o.limit !== undefined || o.windowMs !== undefined))
    delete merged.unbucketed;
  if (merged.byMessageAge && (o.limit !== undefined || o.windowMs !== undefined))
    merged.ageLimitPinned = true;
  // A new hash group must win over a seeded literal hash.
  if (o.group !== undefined && o.hash === undefined) delete merged.hash;
  if (o.unbucketed === false) delete merged.unbucketed;
  return merged;
}

export function seedPolicies(): Policy[] {
  return SEEDS.map(compilePolicy);
}
