import type { IncomingHttpHeaders } from 'node:http';
import { botIdOf, messageAgeIndex, successReply } from './bodies.js';
import {
  GcraLimiter,
  type GlobalLimiter,
  InvalidTracker,
  SlidingLimiter,
  type Window,
  Windows,
} from './limits.js';
import type { ResolvedOptions } from './options.js';
import type { Bucketing, Policy, SharedSpec, SublimitSpec } from './policies.js';
import { type BucketSnap, errorReply, type Reply, reply } from './reply.js';

// The decision for one request, in the order of docs/discord-ratelimits.md §7.1: Cloudflare ban → auth →
// global → shared → route bucket → sublimit → handler. Every check reads first and nothing is consumed
// until all have passed, so rejected requests do not use up slots.

export interface RequestInfo {
  readonly method: string;
  /** As received, with /api/vN. */
  readonly path: string;
  /** Without the /api/vN prefix. */
  readonly apiPath: string;
  readonly query: string;
  /** apiPath split on '/'; segs[0] is the empty string before the first slash. */
  readonly segs: readonly string[];
  readonly policy: Policy | undefined;
  readonly auth: string | undefined;
  readonly ip: string;
  readonly identity: string;
  readonly exempt: boolean;
  readonly major: string;
  readonly headers: IncomingHttpHeaders;
}

interface IdentityState {
  readonly global: GlobalLimiter;
  readonly botId: string | undefined;
}

interface Plan {
  readonly id: IdentityState;
  readonly bucket: Bucketing | null;
  readonly bucketKey: string;
  readonly shared: SharedSpec | null;
  readonly sharedKey: string;
  readonly subs: readonly SublimitSpec[];
  /** The path names a message the fake was told does not exist. */
  readonly unknownMessage: boolean;
}

const FORM_A = JSON.stringify({
  code: 0,
  message:
    'You are being blocked from accessing our API temporarily due to exceeding our rate limits frequently. Please read our docs at https://discord.com/developers/docs/topics/rate-limits to prevent this moving forward.',
});
const SHARED_MESSAGE = 'The resource is being rate limited.';

function snap(b: Bucketing, w: Window): BucketSnap {
  return { hash: b.hash, limit: b.limit, remaining: Math.max(0, b.limit - w.count), resetAt: w.resetAt };
}

function matchingSublimits(subs: readonly SublimitSpec[], body: Buffer): readonly SublimitSpec[] {
  if (subs.length === 0 || body.length === 0) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return [];
  }
  if (typeof parsed !== 'object' || parsed === null) return [];
  return subs.filter((s) => s.bodyKeys.some((k) => Object.hasOwn(parsed as object, k)));
}

/** The message id of /channels/{c}/messages/{m}[/...] or /webhooks/{w}/{t}/messages/{m}[/...]. */
function messageIdOf(segs: readonly string[]): string | undefined {
  if (segs[1] === 'channels' && segs[3] === 'messages') return segs[4];
  if (segs[1] === 'webhooks' && segs[4] === 'messages') return segs[5];
  return undefined;
}

/** The route's own ways of answering: no rate-limit headers, or a short Retry-After (not on global 429s). */
function routeStyled(r: Reply, p: Policy | undefined): Reply {
  if (!p || r.kind === 'global' || (p.headers && p.shortRetryAfter === null)) return r;
  const shortRetryAfter = p.shortRetryAfter ?? r.shortRetryAfter;
  return p.headers ? { ...r, shortRetryAfter } : { ...r, bucket: null, bare: true, shortRetryAfter };
}

/**
 * 401, 403 and 429 count toward the IP's invalid-request budget, except shared 429s and ban pages
 * (docs/discord-ratelimits.md §4).
 */
export function isInvalid(r: Reply): boolean {
  return (
    r.status === 401 || r.status === 403 || r.kind === 'user' || r.kind === 'global' || r.kind === 'sublimit'
  );
}

export type ForbiddenCode = 50001 | 50007 | 50013;
const FORBIDDEN_MESSAGES: Record<ForbiddenCode, string> = {
  50001: 'Missing Access',
  50007: 'Cannot send messages to this user',
  50013: 'Missing Permissions',
};

export class DiscordModel {
  private readonly windows = new Windows();
  private readonly identities = new Map<string, IdentityState>();
  private readonly ips = new Map<string, InvalidTracker>();
  private readonly revoked = new Set<string>();
  private readonly deletedWebhooks = new Set<string>();
  private readonly webhookChannels = new Map<string, string>();
  private readonly unknownMessages = new Set<string>();
  private forbidden: { method: string; prefix: string; code: ForbiddenCode }[] = [];
  private banAllUntil = 0;

  constructor(private readonly opts: ResolvedOptions) {
    for (const id of opts.unknownMessages) this.unknownMessages.add(id);
  }

  evaluate(r: RequestInfo, body: Buffer, now: number): Reply {
    if (this.isBanned(r.ip, now)) return this.banPage();
    const p = r.policy;
    const unauthorized =
      r.auth !== undefined
        ? this.revoked.has(r.auth)
        : this.opts.requireAuth && p !== undefined && !p.authOptional;
    if (unauthorized) return errorReply(401, '401: Unauthorized', 0);
    const plan = this.plan(r, body);
    const limited = this.limited(r, plan, now);
    if (limited) return routeStyled(limited, p);
    if (!r.exempt) plan.id.global.take(now);
    if (plan.shared) this.windows.consume(plan.sharedKey, now, plan.shared.windowMs);
    for (const s of plan.subs) this.windows.consume(this.subKey(r, s), now, s.windowMs);
    const b = plan.bucket;
    const own = b ? snap(b, this.windows.consume(plan.bucketKey, now, b.windowMs)) : null;
    return routeStyled(this.handle(r, body, own, plan), p);
  }

  countInvalid(ip: string, now: number): void {
    const ban = this.opts.invalidBan;
    let t = this.ips.get(ip);
    if (!t) {
      t = new InvalidTracker(ban.threshold, ban.windowMs);
      this.ips.set(ip, t);
    }
    if (t.add(now)) t.bannedUntil = now + ban.banMs;
  }

  revoke(auth: string): void {
    this.revoked.add(auth);
  }

  deleteWebhook(id: string): void {
    this.deletedWebhooks.add(id);
  }

  /** Makes a webhook's hidden 30/60 s limit count per channel, shared with the channel's other webhooks. */
  linkWebhook(webhookId: string, channelId: string): void {
    this.webhookChannels.set(webhookId, channelId);
  }

  /** Later requests for this message id, in any channel or webhook, get 404 Unknown Message. */
  deleteMessage(id: string): void {
    this.unknownMessages.add(id);
  }

  /**
   * Requests whose path starts with `prefix` get 403 with `code`: 50013 Missing Permissions (one target, such as
   * a member ranked above the bot), 50001 Missing Access (the whole channel or guild), 50007 (a closed DM).
   */
  forbid(method: string, prefix: string, code: ForbiddenCode = 50013): void {
    this.forbidden.push({ method: method.toUpperCase(), prefix, code });
  }

  banAll(until: number): void {
    this.banAllUntil = until;
  }

  sweep(now: number): void {
    this.windows.sweep(now);
  }

  reset(): void {
    this.windows.clear();
    this.identities.clear();
    this.ips.clear();
    this.revoked.clear();
    this.deletedWebhooks.clear();
    this.webhookChannels.clear();
    this.unknownMessages.clear();
    for (const id of this.opts.unknownMessages) this.unknownMessages.add(id);
    this.forbidden = [];
    this.banAllUntil = 0;
  }

  private isBanned(ip: string, now: number): boolean {
    return this.banAllUntil > now || (this.ips.get(ip)?.bannedUntil ?? 0) > now;
  }

  private banPage(): Reply {
    if (this.opts.invalidBan.form === 'A') return reply('cloudflare', 429, { body: FORM_A });
    return reply('cloudflare', 429, { body: 'error code: 1015', contentType: 'text/html; charset=UTF-8' });
  }

  private plan(r: RequestInfo, body: Buffer): Plan {
    const p = r.policy;
    const messageId = this.unknownMessages.size > 0 ? messageIdOf(r.segs) : undefined;
    const unknownMessage = messageId !== undefined && this.unknownMessages.has(messageId);
    const bucket = this.bucketing(p, r.segs, unknownMessage);
    // Interaction followups share webhook buckets, but a hidden per-channel limit keyed by the
    // application id would throttle every interaction of the app at once.
    const shared = p?.shared && !r.exempt ? p.shared : null;
    return {
      id: this.identity(r),
      bucket,
      bucketKey: bucket ? `${r.identity}\n${bucket.counterKey}\n${r.major}` : '',
      shared,
      sharedKey: shared ? this.sharedKey(shared, r) : '',
      subs: p ? matchingSublimits(p.sublimits, body) : [],
      unknownMessage,
    };
  }

  private limited(r: RequestInfo, plan: Plan, now: number): Reply | null {
    if (!r.exempt) {
      const until = plan.id.global.blockedUntil(now);
      if (until > 0) return reply('global', 429, { retryAt: until });
    }
    const b = plan.bucket;
    const w = b ? this.windows.view(plan.bucketKey, now, b.windowMs) : null;
    const own = b && w ? snap(b, w) : null;
    if (plan.shared) {
      const s = this.windows.view(plan.sharedKey, now, plan.shared.windowMs);
      const { message = SHARED_MESSAGE, code = null } = plan.shared;
      if (s.count >= plan.shared.limit)
        return reply('shared', 429, { bucket: own, retryAt: s.resetAt, message, code });
    }
    if (b && w && w.count >= b.limit) return reply('user', 429, { bucket: own, retryAt: w.resetAt });
    for (const sub of plan.subs) {
      const s = this.windows.view(this.subKey(r, sub), now, sub.windowMs);
      if (s.count >= sub.limit) return reply('sublimit', 429, { bucket: own, retryAt: s.resetAt });
    }
    return null;
  }

  private handle(r: RequestInfo, body: Buffer, own: BucketSnap | null, plan: Plan): Reply {
    if (r.segs[1] === 'webhooks' && this.deletedWebhooks.has(r.segs[2] ?? '')) {
      return errorReply(404, 'Unknown Webhook', 10015, own);
    }
    if (plan.unknownMessage) return errorReply(404, 'Unknown Message', 10008, own);
    for (const f of this.forbidden) {
      if ((f.method === '*' || f.method === r.method) && r.apiPath.startsWith(f.prefix)) {
        return errorReply(403, FORBIDDEN_MESSAGES[f.code], f.code, own);
      }
    }
    const p = r.policy;
    const status = p?.successStatus ?? (r.method === 'DELETE' ? 204 : 200);
    const ok = successReply({ ...r, kind: p?.body ?? 'generic', status, body, botId: plan.id.botId });
    return own ? { ...ok, bucket: own } : ok;
  }

  private bucketing(
    p: Policy | undefined,
    segs: readonly string[],
    unknownMessage: boolean,
  ): Bucketing | null {
    if (!p?.bucket) return null;
    if (!p.ageBuckets) return p.bucket;
    // Discord answers a delete of a message it does not know from the young-message bucket, whatever
    // the id's age, so the 404s carry another hash and counter than the route's 204s (#8330).
    if (unknownMessage) return p.ageBuckets[0];
    return p.ageBuckets[messageAgeIndex(segs[4], Date.now() + this.opts.clockSkewMs)];
  }

  private identity(r: RequestInfo): IdentityState {
    let s = this.identities.get(r.identity);
    if (!s) {
      const botId = botIdOf(r.auth);
      const limit =
        (botId !== undefined ? this.opts.globalOverrides[botId] : undefined) ?? this.opts.globalLimit;
      const global = this.opts.globalMode === 'gcra' ? new GcraLimiter(limit) : new SlidingLimiter(limit);
      s = { global, botId };
      this.identities.set(r.identity, s);
    }
    return s;
  }

  private sharedKey(s: SharedSpec, r: RequestInfo): string {
    const webhookId = r.segs[2] ?? '';
    const linked = this.webhookChannels.get(webhookId);
    const resource = s.key === 'major' ? r.major : linked !== undefined ? `c:${linked}` : `w:${webhookId}`;
    return `\0${s.name}\n${resource}`;
  }

  private subKey(r: RequestInfo, s: SublimitSpec): string {
    return `${r.identity}\n~${s.name}\n${r.major}`;
  }
}
