import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { handleControl } from './control.js';
import { type LatencyOption, type LatencySampler, latencySampler } from './latency.js';
import { DiscordModel, type ForbiddenCode, isInvalid, type RequestInfo } from './model.js';
import { type FakeDiscordOptions, type ResolvedOptions, resolveOptions } from './options.js';
import { type PolicyOverride, retryFactor } from './policies.js';
import { errorReply, type Reply, type ReplyFormat, render, reply } from './reply.js';
import { genericTemplate, isInteractionRoute, majorOf, RouteTable, stripApiPrefix } from './route-table.js';
import { EMPTY_BODY, type FakeStats, type ReceivedRequest, Recorder } from './stats.js';

export type { LatencyOption } from './latency.js';
export type { FakeDiscordOptions, InvalidBanOption } from './options.js';
export type { CounterScope, PolicyOverride, SharedSpec, SublimitSpec } from './policies.js';
export { type DistanceOptions, far, fixed, near, PROFILES, type ProfileName } from './profiles.js';
export type { FakeStats, LimitedScope, ReceivedRequest } from './stats.js';

export type FailureKind = '500' | '502' | '504' | 'hang' | 'reset';

/** A request whose body has been read, on its way to "Discord". */
interface InTransit {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly url: string;
  readonly ip: string;
  readonly body: Buffer;
  readonly readAt: number;
}

interface Arrival {
  readonly info: RequestInfo;
  readonly rec: ReceivedRequest;
}

const GATEWAY_PAGE = (status: number, text: string): string =>
  `<html><head><title>${status} ${text}</title></head><body><center><h1>${status} ${text}</h1></center></body></html>\n`;

/**
 * A Discord REST upstream for tests and benchmarks that behaves like docs/discord-ratelimits.md §7: route
 * buckets with shared hashes, hidden sublimits and shared limits, a per-identity global limit, and
 * Cloudflare bans after too many invalid requests.
 */
export class FakeDiscord {
  url = '';
  readonly options: ResolvedOptions;
  private readonly table: RouteTable;
  private readonly model: DiscordModel;
  private readonly recorder: Recorder;
  private readonly transit: LatencySampler;
  private readonly transitless: boolean;
  private latency: LatencySampler;
  private readonly format: ReplyFormat;
  private server: Server | null = null;
  private failures: { kind: FailureKind; left: number }[] = [];
  private readonly pending = new Set<NodeJS.Timeout>();
  private sweeper: NodeJS.Timeout | null = null;

  constructor(options: FakeDiscordOptions = {}) {
    const o = resolveOptions(options);
    this.options = o;
    this.table = new RouteTable(o.policies);
    this.model = new DiscordModel(o);
    this.transit = latencySampler(o.transit);
    this.transitless = o.transit.kind === 'none';
    this.latency = latencySampler(o.latency);
    this.recorder = new Recorder({
      recordBodies: o.recordBodies,
      maxRecords: o.maxRecords,
      maxBodyBytes: o.maxBodyBytes,
      maxTotalBodyBytes: 512 * 1024 * 1024,
    });
    const retryAfter = o.invalidBan.retryAfter;
    this.format = {
      decimals: o.decimals,
      retryDecimals: o.retryAfterDecimals,
      skewMs: o.clockSkewMs,
      scopeOnSuccess: o.scopeOnSuccess,
      banRetryAfter: retryAfter === 'absent' ? null : retryAfter,
      shortRetryAfter: retryFactor(o.shortRetryAfter, 'FakeDiscordOptions'),
    };
  }

  /** Every request that reached "Discord" (control routes excepted), in arrival (decision) order. */
  get received(): ReceivedRequest[] {
    return this.recorder.received;
  }

  async start(): Promise<string> {
    if (this.server) return this.url;
    const server = createServer({ noDelay: true, requestTimeout: 0 }, this.onRequest);
    // Longer than undici's default keep-alive, so the client, not the fake, retires idle sockets.
    server.keepAliveTimeout = 65_000;
    server.headersTimeout = 66_000;
    server.on('clientError', (_err, socket) => socket.destroy());
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.port, this.options.host, () => resolve());
    });
    this.server = server;
    const { port } = server.address() as AddressInfo;
    const host = this.options.host.includes(':') ? `[${this.options.host}]` : this.options.host;
    this.url = `http://${host}:${port}`;
    this.sweeper = setInterval(() => this.model.sweep(performance.now()), 10_000);
    this.sweeper.unref();
    return this.url;
  }

  async stop(): Promise<void> {
    // Requests still in transit never arrive, and held answers are never sent.
    for (const t of this.pending) clearTimeout(t);
    this.pending.clear();
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
    const server = this.server;
    if (!server) return;
    this.server = null;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      // Kills keep-alive sockets and requests held by 'hang' failures.
      server.closeAllConnections();
    });
  }

  /** From now on answers take this long (requests already being answered keep their delay). */
  setLatency(option: LatencyOption): void {
    this.latency = latencySampler(option);
  }

  /** Every later request with this Authorization value gets 401 (and counts as invalid). */
  revokeToken(authorization: string): void {
    this.model.revoke(authorization);
  }

  /** Every later request under /webhooks/{id} gets 404 Unknown Webhook. */
  deleteWebhook(id: string): void {
    this.model.deleteWebhook(id);
  }

  /**
   * Later requests for this message id (channel or webhook message routes) get 404 Unknown Message
   * (10008); a message DELETE's 404 carries another hash and counter than the route's 204s (docs/discord-ratelimits.md §2.4).
   */
  deleteMessage(id: string): void {
    this.model.deleteMessage(id);
  }

  /** Counts the webhook's hidden 30/60 s execute limit per channel, shared with the channel's other webhooks. */
  linkWebhook(webhookId: string, channelId: string): void {
    this.model.linkWebhook(webhookId, channelId);
  }

  /** Requests with this method ('*' for any) whose path (with or without /api/vN) starts with pathPrefix get 403. */
  forbid(method: string, pathPrefix: string, code?: ForbiddenCode): void {
    this.model.forbid(method, stripApiPrefix(pathPrefix), code);
  }

  /** The next n requests fail this way before any other check; they are still recorded. */
  failNext(n: number, kind: FailureKind): void {
    if (n > 0) this.failures.push({ kind, left: n });
  }

  /** Bans every client now, as if the invalid-request threshold had been reached. */
  banNow(ms = this.options.invalidBan.banMs): void {
    this.model.banAll(performance.now() + ms);
  }

  setPolicy(override: PolicyOverride): void {
    this.table.set(override);
  }

  /**
   * Back to a fresh start: counters, bans, stats, records and injected behaviours; policies and the
   * unknownMessages option stay. Requests still in transit arrive afterwards and count as new ones.
   */
  reset(): void {
    this.model.reset();
    this.recorder.clear();
    this.failures = [];
  }

  stats(): FakeStats {
    return this.recorder.snapshot();
  }

  private readonly onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const url = req.url ?? '/';
    if (url.startsWith('/__fake/')) {
      handleControl(this, req, res);
      return;
    }
    // Read now: a client that leaves during the transit takes its socket's address with it.
    const ip = req.socket.remoteAddress ?? 'unknown';
    // Without a transit a request is recorded as soon as its headers are in, as it always was: tests
    // watch `received` to see a streamed upload reach the fake before its body has.
    const early = this.transitless ? this.record(req, url, ip, performance.now(), null) : null;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => {});
    req.on('end', () => {
      const body =
        chunks.length === 0 ? EMPTY_BODY : chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      if (early) this.handle(req, res, early, body, performance.now());
      else this.travel({ req, res, url, ip, body, readAt: performance.now() });
    });
  };

  /** The one-way trip to Discord: each request its own delay, so they can overtake one another. */
  private travel(t: InTransit): void {
    const delay = this.transit(t.req.method ?? 'GET');
    if (delay <= 0) {
      this.arrive(t, t.readAt);
      return;
    }
    const timer = setTimeout(() => {
      this.pending.delete(timer);
      this.arrive(t, performance.now());
    }, delay);
    this.pending.add(timer);
  }

  /**
   * Discord has the request: it is recorded and decided now, even if the client has gone meanwhile, as
   * Discord would have counted it; only the answer is then dropped.
   */
  private arrive(t: InTransit, at: number): void {
    this.handle(t.req, t.res, this.record(t.req, t.url, t.ip, at, t.readAt), t.body, at);
  }

  /** Records an arrival; readAt null means the request is recorded before its body is read (no transit). */
  private record(req: IncomingMessage, url: string, ip: string, at: number, readAt: number | null): Arrival {
    const info = this.describe(req, url, ip);
    const rec: ReceivedRequest = {
      at,
      readAt: readAt ?? at,
      method: info.method,
      path: info.path,
      query: info.query,
      identity: info.identity,
      ip: info.ip,
      exempt: info.exempt,
      route: info.policy?.routeKey ?? `${info.method} ${genericTemplate(info.segs)}`,
      status: 0,
      rawHeaders: req.rawHeaders,
      body: EMPTY_BODY,
    };
    this.recorder.arrive(rec);
    return { info, rec };
  }

  private describe(req: IncomingMessage, url: string, ip: string): RequestInfo {
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const apiPath = stripApiPrefix(path);
    const segs = apiPath.split('/');
    if (segs.length > 2 && segs[segs.length - 1] === '') segs.pop();
    const method = req.method ?? 'GET';
    const policy = this.table.match(method, segs);
    const auth = req.headers.authorization;
    return {
      method,
      path,
      apiPath,
      query: q < 0 ? '' : url.slice(q + 1),
      segs,
      policy,
      auth,
      ip,
      identity: auth === undefined ? `ip:${ip}` : canonicalAuth(auth),
      exempt: policy?.exempt === true || isInteractionRoute(segs),
      major: majorOf(segs),
      headers: req.headers,
    };
  }

  /** Decides a request that has arrived, at `now`, and answers it after the simulated latency. */
  private handle(
    req: IncomingMessage,
    res: ServerResponse,
    { info, rec }: Arrival,
    body: Buffer,
    now: number,
  ): void {
    this.recorder.body(rec, body);
    const failure = this.takeFailure();
    if (failure === 'hang' || failure === 'reset') {
      this.recorder.answered(rec, 0, 'failure');
      if (failure === 'reset') req.socket.destroy();
      return;
    }
    const r = failure ? failureReply(failure) : this.model.evaluate(info, body, now);
    this.recorder.answered(rec, r.status, r.kind);
    if (isInvalid(r)) {
      this.recorder.countInvalid();
      this.model.countInvalid(info.ip, now);
    }
    // Ban pages come from Cloudflare's edge, without the trip to Discord's origin.
    const delay = r.kind === 'cloudflare' ? 0 : this.latency(info.method);
    if (delay <= 0) {
      // The fake's own processing time is not Discord's: an instant answer carries the decision's clock.
      this.send(res, r, 0, now);
      return;
    }
    const timer = setTimeout(() => {
      this.pending.delete(timer);
      // libuv timers may fire a fraction of a millisecond early against performance.now().
      this.send(res, r, delay, Math.max(performance.now(), now + delay));
    }, delay);
    this.pending.add(timer);
  }

  private send(res: ServerResponse, r: Reply, latencyMs: number, now: number): void {
    if (res.destroyed) return;
    const [headers, body] = render(r, now, latencyMs, this.format);
    res.writeHead(r.status, headers);
    res.end(body);
  }

  private takeFailure(): FailureKind | null {
    const head = this.failures[0];
    if (!head) return null;
    if (--head.left <= 0) this.failures.shift();
    return head.kind;
  }
}

function failureReply(kind: '500' | '502' | '504'): Reply {
  if (kind === '500') return { ...errorReply(500, '500: Internal Server Error', 0), kind: 'failure' };
  const page = kind === '502' ? GATEWAY_PAGE(502, 'Bad Gateway') : GATEWAY_PAGE(504, 'Gateway Timeout');
  return reply('failure', Number(kind), { body: page, contentType: 'text/html' });
}

/**
 * Discord reads the scheme word case-insensitively and ignores the whitespace around the credential: "bot x",
 * "Bot  x " and "Bot x" are one token with one set of limits. Spelt as Discord's docs spell it.
 */
export function canonicalAuth(auth: string): string {
  const value = auth.trim();
  const space = value.search(/\s/);
  if (space === -1) return value;
  const scheme = value.slice(0, space).toLowerCase();
  const spelt = scheme === 'bot' ? 'Bot' : scheme === 'bearer' ? 'Bearer' : value.slice(0, space);
  return `${spelt} ${value.slice(space + 1).trim()}`;
}
