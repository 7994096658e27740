/**
 * Byte-exact forwarding (design.md §2): what the client sends is what the fake Discord receives, and what the fake
 * answers is what the client gets back. Every assertion compares bytes at the other end of a real socket.
 */
import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeDiscord, type ReceivedRequest } from '../fake-discord/server.js';
import { BOT_A, clientFor } from '../helpers/env.js';
import { type RunningProxy, startProxy } from '../helpers/proxy.js';

const CHANNEL = '100000000000000001';
const RETRY_BODY_LIMIT = 1024 * 1024;

/** Every byte value, repeated to `size` bytes. */
function allBytes(size: number): Buffer {
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; i++) out[i] = i & 0xff;
  return out;
}

/** A multipart/form-data body as Discord's attachment upload expects it: payload_json plus one binary file. */
function multipart(boundary: string, file: Buffer): Buffer {
  return Buffer.concat([
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="payload_json"\r\nContent-Type: application/json\r\n\r\n` +
        `{"content":"file \u00e9\u{1f4ce}","attachments":[{"id":0,"filename":"blob.bin"}]}\r\n` +
        `--${boundary}\r\nContent-Disposition: form-data; name="files[0]"; filename="blob.bin"\r\n` +
        'Content-Type: application/octet-stream\r\n\r\n',
    ),
    file,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
}

/** Header values of one name (case-insensitive) as the fake received them, in order. */
function headerValues(rec: ReceivedRequest, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < rec.rawHeaders.length; i += 2) {
    if (rec.rawHeaders[i]!.toLowerCase() === name) out.push(rec.rawHeaders[i + 1]!);
  }
  return out;
}

interface RawResponse {
  status: number;
  /** [name, value] pairs in the order and case they came on the wire. */
  headers: [string, string][];
  body: Buffer;
}

/** Splits one HTTP/1.1 response (Content-Length or chunked) out of the bytes read from a socket. */
function parseResponse(bytes: Buffer): RawResponse {
  const end = bytes.indexOf('\r\n\r\n');
  if (end < 0) throw new Error(`no complete header block in ${bytes.length} bytes`);
  const [statusLine, ...lines] = bytes.subarray(0, end).toString('latin1').split('\r\n');
  const headers = lines.map((line): [string, string] => {
    const colon = line.indexOf(':');
    return [line.slice(0, colon), line.slice(colon + 1).trim()];
  });
  const find = (name: string) => headers.find(([n]) => n.toLowerCase() === name)?.[1];
  let rest = bytes.subarray(end + 4);
  let body: Buffer;
  if (find('transfer-encoding')?.toLowerCase() === 'chunked') {
    const parts: Buffer[] = [];
    for (;;) {
      const lineEnd = rest.indexOf('\r\n');
      const size = Number.parseInt(rest.subarray(0, lineEnd).toString('latin1'), 16);
      if (size === 0) break;
      parts.push(rest.subarray(lineEnd + 2, lineEnd + 2 + size));
      rest = rest.subarray(lineEnd + 2 + size + 2);
    }
    body = Buffer.concat(parts);
  } else {
    body = rest.subarray(0, Number(find('content-length') ?? rest.length));
  }
  return { status: Number(statusLine!.split(' ')[1]), headers, body };
}

/** Sends raw bytes (what undici refuses to send: hop-by-hop headers, raw UTF-8) and reads until the server closes. */
async function rawExchange(
  baseUrl: string,
  head: string,
  body: Buffer = Buffer.alloc(0),
): Promise<RawResponse> {
  const { hostname, port } = new URL(baseUrl);
  const socket = connect(Number(port), hostname);
  await once(socket, 'connect');
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.write(Buffer.concat([Buffer.from(head, 'latin1'), body]));
  await once(socket, 'end');
  socket.destroy();
  return parseResponse(Buffer.concat(chunks));
}

/**
 * A TCP pass-through in front of the fake that keeps the bytes the fake sent back, so a response can be compared
 * with what the proxy forwarded. Each test uses it for one request at a time.
 */
class Tap {
  fromUpstream: Buffer[] = [];
  private readonly sockets = new Set<Socket>();
  private server: Server | null = null;
  url = '';

  async start(upstream: string): Promise<string> {
    const { hostname, port } = new URL(upstream);
    const server = createServer((client) => {
      const up = connect(Number(port), hostname);
      this.sockets.add(client).add(up);
      client.pipe(up);
      up.on('data', (chunk: Buffer) => this.fromUpstream.push(chunk));
      up.pipe(client);
      const close = () => {
        client.destroy();
        up.destroy();
      };
      client.on('error', close).on('close', close);
      up.on('error', close).on('close', close);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    this.server = server;
    const address = server.address() as { port: number };
    this.url = `http://127.0.0.1:${address.port}`;
    return this.url;
  }

  take(): RawResponse {
    const response = parseResponse(Buffer.concat(this.fromUpstream));
    this.fromUpstream = [];
    return response;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

describe('byte-exact forwarding', () => {
  const fake = new FakeDiscord();
  const tap = new Tap();
  let proxy: RunningProxy;
  let client: ReturnType<typeof clientFor>;

  beforeAll(async () => {
    const fakeUrl = await fake.start();
    await tap.start(fakeUrl);
    // One upstream connection, so the tap sees one response at a time and each test can read its own.
    proxy = await startProxy(tap.url, { env: { UPSTREAM_CONNECTIONS: '1' } });
    client = clientFor(proxy.url);
  });
  afterAll(async () => {
    await proxy?.close();
    await client?.client.close();
    await tap.stop();
    await fake.stop();
  });

  /** The single request the fake received since the last reset. */
  function only(): ReceivedRequest {
    expect(fake.received).toHaveLength(1);
    return fake.received[0]!;
  }

  it('forwards JSON body bytes and Content-Type unchanged', async () => {
    fake.reset();
    // Odd spacing, key order, escapes, a NUL escape, non-ASCII and astral characters: nothing may be re-serialised.
    const body = Buffer.from(
      '{ "content" :"h\u00e9llo \u{1f44d} \\u0000 \\"q\\"",\n\t"nonce":"00123", "tts":false ,"embeds":[ ]}\n',
      'utf8',
    );
    const contentType = 'application/json; charset=UTF-8';
    const res = await client.call('POST', `/api/v10/channels/${CHANNEL}/messages`, {
      body,
      headers: { 'content-type': contentType },
    });
    expect(res.status).toBe(200);
    const rec = only();
    expect(rec.body.equals(body)).toBe(true);
    expect(headerValues(rec, 'content-type')).toEqual([contentType]);
    expect(headerValues(rec, 'content-length')).toEqual([String(body.length)]);
    expect(headerValues(rec, 'authorization')).toEqual([BOT_A]);
  });

  it('forwards query strings with repeated keys and encoded characters exactly', async () => {
    fake.reset();
    const query =
      'limit=50&around=1&around=2&name=a%20b+c&emoji=%F0%9F%91%8D&empty=&flag&slash=%2F%3F%26%3D&x=%2a';
    const res = await client.call('GET', `/api/v10/channels/${CHANNEL}/messages?${query}`);
    expect(res.status).toBe(200);
    const rec = only();
    expect(rec.path).toBe(`/api/v10/channels/${CHANNEL}/messages`);
    expect(rec.query).toBe(query);
    expect((res.json() as { query: string }).query).toBe(query);
  });

  it('forwards a percent-encoded unicode X-Audit-Log-Reason unchanged', async () => {
    fake.reset();
    const reason = encodeURIComponent('Spam \u2014 r\u00e9sum\u00e9 \u{1f6ab} \u65e5\u672c\u8a9e');
    const res = await client.call('DELETE', `/api/v10/channels/${CHANNEL}/messages/1000000000000000`, {
      headers: { 'X-Audit-Log-Reason': reason },
    });
    expect(res.status).toBe(204);
    expect(headerValues(only(), 'x-audit-log-reason')).toEqual([reason]);
  });

  it('forwards raw UTF-8 bytes in X-Audit-Log-Reason unchanged', async () => {
    fake.reset();
    const reason = Buffer.from('Raw r\u00e9sum\u00e9 \u{1f6ab} \u65e5\u672c', 'utf8');
    const { host } = new URL(proxy.url);
    const res = await rawExchange(
      proxy.url,
      `DELETE /api/v10/channels/${CHANNEL}/messages/1000000000000001 HTTP/1.1\r\nHost: ${host}\r\n` +
        `Authorization: ${BOT_A}\r\nX-Audit-Log-Reason: ${reason.toString('latin1')}\r\nConnection: close\r\n\r\n`,
    );
    expect(res.status).toBe(204);
    const received = headerValues(only(), 'x-audit-log-reason');
    expect(received).toHaveLength(1);
    // Node reads header bytes as latin1; the same bytes must have reached the fake.
    expect(Buffer.from(received[0]!, 'latin1').equals(reason)).toBe(true);
  });

  it('forwards a multipart upload below the retry limit byte for byte', async () => {
    fake.reset();
    const boundary = '----proxyTestBoundary7MA4YWxkTrZu0gW';
    const body = multipart(boundary, allBytes(512 * 1024));
    const res = await client.call('POST', `/api/v10/channels/${CHANNEL}/messages`, {
      body,
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
    });
    expect(res.status).toBe(200);
    const rec = only();
    expect(rec.body.length).toBe(body.length);
    expect(rec.body.equals(body)).toBe(true);
    expect(headerValues(rec, 'content-type')).toEqual([`multipart/form-data; boundary=${boundary}`]);
  });

  it('streams a multipart upload above RETRY_BODY_LIMIT_BYTES and delivers it byte for byte', async () => {
    fake.reset();
    const boundary = '----proxyTestBoundaryLarge0123456789';
    const body = multipart(boundary, allBytes(RETRY_BODY_LIMIT + 4096));
    expect(body.length).toBeGreaterThan(proxy.config.retryBodyLimitBytes);
    const half = 256 * 1024;
    let sawHeadersMidUpload = false;
    // The second part is sent only once the fake has the request's headers: a proxy that buffered the whole
    // upload before forwarding would never get there, and the upload would stall.
    async function* upload() {
      yield body.subarray(0, half);
      const until = performance.now() + 5000;
      while (fake.received.length === 0 && performance.now() < until) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      sawHeadersMidUpload = fake.received.length === 1;
      yield body.subarray(half);
    }
    const res = await request(`${proxy.url}/api/v10/channels/${CHANNEL}/messages`, {
      method: 'POST',
      headers: {
        authorization: BOT_A,
        'content-type': `multipart/form-data; boundary=${boundary}`,
        'content-length': String(body.length),
      },
      body: Readable.from(upload()),
      dispatcher: client.client,
    });
    await res.body.text();
    expect(res.statusCode).toBe(200);
    expect(sawHeadersMidUpload).toBe(true);
    const rec = only();
    expect(rec.body.length).toBe(body.length);
    expect(rec.body.equals(body)).toBe(true);
    expect(headerValues(rec, 'content-length')).toEqual([String(body.length)]);
  });

  it("returns the upstream's status, headers and body unchanged, X-RateLimit-* included", async () => {
    fake.reset();
    tap.fromUpstream = [];
    const res = await request(`${proxy.url}/api/v10/channels/${CHANNEL}`, {
      headers: { authorization: BOT_A },
      dispatcher: client.client,
    });
    const body = Buffer.from(await res.body.arrayBuffer());
    const sent = tap.take();
    expect(res.statusCode).toBe(sent.status);
    const names = sent.headers.map(([name]) => name.toLowerCase());
    for (const name of [
      'x-ratelimit-bucket',
      'x-ratelimit-limit',
      'x-ratelimit-remaining',
      'x-ratelimit-reset',
      'x-ratelimit-reset-after',
      'x-ratelimit-scope',
      'via',
      'content-type',
      'date',
      'cf-ray',
    ]) {
      expect(names).toContain(name);
    }
    for (const [name, value] of sent.headers) {
      const lower = name.toLowerCase();
      if (lower === 'connection' || lower === 'keep-alive') continue;
      expect([lower, res.headers[lower]]).toEqual([lower, value]);
    }
    expect(body.equals(sent.body)).toBe(true);
    expect(only().path).toBe(`/api/v10/channels/${CHANNEL}`);
  });

  it('returns a large response body byte for byte', async () => {
    fake.reset();
    tap.fromUpstream = [];
    const size = 3 * 1024 * 1024 + 17;
    const res = await request(`${proxy.url}/api/v10/__echo?size=${size}`, {
      headers: { authorization: BOT_A },
      dispatcher: client.client,
    });
    const body = Buffer.from(await res.body.arrayBuffer());
    const sent = tap.take();
    expect(res.statusCode).toBe(200);
    expect(sent.body.length).toBe(size);
    expect(body.length).toBe(size);
    expect(body.equals(sent.body)).toBe(true);
    expect(res.headers['content-length']).toBe(String(size));
    expect(res.headers['x-echo-query']).toBe(`size=${size}`);
    expect(res.headers.via).toBe('1.1 google');
    expect(only().query).toBe(`size=${size}`);
  });

  it('drops hop-by-hop headers, sends the upstream Host, and keeps x-proxy-max-hold-ms to itself', async () => {
    fake.reset();
    const { host } = new URL(proxy.url);
    const body = Buffer.from('{"name":"hop"}');
    const res = await rawExchange(
      proxy.url,
      `POST /api/v10/__echo?a=1 HTTP/1.1\r\nHost: ${host}\r\nAuthorization: ${BOT_A}\r\n` +
        'Connection: close, X-Hop-Only\r\nKeep-Alive: timeout=5, max=100\r\nTE: trailers\r\n' +
        'Upgrade: h2c\r\nProxy-Authorization: Basic cHJveHk6c2VjcmV0\r\nProxy-Connection: keep-alive\r\n' +
        'X-Hop-Only: must-not-pass\r\nX-Proxy-Max-Hold-Ms: 5000\r\nX-End-To-End: kept\r\n' +
        `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`,
      body,
    );
    expect(res.status).toBe(200);
    expect(res.body.equals(body)).toBe(true);
    const rec = only();
    const names = new Set<string>();
    for (let i = 0; i < rec.rawHeaders.length; i += 2) names.add(rec.rawHeaders[i]!.toLowerCase());
    for (const hop of [
      'keep-alive',
      'te',
      'upgrade',
      'proxy-authorization',
      'proxy-connection',
      'x-hop-only',
      'x-proxy-max-hold-ms',
      'transfer-encoding',
    ]) {
      expect(names.has(hop), hop).toBe(false);
    }
    // The client's Connection header is its own; whatever undici says about its connection is not "close, X-Hop-Only".
    expect(headerValues(rec, 'connection').join()).not.toMatch(/hop|close/i);
    expect(headerValues(rec, 'host')).toEqual([new URL(tap.url).host]);
    expect(headerValues(rec, 'x-end-to-end')).toEqual(['kept']);
    expect(rec.body.equals(body)).toBe(true);
  });

  it('drops the client transfer-encoding and forwards a chunked body intact', async () => {
    fake.reset();
    const { host } = new URL(proxy.url);
    const parts = ['{"content":', '"chunked \u00e9"', '}'].map((s) => Buffer.from(s, 'utf8'));
    const chunked = Buffer.concat(
      parts.flatMap((p) => [Buffer.from(`${p.length.toString(16)}\r\n`), p, Buffer.from('\r\n')]),
    );
    const res = await rawExchange(
      proxy.url,
      `POST /api/v10/__echo HTTP/1.1\r\nHost: ${host}\r\nAuthorization: ${BOT_A}\r\n` +
        'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n',
      Buffer.concat([chunked, Buffer.from('0\r\n\r\n')]),
    );
    const whole = Buffer.concat(parts);
    expect(res.status).toBe(200);
    expect(res.body.equals(whole)).toBe(true);
    const rec = only();
    expect(rec.body.equals(whole)).toBe(true);
    // The upstream leg is framed by the proxy's own client: at most its own single "chunked", never a copy.
    expect(headerValues(rec, 'transfer-encoding').length).toBeLessThanOrEqual(1);
  });

  it('forwards paths with and without /v{N} unchanged', async () => {
    fake.reset();
    const unversioned = await client.call('GET', `/api/channels/${CHANNEL}/pins`);
    const v9 = await client.call('GET', `/api/v9/channels/${CHANNEL}/pins`);
    expect(unversioned.status).toBe(200);
    expect(v9.status).toBe(200);
    expect(fake.received.map((r) => r.path)).toEqual([
      `/api/channels/${CHANNEL}/pins`,
      `/api/v9/channels/${CHANNEL}/pins`,
    ]);
    expect((unversioned.json() as { path: string }).path).toBe(`/api/channels/${CHANNEL}/pins`);
  });

  it("answers a path outside /api/ with a proxy-generated 404 in Discord's error shape", async () => {
    fake.reset();
    for (const path of ['/channels/1/messages', '/apiv10/channels/1', '/api', '/api/v10', '/']) {
      const res = await client.call('GET', path);
      expect(res.status, path).toBe(404);
      expect(res.headers['x-proxy-generated'], path).toBe('true');
      expect(res.headers['content-type'], path).toMatch(/^application\/json/);
      const json = res.json() as { message: unknown; code: unknown };
      expect(typeof json.message, path).toBe('string');
      expect(typeof json.code, path).toBe('number');
    }
    expect(fake.received).toHaveLength(0);
  });
});
