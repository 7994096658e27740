/**
 * Whatever arrives on the public port, the proxy answers with a 4xx/5xx in Discord's error shape or closes the
 * connection, keeps serving, and never lets anything reach Discord outside /api/ (issue 5, §3–§5). Most inputs here
 * are sent over raw sockets: HTTP clients refuse to produce them.
 */
import { once } from 'node:events';
import type { IncomingMessage, Server } from 'node:http';
import { connect } from 'node:net';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BOT_A, startEnv, type TestEnv } from '../helpers/env.js';

const MAX_HEADER_BYTES = 16384;
const HEADERS_TIMEOUT_MS = 800;
const BODY_LIMIT_BYTES = 64 * 1024;
const RETRY_BODY_LIMIT_BYTES = 4096;
const CHANNEL = '500000000000000001';
const OK_PATH = '/api/v10/users/@me';

interface RawResponse {
  status: number;
  headers: Map<string, string>;
  body: Buffer;
}

interface Exchange {
  /** Every complete response read, in order. */
  responses: RawResponse[];
  /** Bytes left over that did not form a complete response. */
  rest: Buffer;
  /** The proxy closed the connection (rather than the exchange timing out). */
  closed: boolean;
  ms: number;
}

/** Splits the complete HTTP/1.1 responses (Content-Length or chunked) out of the bytes read from a socket. */
function parseResponses(bytes: Buffer): { responses: RawResponse[]; rest: Buffer } {
  const responses: RawResponse[] = [];
  let rest = bytes;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const [statusLine, ...lines] = rest.subarray(0, end).toString('latin1').split('\r\n');
    const headers = new Map<string, string>();
    for (const line of lines) {
      const colon = line.indexOf(':');
      headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
    let after = rest.subarray(end + 4);
    let body: Buffer;
    if (headers.get('transfer-encoding')?.toLowerCase() === 'chunked') {
      const parts: Buffer[] = [];
      let complete = false;
      for (;;) {
        const lineEnd = after.indexOf('\r\n');
        if (lineEnd < 0) break;
        const size = Number.parseInt(after.subarray(0, lineEnd).toString('latin1'), 16);
        if (size === 0) {
          after = after.subarray(lineEnd + 4);
          complete = true;
          break;
        }
        parts.push(after.subarray(lineEnd + 2, lineEnd + 2 + size));
        after = after.subarray(lineEnd + 2 + size + 2);
      }
      if (!complete) break;
      body = Buffer.concat(parts);
    } else {
      const length = Number(headers.get('content-length') ?? 0);
      if (after.length < length) break;
      body = after.subarray(0, length);
      after = after.subarray(length);
    }
    responses.push({ status: Number(statusLine!.split(' ')[1]), headers, body });
    rest = after;
  }
  return { responses, rest };
}

/**
 * Writes `parts` to a fresh connection (waiting `gapMs` between them), optionally half-closes, and reads until the
 * proxy closes the connection or `waitMs` passes.
 */
async function exchange(
  baseUrl: string,
  parts: (string | Buffer)[],
  opts: { gapMs?: number; end?: boolean; waitMs?: number } = {},
): Promise<Exchange> {
  const { hostname, port } = new URL(baseUrl);
  const socket = connect(Number(port), hostname);
  await once(socket, 'connect');
  const started = performance.now();
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => undefined);
  const closed = new Promise<boolean>((resolve) => socket.once('close', () => resolve(true)));
  let stop = false;
  const writing = (async () => {
    for (const part of parts) {
      if (stop || socket.destroyed) return;
      socket.write(typeof part === 'string' ? Buffer.from(part, 'latin1') : part);
      if (opts.gapMs) await new Promise((resolve) => setTimeout(resolve, opts.gapMs));
    }
    if (opts.end && !socket.destroyed) socket.end();
  })();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), opts.waitMs ?? 3000);
  });
  const didClose = await Promise.race([closed, timeout]);
  clearTimeout(timer);
  stop = true;
  await writing;
  const ms = performance.now() - started;
  socket.destroy();
  const bytes = Buffer.concat(chunks);
  return { ...parseResponses(bytes), closed: didClose, ms };
}

/** A 4xx/5xx the proxy made itself, as JSON in Discord's error shape. */
function expectDiscordError(res: RawResponse, generated = true): { message: string; code: number } {
  expect(res.status).toBeGreaterThanOrEqual(400);
  expect(res.status).toBeLessThan(600);
  if (generated) expect(res.headers.get('x-proxy-generated')).toBe('true');
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  const body = JSON.parse(res.body.toString('utf8')) as { message: string; code: number };
  expect(typeof body.message).toBe('string');
  expect(typeof body.code).toBe('number');
  return body;
}

/** Refused: a Discord-shaped error, or the connection closed without a word. */
function expectRefused(x: Exchange): void {
  if (x.responses.length === 0) {
    expect(x.closed, `neither an answer nor a closed connection (${x.rest.length} stray bytes)`).toBe(true);
    expect(x.rest.length).toBe(0);
    return;
  }
  for (const res of x.responses) expectDiscordError(res);
}

describe('bad input on the public port', () => {
  let env: TestEnv;
  let fakePort: string;
  /** Every request line the fake's HTTP server saw, control routes included (`received` leaves those out). */
  const seenByFake: string[] = [];

  beforeAll(async () => {
    env = await startEnv(
      {},
      {
        env: {
          MAX_HEADER_BYTES: String(MAX_HEADER_BYTES),
          HEADERS_TIMEOUT_MS: String(HEADERS_TIMEOUT_MS),
          BODY_LIMIT_BYTES: String(BODY_LIMIT_BYTES),
          RETRY_BODY_LIMIT_BYTES: String(RETRY_BODY_LIMIT_BYTES),
          // A request that never finishes arriving is cut after MAX_HOLD_MS + UPSTREAM_TIMEOUT_MS + 5 s.
          MAX_HOLD_MS: '1000',
          UPSTREAM_TIMEOUT_MS: '1000',
          KEEP_ALIVE_TIMEOUT_MS: '1000',
        },
      },
    );
    fakePort = new URL(env.fake.url).port;
    // The fake keeps its server to itself; tap it for the request lines its own records leave out.
    const server = (env.fake as unknown as { server: Server }).server;
    server.prependListener('request', (req: IncomingMessage) => seenByFake.push(`${req.method} ${req.url}`));
  });
  afterAll(async () => env?.close());

  /** The proxy still serves a normal request afterwards (each on a channel of its own: no bucket holds it). */
  let served = 0;
  async function stillServing(): Promise<void> {
    const res = await env.call('GET', `/api/v10/channels/${BigInt(CHANNEL) + BigInt(++served)}`);
    expect(res.status).toBe(200);
  }

  const head = (requestLine: string, headers: string[] = []) =>
    `${requestLine}\r\nHost: proxy\r\nAuthorization: ${BOT_A}\r\n${headers.map((h) => `${h}\r\n`).join('')}Connection: close\r\n\r\n`;

  it.each([
    ['garbage', 'GARBAGE\r\n\r\n'],
    ['an empty request line', '\r\n\r\n\r\n'],
    ['a method alone', 'GET\r\n\r\n'],
    ['no HTTP version', `GET ${OK_PATH}\r\n\r\n`],
    ['an unknown HTTP version', head(`GET ${OK_PATH} HTTP/9.9`)],
    ['a space inside the target', head(`GET /api/v10/users/@me extra HTTP/1.1`)],
    ['a NUL in the target', head(`GET /api/v10/users/\u0000me HTTP/1.1`)],
    ['a header line without a colon', `GET ${OK_PATH} HTTP/1.1\r\nHost: proxy\r\nNoColonHere\r\n\r\n`],
    ['a NUL in a header value', `GET ${OK_PATH} HTTP/1.1\r\nHost: proxy\r\nX-Thing: a\u0000b\r\n\r\n`],
    ['no Host header', `GET ${OK_PATH} HTTP/1.1\r\nAuthorization: ${BOT_A}\r\n\r\n`],
    ['a lower-case method', head(`get ${OK_PATH} HTTP/1.1`)],
    ['an unknown method', head(`FROB ${OK_PATH} HTTP/1.1`)],
    ['a WebDAV method', head(`PROPFIND ${OK_PATH} HTTP/1.1`)],
    ['TRACE', head(`TRACE ${OK_PATH} HTTP/1.1`)],
    ['TRACE outside /api/', head('TRACE / HTTP/1.1')],
    ['CONNECT to the fake', `CONNECT 127.0.0.1:PORT HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\n\r\n`],
    ['CONNECT to an API path', head(`CONNECT ${OK_PATH} HTTP/1.1`)],
    [
      'both Content-Length and Transfer-Encoding',
      head(`POST ${OK_PATH} HTTP/1.1`, ['Content-Length: 3', 'Transfer-Encoding: chunked']),
    ],
    [
      'two different Content-Lengths',
      head(`POST ${OK_PATH} HTTP/1.1`, ['Content-Length: 3', 'Content-Length: 4']),
    ],
    ['a negative Content-Length', head(`POST ${OK_PATH} HTTP/1.1`, ['Content-Length: -1'])],
    ['a non-numeric Content-Length', head(`POST ${OK_PATH} HTTP/1.1`, ['Content-Length: lots'])],
    [
      'an unknown expectation',
      head(`POST ${OK_PATH} HTTP/1.1`, ['Expect: the-unexpected', 'Content-Length: 2']),
    ],
    ['an unknown Transfer-Encoding', head(`POST ${OK_PATH} HTTP/1.1`, ['Transfer-Encoding: gzip'])],
    [
      'a declared body over BODY_LIMIT_BYTES',
      head(`POST ${OK_PATH} HTTP/1.1`, [`Content-Length: ${BODY_LIMIT_BYTES + 1}`]),
    ],
  ])('refuses %s', async (_name, raw) => {
    const sentBefore = seenByFake.length;
    const x = await exchange(env.proxy.url, [raw.replaceAll('PORT', fakePort)]);
    expectRefused(x);
    expect(x.closed).toBe(true);
    expect(seenByFake.length).toBe(sentBefore);
    await stillServing();
  });

  it.each([
    ['an absolute-form target for the fake', `http://127.0.0.1:PORT${OK_PATH}`],
    ['an absolute-form target for the fake’s control routes', 'http://127.0.0.1:PORT/__fake/reset'],
    ['an absolute-form target elsewhere', 'http://169.254.169.254/latest/meta-data/'],
    ['an https absolute-form target', `https://discord.com${OK_PATH}`],
    ['an asterisk', '*'],
    ['a target without a leading slash', 'api/v10/users/@me'],
    ['a scheme-relative target', `//127.0.0.1:PORT${OK_PATH}`],
    ['a path outside /api/', '/__fake/reset'],
    ['the root', '/'],
    ['/api without a slash', '/api'],
    ['an upper-case /API/', '/API/v10/users/@me'],
    ['dot-dot segments', '/api/v10/../../__fake/reset'],
    ['a dot segment', '/api/v10/./users/@me'],
    ['encoded dot-dot segments', '/api/v10/%2e%2e/%2e%2e/__fake/reset'],
    ['upper-case encoded dot-dot segments', '/api/%2E%2E/__fake/reset'],
    ['mixed dot-dot segments', '/api/v10/.%2e/x'],
    ['an encoded slash', `/api/v10/channels%2f${CHANNEL}`],
    ['encoded slashes climbing out', '/api/v10/x%2F..%2F..%2F__fake%2Freset'],
    ['an encoded backslash', '/api/v10/x%5c..%5c__fake'],
    ['a backslash', '/api/v10\\..\\__fake\\reset'],
    ['duplicate slashes', '/api//v10/users/@me'],
    ['duplicate slashes later', '/api/v10/users//@me'],
    ['a leading double slash', '//api/v10/users/@me'],
    ['invalid percent-encoding', '/api/v10/users/%zz'],
    ['a lone percent sign', '/api/v10/users/%'],
    ['a truncated percent-escape', '/api/v10/users/%4'],
    ['invalid percent-encoding in the query', '/api/v10/users/@me?x=%g1'],
    ['an encoded NUL', '/api/v10/users/%00'],
    ['an encoded newline', '/api/v10/users/%0d%0aX-Injected:%20yes'],
  ])('refuses %s', async (_name, target) => {
    const sentBefore = seenByFake.length;
    const x = await exchange(env.proxy.url, [head(`GET ${target.replaceAll('PORT', fakePort)} HTTP/1.1`)]);
    expectRefused(x);
    expect(x.closed).toBe(true);
    expect(seenByFake.length).toBe(sentBefore);
    await stillServing();
  });

  it('forwards to UPSTREAM_URL whatever Host the client names', async () => {
    const before = env.fake.received.length;
    const x = await exchange(env.proxy.url, [
      `GET ${OK_PATH} HTTP/1.1\r\nHost: 169.254.169.254\r\nAuthorization: ${BOT_A}\r\nConnection: close\r\n\r\n`,
    ]);
    expect(x.responses.map((r) => r.status)).toEqual([200]);
    const rec = env.fake.received[before]!;
    expect(rec.path).toBe(OK_PATH);
    const host = rec.rawHeaders[rec.rawHeaders.findIndex((h) => h.toLowerCase() === 'host') + 1];
    expect(host).toBe(`127.0.0.1:${fakePort}`);
  });

  it('answers 431 or closes the connection for headers over MAX_HEADER_BYTES', async () => {
    for (const raw of [
      head(`GET ${OK_PATH} HTTP/1.1`, [`X-Big: ${'a'.repeat(MAX_HEADER_BYTES + 100)}`]),
      head(
        `GET ${OK_PATH} HTTP/1.1`,
        Array.from({ length: 600 }, (_, i) => `X-Many-${i}: ${'b'.repeat(20)}`),
      ),
      head(`GET /api/v10/users/@me?q=${'c'.repeat(MAX_HEADER_BYTES + 100)} HTTP/1.1`),
    ]) {
      const before = seenByFake.length;
      const x = await exchange(env.proxy.url, [raw]);
      expectRefused(x);
      expect(x.closed).toBe(true);
      for (const res of x.responses) expect(res.status).toBe(431);
      expect(seenByFake.length).toBe(before);
    }
    await stillServing();
  });

  it('closes a connection whose headers drip in slower than HEADERS_TIMEOUT_MS allows', async () => {
    // One byte every 50 ms, for up to 10 s: the header block would never end on its own.
    const drip = Array.from(`GET ${OK_PATH} HTTP/1.1\r\nHost: proxy\r\nX-Slow: ${'s'.repeat(200)}`);
    // And a connection that says nothing at all.
    const [slow, silent] = await Promise.all([
      exchange(env.proxy.url, drip, { gapMs: 50, waitMs: 10_000 }),
      exchange(env.proxy.url, [], { waitMs: 10_000 }),
    ]);
    for (const x of [slow, silent]) {
      expect(x.closed).toBe(true);
      expectRefused(x);
      for (const res of x.responses) expect(res.status).toBe(408);
      expect(x.ms).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS - 50);
      expect(x.ms).toBeLessThan(HEADERS_TIMEOUT_MS + 2500);
    }
    await stillServing();
  });

  it('forwards only the declared body and refuses what follows it', async () => {
    const echo =
      `POST /api/v10/__echo HTTP/1.1\r\nHost: proxy\r\nAuthorization: ${BOT_A}\r\nContent-Type: text/plain\r\n` +
      'Content-Length: 5\r\n\r\nhello';
    const extra = 'THIS IS NOT HTTP AT ALL\r\n\r\n';
    // The extra bytes come after the answer: the request is answered, then the garbage gets a 400.
    let before = env.fake.received.length;
    const later = await exchange(env.proxy.url, [echo, extra], { gapMs: 300 });
    expect(later.closed).toBe(true);
    expect(later.responses.map((r) => r.status)).toEqual([200, 400]);
    expect(later.responses[0]!.body.toString()).toBe('hello');
    expectDiscordError(later.responses[1]!);
    expect(env.fake.received.length).toBe(before + 1);
    expect(env.fake.received[before]!.body.toString()).toBe('hello');

    // In the same packet: the parser fails while the first request is being answered. A 400 written then would
    // be read as the answer to the first request, so the connection just closes; the garbage never goes anywhere.
    before = env.fake.received.length;
    const together = await exchange(env.proxy.url, [echo + extra]);
    expect(together.closed).toBe(true);
    expect(together.rest.length).toBe(0);
    for (const res of together.responses) {
      expect(res.status).toBe(200);
      expect(res.body.toString()).toBe('hello');
    }
    expect(env.fake.received.length).toBeLessThanOrEqual(before + 1);
    for (const r of env.fake.received.slice(before)) expect(r.body.toString()).toBe('hello');
    await stillServing();
  });

  it('forwards nothing for a small body that ends early, and does not hang on it', async () => {
    const before = seenByFake.length;
    const start = `POST /api/v10/channels/${CHANNEL}/messages HTTP/1.1\r\nHost: proxy\r\nAuthorization: ${BOT_A}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n`;
    // The client half-closes after 10 bytes, or vanishes.
    const halfClosed = await exchange(env.proxy.url, [start, '{"content"'], { end: true });
    expectRefused(halfClosed);
    expect(halfClosed.closed).toBe(true);
    // The client stays connected and sends nothing more: the request timeout ends it.
    const stalled = await exchange(env.proxy.url, [start, '{"content"'], { waitMs: 9000 });
    expectRefused(stalled);
    expect(stalled.closed).toBe(true);
    // MAX_HOLD_MS + UPSTREAM_TIMEOUT_MS + 5 s, and the check interval.
    expect(stalled.ms).toBeLessThan(7000 + 1500);
    expect(seenByFake.length).toBe(before);
    await stillServing();
  }, 20_000);

  it('survives a large streamed body that ends early or is malformed', async () => {
    const big = `POST /api/v10/channels/${CHANNEL}/messages HTTP/1.1\r\nHost: proxy\r\nAuthorization: ${BOT_A}\r\nContent-Type: application/octet-stream\r\nContent-Length: ${RETRY_BODY_LIMIT_BYTES * 4}\r\n\r\n`;
    const truncated = await exchange(env.proxy.url, [big, Buffer.alloc(RETRY_BODY_LIMIT_BYTES * 2, 1)], {
      end: true,
    });
    expectRefused(truncated);
    expect(truncated.closed).toBe(true);
    const chunked = `POST /api/v10/channels/${CHANNEL}/messages HTTP/1.1\r\nHost: proxy\r\nAuthorization: ${BOT_A}\r\nTransfer-Encoding: chunked\r\n\r\n`;
    for (const bad of [
      '4\r\nabcd\r\nZZZ\r\n',
      'FFFFFFFFFFFFFFFFFFFFFF\r\nabc\r\n',
      '3\r\nabcdef\r\n0\r\n\r\n',
    ]) {
      const x = await exchange(env.proxy.url, [chunked, bad]);
      expectRefused(x);
      expect(x.closed).toBe(true);
    }
    await stillServing();
  });

  it('passes garbage Authorization values on as they are, and Discord’s 401s back', async () => {
    const values = [
      '',
      ' ',
      'Bot',
      'Bot ',
      'Bearer',
      `Bot ${'\u00ff\u00fe\u0080\u00e9'.repeat(8)}`,
      Buffer.from(Array.from({ length: 64 }, (_, i) => 0x80 + i)).toString('latin1'),
      `Bot ${'A'.repeat(10 * 1024)}`,
      'Bot a.b.c.d.e.f',
      'Basic dXNlcjpwYXNz',
    ];
    for (const value of values) {
      // Discord answers such tokens with 401; the fake does when told the token is revoked.
      env.fake.revokeToken(value.trim());
      const before = env.fake.received.length;
      const x = await exchange(env.proxy.url, [
        Buffer.from(
          `GET ${OK_PATH} HTTP/1.1\r\nHost: proxy\r\nAuthorization: ${value}\r\nConnection: close\r\n\r\n`,
          'latin1',
        ),
      ]);
      expect(x.closed).toBe(true);
      expect(x.responses).toHaveLength(1);
      const res = x.responses[0]!;
      expect(res.status, JSON.stringify(value.slice(0, 20))).toBe(401);
      const body = expectDiscordError(res, false);
      if (res.headers.get('x-proxy-generated') === undefined) {
        // Discord's own answer: the value reached it byte for byte.
        expect(body).toEqual({ message: '401: Unauthorized', code: 0 });
        const rec = env.fake.received[before]!;
        const sent = rec.rawHeaders[rec.rawHeaders.findIndex((h) => h.toLowerCase() === 'authorization') + 1];
        expect(sent === undefined ? '' : sent).toBe(value.trim());
      }
    }
    // Control characters never get that far.
    for (const value of ['Bot \u0001\u0002', 'Bot a\u007fb']) {
      const x = await exchange(env.proxy.url, [head(`GET ${OK_PATH} HTTP/1.1`).replace(BOT_A, value)]);
      if (x.responses[0]?.status !== 401) expectRefused(x);
    }
    await stillServing();
  });

  it('answers two Authorization headers with 400 and forwards nothing (two tokens, one request)', async () => {
    const before = env.fake.received.length;
    for (const second of [BOT_A, 'Bot anotherTokenOfSomeoneElse']) {
      const x = await exchange(env.proxy.url, [
        Buffer.from(
          `POST ${OK_PATH} HTTP/1.1\r\nHost: proxy\r\nAuthorization: ${BOT_A}\r\nauthorization: ${second}\r\n` +
            'Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}',
          'latin1',
        ),
      ]);
      expect(x.responses).toHaveLength(1);
      expect(x.responses[0]!.status).toBe(400);
      expect(expectDiscordError(x.responses[0]!).message).toMatch(/Authorization/);
    }
    expect(env.fake.received.length).toBe(before);
    await stillServing();
  });

  it('keeps its public and admin ports up after all of it, and never sent anything outside /api/', async () => {
    await stillServing();
    const health = await request(`${env.proxy.adminUrl}/healthz`);
    expect(health.statusCode).toBe(200);
    await health.body.dump();
    expect(seenByFake.length).toBeGreaterThan(0);
    for (const line of seenByFake) expect(line.split(' ')[1]!.startsWith('/api/'), line).toBe(true);
    expect(env.fake.received.length).toBeGreaterThan(0);
    for (const r of env.fake.received) expect(r.path.startsWith('/api/'), r.path).toBe(true);
  });
});

describe('non-JSON error bodies from upstream', () => {
  let env: TestEnv;
  beforeAll(async () => {
    env = await startEnv({ invalidBan: { form: 'B' } }, { env: { CLOUDFLARE_COOLDOWN_MS: '1000' } });
  });
  afterAll(async () => env?.close());

  it('turns Cloudflare’s HTML 1015 page into its own JSON 429, pauses, and recovers', async () => {
    env.fake.banNow(500);
    const banned = await env.call('GET', OK_PATH);
    const bannedAt = performance.now();
    expect(banned.status).toBe(429);
    expect(banned.headers['x-proxy-generated']).toBe('true');
    expect(banned.headers['content-type']).toMatch(/^application\/json/);
    const body = banned.json() as { message: string; code: number; retry_after: number };
    expect(body.code).toBe(990002);
    expect(typeof body.message).toBe('string');
    expect(body.retry_after).toBeGreaterThan(0);
    expect(env.fake.received.map((r) => r.status)).toEqual([429]);
    expect(env.fake.received[0]!.status).toBe(429);

    // During the cool-down nothing goes upstream; every answer is still Discord-shaped JSON.
    const paused = await env.call('GET', `/api/v10/channels/${CHANNEL}`);
    expect(paused.status).toBe(429);
    expect((paused.json() as { code: number }).code).toBe(990002);
    expect(env.fake.received).toHaveLength(1);

    await new Promise((resolve) => setTimeout(resolve, Math.max(0, bannedAt + 1100 - performance.now())));
    const after = await env.call('GET', OK_PATH);
    expect(after.status).toBe(200);
    expect(env.fake.received.every((r) => r.path.startsWith('/api/'))).toBe(true);
  });
});
